"""Label maps as PNGs in the PASCAL VOC palette, and image / label / prediction panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The VOC colour map, (num_colors, 3) uint8, by the devkit's bit-interleaving rule.

    Bits 0, 1, 2 of a class index go to the most significant bit of R, G, B; bits 3, 4, 5
    to the next one down, and so on (class 1 is dark red, 15 is person pink, 255 cream).
    """
    index = np.arange(num_colors, dtype=np.int64)
    palette = np.zeros((num_colors, 3), dtype=np.int64)
    for level in range(8):
        for channel in range(3):
            bit = (index >> (3 * level + channel)) & 1
            palette[:, channel] |= bit << (7 - level)
    return palette.astype(np.uint8)


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) class indices 0..255 -> (H, W, 3) uint8 RGB in the VOC palette."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]


def save_label_png(label: np.ndarray, path: str | Path) -> None:
    """Write an indexed PNG in the VOC palette, the format of VOC's SegmentationClass files."""
    image = Image.fromarray(np.asarray(label, dtype=np.uint8))
    image.putpalette(voc_palette().reshape(-1).tolist())
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
