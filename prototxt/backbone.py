"""FCN-32s from any ILSVRC classifier: the CVPR 2015 Table 1 nets, and `python -m porting.fully_convolutional`.

`porting.fully_convolutional.cast_classifier` turns the classifier into a fully
convolutional trunk; this module puts the FCN-32s head on it, as the authors' nets have
it: a zero-initialized 1x1 score layer `score_fr`, a fixed bilinear Deconvolution
`upscore` back to the input resolution and a Crop `score` whose offset the coordinate
maps derive, then the VOC nets' data and loss layers for train and val.

The upsampling kernel is twice the trunk's stride (64 for stride 32), or one less where
an even kernel would put the score half a pixel off the input grid: the trunk's pixel
centres sit at a whole or half input coordinate depending on its windows, and the Crop
offset must be whole. That gives the authors' 63 and offset 18 for FCN-AlexNet (CaffeNet
windows) and 64 and offset 19 for FCN-VGG16.

`measure` computes Table 1's columns from a net: convolution layers on the longest path,
learned parameters, receptive field and stride of the score layer.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from porting import cli
from porting.atomic import atomic_path
from porting.caffemodel import read_caffemodel, write_caffemodel
from porting.errors import FormatError, PrototxtError
from porting.fully_convolutional import CastClassifier, cast_classifier
from porting.net import CaffeNet
from porting.proto import caffe_pb2
from porting.prototxt import read_prototxt, to_text
from porting.surgery import TransplantReport, set_bilinear_upsampling, transplant

from . import fcn
from .coordmap import ancestors, crop_params, receptive_field
from .netspec import Layer, NetSpec, from_proto
from .voc import NUM_CLASSES

logger = logging.getLogger(__name__)

SPLITS = fcn.SPLITS
SCORE, UPSCORE, CROP = "score_fr", "upscore", "score"


@dataclass(frozen=True)
class Backbone:
    """An ILSVRC classifier FCN-32s is cast from (CVPR 2015 Table 1)."""

    drop: tuple[str, ...]  # layers removed besides the classifier
    files: str  # what the classifier's Caffe files are and where to get them: the one home of these hints


#: The classifiers of Table 1 (AlexNet as BVLC's AlexNet and as CaffeNet, the authors' FCN-AlexNet base).
BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone(
        (),
        "the ILSVRC VGG16 classifier in Caffe format (VGG_ILSVRC_16_layers.caffemodel, 528 MB, with "
        "VGG_ILSVRC_16_layers_deploy.prototxt): the Caffe Model Zoo entry 'VGG_ILSVRC_16_layers' or the Oxford "
        "VGG very-deep-networks page (http://www.robots.ox.ac.uk/~vgg/research/very_deep/)",
    ),
    "alexnet": Backbone((), "the Caffe Model Zoo's bvlc_alexnet (deploy.prototxt, bvlc_alexnet.caffemodel)"),
    "caffenet": Backbone(
        (),
        "the ILSVRC CaffeNet classifier in Caffe format (bvlc_reference_caffenet.caffemodel, 233 MB, with its "
        "deploy.prototxt): the Caffe Model Zoo entry 'bvlc_reference_caffenet' "
        "(https://github.com/BVLC/caffe/tree/master/models/bvlc_reference_caffenet)",
    ),
    "googlenet": Backbone(
        ("pool5/7x7_s1",),
        "the Caffe Model Zoo's bvlc_googlenet (deploy.prototxt, "
        "bvlc_googlenet.caffemodel); the final average pooling is dropped, as the paper does",
    ),
}
GENERATED_BACKBONE = "vgg16"


def net_name(backbone: str) -> str:
    """The FCN-32s net of a backbone: the authors' voc-fcn32s for VGG16, voc-fcn32s-<backbone> otherwise."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    return "voc-fcn32s" if backbone == GENERATED_BACKBONE else f"voc-fcn32s-{backbone}"


def run_name(stage: str, backbone: str) -> str:
    """A training run's folder name: the stage, with the backbone appended unless it is VGG16."""
    return stage if backbone == GENERATED_BACKBONE else f"{stage}-{backbone}"


#: Run folders of the backbone FCN-32s runs (besides VGG16's plain fcn32s) -> backbone.
BACKBONE_RUNS = {run_name("fcn32s", name): name for name in BACKBONES}
#: The VOC FCN-32s nets cast from the backbones other than VGG16 (cast, not generated: no `prototxt.nets` entry).
CAST_NETS = tuple(net_name(name) for name in BACKBONES if name != GENERATED_BACKBONE)


