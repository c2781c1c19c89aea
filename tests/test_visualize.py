"""eval.visualize against the palette and colours of VOC's own label file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import porting
from eval.visualize import PALETTE, colorize, overlay, panel, save_label_png, save_panel
from fcndata.folder import load_index_png
from fcndata.image import load_png_label


@pytest.fixture(scope="module")
def label_png(reference: Path) -> Path:
    """A real VOC label file (the authors' demo label), with VOC's palette stored in it."""
    return reference / "demo" / "label.png"


def test_palette_equals_the_one_stored_in_a_voc_label_file(label_png):
    stored = np.asarray(Image.open(label_png).getpalette(), dtype=np.uint8).reshape(-1, 3)
    assert stored.shape == (256, 3)
    np.testing.assert_array_equal(PALETTE, stored)


def test_colorize_matches_pillow_rendering_of_the_label_file(label_png):
    with Image.open(label_png) as image:
        label = np.array(image)
        rendered = np.array(image.convert("RGB"))
    np.testing.assert_array_equal(colorize(label), rendered)


def test_label_png_round_trip(tmp_path, label_png):
    label = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.uint8)
    save_label_png(label, tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.array(image), label)
        with Image.open(label_png) as voc:
            assert image.getpalette() == voc.getpalette()


def test_panel_places_image_label_and_prediction_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (5, 7)).astype(np.uint8)
    label[0] = 255
    prediction = rng.integers(0, 21, (5, 7)).astype(np.uint8)
    out = panel(image, label, prediction, gap=2)
    assert out.shape == (5, 3 * 7 + 2 * 2, 3)
    np.testing.assert_array_equal(out[:, :7], image)
    np.testing.assert_array_equal(out[:, 9:16], PALETTE[label])
    np.testing.assert_array_equal(out[:, 18:], PALETTE[prediction])
    assert (out[:, 7:9] == 255).all() and (out[:, 16:18] == 255).all()
    save_panel(image, label, prediction, tmp_path / "panel.png")
    with Image.open(tmp_path / "panel.png") as saved:
        assert saved.size == (3 * 7 + 2 * 4, 5)
    with pytest.raises(ValueError, match="differ in size"):
        panel(image, label, prediction[:, :6])


def test_more_than_256_classes_round_trip_through_a_16_bit_png(tmp_path):
    """A 300-class prediction keeps its ids: a 16-bit grayscale PNG (read here by OpenCV and by the
    project's own label reader), a distinct colour per class, and no wrap-around at 256."""
    label = np.arange(300, dtype=np.int64).reshape(15, 20)
    save_label_png(label, tmp_path / "p.png")
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED), label)
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "I;16"
    np.testing.assert_array_equal(load_png_label(tmp_path / "p.png"), label)
    np.testing.assert_array_equal(load_index_png(tmp_path / "p.png"), label)
    colours = colorize(label).reshape(-1, 3)
    assert len({tuple(colour) for colour in colours}) == 300
    np.testing.assert_array_equal(colours[:256], PALETTE)
    overlay(np.zeros((15, 20, 3), np.uint8), label, [f"class {i}" for i in range(300)])
    with pytest.raises(porting.FcnError, match="0..65535"):
        save_label_png(np.array([[70000]]), tmp_path / "q.png")
