"""PASCAL-Context (Mottaghi et al., CVPR 2014): the 59-class task on PASCAL VOC 2010 images.

Images and splits come from VOC2010 (`<voc_root>/VOC2010/JPEGImages/<id>.jpg`,
`ImageSets/Main/{train,val}.txt`: 4,998 and 5,105 images); labels from the Context
annotations (`<context_root>/trainval/<id>.mat`, variable `LabelMap`, holding ids of
the full label list `labels.txt`, "<id>: <name>" per line). The task's classes are
those of `59_labels.txt` (same format); every other label is background (0), task
class k is k (1..59), and there is no void label. Names are compared without spaces,
and three task names are spelled differently in the full list, resolved as the
authors' data layer does: diningtable = table, bedcloth = bedclothes, clothes = cloth.
Input: RGB -> BGR minus (104.007, 116.669, 122.679), in float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from porting.metadata import NetMetadata
from porting.textfile import read_text

from .classes import VOC_CLASSES, register_task
from .errors import DatasetError
from .image import SegmentationFiles, load_ids, require_dir
from .mat import load_label_map
from .tops import bgr_minus_mean

MEAN_BGR = (104.007, 116.669, 122.679)
#: the task's classes in the nets' output order (the authors' classes-59.txt): background, VOC's 20, 39 more
CONTEXT_NAMES: tuple[str, ...] = (
    *VOC_CLASSES,
    "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "clothes", "computer", "cup",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light", "mountain",
    "mouse", "curtain", "platform", "sign", "plate", "road", "rock", "shelves", "sidewalk", "sky",
    "snow", "bedcloth", "track", "tree", "truck", "wall", "water", "window", "wood",
)  # fmt: skip
register_task("pascalcontext", NetMetadata(CONTEXT_NAMES, MEAN_BGR))
SPLITS = ("train", "val")
VAL_IMAGES = 5105
#: task-list names -> full-list names, where the two lists differ
TASK_NAME_IN_FULL_LIST = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}

LAYOUT = (
    "Expected <voc_root>/VOC2010/ with JPEGImages/<id>.jpg and ImageSets/Main/{train,val}.txt (PASCAL VOC 2010, "
    "VOCtrainval_03-May-2010.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/), and <context_root>/ with "
    "trainval/<id>.mat (variable 'LabelMap'), labels.txt and 59_labels.txt ('<id>: <name>' per line; the "
    "annotations trainval.tar.gz and the label lists from https://cs.stanford.edu/~roozbeh/pascal-context/)"
)


def read_label_list(path: Path) -> dict[int, str]:
    """A PASCAL-Context label list: id -> name without spaces ("12: dining table" -> {12: "diningtable"})."""
    text = read_text(path, "label list", DatasetError, LAYOUT)
    labels: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        if not sep or not key.strip().isdigit() or not name.strip():
            raise DatasetError(f"{path}:{number}: expected '<id>: <name>', found {line.strip()!r}")
        labels[int(key)] = name.replace(" ", "")
    if not labels:
        raise DatasetError(f"{path}: label list is empty")
    return labels


def task_lookup(full: dict[int, str], task: dict[int, str], where: Path) -> np.ndarray:
    """Full-list id -> task class (1..len(task), in the task list's order; 0 = background) as a lookup array."""
    by_name = {name: index for index, name in full.items()}
    lookup = np.zeros(max(full) + 1, dtype=np.int64)
    for position, name in enumerate(task.values(), start=1):
        full_name = TASK_NAME_IN_FULL_LIST.get(name, name)
        if full_name not in by_name:
            raise DatasetError(f"{where}: task class {name!r} is not in the full label list labels.txt")
        lookup[by_name[full_name]] = position
    return lookup


class PASCALContextSegmentation(SegmentationFiles):
    """PASCAL-Context images and 59-class labels (0 = background, 1..59) as `Sample`s.

    Args:
        voc_root: the folder holding VOC2010/ (usually VOCdevkit).
        context_root: the PASCAL-Context folder (trainval/, labels.txt, 59_labels.txt).
        split: train or val (VOC2010 ImageSets/Main).
        ids: replaces the split's id list.
    """

    def __init__(
        self, voc_root: str | Path, context_root: str | Path, split: str = "val", ids: list[str] | None = None
    ) -> None:
        if split not in SPLITS:
            raise DatasetError(f"PASCAL-Context split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(voc_root) / "VOC2010"
        self.context_root = Path(context_root)
        self.split = split
        require_dir(Path(voc_root), "VOC root folder", LAYOUT)
        require_dir(self.root, "VOC2010 folder", LAYOUT)
        require_dir(self.root / "JPEGImages", "VOC2010 JPEGImages folder", LAYOUT)
        require_dir(self.context_root / "trainval", "PASCAL-Context trainval folder", LAYOUT)
        task_path = self.context_root / "59_labels.txt"
        task = read_label_list(task_path)
        self.lookup = task_lookup(read_label_list(self.context_root / "labels.txt"), task, task_path)
        if ids is None:
            ids = load_ids(self.root / "ImageSets" / "Main" / f"{split}.txt")
        super().__init__(ids, len(task) + 1, "raise")

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.context_root / "trainval" / f"{image_id}.mat"

    def _decode_label(self, path: Path) -> np.ndarray:
        full = load_label_map(path, "LabelMap", LAYOUT)
        if full.min(initial=0) < 0 or full.max(initial=0) >= len(self.lookup):
            bad = full[(full < 0) | (full >= len(self.lookup))]
            raise DatasetError(
                f"{path}: LabelMap value {int(bad[0])} is not an id of labels.txt (0..{len(self.lookup) - 1})"
            )
        return self.lookup[full].astype(np.uint8)

    def to_input(self, rgb: np.ndarray) -> torch.Tensor:
        return bgr_minus_mean(rgb, MEAN_BGR)
