"""The one rule every registry of the project keeps (models, datasets, class lists): a name once."""

from __future__ import annotations

from typing import TypeVar

Entry = TypeVar("Entry")


def add_unique(table: dict[str, Entry], name: str, entry: Entry, what: str) -> Entry:
    """Add `entry` under `name` to `table` and return it.

    Args:
        table: the registry.
        name: the entry's name.
        entry: what to register.
        what: what the registry holds ("model", "dataset kind", "task"), for the message.

    Returns:
        `entry`.

    Raises:
        ValueError: `name` is registered already.
    """
    if name in table:
        raise ValueError(f"{what} {name!r} is registered twice")
    table[name] = entry
    return entry
