"""docs/bad-inputs.md is what the product really says, and every bad input gets an FcnError.

The catalog runs as `python -m tests.error_catalog --check` in its own process: it caps its
address space (an entry that allocates absurdly fails instead of exhausting the machine)
and compares the table it renders with the committed page.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from error_catalog import DOC, ENTRIES

ROOT = Path(__file__).resolve().parents[1]


def test_catalog_is_current_and_in_family():
    result = subprocess.run(
        [sys.executable, "-m", "tests.error_catalog", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_catalog_covers_each_kind_of_input():
    text = DOC.read_text(encoding="utf-8")
    assert text.count("\n| ") - 2 == len(ENTRIES)  # minus the header and rule rows
    for kind in ("PrototxtError", "CaffemodelError", "ShapeMismatchError", "CheckpointError", "DatasetError"):
        assert f"`{kind}`" in text
