"""Progress bars: tqdm on stderr, drawn only on a terminal so logs and pipes get no `\\r` lines."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    unit_scale: bool = False,
) -> tqdm:
    """A tqdm bar on stderr, silent when disabled or when stderr is not a terminal.

    Args:
        iterable: what to iterate over (None: call `update` yourself).
        total: the number of steps (or bytes with unit "B").
        desc: a label in front of the bar.
        unit: what one step is ("img", "B", ...).
        enabled: False turns the bar off (a command's `--quiet`).
        unit_scale: show large counts with SI prefixes (bytes as MB).

    Returns:
        The bar; use it as an iterator or a context manager.
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        file=sys.stderr,
        disable=None if enabled else True,
        dynamic_ncols=True,
        leave=False,
    )
