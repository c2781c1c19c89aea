"""Examples with several named tops, as the authors' NYUDv2 and SIFT Flow data layers emit them.

Their layers output a list of tops per image (`color`, `depth`, `hha`, `label`;
`data`, `sem`, `geo`) that a net's data layer binds in order to its own top names (the
nyud-fcn32s-hha net names its one input `data`, fed by the `hha` top). `Blobs` carries
such an example; `net_feed` binds any example (a VOC-style `Sample` too) to a net's
inputs the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .image import Sample


class Blobs(NamedTuple):
    """One example: its tops in the data layer's order (inputs float32 CxHxW, labels int64 HxW) and its id."""

    blobs: dict[str, torch.Tensor]
    id: str


def blobs_of(sample: Sample | Blobs) -> dict[str, torch.Tensor]:
    """An example's tops by name: a VOC-style `Sample` is `data` and `label`."""
    if isinstance(sample, Blobs):
        return sample.blobs
    return {"data": sample.image, "label": sample.label}


def net_feed(sample: Sample | Blobs, inputs: Sequence[str]) -> dict[str, torch.Tensor]:
    """A net's inputs from an example, bound in order as Caffe binds a data layer's tops,
    with the batch axis added (labels become 1x1xHxW, as the loss layers take them).

    Args:
        sample: the example.
        inputs: the net's input blob names (`CaffeNet.inputs`), one per top of the example.
    Raises:
        DatasetError: the example has another number of tops than the net has inputs.
    """
    tops = blobs_of(sample)
    if len(tops) != len(inputs):
        raise DatasetError(
            f"the example has {len(tops)} tops ({', '.join(tops)}) but the net takes {len(inputs)} inputs "
            f"({', '.join(inputs)}); pick the dataset's tops to match the net's data layer"
        )
    return {name: value[None] if value.ndim == 3 else value[None, None] for name, value in zip(inputs, tops.values())}


def bgr_minus_mean(rgb: np.ndarray, mean: Sequence[float], flip: bool = True) -> torch.Tensor:
    """HxWx3 uint8 -> float32 3xHxW: channels reversed (RGB file -> BGR) when `flip`, minus `mean`,
    in float32 arithmetic as the authors' NYUDv2, SIFT Flow and PASCAL-Context layers compute it."""
    array = np.asarray(rgb, dtype=np.float32)
    if flip:
        array = array[:, :, ::-1]
    array = array - np.asarray(mean, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class TopsDataset(Dataset):
    """An id list whose examples are several named tops read from per-top files.

    Subclasses give each top's file (`top_path`) and how to read it (`load_top`, a float32
    CxHxW array for inputs, an int64 HxW label array for labels). Every top's file is
    checked to exist at construction (a clear error before training starts, not hours in),
    and every example's tops must share one size.
    """

    #: every top the dataset can emit, and which of them are labels
    TOPS: tuple[str, ...] = ()
    LABELS: frozenset[str] = frozenset()

    def __init__(self, ids: list[str], tops: Sequence[str]) -> None:
        unknown = [top for top in tops if top not in self.TOPS]
        if unknown or not tops or len(set(tops)) != len(tops):
            raise DatasetError(f"tops must be distinct names among {', '.join(self.TOPS)}, got {list(tops)}")
        self.tops = tuple(tops)
        self.ids = list(ids)
        self._check_present()

    def top_path(self, top: str, image_id: str) -> Path:
        raise NotImplementedError

    def load_top(self, top: str, image_id: str) -> np.ndarray:
        raise NotImplementedError

    def rgb(self, image_id: str) -> np.ndarray:
        """The example's colour image as uint8 HxWx3 RGB (for visualisation)."""
        raise NotImplementedError

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(top for top in self.tops if top in self.LABELS)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Blobs:
        image_id = self.ids[index]
        arrays = {top: self.load_top(top, image_id) for top in self.tops}
        first = self.tops[0]
        for top, array in arrays.items():
            if array.shape[-2:] != arrays[first].shape[-2:]:
                (height, width), (h0, w0) = array.shape[-2:], arrays[first].shape[-2:]
                raise DatasetError(
                    f"{self.top_path(top, image_id)}: size {width}x{height} (WxH) differs from "
                    f"{self.top_path(first, image_id)} size {w0}x{h0}"
                )
        return Blobs({top: torch.from_numpy(np.ascontiguousarray(array)) for top, array in arrays.items()}, image_id)

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 HxWx3 RGB, uint8 HxW first label), for visualisation."""
        image_id = self.ids[index]
        label = self.load_top(self.labels[0], image_id) if self.labels else None
        rgb = self.rgb(image_id)
        return rgb, (label if label is not None else np.zeros(rgb.shape[:2])).astype(np.uint8)

    def _check_present(self) -> None:
        for image_id in self.ids:
            for top in self.tops:
                path = self.top_path(top, image_id)
                if not path.is_file():
                    missing = sum(not self.top_path(top, i).is_file() for i in self.ids)
                    raise DatasetError(
                        f"{path}: {top} file of id {image_id!r} not found ({missing} of {len(self.ids)} ids lack one)"
                    )


def check_values(label: np.ndarray, allowed: Sequence[int], path: Path, what: str) -> None:
    """Reject label values outside `allowed` (the raw file's values, before any mapping)."""
    values = np.unique(label)
    bad = values[~np.isin(values, np.asarray(allowed))]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        raise DatasetError(f"{path}: label values {shown} out of range ({what})")
