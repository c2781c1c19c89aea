"""A deterministic synthetic PASCAL VOC + SBD written in the real on-disk formats.

It lets the whole pipeline (loaders, seg11valid rule, training, eval) run without the
real data: the same files, list files and split arithmetic, only smaller. Each object
class has its own shape (rectangle, ellipse, triangle), colour and stripe texture, and
the background its own low-contrast texture, so a small CNN can learn the classes.

Id sets (lists are written sorted, like VOC's), with o = n_val // 3:
  VOC2011 seg val = n_val ids, o of which are also in SBD train, so
  seg11valid = VOC2011 seg val minus SBD train = n_val - o images;
  SBD train = n_train ids; SBD val = every other seg11valid id plus a few of its own;
  VOC2011 seg train = every other SBD-train-only id; VOC2012 = VOC2011 plus a few ids.
VOC labels carry a void (255) band along object outlines, as VOC's do; SBD labels,
like SBD's, have none.

Same arguments -> byte-identical files (fixed JPEG quality, fixed .mat header).
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image, ImageDraw

from prototxt.voc import NUM_CLASSES

from .image import IGNORE_LABEL, voc_palette

JPEG_QUALITY = 90
VOID_RADIUS = 1
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: fcndata.synthetic"


@dataclass(frozen=True)
class SyntheticPaths:
    voc_root: Path  # holds VOC2011/ and VOC2012/
    sbd_root: Path  # SBD's dataset/ folder
    seg11valid_count: int  # n_val - n_val // 3, by construction


@dataclass(frozen=True)
class _Splits:
    voc2011_train: list[str]
    voc2011_val: list[str]
    voc2012_train: list[str]
    voc2012_val: list[str]
    sbd_train: list[str]
    sbd_val: list[str]


def write_synthetic(
    root: str | Path,
    *,
    n_train: int = 300,
    n_val: int = 96,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
    shapes: Sequence[tuple[int, int]] = (),
) -> SyntheticPaths:
    """Write the dataset under `root` (VOCdevkit/ and sbd/dataset/) and return its roots.

    n_train: SBD train images; n_val: VOC2011 seg val images; size: (min, max) side
    length in pixels, each image's height and width drawn independently in that range;
    shapes: when given, image i is (height, width) shapes[i % len(shapes)] instead, e.g.
    VOC's usual ((375, 500), (500, 375)).
    """
    if n_val < 3 or n_train < n_val // 3 or n_train < 1:
        raise ValueError(f"need n_val >= 3 and n_train >= n_val // 3, got n_train={n_train}, n_val={n_val}")
    if not 2 <= num_classes <= 255 or not 8 <= size[0] <= size[1]:
        raise ValueError(f"need 2 <= num_classes <= 255 and 8 <= size[0] <= size[1], got {num_classes}, {size}")
    root = Path(root)
    splits, all_ids = _make_splits(n_train, n_val, seed)
    voc_root = root / "VOCdevkit"
    sbd_root = root / "sbd" / "dataset"
    voc_ids = {
        "2011": set(splits.voc2011_train + splits.voc2011_val),
        "2012": set(splits.voc2012_train + splits.voc2012_val),
    }
    sbd_ids = set(splits.sbd_train + splits.sbd_val)
    for index, image_id in enumerate(all_ids):
        shape = shapes[index % len(shapes)] if shapes else None
        rgb, label = _scene(np.random.default_rng([seed, index]), size, num_classes, shape)
        jpeg = _encode_jpeg(rgb)
        for year, listed in voc_ids.items():
            if image_id in listed:
                year_root = voc_root / f"VOC{year}"
                _write(year_root / "JPEGImages" / f"{image_id}.jpg", jpeg)
                _write(year_root / "SegmentationClass" / f"{image_id}.png", _encode_png(_with_void(label)))
        if image_id in sbd_ids:
            _write(sbd_root / "img" / f"{image_id}.jpg", jpeg)
            _write(sbd_root / "cls" / f"{image_id}.mat", _encode_mat(label, num_classes))
    for year, train, val in (
        ("2011", splits.voc2011_train, splits.voc2011_val),
        ("2012", splits.voc2012_train, splits.voc2012_val),
    ):
        lists = voc_root / f"VOC{year}" / "ImageSets" / "Segmentation"
        _write_list(lists / "train.txt", train)
        _write_list(lists / "val.txt", val)
        _write_list(lists / "trainval.txt", sorted(train + val))
    _write_list(sbd_root / "train.txt", splits.sbd_train)
    _write_list(sbd_root / "val.txt", splits.sbd_val)
    return SyntheticPaths(voc_root, sbd_root, n_val - n_val // 3)


def _make_splits(n_train: int, n_val: int, seed: int) -> tuple[_Splits, list[str]]:
    """Disjoint id pools, interleaved in sorted order by a seeded permutation."""
    overlap = n_val // 3
    extra = max(1, n_val // 8)
    sizes = {
        "valid": n_val - overlap,  # VOC2011 val only: seg11valid
        "overlap": overlap,  # VOC2011 val and SBD train
        "sbd_train": n_train - overlap,
        "sbd_val": max(1, n_val // 4),
        "voc12_train": extra,
        "voc12_val": extra,
    }
    total = sum(sizes.values())
    ids = [f"{2007 + 5 * i // total}_{i:06d}" for i in range(total)]
    order = np.random.default_rng([seed, 2**31]).permutation(total)
    pools: dict[str, list[str]] = {}
    start = 0
    for name, count in sizes.items():
        pools[name] = sorted(ids[k] for k in order[start : start + count])
        start += count
    voc2011_train = pools["sbd_train"][::2]
    voc2011_val = sorted(pools["valid"] + pools["overlap"])
    splits = _Splits(
        voc2011_train=voc2011_train,
        voc2011_val=voc2011_val,
        voc2012_train=sorted(voc2011_train + pools["voc12_train"]),
        voc2012_val=sorted(voc2011_val + pools["voc12_val"]),
        sbd_train=sorted(pools["overlap"] + pools["sbd_train"]),
        sbd_val=sorted(pools["valid"][::2] + pools["sbd_val"]),
    )
    return splits, ids


def _class_look(c: int, num_classes: int) -> tuple[np.ndarray, float, float]:
    """Class c's colour, stripe angle and stripe period: fixed per class, independent of the seed."""
    hue = (c - 1) / (num_classes - 1)
    value = 0.95 if c % 2 else 0.65
    colour = np.array(colorsys.hsv_to_rgb(hue, 0.85, value)) * 255.0
    angle = math.radians((c * 47) % 180)
    period = 4.0 + 2.0 * (c % 5)
    return colour, angle, period


