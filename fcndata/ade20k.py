"""MIT Scene Parsing (ADE20K, SceneParsing challenge 2016) as released: `ade20k:ROOT`.

    ROOT/objectInfo150.txt                       tab-separated: Idx, Ratio, Train, Val, Name (one header line)
    ROOT/images/{training,validation}/<id>.jpg
    ROOT/annotations/{training,validation}/<id>.png   one-channel, 0 = "other objects", 1..150 = the classes

ROOT is the unpacked ADEChallengeData2016 folder. Label 0 is not scored by the challenge
("we ignore pixels labeled with 0's", the development kit's README), so it becomes the
ignore label 255 and classes 1..150 become 0..149. Class names are the Name column
(WordNet-style synonyms, "building, edifice"). The splits are also reachable as `train`
and `val`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from porting.textfile import read_text

from .errors import DatasetError
from .folder import image_ids, load_index_png
from .image import IGNORE_LABEL, MEAN_BGR, SegmentationFiles, require_dir

NUM_CLASSES = 150
OBJECT_INFO = "objectInfo150.txt"
OBJECT_INFO_COLUMNS = ("Idx", "Ratio", "Train", "Val", "Name")
SPLITS = ("training", "validation")
SPLIT_ALIASES = {"train": "training", "val": "validation"}

ADE20K_LAYOUT = (
    f"Expected ade20k:ROOT where ROOT is the unpacked ADEChallengeData2016 folder: ROOT/{OBJECT_INFO}, "
    "ROOT/images/{training,validation}/*.jpg and ROOT/annotations/{training,validation}/*.png. Get "
    "ADEChallengeData2016.zip from the MIT Scene Parsing benchmark, http://sceneparsing.csail.mit.edu "
    "(http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip)"
)


def read_object_info(path: Path) -> tuple[str, ...]:
    """The 150 class names of objectInfo150.txt, in Idx order (names stripped of stray spaces)."""
    lines = read_text(path, "class list", DatasetError, ADE20K_LAYOUT).splitlines()
    header = [field.strip() for field in lines[0].split("\t")] if lines else []
    if tuple(header) != OBJECT_INFO_COLUMNS:
        raise DatasetError(
            f"{path}:1: expected the header {' / '.join(OBJECT_INFO_COLUMNS)} (tab-separated), found {lines[0][:80]!r}"
            if lines
            else f"{path}: empty file"
        )
    names: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != len(OBJECT_INFO_COLUMNS) or fields[0] != str(len(names) + 1) or not fields[-1]:
            raise DatasetError(
                f"{path}:{number}: expected '{len(names) + 1}<TAB>ratio<TAB>train<TAB>val<TAB>name', found {line[:80]!r}"
            )
        names.append(fields[-1])
    if len(names) != NUM_CLASSES:
        raise DatasetError(f"{path}: {len(names)} classes listed, the benchmark has {NUM_CLASSES}")
    return tuple(names)


def ade20k_classes(root: str | Path) -> tuple[str, ...]:
    """The class names of an ADE20K release folder."""
    root = Path(root)
    _check_root(root)
    return read_object_info(root / OBJECT_INFO)


def _check_root(root: Path) -> None:
    nested = root / "ADEChallengeData2016"
    if not (root / "images").is_dir() and nested.is_dir():
        raise DatasetError(f"{root}: pass its ADEChallengeData2016 subfolder as the root. {ADE20K_LAYOUT}")
    require_dir(root, "ADE20K folder", ADE20K_LAYOUT)


def to_training_labels(annotation: np.ndarray) -> np.ndarray:
    """Release values -> training labels: 0 ("other") -> 255, 1..150 -> 0..149; larger values pass on as they are."""
    return np.where(annotation == 0, IGNORE_LABEL, annotation.astype(np.int32) - 1).astype(np.uint8)


class ADE20KSegmentation(SegmentationFiles):
    """One split of the release: (image, label) with labels 0..149 and 255 for "other"."""

    def __init__(
        self,
        root: str | Path,
        split: str = "training",
        ids: list[str] | None = None,
        on_error: str = "raise",
        *,
        mean: Sequence[float] = MEAN_BGR,
    ) -> None:
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise DatasetError(f"ADE20K split must be one of {', '.join(SPLITS)} (or train, val), got {split!r}")
        self.root = Path(root)
        self.split = split
        self.classes = ade20k_classes(self.root)
        for sub in ("images", "annotations"):
            require_dir(self.root / sub / split, f"ADE20K {sub}/{split} folder", ADE20K_LAYOUT)
        self._images = image_ids(self.root / "images" / split, (".jpg",))
        if ids is None:
            ids = list(self._images)
        if not ids:
            raise DatasetError(f"{self.root / 'images' / split}: no .jpg images. {ADE20K_LAYOUT}")
        super().__init__(ids, NUM_CLASSES, on_error, mean)

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / self.split / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "annotations" / self.split / f"{image_id}.png"

    def _decode_label(self, path: Path) -> np.ndarray:
        annotation = load_index_png(path)
        if annotation.max(initial=0) > NUM_CLASSES:
            raise DatasetError(
                f"{path}: annotation values up to {int(annotation.max())}; ADE20K's are 0 (other) .. {NUM_CLASSES}"
            )
        return to_training_labels(annotation)
