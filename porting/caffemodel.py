"""Binary caffemodel files (a serialized `NetParameter`): weights in and out at disk speed.

A VGG16 caffemodel is ~530 MB of packed floats inside a few dozen small messages. Parsing
it with protobuf builds the whole message (and Python floats on access); instead the reader
walks the wire format (`porting.wire`), reads each layer's name, type and blob headers, checks
the declared shape against the payload length, and only then reads the payload straight into
a preallocated float32 array. The writer streams the same layout back out: the layer
definition is encoded by protobuf, the blobs are appended by hand from the arrays' memory.

Layouts read: V2 (`layer`, field 100), V1 (`layers`, field 2) and V0 (a V1 layer wrapping a
V0 `layer`); blob shapes from `shape`, or the legacy num/channels/height/width kept 4-D as
stored; `double_data` is converted to float32.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from porting import wire
from porting.atomic import atomic_path
from porting.errors import CaffemodelError
from porting.proto import caffe_pb2
from porting.upgrade import V0_TO_V1_TYPE, V1_TO_V2_TYPE, downgrade_layer, upgrade_net
from porting.wire import I32, I64, LEN, VARINT, WireReader

MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes
_OWN_MAPPING_BYTES = 1 << 20
_RUN_CHUNK_RECORDS = 1 << 16


class LayerBlobs(NamedTuple):
    """One layer of a caffemodel: its name, V2 type string and blobs in Caffe shapes."""

    name: str
    type: str
    blobs: list[np.ndarray]


@dataclass(frozen=True)
class _Schema:
    name: int
    type: int
    blobs: int
    nested_v0: int | None = None


_NET_LAYER_V2, _NET_LAYERS_V1 = 100, 2
_V2 = _Schema(name=1, type=2, blobs=7)
_V1 = _Schema(name=4, type=5, blobs=6, nested_v0=1)
_V0 = _Schema(name=1, type=2, blobs=50)

# BlobProto fields.
_SHAPE, _DATA, _DOUBLE_DATA = 7, 5, 8
_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Every layer's learnable blobs, read straight from the protobuf wire format.

    Args:
        path: a caffemodel in the V2 (`layer`), V1 (`layers`) or V0 layout.

    Returns:
        Layer name -> its blobs as float32 arrays in Caffe shapes (legacy 4-D dims kept as
        stored), in file order; a repeated name keeps its last layer, as Caffe's copy does.

    Raises:
        CaffemodelError: the file cannot be opened, or is not a well-formed caffemodel
            (names the file, the byte offset and the layer).
    """
    return {layer.name: layer.blobs for layer in iter_caffemodel(path)}


def iter_caffemodel(path: str | os.PathLike) -> Iterator[LayerBlobs]:
    """Yield the layers one at a time, so a net can load a large file layer by layer."""
    where = str(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed by the `with` below; open errors get their own message)
    except OSError as error:
        raise CaffemodelError(where, f"cannot open: {error.strerror or error}") from None
    with file:
        reader = WireReader(file, where)
        end = reader.size
        layers = 0
        while reader.pos < end:
            at = reader.pos
            number, wire_type = reader.tag(end)
            if number not in (_NET_LAYER_V2, _NET_LAYERS_V1):
                reader.skip(wire_type, end)
                continue
            reader.expect(wire_type, LEN, "layer" if number == _NET_LAYER_V2 else "layers", at)
            start, stop = reader.span(end)
            layers += 1
            layer = _read_layer(reader, start, stop, number == _NET_LAYER_V2)
            reader.seek(stop)
            if layer is not None:
                yield layer
        if layers == 0:
            raise CaffemodelError(where, "no layers found: not a Caffe NetParameter (caffemodel) file", 0)


@dataclass
class _LayerScan:
    name: str = ""
    type: str | int | None = None
    blobs: list[tuple[int, int]] = field(default_factory=list)
    nested: tuple[int, int] | None = None