def _stripes(h: int, w: int, angle: float, period: float, phase: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period + phase)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Class 0: grey with soft, broad blotches, unlike any object's saturated stripes."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    blotches = np.zeros((h, w))
    for _ in range(3):
        fy, fx = rng.uniform(0.02, 0.08, 2)
        blotches += np.sin(2 * math.pi * (fy * y + fx * x) + rng.uniform(0, 2 * math.pi))
    grey = 125.0 + 12.0 * blotches + rng.normal(0, 5, (h, w))
    tint = np.array([1.0, 1.02, 0.95])
    return grey[:, :, None] * tint


def _shape_mask(kind: int, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    side = min(h, w)
    bh, bw = rng.integers(int(0.3 * side), int(0.6 * side) + 1, 2)
    top = int(rng.integers(-bh // 4, h - 3 * bh // 4 + 1))
    left = int(rng.integers(-bw // 4, w - 3 * bw // 4 + 1))
    box = (left, top, left + int(bw) - 1, top + int(bh) - 1)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == 0:
        draw.rectangle(box, fill=1)
    elif kind == 1:
        draw.ellipse(box, fill=1)
    else:
        draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=1)
    return np.asarray(canvas, dtype=bool)


def _scene(
    rng: np.random.Generator, size: tuple[int, int], num_classes: int, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 HxWx3 RGB) and its label (uint8 HxW, no void), `shape` or a size drawn from `size`."""
    h, w = shape if shape is not None else (int(v) for v in rng.integers(size[0], size[1] + 1, 2))
    rgb = _background(rng, h, w)
    label = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        c = int(rng.integers(1, num_classes))
        mask = _shape_mask(c % 3, rng, h, w)
        colour, angle, period = _class_look(c, num_classes)
        texture = colour + 45.0 * _stripes(h, w, angle, period, rng.uniform(0, 2 * math.pi))[:, :, None]
        rgb[mask] = texture[mask]
        label[mask] = c
    rgb += rng.normal(0, 4, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), label


def _with_void(label: np.ndarray) -> np.ndarray:
    """VOC-style ground truth: pixels within VOID_RADIUS of a class change become 255."""
    r = VOID_RADIUS
    padded = np.pad(label, r, mode="edge")
    h, w = label.shape
    edge = np.zeros(label.shape, dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            edge |= padded[r + dy : r + dy + h, r + dx : r + dx + w] != label
    return np.where(edge, np.uint8(IGNORE_LABEL), label)


def _boundaries(label: np.ndarray, num_classes: int) -> np.ndarray:
    """SBD's GTcls.Boundaries: one sparse logical map per object class (a MATLAB cell column)."""
    cells = np.empty((num_classes - 1, 1), dtype=object)
    for c in range(1, num_classes):
        inside = label == c
        outline = inside & (_with_void(inside.astype(np.uint8)) == IGNORE_LABEL)
        cells[c - 1, 0] = scipy.sparse.csc_matrix(outline)
    return cells


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _encode_png(label: np.ndarray) -> bytes:
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(voc_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _encode_mat(label: np.ndarray, num_classes: int) -> bytes:
    """SBD cls/<id>.mat: struct GTcls {Boundaries, Segmentation, CategoriesPresent}.

    scipy stamps the creation time into the 116-byte text header; we replace it so
    the files are reproducible byte for byte.
    """
    present = np.array([c for c in np.unique(label) if c != 0], dtype=np.uint8).reshape(-1, 1)
    gtcls = {"Boundaries": _boundaries(label, num_classes), "Segmentation": label, "CategoriesPresent": present}
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"GTcls": gtcls}, do_compression=True)
    data = buffer.getvalue()
    return _MAT_HEADER.ljust(116) + data[116:]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_list(path: Path, ids: list[str]) -> None:
    _write(path, "".join(f"{i}\n" for i in ids).encode("ascii"))


def write_synthetic_folder(
    root: str | Path,
    *,
    n_train: int = 24,
    n_val: int = 8,
    size: tuple[int, int] = (64, 96),
    class_names: tuple[str, ...] = ("background", "square", "disc", "wedge"),
    seed: int = 0,
) -> Path:
    """A `folder:` dataset (fcndata.folder) with splits train and val; returns `root`.

    Scenes as in `write_synthetic` with one class per name (0 = the background texture),
    a void (255) band along outlines; labels are palette PNGs for even ids and one-channel
    PNGs for odd ones, so both kinds a user may have are read.
    """
    root = Path(root)
    num_classes = len(class_names)
    if not 2 <= num_classes <= 255:
        raise ValueError(f"need 2..255 class names, got {num_classes}")
    _write(root / "classes.txt", "".join(f"{name}\n" for name in class_names).encode("utf-8"))
    for split, count, offset in (("train", n_train, 0), ("val", n_val, n_train)):
        for index in range(count):
            rgb, label = _scene(np.random.default_rng([seed, offset + index]), size, num_classes)
            image_id = f"{split}_{index:04d}"
            _write(root / "images" / split / f"{image_id}.jpg", _encode_jpeg(rgb))
            voided = _with_void(label)
            png = _encode_png(voided) if index % 2 == 0 else _encode_gray_png(voided)
            _write(root / "labels" / split / f"{image_id}.png", png)
    return root


#: ADE20K annotation value of each scene class of the synthetic release (scene class 0, the background, is 1).
ADE20K_SCENE_VALUES = (1, 3, 13, 21, 37, 88)


def write_synthetic_ade20k(
    root: str | Path, *, n_train: int = 24, n_val: int = 8, size: tuple[int, int] = (64, 96), seed: int = 0
) -> Path:
    """An ADE20K release folder (fcndata.ade20k) in the real layout; returns `root`.

    objectInfo150.txt lists 150 made-up names in the release's format; scenes use the
    classes of `ADE20K_SCENE_VALUES` (the background texture is class 1) and outlines
    carry the release's 0 ("other objects"), which training ignores.
    """
    root = Path(root)
    lines = ["Idx\tRatio\tTrain\tVal\tName"]
    lines += [f"{i}\t{1 / (i + 10):.4f}\t{2000 // i}\t{200 // i}\tsynthetic {i}, thing {i}" for i in range(1, 151)]
    _write(root / "objectInfo150.txt", ("\n".join(lines) + "\n").encode("ascii"))
    values = np.zeros(256, dtype=np.uint8)  # scene class -> annotation value; void (255) -> 0
    values[: len(ADE20K_SCENE_VALUES)] = ADE20K_SCENE_VALUES
    for split, prefix, count, offset in (
        ("training", "ADE_train", n_train, 0),
        ("validation", "ADE_val", n_val, n_train),
    ):
        for index in range(count):
            rgb, label = _scene(np.random.default_rng([seed, 7, offset + index]), size, len(ADE20K_SCENE_VALUES))
            image_id = f"{prefix}_{index + 1:08d}"
            _write(root / "images" / split / f"{image_id}.jpg", _encode_jpeg(rgb))
            _write(root / "annotations" / split / f"{image_id}.png", _encode_gray_png(values[_with_void(label)]))
    return root


def _encode_gray_png(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(label, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
