"""`python -m reproduce.demo --out DIR`: the whole FCN recipe on built-in synthetic data, on a CPU.

What a user does with the real files, at toy scale and through the same library functions
as the commands:

1. write a synthetic PASCAL VOC 2011 + SBD in their on-disk formats (DIR/data), or with
   `--dataset folder|ade20k` a dataset of one's own (`folder:`) or an ADE20K release;
2. train a small VGG16-shaped classifier on it and save it like the ILSVRC VGG16 file
   (V1 net, legacy blob dims) - the stand-in for the download FCN-32s starts from
   (DIR/base);
3. train fcn32s (from that classifier), fcn16s, fcn8s with the `demo` preset
   (prototxt.solvers) into DIR/runs, as `python -m reproduce.stage` does;
4. score them as `python -m eval.table` does (`eval.table.score_nets`) on the synthetic
   seg11valid (or the dataset's validation split): prints the table and writes
   DIR/eval.json with entries fcn32s, fcn16s, fcn8s;
5. segment a few held-out images with the trained FCN-8s as `python -m eval.segment`
   does (`eval.segment.segment_images`; DIR/segment: label PNGs and overlays).

Every random choice is seeded and the kernels are deterministic (`porting.numerics.deterministic`),
so a rerun on the same machine and thread count repeats the run bit for bit; other CPUs
sum in other orders and print somewhat different scores (README).
`--fast` runs a tiny version (`FAST_TIME`) that exercises every step, for the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eval.nets import finished_stages, stage_net
from eval.segment import segment_images
from eval.table import EvalData, report, score_nets, write_json
from fcndata import SBDSegmentation, VOCSegmentation, parse_dataset, seg11valid_ids
from fcndata.image import SegmentationFiles
from fcndata.synthetic import write_synthetic, write_synthetic_ade20k, write_synthetic_folder
from porting import cli
from porting.errors import FcnError
from porting.numerics import deterministic
from prototxt.stages import STAGES, pipeline
from reproduce import stage
from reproduce.basenet import check_base_net, train_base_net

logger = logging.getLogger(__name__)
#: the staged nets the demo trains and scores, in order
DEMO_STAGES = pipeline("fcn8s")
#: the synthetic datasets the demo can write: the papers' VOC + SBD, a `folder:` dataset, an ADE20K release
DATASETS = ("voc", "folder", "ade20k")
#: how long the demo and its --fast version take (measured; the README quotes these)
FULL_TIME, FAST_TIME = "7-9 minutes on 2 CPU cores", "about a minute"


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run; the FCN training recipe itself is the `demo` preset."""

    n_train: int
    n_val: int
    image_size: tuple[int, int]
    width: float
    base_steps: int
    base_batch: int
    base_views: int
    eval_every: int
    eval_images: int
    max_iter: int | None = None  # per stage; None: the preset's
    images_per_update: int | None = None  # None: the preset's
    segment_images: int = 4  # held-out images the last step segments


FULL = DemoPlan(
    n_train=300,
    n_val=96,
    image_size=(96, 160),
    width=1 / 8,
    base_steps=500,
    base_batch=16,
    base_views=256,
    eval_every=20,
    eval_images=16,
)
FAST = DemoPlan(
    n_train=12,
    n_val=6,
    image_size=(32, 40),
    width=1 / 32,
    base_steps=2,
    base_batch=4,
    base_views=4,
    eval_every=1,
    eval_images=2,
    max_iter=1,
    images_per_update=2,
    segment_images=2,
)


@dataclass(frozen=True)
class DemoData:
    """The synthetic data of one demo run, and how the stage and the scoring name it."""

    train: SegmentationFiles  # the base classifier's training images
    held_out: SegmentationFiles  # what is scored (and the base classifier checked on)
    num_classes: int
    stage_data: dict[str, object]  # StageOptions fields naming the data
    eval_data: EvalData  # the split eval.table scores
    description: str


