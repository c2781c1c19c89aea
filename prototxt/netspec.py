"""A small declarative way to write Caffe nets in Python, without Caffe.

Layers are calls on `layers` that take their bottoms as positional arguments and their
settings as keywords; they return `Top` objects that later calls use as bottoms. A
`NetSpec` names tops by attribute assignment and turns the graph into a `NetParameter`::

    n = NetSpec()
    n.data = layers.Input(shape=dict(dim=[1, 3, 500, 500]), name="input")
    n.conv1 = layers.Convolution(
        n.data, num_output=64, kernel_size=3, param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
    )
    n.relu1 = layers.ReLU(n.conv1, in_place=True)
    net = n.to_proto()

Keyword routing: a keyword that is a `LayerParameter` field (`param`, `include`,
`loss_param`, ...) is set on the layer; any other keyword goes to the layer type's own
parameter message (`convolution_param` for Convolution and Deconvolution,
`pooling_param` for Pooling, ...). Dicts fill messages, lists fill repeated fields, and
strings name enum values (`pool="MAX"`). Four keywords are the spec's own: `name` (the
layer name), `tops` (explicit top names), `ntop` (number of tops) and `in_place` (tops
reuse the bottoms' blobs, as ReLU and Dropout do in the FCN nets).

A call returns its one `Top`, a tuple of its tops, or, with `ntop=0` (a `Silence`), the
`Layer` itself, which a NetSpec names by assignment like a top (`n.silence = ...`).

Naming: a top keeps the first name it is assigned. A layer takes the name of its first
named top (or `name=`); a top's blob takes its assigned name (or `tops=`), an in-place
top's blob its bottom's blob name, and a layer left unnamed gets `<Type><n>`. Layers
are emitted bottoms-first, following the order in which tops were assigned, so a
definition written top to bottom emits in that order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from porting.errors import PrototxtError
from porting.proto import caffe_pb2

_SPEC_KEYWORDS = {"name", "tops", "ntop", "in_place"}
_PARAM_FIELD_OF_TYPE = {"Deconvolution": "convolution_param", "SoftmaxWithLoss": "softmax_param"}
_LAYER_FIELDS = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name


class Top:
    """One output blob of a layer; `name` is the first name a NetSpec assigned it."""

    __slots__ = ("layer", "index", "name")

    def __init__(self, layer: Layer, index: int) -> None:
        self.layer = layer
        self.index = index
        self.name: str | None = None

    def __repr__(self) -> str:
        return f"Top({self.layer.param.type}, {self.index})"


class Layer:
    """A layer in the graph: its settings as a `LayerParameter` (without name, bottoms
    and tops), its bottom `Top`s and the `Top`s it produces."""

    def __init__(
        self,
        type_name: str,
        bottoms: Iterable[Top],
        fields: Mapping[str, Any],
        *,
        name: str | None = None,
        tops: Iterable[str] | None = None,
        ntop: int = 1,
        in_place: bool = False,
    ) -> None:
        self.bottoms = tuple(bottoms)
        for bottom in self.bottoms:
            if not isinstance(bottom, Top):
                raise TypeError(f"{type_name}: bottoms must be Top objects, got {type(bottom).__name__}")
        self.top_names = tuple(tops) if tops is not None else None
        if self.top_names is not None:
            ntop = len(self.top_names)
        if ntop < 0:
            raise ValueError(f"{type_name}: ntop must be 0 or more, got {ntop}")
        if in_place and ntop > len(self.bottoms):
            raise ValueError(f"{type_name}: in-place needs a bottom for each of its {ntop} tops")
        self.name = name
        self.in_place = in_place
        self.param = caffe_pb2.LayerParameter(type=type_name)
        self._set_fields(fields)
        self.tops = tuple(Top(self, i) for i in range(ntop))

    def _set_fields(self, fields: Mapping[str, Any]) -> None:
        type_fields: dict[str, Any] = {}
        for key, value in fields.items():
            if key in ("name", "type", "bottom", "top"):
                raise ValueError(f"{self.param.type}: '{key}' is set by the spec, not by a keyword")
            if key in _LAYER_FIELDS:
                assign(self.param, {key: value}, self.param.type)
            else:
                type_fields[key] = value
        if type_fields:
            field = type_param_field(self.param.type)
            assign(getattr(self.param, field), type_fields, f"{self.param.type} {field}")


def type_param_field(type_name: str) -> str:
    """The `LayerParameter` field holding a layer type's own settings."""
    if type_name in _PARAM_FIELD_OF_TYPE:
        return _PARAM_FIELD_OF_TYPE[type_name]
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type_name).lower()
    for candidate in (f"{type_name.lower()}_param", f"{snake}_param"):
        if candidate in _LAYER_FIELDS:
            return candidate
    raise ValueError(f"{type_name}: no parameter message for this layer type; set fields with *_param keywords")


def assign(message: Message, fields: Mapping[str, Any], where: str) -> None:
    """Fill `message` from a dict: nested dicts for messages, lists for repeated fields,
    enum values by name."""
    by_name = message.DESCRIPTOR.fields_by_name
    for key, value in fields.items():
        field = by_name.get(key)
        if field is None:
            raise ValueError(f"{where}: {message.DESCRIPTOR.name} has no field '{key}'")
        if field.is_repeated:
            values = value if isinstance(value, (list, tuple)) else [value]
            container = getattr(message, key)
            for item in values:
                if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    assign(container.add(), item, f"{where}.{key}")
                else:
                    container.append(_scalar(field, item, where))
        elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            assign(getattr(message, key), value, f"{where}.{key}")
        else:
            setattr(message, key, _scalar(field, value, where))


