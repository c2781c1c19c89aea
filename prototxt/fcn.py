"""The FCN-VGG16 nets of the papers, written with our NetSpec.

`build(net, split)` reproduces the authors' voc-fcn32s / 16s / 8s / 8s-atonce files
(train, val, and a deploy file for every net, like their voc-fcn8s/deploy.prototxt);
`define` is the general form behind it, where the skip layers are a parameter. Every
Crop offset comes from the coordinate-map analysis (`coordmap.crop`), so changing the
skips, the class count, the backbone width or the input channels keeps the score aligned
with the input.

Documented difference from the authors' files: the Python data layer's `param_str`
holds dataset paths. Ours default to `../data/...` for every net; the authors'
voc-fcn16s files point two levels up (`../../data/...`) while their other nets use
`../data/...`. The datasets themselves come from the project (`reproduce`), which reads
`param_str` only for its non-path settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from porting.proto import caffe_pb2

from .coordmap import crop
from .netspec import NetSpec, Top, layers
from .vgg16 import FC_WIDTH, VGG16_STAGES, scaled_width, trunk
from .voc import IGNORE_LABEL, MEAN_BGR, NUM_CLASSES

SPLITS = ("train", "val", "deploy")
#: the data splits of the other families' files (NYUDv2, SIFT Flow)
DATA_SPLITS = ("trainval", "test")

DEPLOY_SIZE = 500

#: Skip layers per net, coarsest first, and the at-once net's fixed skip scalings.
SKIPS: dict[str, tuple[str, ...]] = {
    "voc-fcn32s": (),
    "voc-fcn16s": ("pool4",),
    "voc-fcn8s": ("pool4", "pool3"),
    "voc-fcn8s-atonce": ("pool4", "pool3"),
}
NETS = tuple(SKIPS)
SKIP_SCALES: dict[str, dict[str, float]] = {"voc-fcn8s-atonce": {"pool4": 0.01, "pool3": 0.0001}}

#: Python data layer (module.Layer) and param dict per split, as in the authors' files.
DATA_LAYERS = {"train": "voc_layers.SBDDSegDataLayer", "val": "voc_layers.VOCSegDataLayer"}
DATA_PARAMS: dict[str, dict[str, Any]] = {
    "train": {"sbdd_dir": "../data/sbdd/dataset", "seed": 1337, "split": "train", "mean": MEAN_BGR},
    "val": {"voc_dir": "../data/pascal/VOC2011", "seed": 1337, "split": "seg11valid", "mean": MEAN_BGR},
}

_LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
_FIXED = [dict(lr_mult=0)]
_LEARNED_UPSAMPLING = [dict(lr_mult=1)]
_STRIDE_OF_POOL = {f"pool{k}": 2**k for k in range(1, len(VGG16_STAGES) + 1)}
_FINAL_STRIDE = 2 ** len(VGG16_STAGES)


def _conv_relu(bottom: Top, channels: int, kernel: int = 3, pad: int = 1) -> tuple[Top, Top]:
    conv = layers.Convolution(bottom, num_output=channels, pad=pad, kernel_size=kernel, stride=1, param=_LEARNED)
    return conv, layers.ReLU(conv, in_place=True)


def _score(bottom: Top, num_classes: int) -> Top:
    return layers.Convolution(bottom, num_output=num_classes, pad=0, kernel_size=1, param=_LEARNED)


def _upsample(bottom: Top, num_classes: int, factor: int, learned: bool) -> Top:
    return layers.Deconvolution(
        bottom,
        num_output=num_classes,
        bias_term=False,
        kernel_size=2 * factor,
        stride=factor,
        param=_LEARNED_UPSAMPLING if learned else _FIXED,
    )


@dataclass(frozen=True)
class Head:
    """One scoring head: its classes, the label top it learns from, the suffix of its layer
    names (SIFT Flow's `_sem`, `_geo`) and its loss layer's name."""

    num_classes: int = NUM_CLASSES
    label: str = "label"
    suffix: str = ""
    loss: str = "loss"


def data_layers(
    n: NetSpec,
    split: str,
    in_channels: int,
    data_layer: str | None,
    data_params: Mapping | None,
    *,
    inputs: Mapping[str, int] | None = None,
    labels: Sequence[str] = ("label",),
) -> None:
    """Set the data tops: an Input with one top per input (deploy), else the Python data layer
    of `split` whose tops are the inputs then the labels (the authors' data layers' order).
    `inputs` (top -> channels) defaults to `data` with `in_channels`."""
    inputs = inputs or {"data": in_channels}
    if split == "deploy":
        shapes = [dict(dim=[1, channels, DEPLOY_SIZE, DEPLOY_SIZE]) for channels in inputs.values()]
        tops = layers.Input(shape=shapes, name="input", ntop=len(inputs))
    else:
        params = dict(DATA_PARAMS[split] if data_params is None else data_params)
        mean = params.get("mean")
        if mean is not None and len(inputs) == 1 and len(mean) != sum(inputs.values()):
            raise ValueError(
                f"{split} data layer: mean has {len(mean)} entries but in_channels is {sum(inputs.values())}; "
                f"pass data_params with a mean per input channel"
            )
        module, _, layer = (data_layer or DATA_LAYERS.get(split, "")).rpartition(".")
        if not module or not layer:
            raise ValueError(f"data_layer must be 'module.LayerClass', got {data_layer!r}")
        count = len(inputs) + len(labels)
        tops = layers.Python(module=module, layer=layer, param_str=repr(params), ntop=count)
    tops = tops if isinstance(tops, tuple) else (tops,)
    for name, top in zip([*inputs, *labels], tops):
        n[name] = top


def _backbone(n: NetSpec, bottom: Top, split: str, width: float, suffix: str = "", first_conv: str = "conv1_1") -> Top:
    """VGG16's convolutions and fc6/fc7 as convolutions; layer names end in `suffix`."""
    bottom = trunk(n, bottom, width=width, first_pad=100, suffix=suffix, first_conv=first_conv, param=_LEARNED)
    for index, kernel in ((6, 7), (7, 1)):
        conv, relu = _conv_relu(bottom, scaled_width(FC_WIDTH, width), kernel=kernel, pad=0)
        n[f"fc{index}{suffix}"], n[f"relu{index}{suffix}"] = conv, relu
        bottom = relu
        if split != "deploy":
            n[f"drop{index}{suffix}"] = bottom = layers.Dropout(bottom, dropout_ratio=0.5, in_place=True)
    return bottom


def _head(
    n: NetSpec,
    coarse: Top,
    reference: Top,
    head: Head,
    split: str,
    skips: Sequence[str],
    skip_scales: Mapping[str, float],
    normalize_loss: bool,
    learn_skip_upsampling: bool,
) -> None:
    """Upsample a coarse score (fusing the skips on the way) to `reference`, and its loss."""
    classes, suffix = head.num_classes, head.suffix
    score, stride, previous = coarse, _FINAL_STRIDE, None
    for skip in skips:
        skip_stride = _STRIDE_OF_POOL[skip]
        name = f"upscore2{suffix}" if previous is None else f"upscore_{previous}{suffix}"
        n[name] = _upsample(score, classes, stride // skip_stride, learn_skip_upsampling)
        source = n[skip]
        if skip in skip_scales:
            n[f"scale_{skip}{suffix}"] = layers.Scale(
                source, param=_FIXED, filler=dict(type="constant", value=skip_scales[skip])
            )
            source = n[f"scale_{skip}{suffix}"]
        n[f"score_{skip}{suffix}"] = _score(source, classes)
        n[f"score_{skip}{suffix}c"] = crop(n[f"score_{skip}{suffix}"], n[name])
        n[f"fuse_{skip}{suffix}"] = layers.Eltwise(n[name], n[f"score_{skip}{suffix}c"], operation="SUM")
        score, stride, previous = n[f"fuse_{skip}{suffix}"], skip_stride, skip

    final = f"upscore{suffix}" if previous is None else f"upscore{stride}{suffix}"
    n[final] = _upsample(score, classes, stride, learned=False)
    n[f"score{suffix}"] = crop(n[final], reference)
    if split != "deploy":
        n[head.loss] = layers.SoftmaxWithLoss(
            n[f"score{suffix}"], n[head.label], loss_param=dict(ignore_label=IGNORE_LABEL, normalize=normalize_loss)
        )


def define(
    split: str,
    *,
    skips: Sequence[str] = (),
    skip_scales: Mapping[str, float] | None = None,
    num_classes: int = NUM_CLASSES,
    width: float = 1.0,
    in_channels: int = 3,
    normalize_loss: bool = False,
    learn_skip_upsampling: bool = False,
    data_layer: str | None = None,
    data_params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, int] | None = None,
    fusion: str = "early",
    first_conv: str = "conv1_1",
    heads: Sequence[Head] | None = None,
) -> NetSpec:
    """An FCN-VGG16 with the given skip layers (pooling layers, coarsest first).

    The coarse score is upsampled 2x per skip by an intermediate deconvolution, fused
    with the skip's (optionally scaled) score, and the last fusion is upsampled to the
    input by the final deconvolution (fixed bilinear in every recipe).

    Args:
        split: "train"/"val" (or any other data split: a Python data layer) or "deploy" (an Input layer).
        inputs: input top -> channels (default `{"data": in_channels}`). Several inputs are
            fused "early" (concatenated into `data` before `first_conv`, NYUD's color-d) or
            "late" (one VGG16 stream per input, names suffixed by the input's, and the
            streams' coarse scores averaged: NYUD's color-hha; no skips).
        heads: the scoring heads (default one of `num_classes` on `label`); several heads
            (SIFT Flow's semantic and geometric) share the backbone, each with its own loss.
    """
    if split not in SPLITS and split not in DATA_SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS + DATA_SPLITS)}, got {split!r}")
    strides = [_STRIDE_OF_POOL.get(skip, 0) for skip in skips]
    if 0 in strides or sorted(strides, reverse=True) != strides or len(set(strides)) != len(strides):
        raise ValueError(
            f"skips must be distinct pooling layers of {list(_STRIDE_OF_POOL)}, coarsest first; got {skips}"
        )
    inputs = dict(inputs or {"data": in_channels})
    heads = tuple(heads or (Head(num_classes),))
    if min([*inputs.values(), *(head.num_classes for head in heads)]) < 1 or width <= 0:
        raise ValueError("num_classes and in_channels must be positive, width above zero")
    if fusion not in ("early", "late") or (fusion == "late" and (skips or len(heads) > 1)):
        raise ValueError(f"fusion must be 'early' or 'late' (late: one head, no skips), got {fusion!r}")
    skip_scales = dict(skip_scales or {})

    n = NetSpec()
    labels = list(dict.fromkeys(head.label for head in heads))
    data_layers(n, split, in_channels, data_layer, data_params, inputs=inputs, labels=labels)
    options: dict[str, Any] = dict(
        split=split,
        skips=skips,
        skip_scales=skip_scales,
        normalize_loss=normalize_loss,
        learn_skip_upsampling=learn_skip_upsampling,
    )
    if fusion == "late" and len(inputs) > 1:
        scores = []
        for name in inputs:
            top = _backbone(n, n[name], split, width, suffix=name, first_conv=f"conv1_1{name}")
            n[f"score_fr{name}"] = _score(top, heads[0].num_classes)
            scores.append(n[f"score_fr{name}"])
        n.score_fused = layers.Eltwise(*scores, operation="SUM", coeff=[1 / len(scores)] * len(scores))
        _head(n, n.score_fused, n[next(iter(inputs))], heads[0], **options)
        return n
    if len(inputs) > 1:
        n.data = layers.Concat(*(n[name] for name in inputs))
    top = _backbone(n, n.data, split, width, first_conv=first_conv)
    for head in heads:
        n[f"score_fr{head.suffix}"] = _score(top, head.num_classes)
        _head(n, n[f"score_fr{head.suffix}"], n.data, head, **options)
    return n


