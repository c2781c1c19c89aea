"""Coordinate maps: where a blob's pixels sit in another blob's coordinates.

FCN fuses blobs computed at different strides and paddings; to add them, the larger one
is cropped so that both describe the same input locations (CVPR 2015, Sec. 3 and 4.2).
Along each spatial axis, every layer maps an output coordinate `x` to the input
coordinate of the centre of the window that produced it, `a * x + b`:

- convolution / pooling (kernel k, stride s, pad p, dilation d; k' = d(k-1)+1):
  `a = s`, `b = (k'-1)/2 - p` (output i reads inputs s*i-p .. s*i-p+k'-1);
- deconvolution: the inverse of that, `a = 1/s`, `b = (p - (k'-1)/2) / s`;
- crop with offset o: `a = 1`, `b = o` (top pixel i is bottom pixel i+o);
- element-wise layers (ReLU, Dropout, Scale, Eltwise, ...): the identity.

A layer maps each top to its first bottom, except that a Convolution or Deconvolution
with several bottoms computes top i from bottom i (shared weights, Caffe's
BaseConvolutionLayer), and Eltwise and Concat align all their bottoms.

Ceil rounding in Caffe's pooling changes how many outputs there are, not where they
sit, so it does not enter the map. Maps compose along a path (`x -> a2(a1 x + b1) + b2`);
`crop_params(top, reference)` takes both blobs back to their nearest common ancestor,
requires equal scales there, and returns the offset that lines `top` up with
`reference`: `(b_ref - b_top) / a`, which must be a non-negative integer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from porting.errors import PrototxtError
from porting.proto import caffe_pb2
from porting.window import Window, read_window

from .netspec import Top, layers

SPATIAL_AXES = (2, 3)

_IDENTITY_TYPES = {
    "AbsVal",
    "BatchNorm",
    "Bias",
    "BNLL",
    "Clip",
    "Dropout",
    "ELU",
    "Eltwise",
    "Exp",
    "Log",
    "LRN",
    "MVN",
    "Power",
    "PReLU",
    "ReLU",
    "Scale",
    "Sigmoid",
    "Softmax",
    "Split",
    "Swish",
    "TanH",
    "Threshold",
}
_ALL_BOTTOMS_ALIGNED = {"Eltwise", "Concat"}
_TOP_I_FROM_BOTTOM_I = {"Convolution", "Deconvolution"}


@dataclass(frozen=True)
class AxisMap:
    """`x_in = scale * x_out + offset` along one spatial axis."""

    scale: Fraction
    offset: Fraction

    def then(self, outer: AxisMap) -> AxisMap:
        """This map followed by `outer` (which maps our input coordinates further back)."""
        return AxisMap(outer.scale * self.scale, outer.scale * self.offset + outer.offset)


IDENTITY = AxisMap(Fraction(1), Fraction(0))
CoordMap = tuple[AxisMap, ...]


def _window(layer: caffe_pb2.LayerParameter) -> Window:
    return read_window(layer, f"layer '{layer.name}'")


def _window_map(window: Window, axis: int) -> AxisMap:
    index = axis - SPATIAL_AXES[0]
    extent = window.extent(index)
    return AxisMap(Fraction(window.stride[index]), Fraction(extent - 1, 2) - window.pad[index])


def _crop_map(param: caffe_pb2.CropParameter, axis: int) -> AxisMap:
    first = param.axis if param.axis >= 0 else param.axis + 4
    if axis < first or len(param.offset) == 0:
        return IDENTITY
    offset = param.offset[0] if len(param.offset) == 1 else param.offset[axis - first]
    return AxisMap(Fraction(1), Fraction(offset))


def layer_map(layer: caffe_pb2.LayerParameter) -> CoordMap | None:
    """Top -> bottom coordinates for one layer (the same for every top), or None where the layer does not
    keep spatial coordinates (data layers, fully connected layers, global pooling, ...)."""
    kind = layer.type
    if kind == "Convolution":
        return tuple(_window_map(_window(layer), axis) for axis in SPATIAL_AXES)
    if kind == "Pooling":
        window = _window(layer)
        return None if window.kernel is None else tuple(_window_map(window, axis) for axis in SPATIAL_AXES)
    if kind == "Deconvolution":
        forward = [_window_map(_window(layer), axis) for axis in SPATIAL_AXES]
        return tuple(AxisMap(1 / m.scale, -m.offset / m.scale) for m in forward)
    if kind == "Crop":
        return tuple(_crop_map(layer.crop_param, axis) for axis in SPATIAL_AXES)
    if kind == "Concat" and layer.concat_param.axis in (1, -3):
        return (IDENTITY,) * len(SPATIAL_AXES)
    if kind in _IDENTITY_TYPES:
        return (IDENTITY,) * len(SPATIAL_AXES)
    return None


def ancestors(top: Top) -> dict[Top, CoordMap]:
    """Every blob `top` can be traced back to, nearest first, with the map top -> it."""
    found: dict[Top, CoordMap] = {top: (IDENTITY,) * len(SPATIAL_AXES)}
    queue = deque([top])
    while queue:
        node = queue.popleft()
        layer = node.layer
        step = layer_map(layer.param)
        if step is None or not layer.bottoms:
            continue
        through = _bottoms_of(node)
        composed = tuple(inner.then(outer) for inner, outer in zip(found[node], step))
        for bottom in through:
            if bottom not in found:
                found[bottom] = composed
                queue.append(bottom)
    return found


def _bottoms_of(top: Top) -> tuple[Top, ...]:
    """The bottoms whose coordinates `top` keeps (see the module docstring)."""
    layer = top.layer
    if layer.param.type in _ALL_BOTTOMS_ALIGNED:
        return layer.bottoms
    if layer.param.type in _TOP_I_FROM_BOTTOM_I:
        return layer.bottoms[top.index : top.index + 1]
    return layer.bottoms[:1]


def _describe(top: Top) -> str:
    """A top as error messages name it: its explicit blob name, else its assigned name."""
    layer = top.layer
    if layer.top_names is not None:
        return f"'{layer.top_names[top.index]}'"
    if top.name is not None:
        return f"'{top.name}'"
    return f"the {layer.param.type} output"


def crop_params(top: Top, reference: Top) -> tuple[int, tuple[int, ...]]:
    """Crop `axis` and `offset`s that make `top`, cropped, line up with `reference`.

    Returns `(2, (offset,))` when both spatial axes agree (Caffe applies a single offset
    to every axis from `axis` on), else `(2, (offset_h, offset_w))`. Raises PrototxtError,
    naming both blobs, when they share no ancestor, differ in scale, or would need a
    fractional or negative offset.
    """
    top_name, ref_name = _describe(top), _describe(reference)
    where = f"crop of {top_name} to {ref_name}"
    top_maps = ancestors(top)
    ref_maps = ancestors(reference)
    common = next((node for node in top_maps if node in ref_maps), None)
    if common is None:
        raise PrototxtError(where, "the two blobs have no common ancestor with a spatial coordinate map")
    offsets = []
    for axis, top_map, ref_map in zip(SPATIAL_AXES, top_maps[common], ref_maps[common]):
        if top_map.scale != ref_map.scale:
            raise PrototxtError(
                where,
                f"scales differ on axis {axis}: one pixel of {top_name} spans {top_map.scale} pixel(s) of "
                f"their common ancestor {_describe(common)}, one of {ref_name} spans {ref_map.scale}",
            )
        offset = (ref_map.offset - top_map.offset) / top_map.scale
        if offset.denominator != 1 or offset < 0:
            raise PrototxtError(
                where,
                f"axis {axis} would need offset {offset}; a crop needs a non-negative whole number "
                f"({top_name} starts at {top_map.offset}, {ref_name} at {ref_map.offset} in {_describe(common)})",
            )
        offsets.append(int(offset))
    if len(set(offsets)) == 1:
        return SPATIAL_AXES[0], (offsets[0],)
    return SPATIAL_AXES[0], tuple(offsets)


def crop(top: Top, reference: Top, **spec) -> Top:
    """A Crop layer cutting `top` to `reference`'s extent, offsets from the coordinate maps."""
    axis, offsets = crop_params(top, reference)
    return layers.Crop(top, reference, axis=axis, offset=list(offsets), **spec)


