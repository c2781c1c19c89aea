"""Coordinate maps against what torch's own conv / pool / transposed conv compute, and the
crop offsets of the authors' nets derived from their graphs."""

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from porting.errors import PrototxtError
from porting.prototxt import parse_prototxt, read_prototxt
from prototxt import fcn
from prototxt.coordmap import AxisMap, crop, crop_params, layer_map
from prototxt.netspec import NetSpec, from_proto, layers

SIZE = 41


def _map_of(top) -> AxisMap:
    maps = layer_map(top.layer.param)
    assert maps[0] == maps[1]
    return maps[0]


def _ramp(size: int) -> torch.Tensor:
    """A 1 x 1 x size x size image whose value is the column index."""
    return torch.arange(size, dtype=torch.float64).expand(size, size).reshape(1, 1, size, size).clone()


@pytest.mark.parametrize(
    "kernel,stride,pad,dilation", [(3, 1, 1, 1), (7, 1, 0, 1), (4, 2, 3, 1), (3, 2, 100, 1), (3, 1, 2, 2), (5, 3, 1, 2)]
)
def test_convolution_maps_each_output_to_its_window_centre(kernel, stride, pad, dilation):
    data = layers.Input(shape=dict(dim=[1, 1, SIZE, SIZE]))
    conv = layers.Convolution(data, num_output=1, kernel_size=kernel, stride=stride, pad=pad, dilation=dilation)
    axis_map = _map_of(conv)
    weight = torch.full((1, 1, kernel, kernel), 1.0 / kernel**2, dtype=torch.float64)
    out = F.conv2d(_ramp(SIZE), weight, stride=stride, padding=pad, dilation=dilation)[0, 0]
    extent = dilation * (kernel - 1) + 1
    inside = [i for i in range(out.shape[-1]) if i * stride - pad >= 0 and i * stride - pad + extent <= SIZE]
    assert inside, "no output window lies fully inside the input"
    for i in inside:  # a row whose windows avoid the zero padding, each column inside
        assert float(axis_map.scale * i + axis_map.offset) == pytest.approx(out[inside[0], i].item())


@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (3, 2, 0), (3, 2, 1), (3, 3, 1)])
def test_pooling_with_ceil_rounding_maps_to_window_centre(kernel, stride, pad):
    data = layers.Input(shape=dict(dim=[1, 1, SIZE, SIZE]))
    pool = layers.Pooling(data, pool="AVE", kernel_size=kernel, stride=stride, pad=pad)
    axis_map = _map_of(pool)
    out = F.avg_pool2d(_ramp(SIZE), kernel, stride, pad, ceil_mode=True, count_include_pad=False)[0, 0, -1]
    pooled = -(-(SIZE + 2 * pad - kernel) // stride) + 1  # Caffe: round up, then drop a window
    pooled -= (pooled - 1) * stride >= SIZE + pad  # that would start in the padding
    assert out.numel() == pooled
    for i in range(out.numel()):
        start, stop = i * stride - pad, i * stride - pad + kernel
        if start >= 0 and stop <= SIZE:
            assert float(axis_map.scale * i + axis_map.offset) == pytest.approx(out[i].item())


@pytest.mark.parametrize("kernel,stride,pad", [(4, 2, 0), (64, 32, 0), (16, 8, 4), (3, 1, 1), (5, 2, 1)])
def test_deconvolution_maps_output_to_the_input_it_spreads_from(kernel, stride, pad):
    data = layers.Input(shape=dict(dim=[1, 1, 9, 9]))
    deconv = layers.Deconvolution(data, num_output=1, kernel_size=kernel, stride=stride, pad=pad, bias_term=False)
    axis_map = _map_of(deconv)
    for j in range(9):
        impulse = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
        impulse[..., j] = 1
        out = F.conv_transpose2d(impulse, torch.ones(1, 1, 1, kernel, dtype=torch.float64), stride=stride)
        touched = torch.nonzero(out[0, 0, 0]).flatten() - pad  # Caffe's pad trims the output's borders
        centre = Fraction(int(touched[0] + touched[-1]), 2)
        assert axis_map.scale * centre + axis_map.offset == j


def test_crop_chain_composes_offsets():
    data = layers.Input(shape=dict(dim=[1, 1, 30, 30]), name="data")
    small = layers.Input(shape=dict(dim=[1, 1, 20, 20]), name="small")
    smaller = layers.Input(shape=dict(dim=[1, 1, 10, 10]), name="smaller")
    first = layers.Crop(data, small, axis=2, offset=3)
    second = layers.Crop(first, smaller, axis=2, offset=[2, 4])
    assert _map_of(first) == AxisMap(Fraction(1), Fraction(3))
    assert crop_params(data, second) == (2, (5, 7))
    conv = layers.Convolution(second, num_output=1, kernel_size=3, pad=0)
    assert crop_params(data, conv) == (2, (6, 8))


def test_identity_layers_and_anisotropic_windows():
    data = layers.Input(shape=dict(dim=[1, 1, 30, 30]))
    conv = layers.Convolution(data, num_output=1, kernel_h=5, kernel_w=3, pad_h=0, pad_w=0)
    relu = layers.ReLU(conv, in_place=True)
    drop = layers.Dropout(relu, in_place=True)
    fused = layers.Eltwise(drop, relu, operation="SUM")
    assert crop_params(data, fused) == (2, (2, 1))


def test_crop_layer_from_the_analysis_is_emitted_like_the_authors():
    n = NetSpec()
    n.data = layers.Input(shape=dict(dim=[1, 3, 50, 50]))
    n.conv = layers.Convolution(n.data, num_output=2, kernel_size=3, pad=10)
    n.cropped = crop(n.conv, n.data)
    expected = parse_prototxt(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 50 dim: 50 } } }'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"'
        "        convolution_param { num_output: 2 kernel_size: 3 pad: 10 } }"
        'layer { name: "cropped" type: "Crop" bottom: "conv" bottom: "data" top: "cropped"'
        "        crop_param { axis: 2 offset: 9 } }"
    )
    assert n.to_proto() == expected


