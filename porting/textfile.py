"""Reading a small text file (class list, id list, label list) with an error that names it."""

from __future__ import annotations

import os
from pathlib import Path

from porting.errors import FcnError


def read_text(path: str | os.PathLike, what: str, error: type[FcnError], expected: str = "") -> str:
    """The UTF-8 text of `path`.

    Args:
        path: the file.
        what: what the file is, for the message ("class list", "id list").
        error: the error type to raise (`FormatError` for Caffe-side files, `DatasetError` for data).
        expected: what the file should be or where it comes from, added when it is missing.

    Returns:
        The file's text.

    Raises:
        error: the file is missing or cannot be read or decoded.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found" + (f" ({expected})" if expected else "")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from None