@dataclass(frozen=True)
class Footprint:
    """What one pixel of a blob sees of an input along one axis: `extent` input pixels,
    its neighbours `stride` input pixels apart."""

    extent: Fraction
    stride: Fraction


def receptive_field(top: Top, source: Top) -> tuple[Footprint, ...]:
    """Receptive field of one pixel of `top` in `source`, per spatial axis (the largest over paths).

    Along a path the coordinate maps compose the strides; each window layer widens the
    field by (extent - 1) times the stride at its input: a conv or pooling window of
    extent k' at stride s grows `extent` by (k' - 1) * s. Concat and Eltwise take the
    widest of their bottoms. Raises PrototxtError when `top` does not depend on `source`.
    """
    memo: dict[Top, tuple[Footprint, ...] | None] = {}

    def visit(node: Top) -> tuple[Footprint, ...] | None:
        if node is source:
            return (Footprint(Fraction(1), Fraction(1)),) * len(SPATIAL_AXES)
        if node in memo:
            return memo[node]
        memo[node] = None
        layer = node.layer
        step = layer_map(layer.param)
        through = layer.bottoms if layer.param.type in _ALL_BOTTOMS_ALIGNED else layer.bottoms[:1]
        found = [fp for fp in (visit(bottom) for bottom in through) if fp is not None] if step else []
        if not found or step is None:
            return None
        widest = tuple(max((fp[i] for fp in found), key=lambda f: f.extent) for i in range(len(SPATIAL_AXES)))
        result = []
        for axis, inner, axis_map in zip(SPATIAL_AXES, widest, step):
            kind = layer.param.type
            if kind in ("Convolution", "Pooling"):
                extent = inner.extent + (_window(layer.param).extent(axis - SPATIAL_AXES[0]) - 1) * inner.stride
            elif kind == "Deconvolution":
                window, index = _window(layer.param), axis - SPATIAL_AXES[0]
                taps = -(-window.extent(index) // window.stride[index])
                extent = inner.extent + (taps - 1) * inner.stride
            else:
                extent = inner.extent
            result.append(Footprint(extent, inner.stride * axis_map.scale))
        memo[node] = tuple(result)
        return memo[node]

    found = visit(top)
    if found is None:
        raise PrototxtError(f"receptive field of {_describe(top)}", f"it does not depend on {_describe(source)}")
    return found
