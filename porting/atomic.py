"""One way to write a file so that readers only ever see nothing or the whole file.

The content goes to a hidden temporary beside the target, is fsynced, then renamed over
the target (atomic on POSIX) and the folder is fsynced so the rename survives a crash.
A process killed mid-write leaves only the temporary, named `.<name>.<pid>.tmp`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """The temporary a write of `path` goes through (hidden, so listings skip it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it becomes `path` durably, else it is deleted."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        yield temporary
        land(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def land(temporary: Path, path: Path) -> None:
    """Give the complete file `temporary` the name `path` durably (fsync, rename, fsync the folder).

    Args:
        temporary: the finished file, in the same folder as `path`.
        path: its final name; an existing file there is replaced.
    """
    _fsync(temporary, os.O_RDONLY)
    os.replace(temporary, path)
    _fsync(path.parent, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
