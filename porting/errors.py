"""The project's error family: every expected failure is one of these, with a location.

CLIs catch `FcnError` and print its message; anything else is a bug. Errors of one job
live with the code that raises them: `porting.checkpoint.CheckpointError` (a `FormatError`),
`fcndata.DatasetError` (under `FcnError`).
"""

from __future__ import annotations


class FcnError(Exception):
    """Base of all errors this project raises on purpose."""


class FormatError(FcnError):
    """A Caffe file (prototxt or caffemodel) is malformed or does not fit the net."""


class PrototxtError(FormatError):
    """Net or solver text that cannot be parsed or makes no valid net.

    `where` is "file:line:column" or "file: layer 'name'" so the user can jump there.
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class CaffemodelError(FormatError):
    """Binary weights that are truncated, inconsistent or not a NetParameter."""

    def __init__(self, path: str, message: str, offset: int | None = None) -> None:
        at = f" (byte {offset})" if offset is not None else ""
        super().__init__(f"{path}{at}: {message}")
        self.path = path
        self.offset = offset


class ShapeMismatchError(FormatError):
    """A weight blob's shape differs from what the net definition implies."""

    def __init__(self, layer: str, blob_index: int, expected: tuple, found: tuple, source: str = "") -> None:
        origin = f"{source}: " if source else ""
        super().__init__(
            f"{origin}layer '{layer}' blob {blob_index}: expected shape {tuple(expected)}, found {tuple(found)}"
        )
        self.layer = layer
        self.blob_index = blob_index
        self.expected = tuple(expected)
        self.found = tuple(found)


class UnsupportedLayerError(FormatError):
    """A layer type this port does not implement."""
