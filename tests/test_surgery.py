"""Weight surgery: the bilinear kernel against hand values and linear interpolation,
transplant against numpy reshapes and against the InnerProduct it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import porting
from porting.errors import ShapeMismatchError
from porting.prototxt import parse_prototxt
from porting.surgery import bilinear_kernel, set_bilinear_upsampling, transplant


def test_bilinear_kernel_4x4_hand_values() -> None:
    # k = 4: factor 2, center 1.5, taps 1 - |x - 1.5| / 2 = 1/4, 3/4, 3/4, 1/4
    taps = np.array([0.25, 0.75, 0.75, 0.25])
    expected_2d = np.array(
        [
            [0.0625, 0.1875, 0.1875, 0.0625],
            [0.1875, 0.5625, 0.5625, 0.1875],
            [0.1875, 0.5625, 0.5625, 0.1875],
            [0.0625, 0.1875, 0.1875, 0.0625],
        ]
    )
    assert np.allclose(np.outer(taps, taps), expected_2d)
    weight = bilinear_kernel(3, 4)
    assert weight.shape == (3, 3, 4, 4) and weight.dtype == np.float32
    for i in range(3):
        for j in range(3):
            assert np.array_equal(weight[i, j], expected_2d if i == j else np.zeros((4, 4)))


def test_bilinear_kernel_odd_size_hand_values() -> None:
    # k = 3: factor 2, center 1, taps 1/2, 1, 1/2
    expected = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    assert np.array_equal(bilinear_kernel(1, 3)[0, 0], expected)


@pytest.mark.parametrize("stride", [2, 3, 4, 8])
def test_bilinear_deconvolution_is_linear_interpolation(stride: int) -> None:
    """Kernel 2s, stride s: output o sits at input coordinate (o - s + 0.5) / s."""
    rng = np.random.default_rng(stride)
    channels, h, w = 2, 5, 7
    x = rng.normal(size=(channels, h, w))
    y = F.conv_transpose2d(
        torch.tensor(x[None], dtype=torch.float64),
        torch.tensor(bilinear_kernel(channels, 2 * stride), dtype=torch.float64),
        stride=stride,
    )[0].numpy()
    rows = np.arange(stride, h * stride)
    cols = np.arange(stride, w * stride)
    u_rows = (rows - stride + 0.5) / stride
    u_cols = (cols - stride + 0.5) / stride
    for c in range(channels):
        along_cols = np.stack([np.interp(u_cols, np.arange(w), x[c, r]) for r in range(h)])
        expected = np.stack([np.interp(u_rows, np.arange(h), along_cols[:, k]) for k in range(len(cols))], axis=1)
        assert np.allclose(y[c][np.ix_(rows, cols)], expected, atol=1e-6)


DECONV_NET = """
layer {{ name: "input" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: 4 dim: 5 }} }} }}
layer {{ name: "up" type: "Deconvolution" bottom: "data" top: "up"
  convolution_param {{ num_output: 3 bias_term: false kernel_size: 4 stride: 2 {group}
    weight_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "up2" type: "Deconvolution" bottom: "data" top: "up2"
  convolution_param {{ num_output: 3 kernel_size: 4 stride: 2 weight_filler {{ type: "gaussian" std: 1 }} }} }}
"""


@pytest.mark.parametrize("group", ["", "group: 3"])
def test_set_bilinear_upsampling_sets_named_deconvolutions(group: str) -> None:
    torch.manual_seed(0)
    net = porting.CaffeNet(parse_prototxt(DECONV_NET.format(group=group)), phase="TEST")
    before = {name: blobs[0].copy() for name, blobs in net.blobs_numpy().items()}
    assert set_bilinear_upsampling(net, ["up"]) == ["up"]
    filt = bilinear_kernel(1, 4)[0, 0]
    if group:  # one filter per channel: all of them bilinear, each channel upsampled on its own
        x = torch.randn(1, 3, 4, 5)
        expected = F.conv_transpose2d(x, torch.from_numpy(np.repeat(filt[None, None], 3, 0)), stride=2, groups=3)
        assert torch.allclose(net(x)["up"], expected, atol=1e-6)
    else:  # channel i -> i bilinear; the other entries keep their (here random) values, as interp leaves them
        _assert_diagonal_set(net.blobs_numpy()["up"][0], before["up"], filt)
    assert np.array_equal(net.blobs_numpy()["up2"][0], before["up2"])
    assert set_bilinear_upsampling(net) == ["up", "up2"]
    _assert_diagonal_set(net.blobs_numpy()["up2"][0], before["up2"], filt)


def _assert_diagonal_set(weight: np.ndarray, before: np.ndarray, filt: np.ndarray) -> None:
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            assert np.array_equal(weight[i, j], filt if i == j else before[i, j]), (i, j)
    assert before[0, 1].any()  # the kept entries were not zero to begin with


def test_set_bilinear_upsampling_rejects_other_layers() -> None:
    net = porting.CaffeNet(parse_prototxt(DECONV_NET.format(group="")), phase="TEST")
    with pytest.raises(ValueError, match="input"):
        set_bilinear_upsampling(net, ["input"])


CLASSIFIER = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: MAX kernel_size: 4 stride: 4 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool" top: "fc6"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.3 } } }
"""

FULLY_CONVOLUTIONAL = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: MAX kernel_size: 4 stride: 4 } }
layer { name: "fc6" type: "Convolution" bottom: "pool" top: "fc6" convolution_param { num_output: 5 kernel_size: 2 } }
layer { name: "fc7" type: "Convolution" bottom: "fc6" top: "fc7" convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "score" type: "Convolution" bottom: "fc7" top: "score" convolution_param { num_output: 3 kernel_size: 1 } }
"""


def _nets() -> tuple[porting.CaffeNet, porting.CaffeNet]:
    torch.manual_seed(1)
    return (
        porting.CaffeNet(parse_prototxt(CLASSIFIER), phase="TEST"),
        porting.CaffeNet(parse_prototxt(FULLY_CONVOLUTIONAL), phase="TEST"),
    )


def test_transplant_coerces_inner_product_into_convolution() -> None:
    classifier, fcn = _nets()
    source = {name: [np.array(blob) for blob in blobs] for name, blobs in classifier.blobs_numpy().items()}
    report = transplant(fcn, source)
    after = fcn.blobs_numpy()
    assert np.array_equal(after["fc6"][0], source["fc6"][0].reshape(5, 4, 2, 2))
    assert np.array_equal(after["fc7"][0], source["fc7"][0].reshape(6, 5, 1, 1))
    for name in ("conv1", "fc6", "fc7"):
        assert np.array_equal(after[name][1], source[name][1])
    assert np.array_equal(after["conv1"][0], source["conv1"][0])
    assert report.copied == ["conv1.0", "conv1.1", "fc6.1", "fc7.1"]
    assert report.coerced == ["fc6.0 (5, 16) -> (5, 4, 2, 2)", "fc7.0 (6, 5) -> (6, 5, 1, 1)"]
    assert report.skipped == ["fc8 (not in the net)"]
    assert report.untouched == ["score"]
    # Caffe's default filler (constant 0): the new score layer stays zero.
    assert not after["score"][0].any() and not after["score"][1].any()
    # The fully convolutional net computes the classifier's fc7 at its single position.
    x = torch.randn(2, 3, 8, 8)
    fc7 = fcn.trace(x)["fc7"]
    assert fc7.shape == (2, 6, 1, 1)
    assert torch.allclose(fc7[:, :, 0, 0], classifier.trace(x)["fc7"], atol=1e-5)


def test_transplant_accepts_legacy_dims_and_reports_misfits() -> None:
    classifier, fcn = _nets()
    blobs = classifier.blobs_numpy()
    source = {
        "fc6": [blobs["fc6"][0].reshape(1, 1, 5, 16), blobs["fc6"][1].reshape(1, 1, 1, 5)],
        "conv1": [np.ones((4, 3, 5, 5), np.float32), np.ones(4, np.float32)],
        "fc7": [blobs["fc7"][0], blobs["fc7"][1], np.ones(3, np.float32)],
    }
    before = fcn.blobs_numpy()["conv1"][0].copy()
    report = transplant(fcn, source)
    after = fcn.blobs_numpy()
    assert np.array_equal(after["fc6"][0], blobs["fc6"][0].reshape(5, 4, 2, 2))
    assert np.array_equal(after["fc6"][1], blobs["fc6"][1])
    assert np.array_equal(after["conv1"][0], before)
    assert np.array_equal(after["conv1"][1], np.ones(4))
    assert "fc6.1" in report.copied
    assert any(line.startswith("fc6.0 (1, 1, 5, 16) -> (5, 4, 2, 2)") for line in report.coerced)
    assert "conv1.0 ((4, 3, 5, 5) cannot become (4, 3, 3, 3))" in report.skipped
    assert any(line.startswith("fc7.2 ") for line in report.skipped)
    assert report.untouched == ["score"]
    assert any(line.startswith("skipped: ") for line in report.lines())


def test_set_bilinear_upsampling_rejects_non_square_kernels() -> None:
    text = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
  convolution_param { num_output: 2 bias_term: false kernel_h: 4 kernel_w: 2 stride: 2 } }
"""
    net = porting.CaffeNet(parse_prototxt(text), phase="TEST")
    with pytest.raises(ShapeMismatchError, match="square"):
        set_bilinear_upsampling(net)
