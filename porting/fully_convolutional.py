"""Cast a Caffe classifier into a fully convolutional net (CVPR 2015, Sec. 3.1 and 4.1).

A classifier's fully connected layers "can also be viewed as convolutions with kernels
that cover their entire input regions". `cast_classifier` rewrites a classification net
(a deploy file: an Input layer, any Caffe layers, InnerProducts, a Softmax) that way:

- the final classifier is the last InnerProduct; it, everything after it (Softmax,
  Accuracy, losses) and every layer off its path (GoogLeNet's auxiliary classifiers) are
  removed; `drop` removes more (GoogLeNet's final average pooling, as the paper does),
  and the layers that read a dropped layer's top read its bottom instead;
- every other InnerProduct becomes a Convolution whose kernel is the spatial size its
  bottom has at the classifier's own input size (CaffeNet fc6: 6x6 over pool5, VGG16
  fc6: 7x7), and those after it 1x1 kernels; their weights are the InnerProduct's,
  reshaped in memory order (`porting.surgery.transplant`);
- the first convolution is padded by `pad` (100 in the authors' nets), so the upsampled
  score can cover every input pixel.

The result ends at the blob the classifier read (`CastClassifier.features`). The score
layer, the upsampling and the Crop whose offset the coordinate maps derive are added by
`prototxt.backbone`, which also writes the train and val nets; `python -m
porting.fully_convolutional` is that writer's command line (see `main` below).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from porting.errors import PrototxtError
from porting.net import CaffeNet
from porting.netstate import filter_phase
from porting.proto import caffe_pb2
from porting.upgrade import upgrade_net

Shape = tuple[int, ...]

#: Layers that compute each spatial location (each vector of a dense blob) on its own, so
#: they may follow a cast layer unchanged.
PER_LOCATION_TYPES = frozenset(
    {
        "AbsVal",
        "BatchNorm",
        "Bias",
        "BNLL",
        "Clip",
        "Concat",
        "Dropout",
        "ELU",
        "Eltwise",
        "Exp",
        "Log",
        "Power",
        "PReLU",
        "ReLU",
        "Scale",
        "Sigmoid",
        "Split",
        "Swish",
        "TanH",
        "Threshold",
    }
)
#: Per-location layers that work along an axis: only along the channel axis (1) is that per location.
_AXIS_FIELDS = {"Concat": "concat_param", "Scale": "scale_param", "Bias": "bias_param"}


@dataclass
class CastClassifier:
    """A classifier cast into a fully convolutional trunk (the FCN without its head).

    Attributes:
        net: the trunk, TEST phase, from the Input layer to `features`.
        features: the blob the removed classifier read; the score layer goes on it.
        classifier: the removed final InnerProduct.
        cast: InnerProduct layer -> the (kernel_h, kernel_w) of the Convolution it became.
        removed: layers left out, in the classifier's order.
        input_shape: the classifier's own input shape (N, C, H, W), where the cast fc
            layers have a single spatial output.
    """

    net: caffe_pb2.NetParameter
    features: str
    classifier: str
    cast: dict[str, tuple[int, int]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    input_shape: Shape = ()


def cast_classifier(
    net: caffe_pb2.NetParameter, *, drop: Iterable[str] = (), pad: int | None = 100, source: str = "<net>"
) -> CastClassifier:
    """Cast a classification net (V0/V1/V2) into its fully convolutional trunk.

    Args:
        net: the classifier's deploy definition (one Input layer, or `input`/`input_dim`).
        drop: layer names to remove besides the classifier; each needs one bottom and one top.
        pad: the first convolution's spatial pad; None keeps the classifier's own.
        source: the definition's file name, for error messages.

    Returns:
        The trunk with what was cast and removed.

    Raises:
        FormatError: no InnerProduct to cast or to remove, a `drop` name that is not a
            layer, or a layer in the way of the cast (global pooling, a layer after a cast
            one that mixes locations; UnsupportedLayerError for a type the port lacks,
            such as Flatten).
    """
    net = upgrade_net(net, source) if net.layers else net
    net = filter_phase(net, "TEST", source=source)
    _check_input(net, source)
    net = _drop(net, list(drop), source)
    classifier = _classifier(net, source)
    kept, removed = _path_to(net, classifier, source)
    features = classifier.bottom[0]
    trunk = caffe_pb2.NetParameter()
    trunk.CopyFrom(net)
    del trunk.layer[:]
    trunk.layer.extend(kept)
    shapes, input_shape = _bottom_shapes(net, kept + [classifier], source)
    cast = _cast(trunk, shapes, classifier, source)
    if pad is not None:
        _pad_first_convolution(trunk, pad, source)
    return CastClassifier(trunk, features, classifier.name, cast, removed, input_shape)


def _check_input(net: caffe_pb2.NetParameter, source: str) -> None:
    inputs = [layer for layer in net.layer if layer.type == "Input"]
    others = [layer for layer in net.layer if not layer.bottom and layer.type != "Input"]
    if len(inputs) != 1 or len(inputs[0].top) != 1 or others:
        found = ", ".join(f"'{layer.name}' ({layer.type})" for layer in inputs + others) or "none"
        raise PrototxtError(
            source,
            f"a classifier to cast needs its deploy form: exactly one Input layer with one top (found {found}); "
            "use the model's deploy.prototxt, not its train_val.prototxt",
        )
    shape = inputs[0].input_param.shape
    if len(shape) != 1 or len(shape[0].dim) != 4:
        raise PrototxtError(f"{source}: layer '{inputs[0].name}'", "the input needs one 4-D shape (N, C, H, W)")


def _drop(net: caffe_pb2.NetParameter, names: list[str], source: str) -> caffe_pb2.NetParameter:
    """Remove the named layers; later layers read a dropped layer's bottom instead of its top."""
    index = {layer.name: i for i, layer in enumerate(net.layer)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise PrototxtError(source, f"--drop {unknown[0]}: no such layer (layers: {', '.join(index)})")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for name in sorted(set(names), key=index.__getitem__, reverse=True):
        position = [layer.name for layer in out.layer].index(name)
        layer = out.layer[position]
        if len(layer.bottom) != 1 or len(layer.top) != 1:
            raise PrototxtError(
                f"{source}: layer '{name}'",
                f"cannot drop a layer with {len(layer.bottom)} bottom(s) and {len(layer.top)} top(s); only one of each",
            )
        old, new = layer.top[0], layer.bottom[0]
        del out.layer[position]
        if old != new:
            _rename_blob(out.layer[position:], old, new)
    return out


def _rename_blob(layers, old: str, new: str) -> None:
    """Read `new` where `layers` read `old`, up to the layer that writes a fresh `old`."""
    for layer in layers:
        in_place = old in layer.bottom
        layer.bottom[:] = [new if name == old else name for name in layer.bottom]
        if old in layer.top and not in_place:
            return
        layer.top[:] = [new if name == old else name for name in layer.top]


def _classifier(net: caffe_pb2.NetParameter, source: str) -> caffe_pb2.LayerParameter:
    products = [layer for layer in net.layer if layer.type == "InnerProduct"]
    if not products:
        raise PrototxtError(
            source,
            "no spatial-to-dense boundary to cast: the net has no InnerProduct layer (is it fully convolutional already?)",
        )
    classifier = products[-1]
    if len(classifier.bottom) != 1:
        raise PrototxtError(f"{source}: layer '{classifier.name}'", "the final InnerProduct needs exactly one bottom")
    return classifier


def _path_to(net: caffe_pb2.NetParameter, classifier: caffe_pb2.LayerParameter, source: str):
    """The layers the classifier's input depends on, in order, and the names of all others."""
    position = list(net.layer).index(classifier)
    needed = {classifier.bottom[0]}
    kept: list[caffe_pb2.LayerParameter] = []
    for layer in reversed(net.layer[:position]):
        if not needed.intersection(layer.top):
            continue
        kept.append(layer)
        needed.difference_update(name for name in layer.top if name not in layer.bottom)
        needed.update(layer.bottom)
    kept.reverse()
    kept_names = {layer.name for layer in kept}
    removed = [layer.name for layer in net.layer if layer.name not in kept_names]
    return kept, removed


def _bottom_shapes(
    net: caffe_pb2.NetParameter, layers: list[caffe_pb2.LayerParameter], source: str
) -> tuple[dict[str, list[Shape]], Shape]:
    """Each layer's bottom shapes at the classifier's input size, by shape inference on meta tensors."""
    path = caffe_pb2.NetParameter()
    path.CopyFrom(net)
    del path.layer[:]
    path.layer.extend(layers)
    classifier = CaffeNet(path, "TEST", source=source, fill=False)
    blobs = {name: torch.empty(shape, device="meta") for name, shape in classifier.input_shapes.items()}
    shapes: dict[str, list[Shape]] = {}
    for step in classifier.steps:
        if step.layer.is_input:
            continue
        bottoms = [blobs[name] for name in step.bottoms]
        shapes[step.name] = [tuple(bottom.shape) for bottom in bottoms]
        blobs.update(zip(step.tops, step.layer(*bottoms)))
    (input_shape,) = classifier.input_shapes.values()
    return shapes, tuple(input_shape)


def _cast(
    trunk: caffe_pb2.NetParameter,
    shapes: dict[str, list[Shape]],
    classifier: caffe_pb2.LayerParameter,
    source: str,
) -> dict[str, tuple[int, int]]:
    """Turn the trunk's InnerProducts into Convolutions in place; check what lies in the way."""
    dense: set[str] = set()  # blobs that are vectors in the classifier and 1x1 maps per location in the FCN
    cast: dict[str, tuple[int, int]] = {}
    for layer in list(trunk.layer) + [classifier]:
        where = f"{source}: layer '{layer.name}'"
        bottoms = shapes.get(layer.name, [])
        if layer.type == "InnerProduct":
            kernel = _kernel(layer, bottoms[0], layer.bottom[0] in dense, where)
            if layer is not classifier:
                _to_convolution(layer, kernel)
                cast[layer.name] = kernel
                dense.update(layer.top)
            continue
        reads_dense = dense.intersection(layer.bottom)
        if reads_dense:
            if not _per_location(layer):
                raise PrototxtError(
                    where,
                    f"a {layer.type} layer reads '{sorted(reads_dense)[0]}', the output of a cast fully connected "
                    "layer; only layers that work on each location alone may follow one "
                    f"({', '.join(sorted(PER_LOCATION_TYPES))}, along the channel axis)",
                )
            dense.update(layer.top)
        elif layer.type == "Pooling" and layer.pooling_param.global_pooling:
            raise PrototxtError(
                where, "global pooling collapses any input to 1x1, so the net cannot be fully convolutional; --drop it"
            )
    return cast


def _kernel(layer: caffe_pb2.LayerParameter, bottom: Shape, dense: bool, where: str) -> tuple[int, int]:
    """The convolution kernel an InnerProduct implies: its bottom's spatial size (1x1 after a cast layer)."""
    param = layer.inner_product_param
    if param.axis % len(bottom) != 1:
        raise PrototxtError(where, f"an InnerProduct with axis {param.axis} cannot be cast; only axis 1 can")
    if param.transpose:
        raise PrototxtError(
            where, "an InnerProduct with transpose: true cannot be cast (its weight is stored transposed)"
        )
    if len(bottom) == 4:
        return bottom[2], bottom[3]
    if len(bottom) == 2 and dense:
        return 1, 1
    raise PrototxtError(
        where,
        f"its bottom has shape {bottom}: no spatial-to-dense boundary to cast here (it needs an N x C x H x W blob "
        "or the output of a cast fully connected layer)",
    )


def _per_location(layer: caffe_pb2.LayerParameter) -> bool:
    if layer.type not in PER_LOCATION_TYPES:
        return False
    field_name = _AXIS_FIELDS.get(layer.type)
    return field_name is None or getattr(layer, field_name).axis in (1, -3)


def _to_convolution(layer: caffe_pb2.LayerParameter, kernel: tuple[int, int]) -> None:
    product = layer.inner_product_param
    conv = caffe_pb2.ConvolutionParameter(num_output=product.num_output, bias_term=product.bias_term)
    if kernel[0] == kernel[1]:
        conv.kernel_size.append(kernel[0])
    else:
        conv.kernel_h, conv.kernel_w = kernel
    if product.HasField("weight_filler"):
        conv.weight_filler.CopyFrom(product.weight_filler)
    if product.HasField("bias_filler"):
        conv.bias_filler.CopyFrom(product.bias_filler)
    layer.type = "Convolution"
    layer.ClearField("inner_product_param")
    layer.convolution_param.CopyFrom(conv)


def _pad_first_convolution(trunk: caffe_pb2.NetParameter, pad: int, source: str) -> None:
    if pad < 0:
        raise ValueError(f"pad must be 0 or more, got {pad}")
    first = next((layer for layer in trunk.layer if layer.type == "Convolution"), None)
    if first is None:
        raise PrototxtError(source, "no Convolution layer to pad")
    param = first.convolution_param
    param.ClearField("pad_h")
    param.ClearField("pad_w")
    del param.pad[:]
    param.pad.append(pad)


def main(argv: list[str] | None = None) -> int:
    """`python -m porting.fully_convolutional`: the command line lives with the net writer.

    Writing train/val nets needs the project's data and loss layers and the coordinate
    maps, which sit above `porting` (imports run porting -> prototxt); the library above
    never imports them, only this entry point does.
    """
    from prototxt.backbone import main as write_main

    return write_main(argv)


if __name__ == "__main__":
    sys.exit(main())