def write_demo_data(dataset: str, root: Path, plan: DemoPlan) -> DemoData:
    """Write the synthetic `dataset` ("voc", "folder" or "ade20k") under `root` in its real layout."""
    size: dict[str, Any] = dict(n_train=plan.n_train, n_val=plan.n_val, size=plan.image_size)
    if dataset == "voc":
        paths = write_synthetic(root, **size)
        held_out: SegmentationFiles = VOCSegmentation(
            paths.voc_root,
            "2011",
            "seg11valid",
            ids=seg11valid_ids(paths.voc_root, paths.sbd_root),
            sbd_root=paths.sbd_root,
        )
        return DemoData(
            SBDSegmentation(paths.sbd_root, "train"),
            held_out,
            held_out.num_classes,
            dict(voc_root=paths.voc_root, sbd_root=paths.sbd_root),
            EvalData("voc2011seg11valid", roots=dict(voc_root=paths.voc_root, sbd_root=paths.sbd_root)),
            "synthetic VOC2011 + SBD (seg11valid)",
        )
    if dataset == "folder":
        spec = parse_dataset(f"folder:{write_synthetic_folder(root / 'mine', **size)}")
    elif dataset == "ade20k":
        spec = parse_dataset(f"ade20k:{write_synthetic_ade20k(root / 'ADEChallengeData2016', **size)}")
    else:
        raise FcnError(f"unknown demo dataset {dataset!r}; one of {', '.join(DATASETS)}")
    held_out = spec.open(spec.kind.val_split)
    return DemoData(
        spec.open(spec.kind.train_split),
        held_out,
        held_out.num_classes,
        dict(dataset=str(spec)),
        EvalData(spec.kind.val_split, dataset=str(spec)),
        f"synthetic {spec.kind.name} dataset ({spec.kind.val_split} split)",
    )


def run_demo(
    out: Path,
    plan: DemoPlan = FULL,
    log: Callable[[str], None] = logger.info,
    dataset: str = "voc",
    device: str = "cpu",
) -> dict:
    """Run the five steps into `out` on the synthetic `dataset`, with deterministic kernels.

    Args:
        out: output folder (data, base net, runs, eval.json, segmentations).
        plan: the sizes of the run.
        log: where progress lines go.
        dataset: the synthetic data to write ("voc", "folder" or "ade20k").
        device: torch device for the stages and scoring.

    Returns:
        The contents of out/eval.json.
    """
    out = Path(out)
    started = time.perf_counter()

    def done(what: str) -> None:
        log(f"demo: {what} ({time.perf_counter() - started:.0f} s)")

    with deterministic():  # a rerun on this machine gives the same weights and scores
        data = write_demo_data(dataset, out / "data", plan)
        done(f"{data.description} written to {out / 'data'}")

        base = train_base_net(
            [data.train[i] for i in range(len(data.train))],
            out / "base" / "vgg16-demo.caffemodel",
            num_classes=data.num_classes,
            width=plan.width,
            steps=plan.base_steps,
            batch_size=plan.base_batch,
        )
        done(f"base classifier trained: {base}")
        check = check_base_net(base, [data.held_out[i] for i in range(len(data.held_out))], views=plan.base_views)
        log(f"demo: base classifier on the held-out images: {check.line()}")

        runs = out / "runs"
        for name in DEMO_STAGES:
            options = stage.StageOptions(
                stage=name,
                out=runs,
                preset="demo",
                width=plan.width,
                device=device,
                eval_every=plan.eval_every,
                eval_images=plan.eval_images,
                max_iter=plan.max_iter,
                images_per_update=plan.images_per_update,
                base_weights=base if STAGES[name].previous is None else None,
                **data.stage_data,  # type: ignore[arg-type]
            )
            stage.run_stage(options, log=log)
            done(f"{name} trained")

        log(f"demo: scoring the stages on {data.description}, as python -m eval.table --runs {runs} does")
        scores = score_nets(
            list(finished_stages(runs).values()), data.eval_data, device=torch.device(device), progress=False
        )
        print(report(scores), flush=True)
        scores_file = out / "eval.json"
        write_json(scores.results, scores_file)
        done(f"scores written to {scores_file}")

        images = [data.held_out.image_path(image_id) for image_id in data.held_out.ids[: plan.segment_images]]
        net = stage_net(runs).load()
        segmented, skipped = segment_images(net, images, out / "segment", device=device, progress=False)
        if skipped:
            raise FcnError(f"demo: {skipped} held-out image(s) could not be segmented (see the messages above)")
        done(f"{segmented} held-out images segmented into {out / 'segment'}")
        return json.loads(scores_file.read_text())


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "reproduce.demo",
        f"Train FCN-32s -> 16s -> 8s on built-in synthetic data, score them and segment held-out images ({FULL_TIME}).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (data, base net, runs, eval.json)")
    parser.add_argument("--fast", action="store_true", help=f"tiny run ({FAST_TIME}) that only checks the plumbing")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="voc",
        help="synthetic data to write and train on: voc (VOC2011 + SBD, the papers'), folder (a "
        "dataset of one's own, folder:ROOT), ade20k (an ADE20K release, 150 classes)",
    )
    cli.add_device(parser)
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = cli.resolve_device(parser, args.device)
    cli.setup_logging(args.quiet)
    return cli.run(lambda: run_demo(args.out, FAST if args.fast else FULL, dataset=args.dataset, device=str(device)))


if __name__ == "__main__":
    sys.exit(main())
