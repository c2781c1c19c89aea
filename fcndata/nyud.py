"""NYUDv2 in the authors' layout (nyud.tar.gz): the 40-class task of Gupta et al. (CVPR 2013).

Per image id (the numbers of the split lists): `data/images/img_<id>.png` (colour),
`data/depth/img_<id>.png` (the pre-processed, hole-filled depth), `data/hha/img_<id>.png`
(the HHA encoding of depth: horizontal disparity, height above ground, angle with
gravity) and `segmentation/img_<id>.mat` (variable `segmentation`: 0 = void, 1..40 the
classes). Splits: `train.txt`, `val.txt`, `test.txt` (654 images); `trainval` is
`trainval.txt` where the folder has one, else train followed by val.

Preprocessing, as the authors' NYUDSegDataLayer does it: colour RGB -> BGR minus
(116.190, 97.203, 92.318); depth -> log(depth) - 7.844, one channel; HHA minus
(132.431, 94.076, 118.477) in its stored channel order; labels 1..40 -> 0..39 and
void 0 -> 255.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from porting.metadata import NetMetadata
from prototxt.nets import NYUD_CLASSES as NUM_CLASSES

from .classes import register_task
from .errors import DatasetError
from .image import IGNORE_LABEL, load_ids, load_rgb, require_dir
from .mat import load_label_map
from .tops import TopsDataset, bgr_minus_mean, check_values

MEAN_COLOR_BGR = (116.190, 97.203, 92.318)
MEAN_HHA = (132.431, 94.076, 118.477)
MEAN_LOG_DEPTH = 7.844
SPLITS = ("train", "val", "trainval", "test")
TEST_IMAGES = 654
TOPS = ("color", "depth", "hha", "label")
#: the 40 classes in the nets' output order (the authors' data/nyud/classes.txt; label k + 1 in the files)
NYUD_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
# a net's mean is its first input's: colour (color, color-d, color-hha) or HHA (hha)
register_task("nyud", NetMetadata(NYUD_NAMES, MEAN_COLOR_BGR))
register_task("nyud-hha", NetMetadata(NYUD_NAMES, MEAN_HHA, features="HHA"))

LAYOUT = (
    "Expected <nyud_root>/ as the authors' nyud.tar.gz unpacks: data/images/img_<id>.png, data/depth/img_<id>.png, "
    "data/hha/img_<id>.png, segmentation/img_<id>.mat (variable 'segmentation', 0 = void, 1..40) and "
    "train.txt, val.txt, test.txt. Get it from http://dl.caffe.berkeleyvision.org/nyud.tar.gz (the 40-class "
    "task of Gupta et al., data from http://people.eecs.berkeley.edu/~sgupta/cvpr13/data.tgz)"
)
_FOLDERS = {"color": "data/images", "depth": "data/depth", "hha": "data/hha", "label": "segmentation"}


def split_ids(root: Path, split: str) -> list[str]:
    """The ids of a split: its list file; trainval falls back to train then val."""
    if split not in SPLITS:
        raise DatasetError(f"NYUDv2 split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = root / f"{split}.txt"
    if split == "trainval" and not path.is_file():
        return load_ids(root / "train.txt") + load_ids(root / "val.txt")
    return load_ids(path)


def _load_png(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image)
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} file not found. {LAYOUT}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable {what} PNG: {exc}") from None


class NYUDSegmentation(TopsDataset):
    """NYUDv2 examples with the tops the net asks for (`color`, `depth`, `hha`, `label`), in that order.

    Args:
        root: the nyud folder (see `LAYOUT`).
        split: train, val, trainval or test.
        tops: the tops per example, like the authors' layer's `tops` parameter.
        ids: replaces the split's id list.
    """

    TOPS = TOPS
    LABELS = frozenset({"label"})

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        tops: Sequence[str] = ("color", "label"),
        ids: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        require_dir(self.root, "NYUDv2 root folder", LAYOUT)
        if not (self.root / "data").is_dir() and (self.root / "nyud" / "data").is_dir():
            raise DatasetError(f"{self.root}: pass its nyud/ subfolder as the NYUDv2 root. {LAYOUT}")
        for top in tops:
            if top in _FOLDERS:
                require_dir(self.root / _FOLDERS[top], f"NYUDv2 {top} folder", LAYOUT)
        self.split = split
        super().__init__(ids if ids is not None else split_ids(self.root, split), tops)

    def top_path(self, top: str, image_id: str) -> Path:
        suffix = ".mat" if top == "label" else ".png"
        return self.root / _FOLDERS[top] / f"img_{image_id}{suffix}"

    def rgb(self, image_id: str) -> np.ndarray:
        return load_rgb(self.top_path("color", image_id))

    def load_top(self, top: str, image_id: str) -> np.ndarray:
        path = self.top_path(top, image_id)
        if top == "color":
            return bgr_minus_mean(load_rgb(path), MEAN_COLOR_BGR).numpy()
        if top == "hha":
            hha = _load_png(path, "HHA")
            if hha.ndim != 3 or hha.shape[2] != 3:
                raise DatasetError(f"{path}: HHA must be a 3-channel PNG, found shape {hha.shape}")
            return bgr_minus_mean(hha, MEAN_HHA, flip=False).numpy()
        if top == "depth":
            depth = _load_png(path, "depth")
            if depth.ndim != 2:
                raise DatasetError(f"{path}: depth must be a one-channel PNG, found shape {depth.shape}")
            if depth.min() <= 0:
                raise DatasetError(
                    f"{path}: depth has values <= 0 (its log is undefined); the authors' depth maps are hole-filled"
                )
            return (np.log(depth.astype(np.float32)) - np.float32(MEAN_LOG_DEPTH))[None]
        label = load_label_map(path, "segmentation", LAYOUT)
        check_values(label, range(NUM_CLASSES + 1), path, f"NYUDv2 'segmentation' holds 0 = void and 1..{NUM_CLASSES}")
        return np.where(label == 0, IGNORE_LABEL, label - 1).astype(np.int64)
