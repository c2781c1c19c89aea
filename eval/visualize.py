"""Label maps as PNGs in the PASCAL VOC palette, and image / label / prediction panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fcndata import voc_palette

#: The VOC colour map as a (256, 3) uint8 table: row i is the colour of class i.
PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(-1, 3)


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) class indices 0..255 -> (H, W, 3) uint8 RGB in the VOC palette."""
    return PALETTE[np.asarray(label, dtype=np.uint8)]


def save_label_png(label: np.ndarray, path: str | Path) -> None:
    """Write an indexed PNG in the VOC palette, the format of VOC's SegmentationClass files."""
    image = Image.fromarray(np.asarray(label, dtype=np.uint8))
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
