"""A dataset of one's own: `folder:ROOT`, images and label PNGs in per-split folders.

    ROOT/classes.txt              one class name per line, in index order (its length is the class count)
    ROOT/images/<split>/<id>.jpg  (or .jpeg / .png)
    ROOT/labels/<split>/<id>.png  one-channel or palette PNG whose values are class indices; 255 = ignore

Splits are the subfolders of ROOT/images (`train`, `val`, ...); ids are the image file
stems, in sorted order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from porting.errors import FormatError
from porting.metadata import read_class_names

from .errors import DatasetError
from .image import IGNORE_LABEL, MEAN_BGR, SegmentationFiles, load_png_label, require_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CLASSES_FILE = "classes.txt"

FOLDER_LAYOUT = (
    "Expected folder:ROOT with ROOT/classes.txt (one class name per line, in index order), "
    "ROOT/images/<split>/<id>.jpg (or .png) and ROOT/labels/<split>/<id>.png (one-channel or palette PNG of class "
    f"indices 0..N-1, {IGNORE_LABEL} = ignore), one subfolder per split (train, val, ...). "
    'Write a small example with `python -c "from fcndata.synthetic import write_synthetic_folder; '
    "write_synthetic_folder('mydata')\"`"
)


def folder_classes(root: str | Path) -> tuple[str, ...]:
    """The class names of a folder dataset (ROOT/classes.txt)."""
    root = Path(root)
    require_dir(root, "dataset folder", FOLDER_LAYOUT)
    try:
        return read_class_names(root / CLASSES_FILE)
    except FormatError as error:
        raise DatasetError(f"{error}. {FOLDER_LAYOUT}") from None


def image_ids(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """id (file stem) -> image file for the images in `folder`, sorted by id; a stem used twice is an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DatasetError(f"{path}: id {path.stem!r} has two image files ({found[path.stem].name}, {path.name})")
        found[path.stem] = path
    return found


INDEX_LABEL_HINT = (
    "labels must be one-channel ('L') or palette ('P') PNGs, or 16-bit grayscale past 256 classes, whose values "
    "are class indices (a colour rendering of the classes cannot be read back)"
)


def load_index_png(path: Path) -> np.ndarray:
    """A one-channel ('L'), palette ('P') or 16-bit PNG as its stored index values, HxW (`load_png_label`)."""
    return load_png_label(path, INDEX_LABEL_HINT)


class FolderSegmentation(SegmentationFiles):
    """One split of a `folder:` dataset: (image, label) pairs, input prepared with `mean`."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        ids: list[str] | None = None,
        on_error: str = "raise",
        *,
        mean: Sequence[float] = MEAN_BGR,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.classes = folder_classes(self.root)
        self._images = self._check_layout()
        if ids is None:
            ids = list(self._images)
        if not ids:
            raise DatasetError(
                f"{self.root / 'images' / split}: no image files ({', '.join(IMAGE_SUFFIXES)}). {FOLDER_LAYOUT}"
            )
        super().__init__(ids, len(self.classes), on_error, mean)

    def _check_layout(self) -> dict[str, Path]:
        images = self.root / "images"
        require_dir(images, "images folder", FOLDER_LAYOUT)
        splits = sorted(p.name for p in images.iterdir() if p.is_dir())
        if not (images / self.split).is_dir():
            raise DatasetError(
                f"{images / self.split}: split {self.split!r} not found (splits here: {', '.join(splits) or 'none'}). "
                f"{FOLDER_LAYOUT}"
            )
        require_dir(self.root / "labels" / self.split, f"labels folder of split {self.split!r}", FOLDER_LAYOUT)
        return image_ids(images / self.split, IMAGE_SUFFIXES)

    def image_path(self, image_id: str) -> Path:
        return self._images.get(image_id, self.root / "images" / self.split / f"{image_id}.jpg")

    def label_path(self, image_id: str) -> Path:
        return self.root / "labels" / self.split / f"{image_id}.png"

    def _decode_label(self, path: Path) -> np.ndarray:
        return load_index_png(path)

    def missing_hint(self) -> str:
        labels, images = self.root / "labels" / self.split, self.root / "images" / self.split
        return f"add each image's label PNG to {labels} under the image's name, or move the images without one out of {images}"
