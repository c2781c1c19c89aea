"""Label maps as PNGs in the PASCAL VOC palette, image / label / prediction panels, overlays with a legend.

A label map whose ids fit in 8 bits (0..255) is written as VOC writes its labels, a palette
PNG; one with larger ids (a net of more than 256 classes) as a 16-bit grayscale PNG, which
`fcndata.image.load_png_label` (every label reader of the project) reads back as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcndata import voc_palette
from porting.errors import FcnError

#: The VOC colour map as a (256, 3) uint8 table: row i is the colour of class i.
PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(-1, 3)
#: the largest class id a label PNG holds: 16 bits
MAX_LABEL_ID = 2**16 - 1


def class_ids(label: np.ndarray) -> np.ndarray:
    """`label` as int64 class ids, checked to be 0..`MAX_LABEL_ID`.

    Raises:
        FcnError: an id is negative or needs more than 16 bits.
    """
    ids = np.asarray(label).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_LABEL_ID):
        raise FcnError(
            f"class ids {int(ids.min())}..{int(ids.max())}: label maps hold 0..{MAX_LABEL_ID} (at most 65536 classes)"
        )
    return ids


def class_colors(count: int) -> np.ndarray:
    """(max(count, 256), 3) uint8 RGB: the VOC colour map, extended past 256 classes."""
    return PALETTE if count <= len(PALETTE) else np.array(voc_palette(count), dtype=np.uint8).reshape(-1, 3)


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB in the VOC colour map (`class_colors`)."""
    ids = class_ids(label)
    return class_colors(int(ids.max()) + 1 if ids.size else 0)[ids]


def save_label_png(label: np.ndarray, path: str | Path) -> None:
    """Write a label map: ids 0..255 as an indexed PNG in the VOC palette (the format of VOC's
    SegmentationClass files), larger ids as a 16-bit grayscale PNG."""
    ids = class_ids(label)
    if ids.size and ids.max() > 255:
        Image.fromarray(ids.astype(np.uint16)).save(path)
        return
    image = Image.fromarray(ids.astype(np.uint8))
    image.putpalette(voc_palette())
    image.save(path)


def panel(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, gap: int = 4) -> np.ndarray:
    """Image, ground truth and prediction side by side (RGB uint8) separated by white gaps."""
    height, width = label.shape
    if image.shape[:2] != (height, width) or prediction.shape != (height, width):
        raise ValueError(
            f"panel parts differ in size: image {image.shape[:2]}, label {label.shape}, prediction {prediction.shape}"
        )
    out = np.full((height, 3 * width + 2 * gap, 3), 255, dtype=np.uint8)
    for slot, part in enumerate((np.asarray(image, dtype=np.uint8), colorize(label), colorize(prediction))):
        left = slot * (width + gap)
        out[:, left : left + width] = part
    return out


def save_panel(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, path: str | Path) -> None:
    Image.fromarray(panel(image, label, prediction)).save(path)


OVERLAY_ALPHA = 0.5  # weight of the class colour in the blend
_SWATCH = 12
_ROW = 16
_MARGIN = 6


def overlay(image: np.ndarray, label: np.ndarray, classes: Sequence[str], alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The image blended with its label's class colours, and a legend of the classes present at its right.

    Args:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) class indices; each present index must name a class in `classes`.
        classes: class names in index order.
        alpha: weight of the colours (0 = image only, 1 = colours only).
    Returns:
        An RGB image, the blend's width plus the legend's, at least as tall as the legend.
    """
    label = class_ids(label)
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    colors = class_colors(int(label.max()) + 1 if label.size else 0)
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colors[label].astype(np.float32)
    present = [int(c) for c in np.unique(label)]
    font = ImageFont.load_default()
    names = [classes[c] if c < len(classes) else f"class {c}" for c in present]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(int(measure.textlength(name, font=font)) for name in names)
    legend_width = _MARGIN * 3 + _SWATCH + text_width
    height, width = label.shape
    canvas = Image.new("RGB", (width + legend_width, max(height, _MARGIN * 2 + _ROW * len(present))), "white")
    canvas.paste(Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (index, name) in enumerate(zip(present, names)):
        top = _MARGIN + row * _ROW
        left = width + _MARGIN
        draw.rectangle(
            (left, top, left + _SWATCH - 1, top + _SWATCH - 1),
            fill=tuple(int(v) for v in colors[index]),
            outline="black",
        )
        draw.text((left + _SWATCH + _MARGIN, top), name, fill="black", font=font)
    return canvas
