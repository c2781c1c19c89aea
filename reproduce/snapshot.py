"""Training snapshots that survive being killed at any instant, and resume exactly.

A snapshot holds the net's weights, the solver's momentum history and iteration, and the
trainer's position (images consumed, data-order seed, the smoothed-loss window). Random
state needs no saving: the trainer reseeds from (seed, image position) before every
image, so the data order and dropout masks at any point follow from those two numbers.

Every file is written through `porting.atomic.atomic_path`: a kill mid-write leaves
only a hidden `.tmp` file, which `latest_snapshot` ignores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from porting.atomic import atomic_path
from porting.checkpoint import CheckpointError
from reproduce.solver import CaffeSGD

FORMAT = "fcn-reproduce-snapshot"
VERSION = 1
_NAME = re.compile(r"^snapshot_iter_(\d+)\.pt$")


def snapshot_path(directory: Path, iteration: int) -> Path:
    """Where the snapshot taken after `iteration` updates lives."""
    return Path(directory) / f"snapshot_iter_{iteration}.pt"


def _to_cpu(state: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.detach().cpu() if isinstance(value, torch.Tensor) else value for key, value in state.items()}


def save_snapshot(path: Path, net: nn.Module, solver: CaffeSGD, trainer_state: Mapping[str, Any]) -> Path:
    """Write weights, solver state and `trainer_state` (plain Python values) atomically."""
    solver_state = solver.state_dict()
    content = {
        "format": FORMAT,
        "version": VERSION,
        "net": _to_cpu(net.state_dict()),
        "solver": {"iter": solver_state["iter"], "history": _to_cpu(solver_state["history"])},
        "trainer": dict(trainer_state),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(content, temporary)
    return path


def load_snapshot(path: Path, net: nn.Module, solver: CaffeSGD) -> dict[str, Any]:
    """Restore `net` and `solver` from `path`; return the trainer state stored with them."""
    path = Path(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: snapshot not found") from None
    except Exception as error:  # torch.load raises many types for damaged files
        raise CheckpointError(f"{path}: not a readable snapshot ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training snapshot (expected format '{FORMAT}')")
    if content.get("version") != VERSION:
        raise CheckpointError(f"{path}: snapshot version {content.get('version')}, expected {VERSION}")
    try:
        net.load_state_dict(content["net"], strict=True)
        solver.load_state_dict(content["solver"])
        return dict(content["trainer"])
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the net: {error}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: incomplete or damaged snapshot ({type(error).__name__}: {error})") from None


def latest_snapshot(directory: Path) -> Path | None:
    """The complete snapshot with the highest iteration in `directory`, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if (match := _NAME.match(entry.name)) and entry.is_file()
    ]
    return max(found)[1] if found else None
