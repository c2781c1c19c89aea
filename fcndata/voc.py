"""PASCAL VOC 2011/2012 segmentation in its on-disk format (VOCdevkit)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from porting.errors import DatasetError

from .image import MEAN_BGR, NUM_CLASSES, SegmentationFiles, load_ids, load_png_label, require_dir
from .splits import seg11valid_ids, voc_segmentation_list

VOC_SPLITS = ("train", "val", "trainval", "seg11valid")
VOC_YEARS = ("2011", "2012")

VOC_LAYOUT = (
    "Expected <voc_root>/VOC<year>/ with JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNG) and "
    "ImageSets/Segmentation/{train,val,trainval}.txt, where voc_root is the folder holding VOC2011/ and "
    "VOC2012/ (usually VOCdevkit). Get PASCAL VOC 2011 and 2012 (VOCtrainval_25-May-2011.tar, "
    "VOCtrainval_11-May-2012.tar) from http://host.robots.ox.ac.uk/pascal/VOC/"
)


class VOCSegmentation(SegmentationFiles):
    """VOC<year> segmentation images and SegmentationClass labels (palette indices = classes, 255 = void).

    split "seg11valid" (VOC2011 only) is VOC2011 seg val minus SBD train (needs sbd_root)
    unless `ids` is given; `ids` always overrides the split's list. Items are `Sample`s:
    image BGR float32 mean-subtracted CHW, label int64 HW, id.

    Args:
        voc_root: the folder holding VOC2011/ and VOC2012/ (usually VOCdevkit).
        year: "2011" or "2012".
        split: "train", "val", "trainval" or "seg11valid".
        ids: image ids to use instead of the split's list.
        sbd_root: SBD's dataset/ folder, for "seg11valid" (which removes SBD train).
        on_error: "raise" on a missing or invalid file, or "skip" such pairs (recorded in `skipped`).
        num_classes: labels must lie below it (or be 255).

    Raises:
        DatasetError: a bad year or split, a folder missing from the expected layout (the message
            says where to get the data), or with on_error="raise" a missing file of the list.
    """

    def __init__(
        self,
        voc_root: str | Path,
        year: str = "2011",
        split: str = "val",
        ids: list[str] | None = None,
        sbd_root: str | Path | None = None,
        on_error: str = "raise",
        *,
        num_classes: int = NUM_CLASSES,
        mean: Sequence[float] = MEAN_BGR,
    ) -> None:
        year = str(year)
        if year not in VOC_YEARS:
            raise DatasetError(f"VOC year must be one of {VOC_YEARS}, got {year!r}")
        if split not in VOC_SPLITS:
            raise DatasetError(f"VOC split must be one of {VOC_SPLITS}, got {split!r}")
        if split == "seg11valid" and year != "2011":
            raise DatasetError(f"seg11valid is a subset of VOC2011 seg val, not of VOC{year}")
        self.voc_root = Path(voc_root)
        self.year = year
        self.split = split
        self.root = self.voc_root / f"VOC{year}"
        self._check_layout()
        if ids is None:
            if split == "seg11valid":
                ids = seg11valid_ids(self.voc_root, sbd_root)
            else:
                ids = load_ids(voc_segmentation_list(self.voc_root, year, split))
        super().__init__(ids, num_classes, on_error, mean)

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def _decode_label(self, path: Path) -> np.ndarray:
        return load_png_label(path)

    def _check_layout(self) -> None:
        if not self.root.is_dir() and (self.voc_root / "JPEGImages").is_dir():
            raise DatasetError(
                f"{self.root}: not found, but {self.voc_root} itself looks like a VOC year folder; pass its "
                f"parent as voc_root. {VOC_LAYOUT}"
            )
        require_dir(self.voc_root, "VOC root folder", VOC_LAYOUT)
        require_dir(self.root, f"VOC{self.year} folder", VOC_LAYOUT)
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            require_dir(self.root / sub, f"VOC{self.year} {sub} folder", VOC_LAYOUT)
