"""A minimal protobuf wire-format reader over a seekable binary file.

The caffemodel reader walks the file with it, reading only tags, varints and short
strings, and seeking past everything else, so the weights themselves can be read straight
into numpy arrays. Every length is checked against the end of its enclosing message before
anything is read or allocated; every malformation is a `CaffemodelError` with a byte offset.
"""

from __future__ import annotations

import io
import os

from porting.errors import CaffemodelError

VARINT, I64, LEN, I32 = 0, 1, 2, 5
WIRE_TYPE_NAMES = {VARINT: "varint", I64: "64-bit", LEN: "length-delimited", I32: "32-bit"}
MAX_VARINT_BYTES = 10
MAX_FIELD_NUMBER = 2**29 - 1


def signed(value: int, bits: int = 64) -> int:
    """A varint as protobuf's int32/int64 reads it (negatives are 10-byte two's complement)."""
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32:
        value = (value + (1 << 31)) % (1 << 32) - (1 << 31)
    return value


def key(field_number: int, wire_type: int) -> bytes:
    """The encoded tag of a field."""
    return varint_bytes(field_number << 3 | wire_type)


def varint_bytes(value: int) -> bytes:
    """Encode a non-negative integer (negatives as 64-bit two's complement) as a varint."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class WireReader:
    """Cursor over `file`; every read takes `end`, the end offset of the enclosing message."""

    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        self.file = file
        self.path = path
        self.size = os.fstat(file.fileno()).st_size
        self.pos = 0
        file.seek(0)

    def error(self, message: str, offset: int | None = None) -> CaffemodelError:
        return CaffemodelError(self.path, message, self.pos if offset is None else offset)

    def seek(self, pos: int) -> None:
        self.pos = pos
        self.file.seek(pos)

    def varint(self, end: int) -> int:
        start = self.pos
        chunk = self.file.read(min(MAX_VARINT_BYTES, end - start))
        value = 0
        for i, byte in enumerate(chunk):
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if i == MAX_VARINT_BYTES - 1 and byte > 1:
                    raise self.error("varint overflows 64 bits", start)
                self.seek(start + i + 1)
                return value
        if len(chunk) == MAX_VARINT_BYTES:
            raise self.error("varint longer than 10 bytes", start)
        raise self.error(f"truncated varint: {self._what_ends(end)} ends inside it", start)

    def tag(self, end: int) -> tuple[int, int]:
        """(field number, wire type) of the next field; groups and unknown wire types are errors."""
        start = self.pos
        value = self.varint(end)
        number, wire_type = value >> 3, value & 7
        if not 0 < number <= MAX_FIELD_NUMBER:
            raise self.error(f"invalid field number {number}", start)
        if wire_type not in WIRE_TYPE_NAMES:
            raise self.error(f"unsupported wire type {wire_type} for field {number}", start)
        return number, wire_type

    def expect(self, wire_type: int, expected: int, field: str, offset: int) -> None:
        if wire_type != expected:
            raise self.error(
                f"field '{field}' is {WIRE_TYPE_NAMES[wire_type]}, expected {WIRE_TYPE_NAMES[expected]}", offset
            )

    def span(self, end: int) -> tuple[int, int]:
        """Read a length prefix; return the (start, stop) offsets of the payload, checked against `end`."""
        start = self.pos
        length = self.varint(end)
        if length > end - self.pos:
            raise self.error(
                f"field of {length} bytes runs past the end of {self._what_ends(end)} ({end - self.pos} bytes left)",
                start,
            )
        return self.pos, self.pos + length

    def skip(self, wire_type: int, end: int) -> None:
        if wire_type == VARINT:
            self.varint(end)
        elif wire_type == LEN:
            self.seek(self.span(end)[1])
        else:
            self.advance(8 if wire_type == I64 else 4, end)

    def advance(self, n: int, end: int) -> None:
        self._check(n, end)
        self.seek(self.pos + n)

    def read(self, n: int, end: int) -> bytes:
        self._check(n, end)
        data = self.file.read(n)
        if len(data) != n:
            raise self.error("the file shrank while being read")
        self.pos += n
        return data

    def readinto(self, buffer: memoryview, end: int) -> None:
        """Fill `buffer` from the current position (no intermediate copy)."""
        self._check(len(buffer), end)
        done = 0
        while done < len(buffer):
            got = self.file.readinto(buffer[done:])
            if not got:
                raise self.error("the file shrank while being read", self.pos + done)
            done += got
        self.pos += done

    def _check(self, n: int, end: int) -> None:
        if n > end - self.pos:
            raise self.error(f"truncated field: {self._what_ends(end)} ends {n - (end - self.pos)} bytes early")

    def _what_ends(self, end: int) -> str:
        return "the file" if end >= self.size else "the enclosing message"
