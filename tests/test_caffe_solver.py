"""The project's Caffe SGD and training loop against caffe.SGDSolver itself (issue 21, 2c).

One published net (the generator's voc-fcn16s train net as the CVPR recipe has it: the 2x upsampling
learned, so weights, biases and a deconvolution carry their lr_mult / decay_mult, the final one fixed;
narrowed to 1/16 width, Dropout removed since its mask is random) is trained a few updates from the
same random weights on the same small images of odd, changing sizes, by `reproduce.train.Trainer`
with `reproduce.solver.CaffeSGD` and by Caffe's `solver.step(max_iter)` (its data layer feeds the
images our run logged, in that order). Each setting is one solver file, which both sides read:
every lr_policy Caffe has, momentum, L2 and L1 weight decay, iter_size 1, 2 and 5, clip_gradients,
average_loss.

Compared after every update: each learnable blob's change from the start (1e-4 of the blob's largest
change), the blobs Caffe never moves (lr_mult 0; decay_mult 0 where only decay acts) unchanged on
both sides, and the display line (the smoothed loss over `average_loss` updates and the rate) against
Caffe's log line. The rates move every blob by far more than float32 resolves (at least 1e-3 of its
largest value by the last update, checked; the published 1e-10 .. 1e-14 with the unnormalized loss
would not move them at all); weight decay runs on its own, every label ignored so that only decay moves
the weights.

Each update stores the weights rounded to float32, and where our update and Caffe's differ in the last
bits (one is a fused multiply-add, say) the two roundings can land one spacing apart: after k updates a
weight may differ by k float32 spacings of its value however right both are. That is allowed on top of
the 1e-4 (measured: without it the worst is 2e-4 of a change of ~1e-3 of the weights, which is 1-2
spacings; beyond it, 4e-6).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_oracle.oracle import CaffeInstall
from helpers import randomize

from fcndata.image import Sample
from porting import CaffeNet, parse_solver, to_text
from porting.proto import caffe_pb2
from prototxt import nets
from reproduce import monitor
from reproduce.solver import CaffeSGD, SolverConfig
from reproduce.train import TrainConfig, Trainer

pytestmark = pytest.mark.caffe

NET = "voc-fcn16s"
WIDTH = 1 / 16
RTOL = 1e-4
IGNORE_LABEL = 255
#: every compared blob's largest change after the last update, relative to its largest |value|, at least
MOVED = 1e-3


@dataclass(frozen=True)
class Setting:
    """One solver file's settings (beyond net, type, display and max_iter) and its run."""

    name: str
    solver: str
    max_iter: int = 4
    decay_only: bool = False  # every label ignored: only weight decay moves the weights


SETTINGS = (
    Setting(
        "fixed, momentum 0.99, L2 decay, average_loss",
        'lr_policy: "fixed" base_lr: 5e-6 momentum: 0.99 weight_decay: 5e-4 average_loss: 3',
        max_iter=5,
    ),
    Setting("step, iter_size 2", 'lr_policy: "step" base_lr: 6e-6 gamma: 0.5 stepsize: 2 momentum: 0.9 iter_size: 2'),
    Setting("exp", 'lr_policy: "exp" base_lr: 6e-6 gamma: 0.7 momentum: 0.9'),
    Setting("inv", 'lr_policy: "inv" base_lr: 6e-6 gamma: 0.5 power: 0.75 momentum: 0.9'),
    Setting("multistep", 'lr_policy: "multistep" base_lr: 6e-6 gamma: 0.3 stepvalue: 1 stepvalue: 3 momentum: 0.9'),
    Setting("poly, no momentum", 'lr_policy: "poly" base_lr: 1e-5 power: 1.5'),
    Setting("sigmoid", 'lr_policy: "sigmoid" base_lr: 6e-6 gamma: 0.8 stepsize: 2 momentum: 0.9'),
    Setting(
        "iter_size 5, average_loss",
        'lr_policy: "fixed" base_lr: 1.5e-5 momentum: 0.9 iter_size: 5 average_loss: 2',
        max_iter=3,
    ),
    Setting(
        "clip_gradients, iter_size 2",
        'lr_policy: "fixed" base_lr: 1e-5 momentum: 0.9 iter_size: 2 clip_gradients: 4e4',
    ),
    Setting(
        "L2 weight decay alone",
        'lr_policy: "fixed" base_lr: 0.5 momentum: 0.9 weight_decay: 0.02',
        max_iter=3,
        decay_only=True,
    ),
    Setting(
        "L1 weight decay alone",
        'lr_policy: "fixed" base_lr: 0.05 momentum: 0.9 weight_decay: 0.02 regularization_type: "L1"',
        max_iter=3,
        decay_only=True,
    ),
)


def train_net() -> caffe_pb2.NetParameter:
    """The generator's voc-fcn16s train net, CVPR form (learned 2x upsampling), 1/16 width, no Dropout."""
    net = nets.build(NET, "train", width=WIDTH, learn_skip_upsampling=True)
    kept = [layer for layer in net.layer if layer.type != "Dropout"]
    del net.layer[:]
    net.layer.extend(kept)
    return net


