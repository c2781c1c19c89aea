"""Every net the authors published, by their directory name: how to build it and its files.

Four families: PASCAL VOC (the four FCN-VGG16 nets of `prototxt.fcn` and FCN-AlexNet of
`prototxt.alexnet`), PASCAL-Context (59 classes and background), NYUDv2 (40 classes;
color, HHA, early fusion of color and depth, late fusion of color and HHA) and SIFT Flow
(33 semantic and 3 geometric classes, two heads on one backbone). `build(net, split)`
gives the authors' file for a split named as their files are (`train`/`val` or
`trainval`/`test`) or `deploy` (an Input layer per input, no loss; the authors publish
one for voc-fcn8s only). The data layers' `param_str` paths point to `../data/...`, one
level up, for every net (see `prototxt.fcn`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from porting.proto import caffe_pb2

from . import alexnet, fcn
from .netspec import NetSpec
from .voc import SEG11VALID_COUNT

SEED = 1337


@dataclass(frozen=True)
class Family:
    """What the nets of one dataset share: their splits (training, scoring: the file stems),
    how many images the scoring split has (the solvers' `test_iter`) and the data layer."""

    name: str
    splits: tuple[str, str]
    test_images: int
    data_layer: dict[str, str]


FAMILIES = {
    "voc": Family("voc", ("train", "val"), SEG11VALID_COUNT, dict(fcn.DATA_LAYERS)),
    "pascalcontext": Family(
        "pascalcontext",
        ("train", "val"),
        5105,
        dict.fromkeys(("train", "val"), "pascalcontext_layers.PASCALContextSegDataLayer"),
    ),
    "nyud": Family(
        "nyud", ("trainval", "test"), 654, dict.fromkeys(("trainval", "test"), "nyud_layers.NYUDSegDataLayer")
    ),
    "siftflow": Family(
        "siftflow",
        ("trainval", "test"),
        200,
        dict.fromkeys(("trainval", "test"), "siftflow_layers.SIFTFlowSegDataLayer"),
    ),
}

PASCALCONTEXT_CLASSES = 60  # 59 classes and background
NYUD_CLASSES = 40
SIFTFLOW_HEADS = (
    fcn.Head(num_classes=33, label="sem", suffix="_sem", loss="loss"),
    fcn.Head(num_classes=3, label="geo", suffix="_geo", loss="loss_geo"),
)
#: NYUD input tops and their channels per net, and the fusion of several inputs
NYUD_INPUTS: dict[str, dict[str, int]] = {
    "color": {"data": 3},
    "hha": {"data": 3},
    "color-d": {"color": 3, "depth": 1},
    "color-hha": {"color": 3, "hha": 3},
}
#: the data layer's names for the inputs (`param_str` `tops`) where the net's differ (a single input is `data`)
NYUD_DATA_TOPS = {"color": ["color"], "hha": ["hha"]}
NYUD_FUSION = {"color-d": dict(fusion="early", first_conv="conv1_1_bgrd"), "color-hha": dict(fusion="late")}


@dataclass(frozen=True)
class NetInfo:
    """One published net: its family and `define(split, **options) -> NetSpec`."""

    name: str
    family: Family
    define: Callable[..., NetSpec]

    @property
    def splits(self) -> tuple[str, str]:
        return self.family.splits


def _voc_vgg(net: str) -> Callable[..., NetSpec]:
    def define(split: str, **options: Any) -> NetSpec:
        return fcn.define(split, skips=fcn.SKIPS[net], skip_scales=fcn.SKIP_SCALES.get(net), **options)

    return define


def _pascalcontext(skips: tuple[str, ...]) -> Callable[..., NetSpec]:
    def define(split: str, data_params: Mapping[str, Any] | None = None, **options: Any) -> NetSpec:
        params = data_params or {
            "context_dir": "../data/pascal-context",
            "seed": SEED,
            "split": split,
            "voc_dir": "../data/pascal",
        }
        options = {"num_classes": PASCALCONTEXT_CLASSES, **options}
        layer = FAMILIES["pascalcontext"].data_layer.get(split)
        return fcn.define(split, skips=skips, data_layer=layer, data_params=params, **options)

    return define


def nyud_tops(net: str) -> list[str]:
    """The tops a NYUD net's data layer asks its dataset for (`tops` of its `param_str`), label last."""
    modality = net.removeprefix("nyud-fcn32s-")
    if modality not in NYUD_INPUTS:
        raise ValueError(f"{net!r} is not one of the NYUD nets")
    return [*NYUD_DATA_TOPS.get(modality, list(NYUD_INPUTS[modality])), "label"]


def _nyud(modality: str) -> Callable[..., NetSpec]:
    inputs = NYUD_INPUTS[modality]

    def define(split: str, data_params: Mapping[str, Any] | None = None, **options: Any) -> NetSpec:
        tops = nyud_tops(f"nyud-fcn32s-{modality}")
        params = data_params or {"tops": tops, "seed": SEED, "nyud_dir": "../data/nyud", "split": split}
        options = {"num_classes": NYUD_CLASSES, **NYUD_FUSION.get(modality, {}), **options}
        if len(inputs) > 1:
            options.pop("in_channels", None)
            options["inputs"] = inputs
        layer = FAMILIES["nyud"].data_layer.get(split)
        return fcn.define(split, data_layer=layer, data_params=params, **options)

    return define


def _siftflow(skips: tuple[str, ...]) -> Callable[..., NetSpec]:
    def define(split: str, data_params: Mapping[str, Any] | None = None, **options: Any) -> NetSpec:
        params = data_params or {"siftflow_dir": "../data/sift-flow", "seed": SEED, "split": split}
        layer = FAMILIES["siftflow"].data_layer.get(split)
        return fcn.define(split, skips=skips, heads=SIFTFLOW_HEADS, data_layer=layer, data_params=params, **options)

    return define


def _alexnet(split: str, **options: Any) -> NetSpec:
    return alexnet.define(split, **options)


_SKIPS_OF = {"32s": (), "16s": ("pool4",), "8s": ("pool4", "pool3")}
NETS: dict[str, NetInfo] = {
    **{name: NetInfo(name, FAMILIES["voc"], _voc_vgg(name)) for name in fcn.NETS},
    "voc-fcn-alexnet": NetInfo("voc-fcn-alexnet", FAMILIES["voc"], _alexnet),
    **{
        f"pascalcontext-fcn{s}": NetInfo(f"pascalcontext-fcn{s}", FAMILIES["pascalcontext"], _pascalcontext(skips))
        for s, skips in _SKIPS_OF.items()
    },
    **{f"nyud-fcn32s-{m}": NetInfo(f"nyud-fcn32s-{m}", FAMILIES["nyud"], _nyud(m)) for m in NYUD_INPUTS},
    **{
        f"siftflow-fcn{s}": NetInfo(f"siftflow-fcn{s}", FAMILIES["siftflow"], _siftflow(skips))
        for s, skips in _SKIPS_OF.items()
    },
}


def info(net: str) -> NetInfo:
    """The catalogue entry of a net, or a ValueError listing the known nets."""
    if net not in NETS:
        raise ValueError(f"net must be one of {', '.join(NETS)}, got {net!r}")
    return NETS[net]


def build(net: str, split: str, **options: Any) -> caffe_pb2.NetParameter:
    """One of the authors' nets (`NETS`) for one of its splits or "deploy".

    Args:
        net: the authors' directory name, e.g. "nyud-fcn32s-color-hha".
        split: the net's training or scoring split (`NetInfo.splits`) or "deploy".
        options: passed to the family's definition (`width`, `data_params`, `normalize_loss`,
            `learn_skip_upsampling`; `num_classes` and `in_channels` where the net has one
            head and one input).
    Returns:
        The NetParameter.
    """
    entry = info(net)
    if split not in (*entry.splits, "deploy"):
        raise ValueError(f"{net} has splits {', '.join(entry.splits)} and deploy, not {split!r}")
    return entry.define(split, **options).to_proto()
