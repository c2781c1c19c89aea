"""Optional packages: import one, or say which pip extra of this project installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from porting.errors import FcnError


class MissingExtraError(FcnError):
    """An optional package is not installed; the message names the pip extra that brings it."""


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import `module`, or explain how to install it.

    Args:
        module: the import name (`onnx`, `onnxruntime`, `cv2`).
        extra: the extra in pyproject.toml that lists its distribution (`onnx`, `bench`).
        needed_by: what needs it, for the message (`ONNX export`, `python -m bench`).

    Returns:
        The imported module.

    Raises:
        MissingExtraError: `module` itself is not installed. A module that is installed but
            fails to import (a broken dependency of it) raises its own error unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise MissingExtraError(
            f"{needed_by} needs the '{module}' package, which the [{extra}] extra installs: "
            f"pip install -e '.[{extra}]' in a clone of this repository"
        ) from None