def fed_by(net: caffe_pb2.NetParameter, feed: Path) -> caffe_pb2.NetParameter:
    """The net with its data layer replaced by tests/caffe_oracle/feed_layer.py reading `feed`."""
    fed = caffe_pb2.NetParameter()
    fed.CopyFrom(net)
    (layer,) = [layer for layer in fed.layer if layer.type == "Python"]
    layer.python_param.module, layer.python_param.layer = "feed_layer", "FeedLayer"
    layer.python_param.param_str = str(feed)
    return fed


def samples(setting: Setting, index: int) -> list[Sample]:
    """max_iter * iter_size images of odd, changing sizes with labels (20% ignored, or all of them)."""
    config = SolverConfig.from_proto(parse_solver(solver_text(setting, Path("net.prototxt"))))
    rng = np.random.default_rng(100 + index)
    out = []
    for n in range(setting.max_iter * config.iter_size):
        height, width = 19 + 2 * (n % 3), 25 - 2 * (n % 2)
        label = rng.integers(0, 21, (height, width))
        label[rng.random((height, width)) < 0.2] = IGNORE_LABEL
        if setting.decay_only:
            label[...] = IGNORE_LABEL
        image = rng.standard_normal((3, height, width), dtype=np.float32)
        out.append(Sample(torch.from_numpy(image), torch.from_numpy(label), f"img{n}"))
    return out


def solver_text(setting: Setting, net: Path) -> str:
    return (
        f'net: "{net}" type: "SGD" display: 1 max_iter: {setting.max_iter} snapshot_after_train: false {setting.solver}'
    )


def weights(net: CaffeNet) -> dict[str, np.ndarray]:
    return {f"{layer}.{i}": blob.copy() for layer, blobs in net.blobs_numpy().items() for i, blob in enumerate(blobs)}


@dataclass
class Run:
    """One setting trained by one side: weights after k updates (k = 0 .. max_iter), display per iteration."""

    weights: list[dict[str, np.ndarray]]
    loss: dict[int, float]
    lr: dict[int, float]
    clipped: int | None = None  # Caffe's: how many updates clip_gradients scaled down


def ours(setting: Setting, index: int, folder: Path) -> tuple[Run, list[Sample], list[list[str]]]:
    """Train with the project's Trainer and CaffeSGD; also the images and each update's logged ids."""
    net_param = train_net()
    data = samples(setting, index)
    net = CaffeNet(net_param, phase="TRAIN", input_shapes={"data": (1, 3, 19, 25), "label": (1, 1, 19, 25)})
    randomize(net, seed=index, bilinear_deconv=True)
    config = SolverConfig.from_proto(parse_solver(solver_text(setting, folder / "net.prototxt")))
    after = [weights(net)]

    def record(trained: torch.nn.Module) -> dict[str, float]:
        after.append(weights(net))
        return {}

    train_config = TrainConfig.from_solver(config, folder / "ours", eval_every=1)
    Trainer(net, CaffeSGD(net.param_specs(), config), data, train_config, evaluate=record).run()
    records = [json.loads(line) for line in (folder / "ours" / "log.jsonl").read_text().splitlines()]
    ids = [record["ids"] for record in records if "ids" in record]
    shown = [record for record in records if "loss" in record]
    return (
        Run(after, {r["iter"]: r["loss"] for r in shown}, {r["iter"]: r["lr"] for r in shown}),
        data,
        ids,
    )


def write_caffe_case(
    setting: Setting, folder: Path, start: dict[str, np.ndarray], data: list[Sample], ids: list[list[str]]
) -> None:
    """The case folder solver_job.py reads: the same solver file, the net fed our run's images in its order."""
    by_id = {sample.id: sample for sample in data}
    fed = [by_id[image] for update in ids for image in update]
    feed = {}
    for n, sample in enumerate(fed):
        feed[f"{n}/0"] = sample.image.numpy()[None]
        feed[f"{n}/1"] = sample.label.numpy().astype(np.float32)[None, None]
    np.savez(folder / "feed.npz", **feed)
    np.savez(folder / "params.npz", **start)
    (folder / "net.prototxt").write_text(to_text(fed_by(train_net(), folder / "feed.npz")))
    (folder / "solver.prototxt").write_text(solver_text(setting, folder / "net.prototxt"))


def run_caffe(caffe: CaffeInstall, folders: list[Path], workdir: Path) -> list[Run]:
    """Every case in one Caffe process (tests/caffe_oracle/solver_job.py)."""
    (workdir / "jobs.json").write_text(json.dumps([{"dir": str(folder)} for folder in folders]))
    caffe.run("solver_job.py", workdir)
    runs = []
    for folder in folders:
        with np.load(folder / "out.npz") as out:
            steps: dict[int, dict[str, np.ndarray]] = {}
            for key in out.files:
                k, name = key.split("/", 1)
                steps.setdefault(int(k), {})[name] = out[key]
        shown = json.loads((folder / "out.json").read_text())
        runs.append(
            Run(
                [steps[k] for k in sorted(steps)],
                {int(i): v for i, v in shown["loss"].items()},
                {int(i): v for i, v in shown["lr"].items()},
                shown["clipped"],
            )
        )
    return runs


