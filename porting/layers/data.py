"""Layers whose tops come from outside the net: Input and Caffe's data layers.

The net does not run them; their tops become net inputs. A Python layer's `param_str`
is read with `ast.literal_eval` (never `eval`, and the named module is never imported);
the project's datasets take the place of the authors' Python data layers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import torch
from google.protobuf import json_format
from torch import Tensor

from porting import fillers
from porting.errors import UnsupportedLayerError
from porting.layers.base import CaffeLayer, Shape
from porting.proto import caffe_pb2

#: shapes of a data layer's tops when neither the file nor the caller says (data, label)
DEFAULT_DATA_SHAPES: tuple[Shape, ...] = ((1, 3, 500, 500), (1, 1, 500, 500))


@dataclass(frozen=True)
class DataLayerSpec:
    """What a data layer asked for: `params` is the literal param_str (Python layers) or
    the layer's own `*_param` message as a dict; `python_layer` is "module.Layer" or ""."""

    type: str
    tops: tuple[str, ...]
    params: dict = field(default_factory=dict)
    python_layer: str = ""


class Input(CaffeLayer):
    """Caffe Input: tops fed by the caller; `input_param.shape` gives example shapes."""

    is_input = True

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        shapes = [tuple(int(d) for d in s.dim) for s in param.input_param.shape]
        if len(shapes) not in (0, 1, self.num_tops):
            raise self.error(f"{len(shapes)} input shapes for {self.num_tops} tops (give 1 or one per top)")
        given: list[Shape | None] = list(shapes)
        self.top_shapes = given * self.num_tops if len(given) == 1 else given or [None] * self.num_tops
        self.spec: DataLayerSpec | None = None


class DataLayer(CaffeLayer):
    """Any of Caffe's data layers (Data, ImageData, HDF5Data, MemoryData, WindowData, Python)."""

    is_input = True
    _PARAM_FIELDS = {
        "Data": "data_param",
        "ImageData": "image_data_param",
        "HDF5Data": "hdf5_data_param",
        "MemoryData": "memory_data_param",
        "WindowData": "window_data_param",
    }

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        if self.num_bottoms:
            raise UnsupportedLayerError(
                f"layer '{self.layer_name}': {param.type} layers with bottoms are not supported (only data layers)"
            )
        python_layer = ""
        if param.type == "Python":
            params = self._literal_params(param.python_param.param_str)
            python_layer = f"{param.python_param.module}.{param.python_param.layer}"
        else:
            message = getattr(param, self._PARAM_FIELDS[param.type])
            params = json_format.MessageToDict(message, preserving_proto_field_name=True)
        self.spec = DataLayerSpec(param.type, tuple(param.top), params, python_layer)
        self.top_shapes = list(DEFAULT_DATA_SHAPES[: self.num_tops]) + [None] * max(0, self.num_tops - 2)
        if param.type == "MemoryData":
            m = param.memory_data_param
            memory_shapes: list[Shape | None] = [(m.batch_size, m.channels, m.height, m.width), (m.batch_size, 1, 1, 1)]
            self.top_shapes = memory_shapes[: self.num_tops]

    def _literal_params(self, text: str) -> dict:
        if not text.strip():
            return {}
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise self.error(f"param_str is not Python syntax ({exc.msg}, column {exc.offset}): {text!r}") from None
        except (ValueError, MemoryError, RecursionError) as exc:
            raise self.error(f"param_str cannot be read ({type(exc).__name__}): {text!r}") from None
        try:
            value = ast.literal_eval(tree)
        except (ValueError, TypeError, MemoryError, RecursionError):
            raise self.error(f"param_str must be a Python literal, but {_non_literal(tree)}: {text!r}") from None
        if not isinstance(value, dict):
            raise self.error(f"param_str must be a dict literal, found {type(value).__name__}: {text!r}")
        return value


#: node types `ast.literal_eval` accepts (signed numbers and complex sums are UnaryOp / BinOp)
_LITERAL_NODES = (
    ast.Expression,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Set,
    ast.Dict,
    ast.UnaryOp,
    ast.BinOp,
    ast.UAdd,
    ast.USub,
    ast.Add,
    ast.Sub,
    ast.Load,
)
_NODE_NAMES = {
    ast.Call: "a function call",
    ast.Name: "a name",
    ast.Attribute: "an attribute access",
    ast.Subscript: "indexing",
    ast.Lambda: "a lambda",
    ast.Starred: "unpacking",
}


def _non_literal(tree: ast.Expression) -> str:
    """Names the outermost construct that is not a literal, for a stable, readable message."""
    for node in ast.walk(tree):
        if not isinstance(node, _LITERAL_NODES):
            what = _NODE_NAMES.get(type(node), f"an expression of kind {type(node).__name__}")
            return f"{what} (column {getattr(node, 'col_offset', 0) + 1}) is not a literal"
    return "its operators make no literal value"


class DummyData(CaffeLayer):
    """Caffe DummyData: tops of fixed shapes filled by its fillers at every forward."""

    _device_anchor: Tensor  # an empty buffer that follows the net's device

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        p = param.dummy_data_param
        if p.shape:
            shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
        else:
            shapes = [tuple(int(v) for v in dims) for dims in zip(p.num, p.channels, p.height, p.width)]
        self.shapes = shapes * self.num_tops if len(shapes) == 1 else shapes
        if len(self.shapes) != self.num_tops:
            raise self.error(f"{len(shapes)} shapes for {self.num_tops} tops")
        given = list(p.data_filler) or [caffe_pb2.FillerParameter()]
        self.data_fillers = given * self.num_tops if len(given) == 1 else given
        if len(self.data_fillers) != self.num_tops:
            raise self.error(f"{len(given)} data fillers for {self.num_tops} tops")
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def infer_tops(self, *bottoms: Tensor) -> list[Tensor]:
        """Meta tops of the declared shapes: shape inference draws no values."""
        return [torch.empty(s, device="meta") for s in self.shapes]

    def forward(self) -> list[Tensor]:
        where = f"layer '{self.layer_name}'"
        device = self._device_anchor.device
        return [fillers.fill(f, s, where=where).to(device) for f, s in zip(self.data_fillers, self.shapes)]