def narrow(net: caffe_pb2.NetParameter, width: float) -> caffe_pb2.NetParameter:
    """A copy of a classifier with every Convolution and InnerProduct but the last `width` times as wide.

    Widths round as `prototxt.fcn.scaled_width` does, then to a multiple of the net's
    largest `group`, so grouped convolutions (AlexNet's) still divide their channels.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if width == 1:
        return out
    products = [layer for layer in out.layer if layer.type == "InnerProduct"]
    group = max([layer.convolution_param.group for layer in out.layer if layer.type == "Convolution"] + [1])
    for layer in out.layer:
        if layer.type == "Convolution":
            param = layer.convolution_param
        elif layer.type == "InnerProduct" and layer is not products[-1]:
            param = layer.inner_product_param
        else:
            continue
        param.num_output = max(group, group * round(fcn.scaled_width(param.num_output, width) / group))
    return out


_LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
_FIXED = [dict(lr_mult=0)]


@dataclass
class Head:
    """Where the FCN-32s head sits: the trunk's stride, the upsampling kernel and the crop offset."""

    stride: int
    kernel: int
    offset: int


def _layer(name: str, type_name: str, bottoms: Sequence[str], tops: Sequence[str], **fields: Any):
    """A LayerParameter with the NetSpec's keyword routing (`param`, type parameters, ...)."""
    message = caffe_pb2.LayerParameter()
    message.CopyFrom(Layer(type_name, (), fields).param)
    message.name = name
    message.bottom.extend(bottoms)
    message.top.extend(tops)
    return message


def _data(split: str, in_channels: int, data_params: Mapping | None) -> tuple[list, str, str | None]:
    """The VOC nets' data layer(s) for `split`: the layers, the image blob, the label blob (None for deploy)."""
    n = NetSpec()
    fcn.data_layers(n, split, in_channels, None, data_params)
    net = n.to_proto()
    return list(net.layer), net.layer[-1].top[0], None if split == "deploy" else net.layer[-1].top[1]


def _head(graph_net: caffe_pb2.NetParameter, data: str, source: str, pad: int | None) -> Head:
    """Stride, kernel and crop offset for the score on `graph_net` (which ends in the score layer)."""
    graph = from_proto(graph_net)
    maps = ancestors(graph[SCORE]).get(graph[data])
    if maps is None:
        raise PrototxtError(source, f"the score layer does not follow '{data}' through layers with coordinate maps")
    scales = {m.scale for m in maps}
    scale = next(iter(scales))
    if len(scales) != 1 or scale.denominator != 1 or scale < 1:
        raise PrototxtError(source, f"the trunk's stride must be one whole number on both axes, found {sorted(scales)}")
    stride = int(scale)
    centre = maps[0].offset
    kernel = 2 * stride if (Fraction(2 * stride - 1, 2) - centre).denominator == 1 else 2 * stride - 1
    offset = Fraction(kernel - 1, 2) - centre
    if any((Fraction(kernel - 1, 2) - m.offset) != offset for m in maps) or offset.denominator != 1:
        raise PrototxtError(
            source, f"the score's grid is not the same on both axes (centres {[m.offset for m in maps]})"
        )
    if offset < 0:
        own, needed = ("its own pad", f"{-offset} more") if pad is None else (f"pad {pad}", f"at least {pad - offset}")
        raise PrototxtError(
            source,
            f"with {own} on the first convolution the upsampled score starts {-offset} pixel(s) inside the input, "
            f"so no crop can align it; pad the first convolution by {needed} (--pad)",
        )
    return Head(stride, kernel, int(offset))