@pytest.fixture(scope="module")
def compared(caffe, tmp_path_factory) -> dict[str, tuple[Run, Run]]:
    """setting name -> (our run, Caffe's run)."""
    monitor_plot = monitor.plot_curves
    monitor.plot_curves = lambda records, path: None  # the loss plot, redrawn per record, is not compared
    try:
        workdir = tmp_path_factory.mktemp("caffe_solver")
        our_runs, folders = [], []
        for index, setting in enumerate(SETTINGS):
            folder = workdir / f"case{index}"
            folder.mkdir()
            run, data, ids = ours(setting, index, folder)
            write_caffe_case(setting, folder, run.weights[0], data, ids)
            our_runs.append(run)
            folders.append(folder)
    finally:
        monitor.plot_curves = monitor_plot
    caffe_runs = run_caffe(caffe, folders, workdir)
    return {setting.name: pair for setting, pair in zip(SETTINGS, zip(our_runs, caffe_runs))}


def change_error(change: np.ndarray, reference: np.ndarray, stored: np.ndarray, updates: int, what: str) -> float:
    """Assert our change from the start equals Caffe's to RTOL of its largest value, beyond float32's
    resolution: each update stores the weight rounded to float32, where two correct sums can round
    apart, so `updates` spacings of the stored weight are allowed on top. Returns the error beyond them,
    relative to the largest change."""
    scale = float(np.abs(reference).max())
    resolution = updates * np.spacing(np.abs(stored)).astype(np.float64)
    error = float(np.maximum(np.abs(change - reference) - resolution, 0).max()) / scale
    assert error <= RTOL, f"{what}: max error {error:.3g} of the largest change {scale:.3g} (tolerance {RTOL})"
    return error


def param_specs() -> dict[str, tuple[float, float]]:
    """`<layer>.<i>` -> (lr_mult, decay_mult) of every learnable blob of the net."""
    net = CaffeNet(
        train_net(), phase="TRAIN", input_shapes={"data": (1, 3, 19, 25), "label": (1, 1, 19, 25)}, fill=False
    )
    return {f"{spec.layer}.{spec.index}": (spec.lr_mult, spec.decay_mult) for spec in net.param_specs()}


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_weights_after_every_update_equal_caffe(setting: Setting, compared, caffe_comparisons) -> None:
    mine, theirs = compared[setting.name]
    assert len(mine.weights) == len(theirs.weights) == setting.max_iter + 1
    start = theirs.weights[0]
    worst = 0.0
    for key, (lr_mult, decay_mult) in param_specs().items():
        assert np.array_equal(mine.weights[0][key], start[key]), f"{key}: the runs start from different weights"
        moves = lr_mult != 0 and not (setting.decay_only and decay_mult == 0)
        for k in range(1, setting.max_iter + 1):
            what = f"{setting.name}: {key} after {k} updates"
            change = mine.weights[k][key].astype(np.float64) - start[key]
            reference = theirs.weights[k][key].astype(np.float64) - start[key]
            if moves:
                worst = max(worst, change_error(change, reference, theirs.weights[k][key], k, what))
            else:
                assert not change.any() and not reference.any(), (
                    f"{what}: moved (lr_mult {lr_mult}, decay_mult {decay_mult})"
                )
        if moves:  # far above float32 resolution, so the 1e-4 comparison means something
            moved = np.abs(theirs.weights[-1][key] - start[key]).max() / np.abs(start[key]).max()
            assert moved >= MOVED, f"{setting.name}: {key} changed by only {moved:.2g} of its largest value"
    # the clip run scales the first update down (the summed diff's norm is above clip_gradients, the
    # averaged one's below, so a norm of the wrong diff would not clip) and leaves later ones alone
    assert bool(theirs.clipped) == ("clip_gradients" in setting.solver), f"Caffe clipped {theirs.clipped} updates"
    caffe_comparisons.record(
        "solver: weights after each update, every setting (change from the start, beyond float32 rounding)",
        setting.max_iter,
        worst,
    )


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_displayed_loss_and_rate_equal_caffe(setting: Setting, compared, caffe_comparisons) -> None:
    """Caffe's display line per iteration: the loss smoothed over `average_loss` updates (default 1), the rate."""
    mine, theirs = compared[setting.name]
    worst = 0.0
    for shown in ("loss", "lr"):
        reference, value = getattr(theirs, shown), getattr(mine, shown)
        assert sorted(value) == sorted(reference) == list(range(setting.max_iter))
        for iteration in reference:
            error = abs(value[iteration] - reference[iteration]) / (abs(reference[iteration]) or 1.0)
            assert error <= RTOL, (
                f"{setting.name}: iteration {iteration} displays {shown} {value[iteration]}, Caffe {reference[iteration]}"
            )
            worst = max(worst, error)
    caffe_comparisons.record("solver: displayed smoothed loss (average_loss) and lr", setting.max_iter, worst)
