"""Semantic Boundaries Dataset (Hariharan et al.) in its on-disk format: benchmark_RELEASE/dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io

from porting.errors import DatasetError

from .image import MEAN_BGR, NUM_CLASSES, SegmentationFiles, load_ids, require_dir
from .splits import sbd_list

SBD_SPLITS = ("train", "val")

SBD_LAYOUT = (
    "Expected <sbd_root>/ = SBD's dataset/ folder with img/<id>.jpg, cls/<id>.mat (MATLAB struct GTcls with "
    "field Segmentation), train.txt and val.txt. Get SBD from the Berkeley semantic contours page "
    "(benchmark.tgz, Hariharan et al. 2011; it unpacks to benchmark_RELEASE/dataset)"
)


def load_sbd_label(path: Path) -> np.ndarray:
    """GTcls.Segmentation of an SBD cls/<id>.mat as uint8 HxW."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False, variable_names=["GTcls"])
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found") from None
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError/MatReadError on damaged files
        raise DatasetError(f"{path}: corrupt or unreadable .mat file: {exc}") from None
    gtcls = mat.get("GTcls")
    if gtcls is None or gtcls.size != 1 or not hasattr(gtcls.flat[0], "Segmentation"):
        raise DatasetError(f"{path}: expected a MATLAB struct 'GTcls' with field 'Segmentation' (SBD cls format)")
    segmentation = np.asarray(gtcls.flat[0].Segmentation)
    if segmentation.ndim != 2 or segmentation.dtype.kind not in "ui":
        raise DatasetError(
            f"{path}: GTcls.Segmentation must be an integer HxW map, found {segmentation.dtype} "
            f"with shape {segmentation.shape}"
        )
    if segmentation.min(initial=0) < 0 or segmentation.max(initial=0) > 255:
        raise DatasetError(f"{path}: GTcls.Segmentation values outside 0..255")
    return segmentation.astype(np.uint8)


class SBDSegmentation(SegmentationFiles):
    """SBD img/<id>.jpg with cls/<id>.mat labels; items are `Sample`s as `VOCSegmentation`'s.

    Args:
        sbd_root: SBD's dataset/ folder (with img/, cls/, train.txt, val.txt).
        split: "train" or "val".
        ids: image ids to use instead of the split's list.
        on_error: "raise" on a missing or invalid file, or "skip" such pairs (recorded in `skipped`).
        num_classes: labels must lie below it (or be 255).

    Raises:
        DatasetError: a bad split, a folder missing from the expected layout (the message says
            where to get the data), or with on_error="raise" a missing file of the list.
    """

    def __init__(
        self,
        sbd_root: str | Path,
        split: str = "train",
        ids: list[str] | None = None,
        on_error: str = "raise",
        *,
        num_classes: int = NUM_CLASSES,
        mean: Sequence[float] = MEAN_BGR,
    ) -> None:
        if split not in SBD_SPLITS:
            raise DatasetError(f"SBD split must be one of {SBD_SPLITS}, got {split!r}")
        self.root = Path(sbd_root)
        self.split = split
        self._check_layout()
        if ids is None:
            ids = load_ids(sbd_list(self.root, split))
        super().__init__(ids, num_classes, on_error, mean)

    def image_path(self, image_id: str) -> Path:
        return self.root / "img" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "cls" / f"{image_id}.mat"

    def _decode_label(self, path: Path) -> np.ndarray:
        return load_sbd_label(path)

    def _check_layout(self) -> None:
        if not (self.root / "img").is_dir() and (self.root / "dataset" / "img").is_dir():
            raise DatasetError(f"{self.root}: pass its dataset/ subfolder as the SBD root. {SBD_LAYOUT}")
        require_dir(self.root, "SBD root folder", SBD_LAYOUT)
        for sub in ("img", "cls"):
            require_dir(self.root / sub, f"SBD {sub} folder", SBD_LAYOUT)
