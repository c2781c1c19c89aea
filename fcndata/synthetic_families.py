"""Small synthetic PASCAL-Context, NYUDv2 and SIFT Flow folders in the real on-disk formats.

Each writer lays out the files exactly as its dataset module expects them (JPEG/PNG
images, MATLAB label files written by scipy.io.savemat, the split lists), with the
scenes of `fcndata.synthetic` (one texture and shape per class, so a small net can
learn them). Same arguments -> the same images and labels.

- PASCAL-Context: labels are stored as ids of a full label list (`labels.txt`), the task
  list (`59_labels.txt`) uses the authors' three differing spellings, and background is
  drawn from full-list labels outside the task, so the mapping is exercised.
- NYUDv2: colour, 16-bit depth (millimetres, always positive), HHA and `segmentation`;
  train/val/test lists (no trainval.txt: the loader joins train and val).
- SIFT Flow: semantic labels 0..33 and geometric labels derived from them (-1 on void);
  the `absent` semantic classes never appear in the test split, as cow, desert and moon
  are absent from the real one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from prototxt.nets import PASCALCONTEXT_CLASSES

from . import nyud, pascalcontext, siftflow
from .synthetic import _encode_jpeg, _scene, _write, _write_list

#: the synthetic full list: task classes plus as many other labels, spelled as in labels.txt
_OTHER_LABELS = 20


def _encode_mat(variable: str, array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {variable: array}, do_compression=True)
    return buffer.getvalue()


def _encode_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _ids(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}{start + index:04d}" for index in range(count)]


@dataclass(frozen=True)
class ContextPaths:
    voc_root: Path  # holds VOC2010/
    context_root: Path  # trainval/, labels.txt, 59_labels.txt


def synthetic_label_lists(task_classes: int = PASCALCONTEXT_CLASSES - 1) -> tuple[list[str], list[str]]:
    """(full list, task list) of made-up names; the task list ends with the authors' three
    differing spellings, the full list has their full-list forms and other labels."""
    plain = [f"thing {index}" for index in range(task_classes - len(pascalcontext.TASK_NAME_IN_FULL_LIST))]
    task = [*plain, *pascalcontext.TASK_NAME_IN_FULL_LIST]
    others = [f"other {index}" for index in range(_OTHER_LABELS)]
    full = sorted([*plain, *pascalcontext.TASK_NAME_IN_FULL_LIST.values(), *others])
    return full, task


def write_pascalcontext(
    root: str | Path,
    *,
    n_train: int = 12,
    n_val: int = 6,
    size: tuple[int, int] = (40, 64),
    seed: int = 0,
    labels: tuple[Sequence[str], Sequence[str]] | None = None,
) -> ContextPaths:
    """Write VOCdevkit/VOC2010 and pascal-context/ under `root`.

    Args:
        labels: (full list, task list) of names, e.g. the real labels.txt / 59_labels.txt names;
            default `synthetic_label_lists()`.
    """
    root = Path(root)
    full, task = labels or synthetic_label_lists()
    voc_root, context_root = root / "VOCdevkit", root / "pascal-context"
    _write(context_root / "labels.txt", "".join(f"{i}: {name}\n" for i, name in enumerate(full, 1)).encode())
    _write(context_root / "59_labels.txt", "".join(f"{i}: {name}\n" for i, name in enumerate(task, 1)).encode())
    full_id = {name.replace(" ", ""): index for index, name in enumerate(full, 1)}
    task_ids = [full_id[pascalcontext.TASK_NAME_IN_FULL_LIST.get(n.replace(" ", ""), n.replace(" ", ""))] for n in task]
    others = np.array(sorted(set(full_id.values()) - set(task_ids)) or [0])
    ids = {"train": _ids("2008_", n_train), "val": _ids("2009_", n_val)}
    for split, split_ids in ids.items():
        for index, image_id in enumerate(split_ids):
            rng = np.random.default_rng([seed, index, len(split)])
            rgb, label = _scene(rng, size, len(task) + 1)
            stored = np.where(label == 0, rng.choice(others, size=label.shape), np.array([0, *task_ids])[label])
            _write(voc_root / "VOC2010" / "JPEGImages" / f"{image_id}.jpg", _encode_jpeg(rgb))
            _write(context_root / "trainval" / f"{image_id}.mat", _encode_mat("LabelMap", stored.astype(np.uint16)))
        _write_list(voc_root / "VOC2010" / "ImageSets" / "Main" / f"{split}.txt", split_ids)
    return ContextPaths(voc_root, context_root)


def write_nyud(
    root: str | Path,
    *,
    n_train: int = 8,
    n_val: int = 4,
    n_test: int = 6,
    size: tuple[int, int] = (40, 64),
    seed: int = 0,
) -> Path:
    """Write the nyud folder (the authors' nyud.tar.gz layout) under `root`; returns it."""
    folder = Path(root) / "nyud"
    counts = {"train": n_train, "val": n_val, "test": n_test}
    start = 5000
    for split, count in counts.items():
        split_ids = [str(start + index) for index in range(count)]
        start += count
        for image_id in split_ids:
            rng = np.random.default_rng([seed, int(image_id)])
            rgb, label = _scene(rng, size, nyud.NUM_CLASSES + 1)
            depth = 800 + 150 * label.astype(np.int64) + rng.integers(0, 40, label.shape)
            code = label.astype(np.int64)
            hha = np.stack([code * 6, 255 - code * 5, (code * 37) % 256], axis=-1).astype(np.uint8)
            _write(folder / "data" / "images" / f"img_{image_id}.png", _encode_png(rgb))
            _write(folder / "data" / "depth" / f"img_{image_id}.png", _encode_png(depth.astype(np.uint16)))
            _write(folder / "data" / "hha" / f"img_{image_id}.png", _encode_png(hha))
            _write(folder / "segmentation" / f"img_{image_id}.mat", _encode_mat("segmentation", label))
        _write_list(folder / f"{split}.txt", split_ids)
    return folder


#: semantic class -> geometric class (1 sky, 2 horizontal, 3 vertical) of the synthetic SIFT Flow
def _geometric(semantic: np.ndarray) -> np.ndarray:
    semantic = semantic.astype(np.int64)
    return np.where(semantic == 0, -1, 1 + semantic % siftflow.GEOMETRIC_CLASSES)


def write_siftflow(
    root: str | Path,
    *,
    n_trainval: int = 12,
    n_test: int = 6,
    size: tuple[int, int] = (40, 64),
    seed: int = 0,
    absent: Sequence[int] = (9, 11, 16),
) -> Path:
    """Write the SIFT Flow folder under `root`; returns it. `absent`: semantic classes (1..33) kept out of test."""
    folder = Path(root) / "sift-flow"
    sub = siftflow.SUBFOLDER
    for split, count in (("trainval", n_trainval), ("test", n_test)):
        split_ids = _ids(f"{split}_", count)
        for index, image_id in enumerate(split_ids):
            rng = np.random.default_rng([seed, index, len(split)])
            rgb, label = _scene(rng, size, siftflow.SEMANTIC_CLASSES + 1)
            if split == "test":
                label = np.where(np.isin(label, absent), 0, label).astype(np.uint8)
            _write(folder / "Images" / sub / f"{image_id}.jpg", _encode_jpeg(rgb))
            _write(folder / "SemanticLabels" / sub / f"{image_id}.mat", _encode_mat("S", label.astype(np.int32)))
            _write(folder / "GeoLabels" / sub / f"{image_id}.mat", _encode_mat("S", _geometric(label).astype(np.int32)))
        _write_list(folder / f"{split}.txt", split_ids)
    return folder