def _scan_layer(reader: WireReader, start: int, stop: int, schema: _Schema, enum_type: bool) -> _LayerScan:
    """Read the name, type and blob spans of one layer message, seeking past everything else."""
    scan = _LayerScan()
    reader.seek(start)
    while reader.pos < stop:
        at = reader.pos
        number, wire_type = reader.tag(stop)
        if number == schema.name:
            scan.name = _string(reader, wire_type, "name", at, stop)
        elif number == schema.type and enum_type:
            reader.expect(wire_type, VARINT, "type", at)
            scan.type = reader.varint(stop)
        elif number == schema.type:
            scan.type = _string(reader, wire_type, "type", at, stop)
        elif number == schema.blobs:
            reader.expect(wire_type, LEN, "blobs", at)
            scan.blobs.append(reader.span(stop))
            reader.seek(scan.blobs[-1][1])
        elif number == schema.nested_v0:
            reader.expect(wire_type, LEN, "layer", at)
            scan.nested = reader.span(stop)
            reader.seek(scan.nested[1])
        else:
            reader.skip(wire_type, stop)
    return scan


def _read_layer(reader: WireReader, start: int, stop: int, is_v2: bool) -> LayerBlobs | None:
    if is_v2:
        scan = _scan_layer(reader, start, stop, _V2, enum_type=False)
        layer_type = str(scan.type or "")
    else:
        scan = _scan_layer(reader, start, stop, _V1, enum_type=True)
        if scan.nested is not None:  # V0: Caffe takes everything from the wrapped layer
            scan = _scan_layer(reader, *scan.nested, _V0, enum_type=False)
            if scan.type == "padding":
                return None
            if scan.type is not None and scan.type not in V0_TO_V1_TYPE:
                raise reader.error(f"layer '{scan.name}': unknown V0 layer type '{scan.type}'", start)
            layer_type = V1_TO_V2_TYPE[V0_TO_V1_TYPE[scan.type]] if scan.type is not None else ""
        elif scan.type is None or scan.type == caffe_pb2.V1LayerParameter.NONE:
            layer_type = ""
        elif scan.type in V1_TO_V2_TYPE:
            layer_type = V1_TO_V2_TYPE[scan.type]
        else:
            raise reader.error(f"layer '{scan.name}': unknown V1 layer type {scan.type}", start)
    blobs = [_read_blob(reader, s, e, f"layer '{scan.name}' blob {i}") for i, (s, e) in enumerate(scan.blobs)]
    return LayerBlobs(scan.name, layer_type, blobs)


def _string(reader: WireReader, wire_type: int, what: str, at: int, stop: int) -> str:
    reader.expect(wire_type, LEN, what, at)
    start, end = reader.span(stop)
    try:
        return reader.read(end - start, end).decode("utf-8")
    except UnicodeDecodeError:
        raise reader.error(f"{what} is not UTF-8 text", at) from None