def fcn32s_nets(
    trunk: CastClassifier,
    *,
    num_classes: int = NUM_CLASSES,
    normalize_loss: bool = True,
    data_params: Mapping[str, Mapping | None] | None = None,
    splits: Iterable[str] = SPLITS,
    source: str = "<net>",
    pad: int | None = 100,
) -> tuple[dict[str, caffe_pb2.NetParameter], Head]:
    """The FCN-32s train/val/deploy nets on a cast trunk.

    Args:
        trunk: `cast_classifier`'s result.
        num_classes: outputs of the score layer.
        normalize_loss: SoftmaxWithLoss `normalize` (True: the authors' FCN-AlexNet and the CVPR recipe).
        data_params: split -> the Python data layer's `param_str` dict (default: the VOC nets').
        splits: which of train, val, deploy to build.
        source: the classifier's file, for error messages.
        pad: the first convolution's pad the trunk was cast with (for the error message only).

    Returns:
        split -> net, and the head's stride, kernel and crop offset.
    """
    data_params = dict(data_params or {})
    in_channels = trunk.input_shape[1]
    (input_layer,) = [layer for layer in trunk.net.layer if layer.type == "Input"]
    body = [layer for layer in trunk.net.layer if layer.type != "Input"]
    nets: dict[str, caffe_pb2.NetParameter] = {}
    head: Head | None = None
    for split in splits:
        data_layers, data, label = _data(split, in_channels, data_params.get(split))
        net = caffe_pb2.NetParameter(name=trunk.net.name)
        net.layer.extend(data_layers)
        net.layer.extend(layer for layer in body if split != "deploy" or not _in_place_dropout(layer))
        _rename_input(net, input_layer.top[0], data)
        net.layer.append(
            _layer(
                SCORE,
                "Convolution",
                [trunk.features],
                [SCORE],
                num_output=num_classes,
                pad=0,
                kernel_size=1,
                param=_LEARNED,
            )
        )
        head = head or _head(net, data, source, pad)
        net.layer.append(
            _layer(
                UPSCORE,
                "Deconvolution",
                [SCORE],
                [UPSCORE],
                num_output=num_classes,
                bias_term=False,
                kernel_size=head.kernel,
                stride=head.stride,
                param=_FIXED,
            )
        )
        graph = from_proto(net)
        axis, offsets = crop_params(graph[UPSCORE], graph[data])
        net.layer.append(_layer(CROP, "Crop", [UPSCORE, data], [CROP], axis=axis, offset=list(offsets)))
        if label is not None:
            net.layer.append(
                _layer(
                    "loss",
                    "SoftmaxWithLoss",
                    [CROP, label],
                    ["loss"],
                    loss_param=dict(ignore_label=fcn.IGNORE_LABEL, normalize=normalize_loss),
                )
            )
        nets[split] = net
    assert head is not None, "no split given"
    return nets, head


def _in_place_dropout(layer: caffe_pb2.LayerParameter) -> bool:
    """Deploy nets leave these out, as the authors' and the generated ones do (Dropout is the identity there)."""
    return layer.type == "Dropout" and list(layer.top) == list(layer.bottom)


def _rename_input(net: caffe_pb2.NetParameter, old: str, new: str) -> None:
    if old == new:
        return
    for layer in net.layer:
        layer.bottom[:] = [new if name == old else name for name in layer.bottom]
        layer.top[:] = [new if name == old and name in layer.bottom else name for name in layer.top]


@dataclass
class FullyConvolutional:
    """A classifier cast into FCN-32s: its nets, initial weights and how they were made."""

    nets: dict[str, caffe_pb2.NetParameter]
    blobs: dict[str, list[np.ndarray]]
    trunk: CastClassifier
    head: Head
    report: TransplantReport


def fully_convolutional(
    net: caffe_pb2.NetParameter,
    blobs: Mapping[str, Sequence[np.ndarray]],
    *,
    num_classes: int = NUM_CLASSES,
    drop: Iterable[str] = (),
    pad: int | None = 100,
    normalize_loss: bool = True,
    data_params: Mapping[str, Mapping | None] | None = None,
    source: str = "<net>",
) -> FullyConvolutional:
    """Cast a classifier and its weights into FCN-32s (`python -m porting.fully_convolutional` on objects).

    Args:
        net: the classifier's deploy definition.
        blobs: its weights (layer name -> blobs, as `read_caffemodel` gives them).
        num_classes, normalize_loss, data_params: as `fcn32s_nets`.
        drop, pad: as `porting.fully_convolutional.cast_classifier`.
        source: the definition's file, for error messages.

    Returns:
        The nets, and blobs for every learnable layer of the deploy net: the classifier's
        (fully connected ones reshaped into kernels), a zero score layer and a bilinear upsampling.

    Raises:
        FormatError: the net cannot be cast, or the weights do not cover its layers.
    """
    trunk = cast_classifier(net, drop=drop, pad=pad, source=source)
    nets, head = fcn32s_nets(
        trunk, num_classes=num_classes, normalize_loss=normalize_loss, data_params=data_params, source=source, pad=pad
    )
    deploy = CaffeNet(nets["deploy"], "TEST", source=source)
    report = transplant(deploy, blobs)
    misfits = [line for line in report.skipped if "(not in the net)" not in line]
    missing = [name for name in report.untouched if name not in (SCORE, UPSCORE)]
    if misfits or missing:
        problems = misfits + [f"{name} (no weights given)" for name in missing]
        raise FormatError(f"{source}: the weights do not fit the classifier: {'; '.join(problems)}")
    set_bilinear_upsampling(deploy, [UPSCORE])
    return FullyConvolutional(nets, deploy.blobs_numpy(), trunk, head, report)


