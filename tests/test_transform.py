"""The model's own input transform (`porting.transform`, `net.transform`): every input kind, against
OpenCV's `cv2.dnn.blobFromImage` on the image in BGR order (the Caffe convention computed independently)."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
from helpers import MEAN_BGR
from PIL import Image

import porting
import porting.models
from porting.transform import CaffeTransform
from prototxt import nets

HEIGHT, WIDTH = 5, 7


def asymmetric_rgb() -> np.ndarray:
    """An HxWx3 uint8 RGB image whose three channels all differ (R high, G middle, B low, plus a ramp)."""
    ramp = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH)
    return np.stack([200 + ramp, 90 + ramp, 10 + ramp], axis=2)


def opencv_blob(bgr: np.ndarray) -> np.ndarray:
    """OpenCV's Caffe-style preprocessing of a BGR image: 1x3xHxW float32, mean (B, G, R) subtracted."""
    return cv2.dnn.blobFromImage(np.ascontiguousarray(bgr), 1.0, (bgr.shape[1], bgr.shape[0]), MEAN_BGR, False, False)


RGB = asymmetric_rgb()  # values 10..234 (B of the first pixel .. R of the last)
EXPECTED = opencv_blob(RGB[:, :, ::-1])
TRANSFORM = CaffeTransform(MEAN_BGR)


def test_channel_0_is_blue_minus_the_blue_mean():
    x = TRANSFORM(Image.fromarray(RGB))
    # by hand: channel 0 is B - mean_B, channel 2 is R - mean_R (B is the low channel of this image)
    assert x[0, 0, 0, 0].item() == pytest.approx(10 - 104.00699, abs=1e-4)
    assert x[0, 2, 0, 0].item() == pytest.approx(200 - 122.67892, abs=1e-4)
    assert x[0, 1, 1, 2].item() == pytest.approx(90 + 9 - 116.66877, abs=1e-4)


@pytest.mark.parametrize(
    "kind, make",
    [
        ("PIL image", lambda: Image.fromarray(RGB)),
        ("HxWx3 uint8 array", lambda: RGB.copy()),
        ("3xHxW uint8 tensor", lambda: torch.from_numpy(RGB).permute(2, 0, 1)),
        ("HxWx3 uint8 tensor", lambda: torch.from_numpy(RGB.copy())),
    ],
)
def test_every_input_kind_gives_caffes_input(kind, make):
    x = TRANSFORM(make())
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 3, HEIGHT, WIDTH), kind
    np.testing.assert_allclose(x.numpy(), EXPECTED, atol=1e-4, rtol=0)


def test_bgr_arrays_and_tensors_declared_so():
    bgr = RGB[:, :, ::-1].copy()
    np.testing.assert_allclose(TRANSFORM(bgr, order="BGR").numpy(), EXPECTED, atol=1e-4, rtol=0)
    chw = torch.from_numpy(bgr).permute(2, 0, 1)
    np.testing.assert_allclose(TRANSFORM(chw, order="BGR").numpy(), EXPECTED, atol=1e-4, rtol=0)
    # the same BGR array taken as RGB (the default) swaps red and blue: the order matters
    assert not np.allclose(TRANSFORM(bgr).numpy(), EXPECTED, atol=1)


def test_batch_tensor():
    other = RGB[::-1].copy()
    batch = torch.from_numpy(np.stack([RGB, other])).permute(0, 3, 1, 2)
    x = TRANSFORM(batch)
    assert tuple(x.shape) == (2, 3, HEIGHT, WIDTH)
    np.testing.assert_allclose(x[1:].numpy(), opencv_blob(other[:, :, ::-1]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_pil_modes_are_converted_to_rgb(mode):
    image = Image.fromarray(RGB).convert(mode)
    rgb = np.asarray(image.convert("RGB"))
    np.testing.assert_allclose(TRANSFORM(image).numpy(), opencv_blob(rgb[:, :, ::-1]), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "image, expected",
    [
        (
            torch.from_numpy(RGB).permute(2, 0, 1).float() / 255,
            re.escape(f"float32 (values {10 / 255:g}..{234 / 255:g})") + r".*\* 255",
        ),
        (RGB.astype(np.float32), r"float32 \(values 10\.\.234\): .*scale \(0\.\.1 or 0\.\.255\) cannot be told"),
        (torch.from_numpy(RGB).long(), "dtype torch.int64: the model reads 8-bit pixels"),
        (np.zeros((4, 4, 4), np.uint8), r"shape \(4, 4, 4\): expected H x W x 3"),
        (torch.zeros(4, 5, 6, dtype=torch.uint8), r"shape \(4, 5, 6\): expected 3 x H x W"),
        (torch.zeros(3, 5, 3, dtype=torch.uint8), r"shape \(3, 5, 3\): both 3 x H x W and H x W x 3"),
        (torch.zeros(2, 4, 5, 6, dtype=torch.uint8), r"batch of shape \(2, 4, 5, 6\)"),
        (RGB.tolist(), "cannot read an image from a list"),
    ],
)
def test_inputs_that_cannot_be_caffes_convention_are_refused(image, expected):
    with pytest.raises(porting.FormatError, match=expected):
        TRANSFORM(image)


def test_order_is_checked_and_not_for_pil_images():
    with pytest.raises(porting.FormatError, match="channel order 'bgr'"):
        TRANSFORM(RGB, order="bgr")
    with pytest.raises(porting.FormatError, match="PIL image says its own channels"):
        TRANSFORM(Image.fromarray(RGB), order="BGR")


def test_net_transform_uses_the_nets_mean():
    net = porting.CaffeNet(nets.build("siftflow-fcn32s", "deploy", width=1 / 16), fill=False)
    net.metadata = porting.metadata.NetMetadata(mean=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(
        net.transform(RGB).numpy(), cv2.dnn.blobFromImage(RGB[:, :, ::-1].copy(), 1.0, None, (1, 2, 3)), atol=1e-5
    )


def test_net_transform_refuses_nets_it_cannot_serve():
    fusion = porting.CaffeNet(nets.build("nyud-fcn32s-color-hha", "deploy", width=1 / 16), fill=False)
    with pytest.raises(porting.FormatError, match=r"reads 2 inputs \(color, hha\)"):
        fusion.transform(RGB)
    plain = porting.CaffeNet(nets.build("voc-fcn32s", "deploy", width=1 / 16), fill=False)
    with pytest.raises(porting.FormatError, match="no 3-value input mean"):
        plain.transform(RGB)


def test_hha_nets_refuse_the_colour_transform(tmp_path):
    """The HHA net reads the HHA PNG's channels as stored (the authors' NYUDSegDataLayer.load_hha
    subtracts the mean with no channel swap), so the RGB -> BGR transform would feed it wrong
    input: it is refused, by the metadata the registry attaches and through a checkpoint too."""
    net = porting.CaffeNet(nets.build("nyud-fcn32s-hha", "deploy", width=1 / 16))
    net.metadata = porting.models.class_metadata(porting.models.get("nyud-fcn32s-hha"))
    assert net.metadata.features == "HHA"
    with pytest.raises(porting.FormatError, match="reads HHA features, not a colour image"):
        net.transform(RGB)
    path = tmp_path / "hha.pt"
    porting.save_checkpoint(net, path)
    with pytest.raises(porting.FormatError, match="reads HHA features"):
        porting.load(path).transform(RGB)