def _scalar(field: FieldDescriptor, value: Any, where: str) -> Any:
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM and isinstance(value, str):
        enum_value = field.enum_type.values_by_name.get(value)
        if enum_value is None:
            names = ", ".join(field.enum_type.values_by_name)
            raise ValueError(f"{where}: '{value}' is not a {field.enum_type.name} (one of {names})")
        return enum_value.number
    return value


class _LayerFactory:
    """`layers.<Type>(*bottoms, **settings)` makes a layer of that Caffe type."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("_"):
            raise AttributeError(type_name)

        def make(*bottoms: Top, **fields: Any) -> Top | tuple[Top, ...] | Layer:
            spec = {key: fields.pop(key) for key in _SPEC_KEYWORDS & fields.keys()}
            layer = Layer(type_name, bottoms, fields, **spec)
            if not layer.tops:
                return layer
            return layer.tops[0] if len(layer.tops) == 1 else layer.tops

        make.__name__ = type_name
        return make


layers = _LayerFactory()


class NetSpec:
    """Tops (and top-less layers) named by assignment, emitted as a `NetParameter`.

    `n.conv1 = ...` and `n["conv1"] = ...` are the same; the item form serves names
    built at run time. Assigning a top-less `Layer` names the layer.
    """

    _tops: dict[str, Top | Layer]

    def __init__(self) -> None:
        object.__setattr__(self, "_tops", {})

    def __setattr__(self, name: str, value: Any) -> None:  # checked by __setitem__
        self[name] = value

    # Lookups return Any: a Top, or a top-less Layer, chained by callers as with pycaffe's NetSpec.
    def __getattr__(self, name: str) -> Any:
        try:
            return self._tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top '{name}'") from None

    def __setitem__(self, name: str, value: Top | Layer) -> None:
        if isinstance(value, Layer):
            if value.tops:
                raise TypeError(f"NetSpec.{name}: assign the layer's tops, not a layer that has {len(value.tops)}")
            if value.name is None:
                value.name = name
        elif not isinstance(value, Top):
            raise TypeError(f"NetSpec.{name}: expected a Top, got {type(value).__name__}")
        elif value.name is None:
            value.name = name
        self._tops[name] = value

    def __getitem__(self, name: str) -> Any:
        try:
            return self._tops[name]
        except KeyError:
            raise KeyError(f"NetSpec has no top '{name}'") from None

    def __contains__(self, name: str) -> bool:
        return name in self._tops

    def to_proto(self) -> caffe_pb2.NetParameter:
        """Emit every layer reachable from the named tops, bottoms first."""
        return _Emitter(self._tops).emit()


class _Emitter:
    def __init__(self, named: Mapping[str, Top | Layer]) -> None:
        self.named = named
        self.blob_names: dict[Top, str] = {}
        self.emitted: set[Layer] = set()
        self.type_counts: dict[str, int] = {}
        self.net = caffe_pb2.NetParameter()

    def emit(self) -> caffe_pb2.NetParameter:
        for value in self.named.values():
            self._emit_layer(value if isinstance(value, Layer) else value.layer)
        return self.net

    def _emit_layer(self, layer: Layer) -> None:
        if layer in self.emitted:
            return
        for bottom in layer.bottoms:
            self._emit_layer(bottom.layer)
        name = self._layer_name(layer)
        message = self.net.layer.add()
        message.CopyFrom(layer.param)
        message.name = name
        message.bottom.extend(self.blob_names[bottom] for bottom in layer.bottoms)
        for top in layer.tops:
            self.blob_names[top] = self._blob_name(top, name)
        message.top.extend(self.blob_names[top] for top in layer.tops)
        self.emitted.add(layer)

    def _layer_name(self, layer: Layer) -> str:
        if layer.name is not None:
            return layer.name
        for top in layer.tops:
            if top.name is not None:
                return top.name
        count = self.type_counts.get(layer.param.type, 0) + 1
        self.type_counts[layer.param.type] = count
        return f"{layer.param.type}{count}"

    def _blob_name(self, top: Top, layer_name: str) -> str:
        layer = top.layer
        if layer.top_names is not None:
            return layer.top_names[top.index]
        if layer.in_place:
            return self.blob_names[layer.bottoms[top.index]]
        if top.name is not None:
            return top.name
        return layer_name if top.index == 0 else f"{layer_name}_{top.index}"


def from_proto(net: caffe_pb2.NetParameter) -> dict[str, Top]:
    """The graph of a parsed net: blob name -> the `Top` that last wrote it.

    Lets the coordinate-map analysis run on nets written by hand or by others.
    """
    blobs: dict[str, Top] = {}
    for message in net.layer:
        missing = [name for name in message.bottom if name not in blobs]
        if missing:
            raise PrototxtError(f"layer '{message.name}'", f"bottom '{missing[0]}' is not produced by an earlier layer")
        layer = Layer(message.type, [blobs[name] for name in message.bottom], {}, name=message.name, tops=message.top)
        layer.param.CopyFrom(message)
        for field in ("name", "bottom", "top"):
            layer.param.ClearField(field)
        layer.in_place = list(message.top) == list(message.bottom)[: len(message.top)]
        for top in layer.tops:
            blobs[message.top[top.index]] = top
    return blobs