@pytest.mark.parametrize(
    "net,expected",
    [
        ("voc-fcn32s", {"score": 19}),
        ("voc-fcn16s", {"score_pool4c": 5, "score": 27}),
        ("voc-fcn8s", {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
        ("voc-fcn8s-atonce", {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
    ],
)
def test_offsets_of_the_voc_nets_come_from_the_analysis(net, expected):
    n = fcn.define("deploy", skips=fcn.SKIPS[net], skip_scales=fcn.SKIP_SCALES.get(net))
    for name, offset in expected.items():
        top = n[name]
        bottom, reference = top.layer.bottoms
        assert crop_params(bottom, reference) == (2, (offset,))


@pytest.mark.parametrize("net", fcn.NETS)
def test_analysis_of_the_authors_graphs_gives_their_offsets(net, reference):
    authors = read_prototxt(reference / net / "train.prototxt")
    graph = from_proto(authors)
    crops = [layer for layer in authors.layer if layer.type == "Crop"]
    assert len(crops) == 1 + len(fcn.SKIPS[net])
    for layer in crops:
        bottom, reference = graph[layer.top[0]].layer.bottoms
        derived = crop_params(bottom, reference)
        assert derived == (layer.crop_param.axis, tuple(layer.crop_param.offset)), layer.name


def test_rejects_different_scales_naming_both_blobs():
    n = fcn.define("deploy", skips=("pool4",))
    with pytest.raises(PrototxtError, match=r"'score_pool4'.*'data'.*scales differ"):
        crop_params(n.score_pool4, n.data)


def test_rejects_fractional_and_negative_offsets():
    n = NetSpec()
    n.data = layers.Input(shape=dict(dim=[1, 1, 30, 30]))
    n.even = layers.Convolution(n.data, num_output=1, kernel_size=2)
    n.padded = layers.Convolution(n.data, num_output=1, kernel_size=3, pad=100)
    with pytest.raises(PrototxtError, match=r"'data'.*'even'.*offset 1/2"):
        crop_params(n.data, n.even)
    with pytest.raises(PrototxtError, match=r"'data'.*'padded'.*offset -99"):
        crop(n.data, n.padded)
    assert crop_params(n.padded, n.data) == (2, (99,))


def test_rejects_blobs_without_common_ancestor():
    a = layers.Input(shape=dict(dim=[1, 1, 8, 8]), name="a")
    b = layers.Input(shape=dict(dim=[1, 1, 8, 8]), name="b")
    with pytest.raises(PrototxtError, match="no common ancestor"):
        crop_params(a, b)


def test_two_bottom_convolution_maps_each_top_to_its_own_bottom():
    """Caffe's BaseConvolutionLayer computes top i from bottom i with shared weights.

    `shifted` sits 1 pixel into `data` (3x3 window, no pad: centre at x + 1), `aligned` at
    offset 0 (a zero-offset crop); a 1x1 convolution keeps each top where its bottom is.
    """
    data = layers.Input(shape=dict(dim=[1, 1, 12, 12]), name="data")
    shifted = layers.Convolution(data, num_output=1, kernel_size=3)
    aligned = layers.Crop(data, shifted, axis=2, offset=0)
    from_shifted, from_aligned = layers.Convolution(shifted, aligned, num_output=1, kernel_size=1, ntop=2)
    assert crop_params(data, from_shifted) == (2, (1,))
    assert crop_params(data, from_aligned) == (2, (0,))


def test_two_bottom_convolution_of_unrelated_inputs_follows_the_second_input():
    left = layers.Input(shape=dict(dim=[1, 1, 9, 9]), name="left")
    right = layers.Input(shape=dict(dim=[1, 1, 9, 9]), name="right")
    _, of_right = layers.Convolution(left, right, num_output=1, kernel_size=5, pad=1, ntop=2)
    assert crop_params(right, of_right) == (2, (1,))  # centre at x + (5 - 1) / 2 - 1
    with pytest.raises(PrototxtError, match="no common ancestor"):
        crop_params(left, of_right)
