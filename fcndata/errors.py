"""The data package's error, one of the project's `FcnError` family."""

from __future__ import annotations

from porting.errors import FcnError


class DatasetError(FcnError):
    """Missing or corrupt dataset files; the message names the path and the expected layout."""
