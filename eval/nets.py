"""Which nets an eval CLI runs: stage folders, converted checkpoints, Caffe pairs, published models.

Every loader returns a `CaffeNet` whose `metadata` (class names, mean) is complete: what
its files carry, else the defaults for its class count (`porting.metadata`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import porting
from porting import models
from porting.checkpoint import CheckpointError
from porting.metadata import complete_metadata
from porting.net import CaffeNet
from prototxt.backbone import BACKBONE_RUNS
from prototxt.stages import STAGES as VOC_STAGES

STAGES = tuple(VOC_STAGES)
#: run folders `--runs` looks for: the stages, then FCN-32s from the other backbones (fcn32s-<backbone>)
RUN_NAMES = STAGES + tuple(name for name in BACKBONE_RUNS if name not in STAGES)
#: the stage `eval.segment --runs` takes when none is named: the finest finished one
SEGMENT_STAGE_PREFERENCE = ("fcn8s", "fcn8s-atonce", "fcn16s", "fcn32s")


@dataclass(frozen=True)
class NetSource:
    """A net by name, loaded on demand (nets are large; eval loads one at a time)."""

    name: str
    load: Callable[[], CaffeNet]


def _completed(load: Callable[[], CaffeNet]) -> Callable[[], CaffeNet]:
    def run() -> CaffeNet:
        net = load()
        complete_metadata(net)
        return net

    return run


def file_net(*paths: Path) -> Callable[[], CaffeNet]:
    """Loader of a checkpoint (one path) or a prototxt + caffemodel pair."""
    caffemodel = paths[1] if len(paths) > 1 else None
    return _completed(lambda: porting.load(paths[0], caffemodel))


def model_net(
    name: str, caffemodel: Path | None, download: bool = False, progress: bool = True
) -> Callable[[], CaffeNet]:
    """Loader of a published model (`porting.models`): its weights file, else the cached one.

    `download` fetches them into the cache first when missing (`--download`).
    """

    def load() -> CaffeNet:
        weights = models.get(name).weights(caffemodel, download=download, progress=progress)
        return models.load_model(name, weights)

    return _completed(load)


def finished_stages(runs: Path, names: tuple[str, ...] = RUN_NAMES) -> dict[str, NetSource]:
    """The finished stages of a `reproduce.stage` output folder among `names`: stage -> its net."""
    if not runs.is_dir():
        raise CheckpointError(f"{runs}: runs folder not found")
    nets = {}
    for stage in names:
        prototxt, weights = runs / stage / "deploy.prototxt", runs / stage / "final.caffemodel"
        if prototxt.is_file() and weights.is_file():
            nets[stage] = NetSource(stage, file_net(prototxt, weights))
    if not nets:
        raise CheckpointError(
            f"{runs}: no finished stage (expected <stage>/deploy.prototxt and <stage>/final.caffemodel "
            f"for one of {', '.join(names)})"
        )
    return nets


def stage_net(runs: Path, stage: str | None = None) -> NetSource:
    """One finished stage of `runs`: `stage`, or the finest one finished."""
    nets = finished_stages(runs)
    if stage is None:
        return next(nets[name] for name in SEGMENT_STAGE_PREFERENCE if name in nets)
    if stage not in nets:
        raise CheckpointError(f"{runs / stage}: stage not finished (finished: {', '.join(nets)})")
    return nets[stage]


def add_net_arguments(parser: argparse.ArgumentParser, *, many: bool) -> None:
    """The net-choosing flags; with `many`, --checkpoint/--prototxt/--caffemodel/--model repeat."""
    repeat: dict[str, Any] = dict(action="append", default=[]) if many else {}
    again = " (repeatable)" if many else ""
    parser.add_argument(
        "--runs", type=Path, help="reproduce.stage output folder: <stage>/deploy.prototxt + final.caffemodel"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help=f"converted checkpoint, .pt or .safetensors (python -m porting.convert){again}",
        **repeat,
    )
    parser.add_argument("--prototxt", type=Path, help=f"deploy prototxt, with --caffemodel{again}", **repeat)
    parser.add_argument(
        "--model", **repeat,
        help=f"a published model by name (python -m porting.models); weights from --caffemodel, else the model "
        f"cache{again}",
    )  # fmt: skip
    parser.add_argument(
        "--caffemodel", type=Path, **repeat,
        help="weights for --prototxt or --model" + (": the first ones pair with the --prototxt files in order, "
                                                    "the rest with the --model names (the others: the cache)"
                                                    if many else " (a --model's default: the model cache)"),
    )  # fmt: skip
    models.add_download_flag(parser)


def net_sources(
    args: argparse.Namespace, parser: argparse.ArgumentParser, stages: tuple[str, ...] = RUN_NAMES
) -> list[NetSource]:
    """The nets the flags of `add_net_arguments(many=True)` name, in order: stages (among `stages`),
    checkpoints, pairs, models."""
    paired = [f"--prototxt {p}" for p in args.prototxt] + [f"--model {name}" for name in args.model]
    if len(args.caffemodel) > len(paired):
        extra = args.caffemodel[len(paired) :]
        parser.error(
            f"--caffemodel {extra[0]} has no --prototxt or --model to go with: the --caffemodel files pair in "
            "order with the --prototxt files, then with the --model names"
        )
    if len(args.caffemodel) < len(args.prototxt):
        parser.error(
            f"{paired[len(args.caffemodel)]} has no --caffemodel: give one --caffemodel per --prototxt, in order, "
            "before those of the --model names"
        )
    models.check_download_flag(args, parser)
    pairs = args.caffemodel[: len(args.prototxt)]
    model_weights = args.caffemodel[len(args.prototxt) :]
    model_weights += [None] * (len(args.model) - len(model_weights))
    nets = list(finished_stages(args.runs, stages).values()) if args.runs else []
    nets += [NetSource(p.stem, file_net(p)) for p in args.checkpoint]
    nets += [NetSource(w.stem, file_net(p, w)) for p, w in zip(args.prototxt, pairs)]
    fetched = dict(download=args.download, progress=not args.quiet)
    nets += [NetSource(name, model_net(name, w, **fetched)) for name, w in zip(args.model, model_weights)]
    if not nets:
        parser.error(
            "no net given: --runs DIR, --checkpoint M.pt, --prototxt P --caffemodel W or --model NAME [--caffemodel W]"
        )
    names = [net.name for net in nets]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"two nets share the name {repeated[0]!r} (names come from stage folders and file stems)")
    return nets


def check_net_flags(args: argparse.Namespace, parser: argparse.ArgumentParser, stage: str | None = None) -> None:
    """Usage errors of the flags of `add_net_arguments(many=False)`: exactly one net, weights where needed.

    Args:
        args: the parsed flags.
        parser: reports a usage error (exit 2).
        stage: the `--stage` given, if any (it goes with --runs only).
    """
    given = [flag for flag in ("runs", "checkpoint", "prototxt", "model") if getattr(args, flag) is not None]
    if len(given) != 1:
        parser.error(
            "give one net: --checkpoint M.pt, --prototxt P --caffemodel W, --runs DIR [--stage S] "
            "or --model NAME [--caffemodel W]"
        )
    if args.caffemodel is not None and given[0] not in ("prototxt", "model"):
        parser.error(f"--caffemodel goes with --prototxt or --model, not with --{given[0]}")
    if args.caffemodel is None and given[0] == "prototxt":
        parser.error(f"--prototxt {args.prototxt} needs --caffemodel W, the weights of that net")
    models.check_download_flag(args, parser)
    if stage is not None and given[0] != "runs":
        parser.error("--stage picks a stage of --runs DIR")


def single_net(args: argparse.Namespace, parser: argparse.ArgumentParser, stage: str | None = None) -> NetSource:
    """The one net the flags of `add_net_arguments(many=False)` name (`stage` picks one of --runs).

    Args:
        args: the parsed flags.
        parser: reports a usage error (`check_net_flags`).
        stage: with --runs, the stage to take (default: the finest finished one).

    Returns:
        The net, loaded on demand.

    Raises:
        CheckpointError: --runs names no folder, a folder with no finished stage, or `stage` unfinished;
            call it where the command's runtime errors are reported (`porting.cli.run`).
    """
    check_net_flags(args, parser, stage)
    if args.runs is not None:
        return stage_net(args.runs, stage)
    if args.checkpoint is not None:
        return NetSource(args.checkpoint.stem, file_net(args.checkpoint))
    if args.prototxt is not None:
        return NetSource(args.caffemodel.stem, file_net(args.prototxt, args.caffemodel))
    return NetSource(args.model, model_net(args.model, args.caffemodel, args.download, not args.quiet))