def build(
    net: str,
    split: str,
    *,
    num_classes: int = NUM_CLASSES,
    width: float = 1.0,
    in_channels: int = 3,
    normalize_loss: bool = False,
    learn_skip_upsampling: bool = False,
    data_layer: str | None = None,
    data_params: dict | None = None,
) -> caffe_pb2.NetParameter:
    """One of the authors' nets (`NETS`) for a split (`SPLITS`) as a `NetParameter`.

    Defaults give the authors' files. `width` scales conv1_1..fc7 (not the classifier);
    `normalize_loss` is the CVPR preset's per-pixel normalized loss; `learn_skip_upsampling`
    lets the intermediate upsamplings learn (CVPR) while the final one stays fixed;
    `data_layer` ("module.Layer") and `data_params` replace the Python data layer and
    its `param_str` dict (train: SBD train; val: VOC2011 seg11valid).
    """
    if net not in SKIPS:
        raise ValueError(f"net must be one of {', '.join(NETS)}, got {net!r}")
    return define(
        split,
        skips=SKIPS[net],
        skip_scales=SKIP_SCALES.get(net),
        num_classes=num_classes,
        width=width,
        in_channels=in_channels,
        normalize_loss=normalize_loss,
        learn_skip_upsampling=learn_skip_upsampling,
        data_layer=data_layer,
        data_params=data_params,
    ).to_proto()
