"""`python -m reproduce.demo --out DIR`: the whole FCN recipe on built-in synthetic data, on a CPU.

What a user does with the real files, at toy scale and through the same commands:

1. write a synthetic PASCAL VOC 2011 + SBD in their on-disk formats (DIR/data);
2. train a small VGG16-shaped classifier on it and save it like the ILSVRC VGG16 file
   (V1 net, legacy blob dims) - the stand-in for the download FCN-32s starts from
   (DIR/base);
3. `python -m reproduce.stage` fcn32s (from that classifier), fcn16s, fcn8s with the
   `demo` preset (prototxt.solvers) into DIR/runs;
4. `python -m eval.table` on the synthetic seg11valid: prints the table and writes
   DIR/eval.json with entries fcn32s, fcn16s, fcn8s.

`--fast` runs a tiny version (seconds) that exercises every step, for the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from eval import table as eval_table
from porting.errors import FcnError
from reproduce import stage
from reproduce.basenet import check_base_net, train_base_net
from fcndata import SBDSegmentation, VOCSegmentation, seg11valid_ids
from fcndata.synthetic import write_synthetic

STAGES = ("fcn32s", "fcn16s", "fcn8s")


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


FULL = DemoPlan(n_train=300, n_val=96, image_size=(96, 160), width=1 / 8, base_steps=500, base_batch=16,
                base_views=256, eval_every=20, eval_images=16)
FAST = DemoPlan(n_train=12, n_val=6, image_size=(32, 40), width=1 / 32, base_steps=2, base_batch=4, base_views=4,
                eval_every=1, eval_images=2, max_iter=1, images_per_update=2)


def run_demo(out: Path, plan: DemoPlan = FULL, log=print) -> dict:
    """Run the four steps into `out`; returns the contents of out/eval.json."""
    out = Path(out)
    started = time.perf_counter()

    def done(what: str) -> None:
        log(f"demo: {what} ({time.perf_counter() - started:.0f} s)")

    paths = write_synthetic(out / "data", n_train=plan.n_train, n_val=plan.n_val, size=plan.image_size)
    done(f"synthetic VOC2011 + SBD written to {out / 'data'}")

    train_set = SBDSegmentation(paths.sbd_root, "train")
    base = train_base_net([train_set[i] for i in range(len(train_set))], out / "base" / "vgg16-demo.caffemodel",
                          width=plan.width, steps=plan.base_steps, batch_size=plan.base_batch)
    done(f"base classifier trained: {base}")
    held_out = VOCSegmentation(paths.voc_root, "2011", "seg11valid",
                               ids=seg11valid_ids(paths.voc_root, paths.sbd_root), sbd_root=paths.sbd_root)
    check = check_base_net(base, [held_out[i] for i in range(len(held_out))], views=plan.base_views)
    log(f"demo: base classifier on seg11valid: {check.line()}")

    runs = out / "runs"
    data = ["--voc-root", str(paths.voc_root), "--sbd-root", str(paths.sbd_root)]
    common = ["--out", str(runs), *data, "--preset", "demo", "--width", repr(plan.width), "--device", "cpu",
              "--eval-every", str(plan.eval_every), "--eval-images", str(plan.eval_images)]
    if plan.max_iter is not None:
        common += ["--max-iter", str(plan.max_iter)]
    if plan.images_per_update is not None:
        common += ["--images-per-update", str(plan.images_per_update)]
    for name in STAGES:
        argv = [name, *common] + (["--base-weights", str(base)] if name == "fcn32s" else [])
        log(f"demo: python -m reproduce.stage {' '.join(argv)}")
        if stage.main(argv) != 0:
            raise FcnError(f"demo: stage {name} failed (see the message above)")
        done(f"{name} trained")

    report = out / "eval.json"
    argv = ["--runs", str(runs), "--split", "voc2011seg11valid", *data, "--device", "cpu", "--json", str(report)]
    log(f"demo: python -m eval.table {' '.join(argv)}")
    if eval_table.main(argv) != 0:
        raise FcnError("demo: scoring failed (see the message above)")
    done(f"scores written to {report}")
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.demo",
        description="Train FCN-32s -> 16s -> 8s on built-in synthetic data and score them (CPU, ~10 minutes).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (data, base net, runs, eval.json)")
    parser.add_argument("--fast", action="store_true", help="tiny run (under a minute) that only checks the plumbing")
    args = parser.parse_args(argv)
    try:
        run_demo(args.out, FAST if args.fast else FULL)
    except FcnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
