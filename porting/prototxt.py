"""Caffe text files: nets and solvers in, upgraded and checked; any message out as text.

Parsing is as strict as Caffe's (`TextFormat::Parse`: unknown fields and a non-repeated
field given twice are errors). Every failure is a `PrototxtError` located at
"file:line:column" or "file: layer 'name'", never a protobuf traceback.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from porting.errors import PrototxtError
from porting.netstate import PHASES, filter_phase
from porting.proto import caffe_pb2
from porting.upgrade import upgrade_net, upgrade_solver
from porting.window import WINDOW_TYPES, read_window

#: Sizes beyond these are taken as mistakes (a typo'd dimension), not as nets to allocate.
MAX_BLOB_COUNT = 2**31
MAX_NUM_OUTPUT = 2**24
MAX_KERNEL = 2**16

_CONVOLUTIONS = ("Convolution", "Deconvolution")


def parse_prototxt(text: str, source: str = "<string>", phase: str | None = None) -> caffe_pb2.NetParameter:
    """Parse net text, upgrade it to V2 and check its structure.

    With `phase`, the net must be valid in that phase; without, in at least one of TRAIN and
    TEST (a train/val file may only make sense in one). The returned net is not filtered.
    """
    net = upgrade_net(_parse(text, caffe_pb2.NetParameter(), source), source)
    if phase is not None:
        validate(net, phase, source=source)
        return net
    errors = []
    for candidate in PHASES:
        try:
            validate(net, candidate, source=source)
            return net
        except PrototxtError as error:
            errors.append(error)
    raise errors[0]


def read_prototxt(path: str | os.PathLike, phase: str | None = None) -> caffe_pb2.NetParameter:
    """`parse_prototxt` of a file; the file's path is the error location."""
    return parse_prototxt(_read_text(path), str(path), phase)


def parse_solver(text: str, source: str = "<string>") -> caffe_pb2.SolverParameter:
    """Parse solver text; the deprecated `solver_type` enum becomes `type` as in Caffe."""
    return upgrade_solver(_parse(text, caffe_pb2.SolverParameter(), source), source)


def read_solver(path: str | os.PathLike) -> caffe_pb2.SolverParameter:
    """`parse_solver` of a file."""
    return parse_solver(_read_text(path), str(path))


def to_text(message: Message) -> str:
    """Caffe-style text (two-space indent, shortest float that reads back the same)."""
    return text_format.MessageToString(message, as_utf8=True)


def validate(
    net: caffe_pb2.NetParameter,
    phase: str,
    *,
    source: str = "<net>",
    level: int | None = None,
    stages: list[str] | None = None,
) -> None:
    """Check the layers of the V2 `net` built in `phase` form a Caffe net; PrototxtError naming the layer if not.

    As Caffe's Net::Init: every bottom was produced by an earlier layer (so a cycle shows up
    as a use before production), and a top name is produced once unless the layer works in
    place (its i-th top is its i-th bottom). Sizes far past any real net are rejected too.
    """
    built = filter_phase(net, phase, level=level, stages=stages, source=source)
    producer: dict[str, str] = {}
    for index, layer in enumerate(built.layer):
        where = f"{source}: layer '{layer.name}'"
        for bottom in layer.bottom:
            if bottom not in producer:
                later = next((other.name for other in built.layer[index + 1 :] if bottom in other.top), None)
                why = (
                    f"only by the later layer '{later}' (a cycle or out-of-order layers: layers run in file "
                    "order, so a blob must be produced before it is used)"
                    if later
                    else "nor by any later one"
                )
                raise PrototxtError(
                    where, f"bottom '{bottom}' is not produced by any earlier layer in phase {phase.upper()}, {why}"
                )
        for i, top in enumerate(layer.top):
            in_place = i < len(layer.bottom) and layer.bottom[i] == top
            if top in producer and not in_place:
                raise PrototxtError(
                    where,
                    f"top '{top}' is already produced by layer '{producer[top]}'; "
                    "a blob can only be produced again in place (top i == bottom i)",
                )
            producer[top] = layer.name
        _check_sizes(layer, where)


def _check_sizes(layer: caffe_pb2.LayerParameter, where: str) -> None:
    if layer.type == "Input":
        _check_shapes(layer.input_param.shape, len(layer.top), where)
    elif layer.type == "DummyData":
        _check_shapes(layer.dummy_data_param.shape, len(layer.top), where)
    elif layer.type == "InnerProduct":
        _check_range("num_output", layer.inner_product_param.num_output, 1, MAX_NUM_OUTPUT, where)
    if layer.type in _CONVOLUTIONS:
        _check_range("num_output", layer.convolution_param.num_output, 1, MAX_NUM_OUTPUT, where)
    if layer.type in WINDOW_TYPES:
        window = read_window(layer, where)
        for name, pair in (
            ("kernel size", window.kernel or (1, 1)),
            ("stride", window.stride),
            ("dilation", window.dilation),
        ):
            for value in pair:
                _check_range(name, value, 1, MAX_KERNEL, where)


def _check_shapes(shapes, n_tops: int, where: str) -> None:
    if len(shapes) not in (0, 1, n_tops):
        raise PrototxtError(where, f"{len(shapes)} shapes for {n_tops} tops: give one shape, or one per top")
    for shape in shapes:
        dims = list(shape.dim)
        if any(d <= 0 for d in dims):
            raise PrototxtError(where, f"shape {dims} has a dimension <= 0")
        if math.prod(dims) > MAX_BLOB_COUNT:
            raise PrototxtError(where, f"shape {dims} holds {math.prod(dims)} values, more than {MAX_BLOB_COUNT}")


def _check_range(what: str, value: int, low: int, high: int, where: str) -> None:
    if not low <= value <= high:
        raise PrototxtError(where, f"{what} {value} is outside {low}..{high}")


def _parse(text: str, message: Message, source: str) -> Message:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        where = f"{source}:{line}:{column}" if line is not None else source
        raise PrototxtError(where, _readable(str(error), text, line)) from None
    return message


def _readable(message: str, text: str, line: int | None) -> str:
    """Drop protobuf's position prefix, its echo of the line, and the `caffe.` package."""
    lines = text.splitlines()
    line_text = lines[line - 1] if line is not None and 0 < line <= len(lines) else ""
    message = re.sub(r"^\d+:\d+ : ", "", message)
    echo = f"'{line_text}': "
    if message.startswith(echo):
        message = message[len(echo) :]
    message = message.replace('"caffe.', '"')
    if "Expected string but found" in message and "type:" in line_text:
        message += " (V1 enum types such as CONVOLUTION belong in legacy 'layers { }' blocks)"
    return message


def _read_text(path: str | os.PathLike) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise PrototxtError(str(path), f"cannot read file: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise PrototxtError(
            f"{path}:{line}:{column}", f"not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start}"
        ) from None