@dataclass
class _Payload:
    """Where one repeated float/double field's values lie: packed spans and runs of unpacked records."""

    width: int  # bytes per value
    wire_type: int  # wire type of one unpacked value
    tag_byte: int  # the one-byte tag of an unpacked value
    parts: list[tuple[bool, int, int]] = field(default_factory=list)  # (packed?, offset, count)

    @property
    def count(self) -> int:
        return sum(count for _, _, count in self.parts)

    def scan(self, reader: WireReader, wire_type: int, at: int, stop: int, what: str) -> None:
        if wire_type == LEN:
            start, end = reader.span(stop)
            if (end - start) % self.width:
                raise reader.error(
                    f"{what}: packed payload of {end - start} bytes is not a multiple of {self.width}", at
                )
            self.parts.append((True, start, (end - start) // self.width))
            reader.seek(end)
            return
        reader.expect(wire_type, self.wire_type, what, at)
        if reader.pos - at != 1:  # a padded tag: take the single value as it is
            self.parts.append((True, reader.pos, 1))
            reader.advance(self.width, stop)
            return
        count = self._run_length(reader, at, stop)
        self.parts.append((False, at, count))
        reader.seek(at + count * (self.width + 1))

    def _run_length(self, reader: WireReader, at: int, stop: int) -> int:
        """How many (tag, value) records in a row start at `at` (counted with numpy, not per value)."""
        record = self.width + 1
        reader.advance(self.width, stop)  # the first value must be there
        reader.seek(at)
        count = 0
        while stop - reader.pos >= record:
            n = min(_RUN_CHUNK_RECORDS, (stop - reader.pos) // record)
            tags = np.frombuffer(reader.read(n * record, stop), np.uint8).reshape(n, record)[:, 0]
            mismatch = np.flatnonzero(tags != self.tag_byte)
            if mismatch.size:
                return count + int(mismatch[0])
            count += n
        return count

    def fill(self, reader: WireReader, out: np.ndarray, stop: int) -> None:
        """Read every value into the 1-D little-endian array `out`."""
        index = 0
        record = self.width + 1
        for packed, offset, count in self.parts:
            reader.seek(offset)
            if packed:
                reader.readinto(out[index : index + count].data.cast("B"), stop)
                index += count
                continue
            for first in range(0, count, _RUN_CHUNK_RECORDS):
                n = min(_RUN_CHUNK_RECORDS, count - first)
                records = np.frombuffer(reader.read(n * record, stop), np.uint8).reshape(n, record)
                out[index : index + n].view(np.uint8).reshape(n, self.width)[:] = records[:, 1:]
                index += n


def _read_blob(reader: WireReader, start: int, stop: int, where: str) -> np.ndarray:
    """Scan the BlobProto headers, check the shape against the payload, then read the payload."""
    floats = _Payload(4, I32, wire.key(_DATA, I32)[0])
    doubles = _Payload(8, I64, wire.key(_DOUBLE_DATA, I64)[0])
    shape: list[int] | None = None
    legacy: dict[int, int] = {}
    reader.seek(start)
    while reader.pos < stop:
        at = reader.pos
        number, wire_type = reader.tag(stop)
        if number == _SHAPE:
            reader.expect(wire_type, LEN, f"{where} shape", at)
            shape = (shape or []) + _read_dims(reader, *reader.span(stop), where)
        elif number in _LEGACY_DIMS:
            reader.expect(wire_type, VARINT, f"{where} legacy dimension", at)
            legacy[number] = wire.signed(reader.varint(stop), 32)
        elif number == _DATA:
            floats.scan(reader, wire_type, at, stop, f"{where} data")
        elif number == _DOUBLE_DATA:
            doubles.scan(reader, wire_type, at, stop, f"{where} double_data")
        else:
            reader.skip(wire_type, stop)
    if shape is not None:
        dims = shape
    elif legacy:
        dims = [legacy.get(i, 0) for i in _LEGACY_DIMS]
    else:
        dims = []  # Caffe reads a blob without any shape as a scalar
    if any(d < 0 for d in dims):
        raise reader.error(f"{where}: negative dimension in shape {dims}", start)
    payload = doubles if doubles.count else floats  # Caffe prefers double_data when present
    declared = math.prod(dims)
    if declared != payload.count:
        raise reader.error(
            f"{where}: shape {tuple(dims)} holds {declared} values but the payload has {payload.count}", start
        )
    out = _empty(payload.count, "<f8" if payload is doubles else "<f4")
    payload.fill(reader, out, stop)
    with np.errstate(over="ignore"):  # doubles beyond float32 range become inf, as Caffe's cast does
        return out.astype(np.float32, copy=False).reshape(dims)


def _empty(count: int, dtype: str) -> np.ndarray:
    """An uninitialized array; a large one gets its own anonymous mapping.

    numpy advises huge pages for large arrays, and where the kernel then compacts memory on
    first touch (THP defrag "madvise", a common default) filling them took 2-3x the disk read.
    """
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes < _OWN_MAPPING_BYTES:
        return np.empty(count, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dtype)


def _read_dims(reader: WireReader, start: int, stop: int, where: str) -> list[int]:
    dims: list[int] = []
    reader.seek(start)
    while reader.pos < stop:
        at = reader.pos
        number, wire_type = reader.tag(stop)
        if number != 1:
            reader.skip(wire_type, stop)
            continue
        if wire_type == LEN:
            _, span_stop = reader.span(stop)
            while reader.pos < span_stop:
                dims.append(wire.signed(reader.varint(span_stop)))
        else:
            reader.expect(wire_type, VARINT, f"{where} shape dim", at)
            dims.append(wire.signed(reader.varint(stop)))
        if len(dims) > MAX_BLOB_AXES:
            raise reader.error(f"{where}: shape has more than {MAX_BLOB_AXES} axes", at)
    return dims


# ---------------------------------------------------------------- writing


def write_caffemodel(
    source,
    path: str | os.PathLike,
    *,
    layout: str = "v2",
    legacy_dims: bool = False,
) -> None:
    """Write a caffemodel that Caffe and OpenCV's Caffe importer read.

    The file appears atomically (temp + fsync + rename): readers see no file or the whole one.

    Args:
        source: a net with `.net_param` and `.blobs_numpy()` (a `CaffeNet`) or a tuple
            `(net_param, {layer name: [arrays]})`; blobs embedded in `net_param` are not written.
        path: the file to write.
        layout: "v2" writes `layer` messages; "v1" writes V1 `layers` with enum types (layers
            without a V1 type and without blobs, such as Input, are left out).
        legacy_dims: write num/channels/height/width (left-padded with 1s) instead of `shape`.

    Raises:
        ValueError: `layout` is neither "v1" nor "v2".
        CaffemodelError: blobs are given for layers the net lacks, or a layer has no V1 type
            in the "v1" layout.
        OSError: the file cannot be written.
    """
    if layout not in ("v1", "v2"):
        raise ValueError(f"layout must be 'v1' or 'v2', got {layout!r}")
    net_param, blobs = source if isinstance(source, tuple) else (source.net_param, source.blobs_numpy())
    path = Path(path)
    if net_param.layers:
        net_param = upgrade_net(net_param, str(path))
    unknown = sorted(set(blobs) - {layer.name for layer in net_param.layer})
    if unknown:
        raise CaffemodelError(str(path), f"blobs given for layers that are not in the net: {', '.join(unknown)}")
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        if net_param.HasField("name"):
            file.write(_len_field(1, len(net_param.name.encode())) + net_param.name.encode())
        for layer in net_param.layer:
            _write_layer(file, layer, blobs.get(layer.name, ()), layout, legacy_dims, str(path))


def _write_layer(
    file, layer: caffe_pb2.LayerParameter, arrays: Sequence[np.ndarray], layout: str, legacy_dims: bool, path: str
) -> None:
    if layout == "v2":
        definition = caffe_pb2.LayerParameter()
        definition.CopyFrom(layer)
        definition.ClearField("blobs")
        layer_field, blob_field = _NET_LAYER_V2, _V2.blobs
    else:
        definition = _to_v1(layer, bool(arrays), path)
        if definition is None:
            return
        layer_field, blob_field = _NET_LAYERS_V1, _V1.blobs
    head = definition.SerializeToString()
    arrays = [np.ascontiguousarray(a, dtype="<f4") for a in arrays]
    blob_heads = [_blob_head(a, legacy_dims, f"layer '{layer.name}' blob {i}", path) for i, a in enumerate(arrays)]
    blob_sizes = [len(h) + a.nbytes for h, a in zip(blob_heads, arrays)]
    size = len(head) + sum(len(_len_field(blob_field, n)) + n for n in blob_sizes)
    file.write(_len_field(layer_field, size) + head)
    for blob_head, blob_size, array in zip(blob_heads, blob_sizes, arrays):
        file.write(_len_field(blob_field, blob_size) + blob_head)
        file.write(array.reshape(-1).data.cast("B"))


def _blob_head(array: np.ndarray, legacy_dims: bool, where: str, path: str) -> bytes:
    """A BlobProto without its payload: shape fields, then the data field's tag and length."""
    if legacy_dims:
        if array.ndim > 4:
            raise CaffemodelError(path, f"{where}: {array.ndim}-D shape {array.shape} has no legacy 4-D form")
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(wire.key(number, VARINT) + wire.varint_bytes(d) for number, d in zip(_LEGACY_DIMS, dims))
    else:
        packed = b"".join(wire.varint_bytes(d) for d in array.shape)
        shape = _len_field(1, len(packed)) + packed if array.ndim else b""
        head = _len_field(_SHAPE, len(shape)) + shape
    return head + (_len_field(_DATA, array.nbytes) if array.size else b"")


def _len_field(number: int, length: int) -> bytes:
    return wire.key(number, LEN) + wire.varint_bytes(length)


def _to_v1(layer: caffe_pb2.LayerParameter, has_blobs: bool, path: str) -> caffe_pb2.V1LayerParameter | None:
    """The V1 form of a V2 layer definition, or None for a blob-less layer V1 cannot express."""
    v1 = downgrade_layer(layer)
    if v1 is None and has_blobs:
        raise CaffemodelError(path, f"layer '{layer.name}': type '{layer.type}' has no V1 form; write layout 'v2'")
    return v1
