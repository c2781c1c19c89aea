"""VGG16 (Simonyan & Zisserman's configuration D), defined once with our NetSpec.

`trunk` writes conv1_1 .. pool5 into a net: the FCN-VGG16 nets (`prototxt.fcn`) build on
it, and so does `classifier`, the ILSVRC classifier as the VGG_ILSVRC_16_layers files
have it (224x224 input, fc6/fc7/fc8 InnerProduct layers), from which the demo's small
base net (`reproduce.basenet`) and the port benchmark's VGG16-sized file (`bench.port`)
are made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from .netspec import NetSpec, Top, layers

#: (num_output, convolutions) per VGG16 stage; stage k ends in pool<k> at stride 2**k.
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_WIDTH = 4096
#: the classifier's input side: five 2x2 pools bring it to the 7x7 map fc6 is built for
INPUT_SIZE = 224
ILSVRC_CLASSES = 1000
NAME = "VGG_ILSVRC_16_layers"


def scaled_width(channels: int, width: float) -> int:
    """Backbone channels at a width multiplier: rounded half up, at least 1."""
    return max(1, math.floor(channels * width + 0.5))


def width_text(width: float) -> str:
    """A width multiplier as `--width` takes it: "1/32" for 0.03125, else a decimal ("0.3", "1")."""
    fraction = Fraction(width).limit_denominator(4096)
    if fraction.numerator == 1 and float(fraction) == width:
        return str(fraction)
    return f"{width:g}" if float(f"{width:g}") == width else repr(width)


def trunk(
    n: NetSpec,
    bottom: Top,
    *,
    width: float = 1.0,
    first_pad: int = 1,
    suffix: str = "",
    first_conv: str = "conv1_1",
    param: Sequence[Mapping[str, Any]] | None = None,
    fillers: Mapping[str, Any] | None = None,
    first_fillers: Mapping[str, Any] | None = None,
) -> Top:
    """VGG16's 13 convolutions (3x3, pad 1, each followed by an in-place ReLU) and five 2x2 max pools.

    Args:
        n: the net to add the layers to.
        bottom: the input top.
        width: channel multiplier (`scaled_width`).
        first_pad: conv1_1's padding (FCN pads it by 100).
        suffix: appended to every layer name but the first convolution's.
        first_conv: the first convolution's name.
        param: the convolutions' ParamSpecs (lr_mult, decay_mult).
        fillers: the convolutions' `weight_filler`/`bias_filler`.
        first_fillers: conv1_1's, when they differ.

    Returns:
        pool5's top.
    """
    for stage, (channels, convs) in enumerate(VGG16_STAGES, start=1):
        for index in range(1, convs + 1):
            first = (stage, index) == (1, 1)
            options: dict[str, Any] = dict(
                num_output=scaled_width(channels, width), pad=first_pad if first else 1, kernel_size=3, stride=1
            )
            if param is not None:
                options["param"] = list(param)
            options.update((first_fillers if first and first_fillers is not None else fillers) or {})
            name = first_conv if first else f"conv{stage}_{index}{suffix}"
            n[name] = layers.Convolution(bottom, **options)
            n[f"relu{stage}_{index}{suffix}"] = bottom = layers.ReLU(n[name], in_place=True)
        n[f"pool{stage}{suffix}"] = bottom = layers.Pooling(bottom, pool="MAX", kernel_size=2, stride=2)
    return bottom


def classifier(
    num_classes: int = ILSVRC_CLASSES,
    *,
    width: float = 1.0,
    fillers: Mapping[str, Any] | None = None,
    first_fillers: Mapping[str, Any] | None = None,
) -> NetSpec:
    """The ILSVRC VGG16 classifier: `trunk`, then fc6 and fc7 (ReLU, dropout 0.5) and fc8.

    Args:
        num_classes: fc8's outputs.
        width: channel multiplier of conv1_1 .. fc7.
        fillers: `weight_filler`/`bias_filler` of every learned layer.
        first_fillers: conv1_1's, when they differ.

    Returns:
        The net, with a 1x3x224x224 Input top `data`.
    """
    n = NetSpec()
    n.data = layers.Input(shape=dict(dim=[1, 3, INPUT_SIZE, INPUT_SIZE]))
    bottom = trunk(n, n.data, width=width, fillers=fillers, first_fillers=first_fillers)
    for index, outputs in ((6, scaled_width(FC_WIDTH, width)), (7, scaled_width(FC_WIDTH, width)), (8, num_classes)):
        n[f"fc{index}"] = bottom = layers.InnerProduct(bottom, num_output=outputs, **(fillers or {}))
        if index < 8:
            n[f"relu{index}"] = layers.ReLU(bottom, in_place=True)
            n[f"drop{index}"] = bottom = layers.Dropout(n[f"relu{index}"], dropout_ratio=0.5, in_place=True)
    return n
