"""Shared fixtures; helper functions live in tests/helpers.py (importable as `helpers`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import REFERENCE  # noqa: E402


@pytest.fixture(scope="session")
def reference() -> Path:
    """The authors' fcn-berkeleyvision files (never copied into the project)."""
    assert REFERENCE.is_dir(), f"reference files missing at {REFERENCE}"
    return REFERENCE
