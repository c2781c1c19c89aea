"""Caffe's window fields of Convolution, Deconvolution and Pooling layers, read in one place.

The two parameter messages spell the fields differently and Caffe checks them differently:

- `convolution_param` (Caffe's base_conv_layer.cpp): `kernel_size`, `stride`, `pad` and
  `dilation` are repeated, holding one value for both spatial axes or one per axis (none:
  stride 1, pad 0, dilation 1; a kernel is required). `kernel_h`/`kernel_w`,
  `stride_h`/`stride_w`, `pad_h`/`pad_w` replace the repeated field; giving both forms is
  an error, and an axis left out of the `_h`/`_w` pair is 0.
- `pooling_param` (Caffe's pooling_layer.cpp): `kernel_size`, `stride`, `pad` are single
  values (stride 1, pad 0 when absent); the `_h`/`_w` form needs both halves and excludes
  the single value. With `global_pooling` the window is the whole input: no kernel may be
  given, pad must be 0 and stride 1.

Kernel sizes, strides and dilations must be positive (Caffe checks the kernel; a zero
stride or dilation would divide by zero there).
"""

from __future__ import annotations

from dataclasses import dataclass

from porting.errors import PrototxtError
from porting.proto import caffe_pb2

Pair = tuple[int, int]
WINDOW_TYPES = ("Convolution", "Deconvolution", "Pooling")


@dataclass(frozen=True)
class Window:
    """A layer's window per spatial axis (height, width); `kernel` is None for global pooling."""

    kernel: Pair | None
    stride: Pair
    pad: Pair
    dilation: Pair = (1, 1)

    def extent(self, axis: int) -> int:
        """Input pixels one window spans along `axis` (0: height, 1: width): dilation * (kernel - 1) + 1."""
        if self.kernel is None:
            raise ValueError("a global pooling window spans the whole input")
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1


def read_window(layer: caffe_pb2.LayerParameter, where: str) -> Window:
    """The window of a Convolution, Deconvolution or Pooling layer, by Caffe's rules.

    Args:
        layer: the layer (its `convolution_param` or `pooling_param` is read).
        where: the location errors name, e.g. "net.prototxt: layer 'conv1'".

    Returns:
        Kernel, stride, pad and dilation as (height, width) pairs.

    Raises:
        PrototxtError: a field given in both forms, a missing or non-positive kernel, a
            non-positive stride or dilation, a repeated field with more values than axes,
            or global pooling with a kernel, pad or stride.
        ValueError: `layer` is not one of WINDOW_TYPES.
    """
    if layer.type == "Pooling":
        window = _pooling_window(layer.pooling_param, where)
    elif layer.type in ("Convolution", "Deconvolution"):
        window = _convolution_window(layer.convolution_param, where)
    else:
        raise ValueError(f"{layer.type} layers have no window; expected one of {', '.join(WINDOW_TYPES)}")
    for name, values in (
        ("kernel size", window.kernel or (1, 1)),
        ("stride", window.stride),
        ("dilation", window.dilation),
    ):
        if min(values) <= 0:
            raise PrototxtError(where, f"{name} {_shown(values)} must be positive")
    return window


def _convolution_window(param: caffe_pb2.ConvolutionParameter, where: str) -> Window:
    kernel = _repeated_or_pair(param, "kernel_size", "kernel", None, where)
    stride = _repeated_or_pair(param, "stride", "stride", 1, where)
    pad = _repeated_or_pair(param, "pad", "pad", 0, where)
    dilation = _repeated(param, "dilation", 1, where)
    return Window(kernel, stride, pad, dilation)


def _repeated_or_pair(param, field: str, stem: str, default: int | None, where: str) -> Pair:
    """A repeated convolution field or its `_h`/`_w` replacement (an unset half is 0, as in Caffe)."""
    if param.HasField(f"{stem}_h") or param.HasField(f"{stem}_w"):
        if len(getattr(param, field)):
            raise PrototxtError(where, f"give either {field} or {stem}_h/{stem}_w, not both")
        return getattr(param, f"{stem}_h"), getattr(param, f"{stem}_w")
    return _repeated(param, field, default, where)


def _repeated(param, field: str, default: int | None, where: str) -> Pair:
    values = list(getattr(param, field))
    if not values:
        if default is None:
            raise PrototxtError(where, f"{field} is not set (give {field}, or the _h and _w pair)")
        return default, default
    if len(values) > 2:
        raise PrototxtError(where, f"{field} has {len(values)} values; give one, or one per spatial axis (2)")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _pooling_window(param: caffe_pb2.PoolingParameter, where: str) -> Window:
    stride = _single_or_pair(param, "stride", "stride", 1, where)
    pad = _single_or_pair(param, "pad", "pad", 0, where)
    if param.global_pooling:
        if any(param.HasField(field) for field in ("kernel_size", "kernel_h", "kernel_w")):
            raise PrototxtError(where, "global pooling takes no kernel size (the window is the whole input)")
        if pad != (0, 0) or stride != (1, 1):
            raise PrototxtError(
                where, f"global pooling takes pad 0 and stride 1, found pad {_shown(pad)}, stride {_shown(stride)}"
            )
        return Window(None, stride, pad)
    return Window(_single_or_pair(param, "kernel_size", "kernel", None, where), stride, pad)


def _single_or_pair(param, field: str, stem: str, default: int | None, where: str) -> Pair:
    """A pooling field: the single value, or both halves of its `_h`/`_w` pair (never both forms)."""
    has_h, has_w = param.HasField(f"{stem}_h"), param.HasField(f"{stem}_w")
    if has_h or has_w:
        if param.HasField(field):
            raise PrototxtError(where, f"give either {field} or {stem}_h and {stem}_w, not both")
        if not (has_h and has_w):
            raise PrototxtError(where, f"{stem}_h and {stem}_w go together; {stem}_{'w' if has_h else 'h'} is missing")
        return getattr(param, f"{stem}_h"), getattr(param, f"{stem}_w")
    if param.HasField(field):
        value = getattr(param, field)
        return value, value
    if default is None:
        raise PrototxtError(where, f"{field} is not set (give {field}, or {stem}_h and {stem}_w)")
    return default, default


def _shown(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"
