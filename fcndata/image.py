"""Loading and input transforms shared by the VOC and SBD datasets.

The transform is the authors' data layers' one (`porting.transform.to_input`): RGB file ->
BGR, 0..255 float32, the ILSVRC mean subtracted per channel, CHW; labels as stored (0..20, 255 = ignore), int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from porting.progress import progress_bar
from porting.textfile import read_text
from porting.transform import rgb_array, to_input
from prototxt.voc import IGNORE_LABEL, MEAN_BGR

from .errors import DatasetError

_ON_ERROR = ("raise", "skip")


class Sample(NamedTuple):
    """One training/eval example; a NamedTuple so torch's default collate batches it."""

    image: torch.Tensor  # float32 3xHxW, BGR, mean-subtracted
    label: torch.Tensor  # int64 HxW, 0..num_classes-1 or 255
    id: str


def voc_palette(count: int = 256) -> list[int]:
    """The PASCAL VOC colour map (flat RGB list), as VOCdevkit's `labelcolormap` builds it: 256
    entries, or `count` (its bit interleaving gives every index below 2**24 its own colour)."""
    palette = []
    for index in range(count):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette += [r, g, b]
    return palette


def load_ids(path: str | Path) -> list[str]:
    """Read an id list (one id per line, blank lines ignored), e.g. ImageSets/Segmentation/val.txt."""
    path = Path(path)
    text = read_text(path, "id list", DatasetError, "expected a text file with one image id per line")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 1:
            raise DatasetError(f"{path}:{number}: expected one image id per line, found {line.strip()!r}")
        image_id = fields[0]
        if image_id in first_line:
            raise DatasetError(f"{path}:{number}: id {image_id!r} repeats line {first_line[image_id]}")
        first_line[image_id] = number
        ids.append(image_id)
    if not ids:
        raise DatasetError(f"{path}: id list is empty")
    return ids


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to uint8 HxWx3 RGB (grayscale/CMYK files are converted)."""
    try:
        with Image.open(path) as im:
            im.load()
            return rgb_array(im)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable image: {exc}") from None


VOC_LABEL_HINT = (
    "VOC labels are palette ('P') PNGs whose indices are the class numbers (a colour-converted copy loses them)"
)


#: Pillow's modes of a 16-bit grayscale PNG (how label maps of more than 256 classes are stored)
WIDE_LABEL_MODES = ("I;16", "I;16B", "I")


def load_png_label(path: Path, hint: str = VOC_LABEL_HINT) -> np.ndarray:
    """Decode a one-channel ('L'), palette ('P') or 16-bit grayscale label PNG: its stored values are the labels.

    Args:
        path: the PNG.
        hint: what such labels must be, said when the PNG has another mode.

    Returns:
        The index values, HxW: uint8, or for a 16-bit PNG (more than 256 classes) uint16.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in WIDE_LABEL_MODES:
                return np.asarray(im).astype(np.uint16)
            if im.mode not in ("P", "L"):
                raise DatasetError(f"{path}: label PNG has mode {im.mode!r}; {hint}")
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable label PNG: {exc}") from None


def check_label(label: np.ndarray, num_classes: int, path: Path) -> None:
    """Reject labels outside 0..num_classes-1 and 255 so bad ground truth never reaches the loss."""
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        raise DatasetError(
            f"{path}: label values {shown} out of range: {num_classes} classes, so expected "
            f"0..{num_classes - 1} or {IGNORE_LABEL} = ignore"
        )


def check_sizes(rgb: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if rgb.shape[:2] != label.shape:
        raise DatasetError(
            f"{label_path}: label size {label.shape[1]}x{label.shape[0]} (WxH) differs from image "
            f"{image_path} size {rgb.shape[1]}x{rgb.shape[0]}"
        )


def to_target(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(label.astype(np.int64))


def require_dir(path: Path, what: str, layout: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} not found. {layout}")


class SegmentationFiles(Dataset):
    """An id list over image/label file pairs; subclasses name the files and decode the label.

    Inputs are prepared with `mean` (B, G, R; default the VGG16 mean).
    on_error="raise" (default): a missing, corrupt or invalid file raises DatasetError with
    its path. on_error="skip": every pair is read once at construction; bad ones are left
    out of `ids` and recorded in `skipped` as (path, reason), at the cost of one pass over
    the files.
    """

    def __init__(self, ids: list[str], num_classes: int, on_error: str, mean: Sequence[float] = MEAN_BGR) -> None:
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        self.num_classes = num_classes
        self.mean = tuple(mean)
        self.skipped: list[tuple[str, str]] = []
        if on_error == "skip":
            self.ids = [image_id for image_id in ids if self._readable(image_id)]
        else:
            self.ids = list(ids)
            self._check_present()

    def image_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def label_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def _decode_label(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 HxWx3 RGB, uint8 HxW label), validated; for visualisation."""
        image_id = self.ids[index]
        image_path, label_path = self.image_path(image_id), self.label_path(image_id)
        rgb = load_rgb(image_path)
        label = self._decode_label(label_path)
        check_sizes(rgb, label, image_path, label_path)
        check_label(label, self.num_classes, label_path)
        return rgb, label

    def __getitem__(self, index: int) -> Sample:
        rgb, label = self.read_raw(index)
        return Sample(self.to_input(rgb), to_target(label), self.ids[index])

    def to_input(self, rgb: np.ndarray) -> torch.Tensor:
        """The net's input from the RGB image (VOC, SBD and datasets by name: `to_input` with `self.mean`)."""
        return to_input(rgb, self.mean)

    def _check_present(self) -> None:
        """Fail before training starts, not hours in, when files of the list are absent."""
        for image_id in self.ids:
            for path, kind in ((self.image_path(image_id), "image"), (self.label_path(image_id), "label")):
                if not path.is_file():
                    missing = self._count_missing()
                    raise DatasetError(
                        f"{path}: {kind} file of id {image_id!r} not found ({missing} of {len(self.ids)} ids "
                        f"have missing files); {self.missing_hint()}"
                    )

    def missing_hint(self) -> str:
        """What a user can do about files of the id list that are missing."""
        return (
            "restore the missing files, or take their ids out of the split's id list "
            "(from Python, on_error='skip' leaves them out)"
        )

    def check_labels(self, description: str = "checking labels") -> None:
        """Read every label once and raise on the first bad one (unreadable, or holding a value out
        of range; sizes are checked when the image is read), so that a run stops before its first
        update instead of when the file is drawn. A tqdm bar shows the pass on a terminal and
        stays quiet elsewhere.

        Args:
            description: the bar's label.

        Raises:
            DatasetError: naming the file, the values and the class count (`check_label`).
        """
        for image_id in progress_bar(self.ids, desc=description, unit="label"):
            path = self.label_path(image_id)
            check_label(self._decode_label(path), self.num_classes, path)

    def _count_missing(self) -> int:
        return sum(not (self.image_path(i).is_file() and self.label_path(i).is_file()) for i in self.ids)

    def _readable(self, image_id: str) -> bool:
        image_path, label_path = self.image_path(image_id), self.label_path(image_id)
        try:
            rgb = load_rgb(image_path)
        except DatasetError as exc:
            self.skipped.append((str(image_path), str(exc)))
            return False
        try:
            label = self._decode_label(label_path)
            check_sizes(rgb, label, image_path, label_path)
            check_label(label, self.num_classes, label_path)
        except DatasetError as exc:
            self.skipped.append((str(label_path), str(exc)))
            return False
        return True
