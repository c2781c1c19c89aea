"""SIFT Flow (Liu et al.; the LMSun subset of Tighe and Lazebnik's SiftFlowDataset.zip) in its own layout.

Per image id: `Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg`,
`SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat` and
`GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat` (variable `S`
in both). Splits, from the authors' repository: `trainval.txt`, `test.txt` (200 images;
the two unannotated images are left out of both).

Preprocessing, as the authors' SIFTFlowSegDataLayer does it: RGB -> BGR minus
(114.578, 115.294, 108.353); semantic 1..33 -> 0..32 and void 0 -> 255; geometric
1..3 (sky, horizontal, vertical) -> 0..2 and void -1 (and 0) -> 255. Each example's tops
are `data`, `sem`, `geo`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from porting.metadata import NetMetadata
from prototxt.nets import SIFTFLOW_HEADS

from .classes import register_task
from .errors import DatasetError
from .image import IGNORE_LABEL, load_ids, load_rgb, require_dir
from .mat import load_label_map
from .tops import TopsDataset, bgr_minus_mean, check_values

SEMANTIC_CLASSES, GEOMETRIC_CLASSES = (head.num_classes for head in SIFTFLOW_HEADS)
MEAN_BGR = (114.578, 115.294, 108.353)
#: the semantic classes in the nets' output order (`score_sem`; the authors' data/sift-flow/classes.txt)
SEMANTIC_NAMES: tuple[str, ...] = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk", "desert",
    "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole", "river", "road",
    "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree", "window",
)  # fmt: skip
register_task("siftflow", NetMetadata(SEMANTIC_NAMES, MEAN_BGR))
SPLITS = ("trainval", "test")
TEST_IMAGES = 200
TOPS = ("data", "sem", "geo")
SUBFOLDER = "spatial_envelope_256x256_static_8outdoorcategories"

LAYOUT = (
    f"Expected <siftflow_root>/ with Images/{SUBFOLDER}/<id>.jpg, SemanticLabels/{SUBFOLDER}/<id>.mat and "
    f"GeoLabels/{SUBFOLDER}/<id>.mat (variable 'S': semantic 0 = void, 1..33; geometric -1 = void, 1..3) and the "
    "split lists trainval.txt and test.txt (from the authors' repository, data/sift-flow/). Get the data from "
    "http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip"
)
_FOLDERS = {"data": "Images", "sem": "SemanticLabels", "geo": "GeoLabels"}


class SIFTFlowSegmentation(TopsDataset):
    """SIFT Flow examples: `data` (float32 3xHxW), `sem` and `geo` labels (int64 HxW).

    Args:
        root: the SIFT Flow folder (see `LAYOUT`).
        split: trainval or test.
        ids: replaces the split's id list.
    """

    TOPS = TOPS
    LABELS = frozenset({"sem", "geo"})

    def __init__(self, root: str | Path, split: str = "test", ids: list[str] | None = None) -> None:
        if split not in SPLITS:
            raise DatasetError(f"SIFT Flow split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(root)
        require_dir(self.root, "SIFT Flow root folder", LAYOUT)
        for folder in _FOLDERS.values():
            require_dir(self.root / folder / SUBFOLDER, f"SIFT Flow {folder} folder", LAYOUT)
        self.split = split
        super().__init__(ids if ids is not None else load_ids(self.root / f"{split}.txt"), TOPS)

    def top_path(self, top: str, image_id: str) -> Path:
        suffix = ".jpg" if top == "data" else ".mat"
        return self.root / _FOLDERS[top] / SUBFOLDER / f"{image_id}{suffix}"

    def rgb(self, image_id: str) -> np.ndarray:
        return load_rgb(self.top_path("data", image_id))

    def load_top(self, top: str, image_id: str) -> np.ndarray:
        path = self.top_path(top, image_id)
        if top == "data":
            return bgr_minus_mean(self.rgb(image_id), MEAN_BGR).numpy()
        label = load_label_map(path, "S", LAYOUT)
        if top == "sem":
            check_values(
                label, range(SEMANTIC_CLASSES + 1), path, f"semantic 'S' holds 0 = void and 1..{SEMANTIC_CLASSES}"
            )
            return np.where(label == 0, IGNORE_LABEL, label - 1).astype(np.int64)
        check_values(
            label,
            [-1, *range(GEOMETRIC_CLASSES + 1)],
            path,
            f"geometric 'S' holds -1 = void and 1..{GEOMETRIC_CLASSES}",
        )
        return np.where(label <= 0, IGNORE_LABEL, label - 1).astype(np.int64)
