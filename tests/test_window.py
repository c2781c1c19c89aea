"""Caffe's window fields, read by `porting.window.read_window` with the rules of Caffe's
base_conv_layer.cpp (repeated fields, `_h`/`_w` replacing them, an unset half 0) and
pooling_layer.cpp (single values, both halves required, global pooling takes none); the
layers, the validator and the coordinate maps all read through it."""

from __future__ import annotations

from fractions import Fraction

import pytest
from google.protobuf import text_format

from porting.errors import PrototxtError
from porting.layers import LAYER_TYPES
from porting.proto import caffe_pb2
from porting.prototxt import parse_prototxt
from porting.window import Window, read_window
from prototxt.coordmap import AxisMap, layer_map

INPUT = 'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 12 dim: 12 } } }\n'


def conv(fields: str, kind: str = "Convolution") -> str:
    return (
        f'layer {{ name: "w" type: "{kind}" bottom: "data" top: "w" convolution_param {{ num_output: 2 {fields} }} }}'
    )


def pool(fields: str) -> str:
    return f'layer {{ name: "w" type: "Pooling" bottom: "data" top: "w" pooling_param {{ pool: MAX {fields} }} }}'


def layer(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text.removeprefix("layer {").removesuffix("}"), caffe_pb2.LayerParameter())


# Expected windows worked out from Caffe's source for each spelling.
VALID = [
    (conv("kernel_size: 3"), Window((3, 3), (1, 1), (0, 0), (1, 1))),
    (
        conv("kernel_size: 3 kernel_size: 5 stride: 2 stride: 1 pad: 1 pad: 2 dilation: 2"),
        Window((3, 5), (2, 1), (1, 2), (2, 2)),
    ),
    (conv("kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 1"), Window((3, 5), (2, 1), (1, 0), (1, 1))),
    (conv("kernel_size: 4 stride: 2", "Deconvolution"), Window((4, 4), (2, 2), (0, 0), (1, 1))),
    (pool("kernel_size: 3 stride: 2"), Window((3, 3), (2, 2), (0, 0))),
    (pool("kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2"), Window((2, 3), (1, 2), (1, 0))),
    (pool("global_pooling: true"), Window(None, (1, 1), (0, 0))),
]

INVALID = [
    (conv("kernel_size: 3 kernel_h: 3 kernel_w: 3"), "either kernel_size or kernel_h/kernel_w, not both"),
    (conv("kernel_size: 3 stride: 2 stride_h: 2"), "either stride or stride_h/stride_w, not both"),
    (conv("kernel_size: 3 pad: 1 pad_w: 1"), "either pad or pad_h/pad_w, not both"),
    (conv("kernel_h: 3"), "kernel size 3x0 must be positive"),
    (conv(""), "kernel_size is not set"),
    (conv("kernel_size: 1 kernel_size: 2 kernel_size: 3"), "kernel_size has 3 values"),
    (conv("kernel_size: 3 dilation: 0"), "dilation 0 must be positive"),
    (pool("kernel_size: 2 kernel_h: 2 kernel_w: 2"), "either kernel_size or kernel_h and kernel_w, not both"),
    (pool("kernel_h: 2"), "kernel_w is missing"),
    (pool("kernel_size: 2 pad_h: 1"), "pad_w is missing"),
    (pool("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1"), "either pad or pad_h and pad_w, not both"),
    (pool(""), "kernel_size is not set"),
    (pool("global_pooling: true kernel_size: 2"), "global pooling takes no kernel size"),
    (pool("global_pooling: true stride: 2"), "global pooling takes pad 0 and stride 1"),
]


@pytest.mark.parametrize("text, expected", VALID)
def test_each_spelling_gives_caffes_window(text, expected):
    assert read_window(layer(text), "here") == expected


@pytest.mark.parametrize("text, expected", VALID)
def test_layers_validator_and_coordinate_maps_read_the_same_window(text, expected):
    param = layer(text)
    parse_prototxt(INPUT + text, "ok.prototxt")
    built = LAYER_TYPES[param.type](param, [(1, 2, 12, 12)], "TEST")
    assert (built.stride, built.pad) == (expected.stride, expected.pad)
    if expected.kernel is not None:
        assert built.kernel == expected.kernel
    maps = layer_map(param)
    if expected.kernel is None:
        assert maps is None  # global pooling keeps no coordinates
        return
    forward = tuple(
        AxisMap(Fraction(s), Fraction(expected.extent(i) - 1, 2) - p)
        for i, (s, p) in enumerate(zip(expected.stride, expected.pad))
    )
    if param.type == "Deconvolution":
        forward = tuple(AxisMap(1 / m.scale, -m.offset / m.scale) for m in forward)
    assert maps == forward


@pytest.mark.parametrize("text, message", INVALID)
def test_every_reader_rejects_a_bad_spelling_alike(text, message):
    param = layer(text)
    with pytest.raises(PrototxtError, match=message) as direct:
        read_window(param, "here")
    assert direct.value.where == "here"
    with pytest.raises(PrototxtError, match=message) as validated:
        parse_prototxt(INPUT + text, "bad.prototxt")
    assert validated.value.where == "bad.prototxt: layer 'w'"
    with pytest.raises(PrototxtError, match=message):
        LAYER_TYPES[param.type](param, [(1, 2, 12, 12)], "TEST")
    with pytest.raises(PrototxtError, match=message):
        layer_map(param)
