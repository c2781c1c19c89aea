"""Shared fixtures; helper functions live in tests/helpers.py (importable as `helpers`).

The authors' reference files are found by one fixture, `reference_dir`: `$FCN_REFERENCE_DIR`,
else `../shared/reference` beside the repository, else the cache `python -m tests.fetch_reference`
fills. Without any of them the tests that need the files skip (fail under `FCN_REQUIRE_REFERENCE=1`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetch_reference  # noqa: E402
from caffe_oracle import oracle  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
BESIDE_REPOSITORY = REPOSITORY.parent / "shared" / "reference"
MISSING = (
    "the authors' reference files are not here: run `python -m tests.fetch_reference` "
    "(or set FCN_REFERENCE_DIR to a copy)"
)


def find_reference_dir() -> Path | None:
    """Where the reference files are: $FCN_REFERENCE_DIR, ../shared/reference, the fetch cache; None if nowhere.

    Raises:
        pytest.UsageError: FCN_REFERENCE_DIR names a directory that does not exist.
    """
    given = os.environ.get("FCN_REFERENCE_DIR")
    if given:
        if not Path(given).is_dir():
            raise pytest.UsageError(f"FCN_REFERENCE_DIR={given} is not a directory")
        return Path(given)
    if BESIDE_REPOSITORY.is_dir():
        return BESIDE_REPOSITORY
    if fetch_reference.is_complete(fetch_reference.CACHE_DIR):
        return fetch_reference.CACHE_DIR
    return None


def reference_required() -> bool:
    return os.environ.get("FCN_REQUIRE_REFERENCE", "") not in ("", "0")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference root (`fcn-berkeleyvision/`, `fcn-berkeleyvision-extra/`, `caffe-models/`); skips without it."""
    found = find_reference_dir()
    if found is None:
        if reference_required():
            pytest.fail(f"FCN_REQUIRE_REFERENCE is set but {MISSING}", pytrace=False)
        pytest.skip(MISSING)
    return found


@pytest.fixture(scope="session")
def reference(reference_dir: Path) -> Path:
    """The authors' fcn-berkeleyvision files (the four VOC nets, data/pascal, demo)."""
    return reference_dir / "fcn-berkeleyvision"


@pytest.fixture(scope="session")
def caffe() -> oracle.CaffeInstall:
    """The Caffe build of tests/caffe_oracle/build.sh (the `caffe` tier's oracle); skips without one
    (fails under `FCN_REQUIRE_CAFFE=1`)."""
    found = oracle.find_caffe()
    if found is None:
        if oracle.caffe_required():
            pytest.fail(f"FCN_REQUIRE_CAFFE is set but {oracle.NOT_BUILT}", pytrace=False)
        pytest.skip(oracle.NOT_BUILT)
    return found


class CaffeComparisons:
    """What the `caffe` tier compared: per item, how many cases and the worst relative error.

    Tests call `record`; at the end of the run the table is printed (pytest's terminal summary) and
    written as JSON to `.pytest_cache/d/caffe/comparisons.json` (the README's table comes from it).
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def record(self, item: str, cases: int, worst_error: float) -> None:
        """Add `cases` compared cases of `item` (e.g. "layers: Pooling forward/backward") with their worst error."""
        row = self.rows.setdefault(item, {"cases": 0, "worst_error": 0.0})
        row["cases"] += cases
        row["worst_error"] = max(row["worst_error"], worst_error)


CAFFE_COMPARISONS = CaffeComparisons()


@pytest.fixture(scope="session")
def caffe_comparisons() -> CaffeComparisons:
    """The run's record of Caffe comparisons (see CaffeComparisons)."""
    return CAFFE_COMPARISONS


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = CAFFE_COMPARISONS.rows
    if not rows:
        return
    import json

    terminalreporter.section("checked against Caffe itself")
    for item, row in sorted(rows.items()):
        terminalreporter.write_line(f"{item}: {int(row['cases'])} cases, worst error {row['worst_error']:.2g}")
    if getattr(config, "cache", None) is not None:  # None or absent under -p no:cacheprovider
        path = Path(config.cache.mkdir("caffe")) / "comparisons.json"
        path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
        terminalreporter.write_line(f"written to {path}")