@dataclass(frozen=True)
class Measures:
    """CVPR 2015 Table 1's columns for one FCN, computed from its net."""

    conv_layers: int  # Convolution layers on the longest input-to-score path (fc layers count once cast)
    parameters: int  # learned values (blobs with lr_mult > 0; the fixed upsampling is not learned)
    receptive_field: int  # input pixels one score pixel sees (largest axis, largest over paths)
    max_stride: int  # input pixels between neighbouring score pixels


def measure(net: caffe_pb2.NetParameter, score: str = SCORE, data: str = "data", source: str = "<net>") -> Measures:
    """Table 1's columns for a net whose coarse score blob is `score` and input blob `data`."""
    graph = from_proto(net)
    for name in (score, data):
        if name not in graph:
            raise PrototxtError(source, f"no blob '{name}'")
    footprint = receptive_field(graph[score], graph[data])
    caffe = CaffeNet(net, "TEST", source=source, fill=False)
    learned = sum(math.prod(info.parameter.shape) for info in caffe.param_specs() if info.lr_mult > 0)
    return Measures(
        conv_layers=_longest_conv_path(net, score),
        parameters=int(learned),
        receptive_field=int(max(fp.extent for fp in footprint)),
        max_stride=int(max(fp.stride for fp in footprint)),
    )


def _longest_conv_path(net: caffe_pb2.NetParameter, score: str) -> int:
    depth: dict[str, int] = {}
    for layer in net.layer:
        below = max((depth.get(name, 0) for name in layer.bottom), default=0)
        for top in layer.top:
            depth[top] = below + (layer.type == "Convolution")
        if score in layer.top and layer.type == "Convolution":
            break
    return depth.get(score, 0)


def _header(prototxt: Path) -> str:
    return f"# Written by `python -m porting.fully_convolutional` from {prototxt.name}.\n"


def write(result: FullyConvolutional, out: Path, prototxt: Path) -> list[Path]:
    """DIR/{deploy,train,val}.prototxt and DIR/init.caffemodel; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for split, net in result.nets.items():
        path = out / f"{split}.prototxt"
        with atomic_path(path) as temporary:
            Path(temporary).write_text(_header(prototxt) + to_text(net), encoding="utf-8")
        written.append(path)
    caffemodel = out / "init.caffemodel"
    write_caffemodel((result.nets["deploy"], result.blobs), caffemodel)
    return written + [caffemodel]


def build_parser() -> argparse.ArgumentParser:
    """The arguments of `python -m porting.fully_convolutional`."""
    parser = cli.make_parser(
        "porting.fully_convolutional",
        "Cast an ILSVRC classifier (Caffe deploy prototxt + caffemodel) into FCN-32s: "
        "DIR/{deploy,train,val}.prototxt and DIR/init.caffemodel.",
    )
    parser.add_argument("--prototxt", type=Path, required=True, help="the classifier's deploy prototxt (V1 or V2)")
    parser.add_argument("--caffemodel", type=Path, required=True, help="the classifier's weights")
    cli.add_classes(parser, default=NUM_CLASSES, what="score layer outputs")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the nets and init.caffemodel into")
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="LAYER",
        help="remove this layer too (repeatable); GoogLeNet: --drop pool5/7x7_s1, its final average "
        "pooling, as the paper does",
    )
    parser.add_argument(
        "--pad",
        type=cli.non_negative_int,
        default=100,
        help="the first convolution's pad (default 100, as the authors' nets); too small a pad "
        "leaves the score unable to cover the input and is refused",
    )
    parser.add_argument(
        "--normalize-loss",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="per-pixel normalized loss (default, the authors' FCN-AlexNet and the CVPR recipe); "
        "--no-normalize-loss as the authors' heavy VGG16 nets",
    )
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m porting.fully_convolutional`: a classifier's deploy file and weights into FCN-32s files."""
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    return cli.run(lambda: cast_to_fcn(args))


def cast_to_fcn(args: argparse.Namespace) -> None:
    """Read the classifier, cast it, write the FCN-32s files and report them on stderr."""
    net = read_prototxt(args.prototxt)
    blobs = read_caffemodel(args.caffemodel)
    result = fully_convolutional(
        net,
        blobs,
        num_classes=args.classes,
        drop=args.drop,
        pad=args.pad,
        normalize_loss=args.normalize_loss,
        source=str(args.prototxt),
    )
    paths = write(result, args.out, args.prototxt)
    cast = ", ".join(f"{name} {h}x{w}" for name, (h, w) in result.trunk.cast.items()) or "none"
    logger.info("cast to convolutions: %s; removed: %s", cast, ", ".join(result.trunk.removed))
    logger.info(
        "score: stride %s, upsampling kernel %s, crop offset %s",
        result.head.stride,
        result.head.kernel,
        result.head.offset,
    )
    for path in paths:
        cli.wrote(path)


if __name__ == "__main__":
    sys.exit(main())
