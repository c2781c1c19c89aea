"""FCN-AlexNet, written with our NetSpec: the authors' voc-fcn-alexnet nets.

CaffeNet's layers (the ILSVRC "reference CaffeNet": pooling before local response
normalization, two-group convolutions 2, 4 and 5) cast into convolutions, one 21-class
score layer and a single fixed 32x upsampling (kernel 63, stride 32), trained with a
per-pixel normalized loss. The backbone convolutions carry no `param` block (Caffe's
default multipliers) and state `group` and `stride` explicitly, as the authors' files do.
The final crop offset comes from the coordinate maps (18 here, where VGG16's is 19).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .coordmap import crop
from .fcn import (
    DATA_LAYERS,
    DATA_PARAMS,
    DEPLOY_SIZE,
    IGNORE_LABEL,
    SPLITS,
    scaled_width,
)
from .netspec import NetSpec, layers

#: (name, num_output, kernel, stride, pad, group, pool and normalize after) per convolution, as in CaffeNet
CAFFENET_CONVS = (
    ("conv1", 96, 11, 4, 100, 1, True),
    ("conv2", 256, 5, 1, 2, 2, True),
    ("conv3", 384, 3, 1, 1, 1, False),
    ("conv4", 384, 3, 1, 1, 2, False),
    ("conv5", 256, 3, 1, 1, 2, False),
)
FC_WIDTH = 4096
FC6_KERNEL = 6
LRN = dict(local_size=5, alpha=0.0001, beta=0.75)
_POOL = dict(pool="MAX", kernel_size=3, stride=2)
_LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
_GROUPS = 2


def _width(channels: int, width: float) -> int:
    """Channels at a width multiplier, kept divisible by the two groups."""
    return _GROUPS * scaled_width(channels // _GROUPS, width)


def define(
    split: str,
    *,
    num_classes: int = 21,
    width: float = 1.0,
    in_channels: int = 3,
    normalize_loss: bool = True,
    data_layer: str | None = None,
    data_params: Mapping[str, Any] | None = None,
) -> NetSpec:
    """FCN-AlexNet for a split (`prototxt.fcn.SPLITS`).

    Args:
        split: "train" (SBD train), "val" (VOC2011 seg11valid) or "deploy" (an Input layer).
        num_classes: classes of the score layer and the upsampling.
        width: multiplier of conv1..fc7 (kept even: the grouped convolutions split channels in two).
        normalize_loss: the authors' per-pixel normalized loss (their lr 1e-4 goes with it).
        data_layer, data_params: replace the Python data layer ("module.Layer") and its `param_str` dict.
    Returns:
        The NetSpec; `.to_proto()` gives the NetParameter.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if num_classes < 1 or in_channels < 1 or width <= 0:
        raise ValueError("num_classes and in_channels must be positive, width above zero")
    n = NetSpec()
    if split == "deploy":
        n.data = layers.Input(shape=dict(dim=[1, in_channels, DEPLOY_SIZE, DEPLOY_SIZE]), name="input")
    else:
        params = dict(DATA_PARAMS[split] if data_params is None else data_params)
        module, _, layer = (data_layer or DATA_LAYERS[split]).rpartition(".")
        if not module or not layer:
            raise ValueError(f"data_layer must be 'module.LayerClass', got {data_layer!r}")
        n.data, n.label = layers.Python(module=module, layer=layer, param_str=repr(params), ntop=2)
    bottom = n.data
    for name, channels, kernel, stride, pad, group, pooled in CAFFENET_CONVS:
        index = name.removeprefix("conv")
        n[name] = layers.Convolution(
            bottom, num_output=_width(channels, width), pad=pad, kernel_size=kernel, group=group, stride=stride
        )
        n[f"relu{index}"] = bottom = layers.ReLU(n[name], in_place=True)
        if pooled:
            n[f"pool{index}"] = layers.Pooling(bottom, **_POOL)
            n[f"norm{index}"] = bottom = layers.LRN(n[f"pool{index}"], **LRN)
    n.pool5 = bottom = layers.Pooling(bottom, **_POOL)
    for fc, kernel in ((6, FC6_KERNEL), (7, 1)):
        n[f"fc{fc}"] = layers.Convolution(
            bottom, num_output=_width(FC_WIDTH, width), pad=0, kernel_size=kernel, group=1, stride=1
        )
        n[f"relu{fc}"] = bottom = layers.ReLU(n[f"fc{fc}"], in_place=True)
        if split != "deploy":
            n[f"drop{fc}"] = bottom = layers.Dropout(bottom, dropout_ratio=0.5, in_place=True)
    n.score_fr = layers.Convolution(bottom, num_output=num_classes, pad=0, kernel_size=1, param=_LEARNED)
    n.upscore = layers.Deconvolution(
        n.score_fr, num_output=num_classes, bias_term=False, kernel_size=63, stride=32, param=[dict(lr_mult=0)]
    )
    n.score = crop(n.upscore, n.data)
    if split != "deploy":
        n.loss = layers.SoftmaxWithLoss(
            n.score, n.label, loss_param=dict(ignore_label=IGNORE_LABEL, normalize=normalize_loss)
        )
    return n
