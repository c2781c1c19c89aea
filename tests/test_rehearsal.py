"""Rehearsals: every training recipe run as a user runs it, on real-size images.

Synthetic VOC/SBD data in the real formats with PASCAL's usual image sizes (500x375 and
375x500, mixed), trained through `python -m reproduce.stage`'s own flags for every preset
of the registry and every stage: few updates at a reduced width, but enough to cross the
first display, a validation, a snapshot and a resume, and each stage handing its
final.caffemodel to the next. One image per update: a narrow net on a 500x375 image
still takes seconds per pass on a CPU, and accumulation has its own exact tests
(test_train). One `fcn32s heavy` rehearsal runs at full VGG16 width (the real loss
magnitude and memory); one `cvpr` rehearsal runs under torchrun with 2 processes x 10
images per update (on smaller images: 20 passes per update); `eval.table` scores
stage outputs on the real-size images.

Where a stage's score layers all start at zero (fcn32s, fcn8s-atonce) every pixel's
first scores are equal, so the first logged loss is known by hand: ln(21) per pixel,
summed over the image's pixels for an unnormalized loss (`heavy`), averaged for a
normalized one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fcndata import SBDSegmentation, seg11valid_ids
from fcndata.synthetic import write_synthetic
from prototxt import solvers
from prototxt.stages import STAGES
from reproduce import stage
from reproduce.basenet import train_base_net
from reproduce.stage import net_name

pytestmark = pytest.mark.rehearsal

REAL_SHAPES = ((375, 500), (500, 375))  # (height, width): PASCAL's landscape and portrait images
PIXELS = 375 * 500
CLASSES = 21
WIDTH = 1 / 32
ROOT = Path(__file__).resolve().parents[1]


def first_loss(preset: str) -> float:
    """The first logged loss of a net whose score layers are all zero: ln(21) per pixel."""
    per_pixel = math.log(CLASSES)
    return per_pixel if solvers.PRESETS[preset].normalize_loss else per_pixel * PIXELS


@pytest.fixture(scope="module")
def real_size(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real_size")
    paths = write_synthetic(root / "data", n_train=4, n_val=3, shapes=REAL_SHAPES)
    train = SBDSegmentation(paths.sbd_root, "train")
    assert {tuple(train[i].label.shape) for i in range(len(train))} == set(REAL_SHAPES)
    base = train_base_net(
        [train[i] for i in range(len(train))],
        root / "base" / "vgg16.caffemodel",
        width=WIDTH,
        steps=1,
        batch_size=2,
    )
    return {"voc": paths.voc_root, "sbd": paths.sbd_root, "base": base, "root": root}


def stage_argv(name: str, preset: str, data: dict[str, Path], runs: Path, *extra: str) -> list[str]:
    argv = [
        name,
        "--out",
        str(runs),
        "--voc-root",
        str(data["voc"]),
        "--sbd-root",
        str(data["sbd"]),
        "--preset",
        preset,
        "--width",
        repr(WIDTH),
        "--device",
        "cpu",
        "--images-per-update",
        "1",
        "--display",
        "1",
        "--snapshot",
        "1",
        "--eval-every",
        "1",
        "--eval-images",
        "1",
        *extra,
    ]
    if STAGES[name].previous is None:
        argv += ["--base-weights", str(data["base"])]
    return argv


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]


def assert_rehearsed(directory: Path, preset: str, name: str) -> None:
    """Display, validation, snapshot and resume crossed; every file written; the loss finite."""
    logged = records(directory)
    losses = [record for record in logged if "loss" in record]
    assert [record["iter"] for record in logged if "ids" in record] == [0, 1]  # every update's image ids
    assert [record["iter"] for record in losses] == [0, 1]
    assert all(math.isfinite(record["loss"]) for record in losses), losses
    validations = [record for record in logged if "mean_iu" in record]
    assert [record["iter"] for record in validations] == [1, 2]
    assert all(0 <= record["mean_iu"] <= 1 for record in validations)
    if STAGES[name].previous is None:
        assert losses[0]["loss"] == pytest.approx(first_loss(preset), rel=1e-4)
    with open(directory / "log.csv") as handle:
        assert [int(row["iter"]) for row in csv.DictReader(handle)] == [
            record["iter"] for record in logged if "ids" not in record
        ]
    with Image.open(directory / "loss.png") as plot:
        assert plot.format == "PNG"
    assert sorted(path.name for path in directory.glob("snapshot_iter_*.pt")) == [
        "snapshot_iter_1.pt",
        "snapshot_iter_2.pt",
    ]
    for file in ("train.prototxt", "val.prototxt", "deploy.prototxt", "solver.prototxt", "final.caffemodel"):
        assert (directory / file).is_file(), file


@pytest.mark.parametrize("preset", sorted(solvers.PRESETS))
def test_every_stage_of_the_preset_trains_on_real_size_images(
    preset: str,
    real_size: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = tmp_path / "runs"
    recipe = solvers.PRESETS[preset]
    for name in STAGES:
        if net_name(name) not in recipe.base_lr:
            assert stage.main(stage_argv(name, preset, real_size, runs, "--max-iter", "1")) == 1
            assert f"the {preset} preset has no {name}" in capsys.readouterr().err
            continue
        with caplog.at_level(logging.INFO, logger="reproduce"):
            assert stage.main(stage_argv(name, preset, real_size, runs, "--max-iter", "1")) == 0, name
            assert stage.main(stage_argv(name, preset, real_size, runs, "--max-iter", "2", "--resume")) == 0, name
        directory = runs / name
        assert_rehearsed(directory, preset, name)
        start = runs / STAGES[name].previous / "final.caffemodel" if STAGES[name].previous else real_size["base"]
        assert f"{name}: preset {preset}, initial weights from {start}" in caplog.messages
        assert f"  weights: {directory / 'final.caffemodel'}" in caplog.messages
        caplog.clear()


def test_eval_table_scores_the_rehearsed_nets_on_real_size_images(
    real_size: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from eval.table import main as eval_table

    runs = tmp_path / "runs"
    for name in ("fcn32s", "fcn8s-atonce"):  # no update: the transplanted classifier with zero score layers
        assert stage.main(stage_argv(name, "heavy", real_size, runs, "--max-iter", "0", "--eval-every", "0")) == 0
    report = tmp_path / "eval.json"
    assert (
        eval_table(
            [
                "--split",
                "voc2011seg11valid",
                "--voc-root",
                str(real_size["voc"]),
                "--sbd-root",
                str(real_size["sbd"]),
                "--runs",
                str(runs),
                "--device",
                "cpu",
                "--quiet",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    scored = json.loads(report.read_text())
    expected = len(seg11valid_ids(real_size["voc"], real_size["sbd"]))
    assert set(scored) == {"fcn32s", "fcn8s-atonce"}
    for entry in scored.values():
        assert entry["n_images"] == expected
        assert 0 <= entry["pixel_acc"] <= 1 and len(entry["per_class_iu"]) == CLASSES
    assert "fcn8s-atonce" in capsys.readouterr().out


def run_cli(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A command as a user runs it, its output piped (no terminal)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_fcn32s_heavy_at_full_vgg16_width(tmp_path: Path) -> None:
    """The real net on a real-size image: the first loss is the real magnitude (~5.7e5),
    the second update's too, and the log, plot and weights are written."""
    data = write_synthetic(tmp_path / "data", n_train=2, n_val=3, shapes=REAL_SHAPES[:1])
    train = SBDSegmentation(data.sbd_root, "train")
    base = train_base_net([train[0]], tmp_path / "vgg16.caffemodel", width=1.0, steps=0)
    runs = tmp_path / "runs"
    result = run_cli(
        "-m",
        "reproduce.stage",
        "fcn32s",
        "--preset",
        "heavy",
        "--out",
        str(runs),
        "--voc-root",
        str(data.voc_root),
        "--sbd-root",
        str(data.sbd_root),
        "--base-weights",
        str(base),
        "--device",
        "cpu",
        "--max-iter",
        "2",
        "--display",
        "1",
        "--eval-every",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    losses = [record["loss"] for record in records(runs / "fcn32s") if "loss" in record]
    assert losses[0] == pytest.approx(first_loss("heavy"), rel=1e-4)
    assert len(losses) == 2 and math.isfinite(losses[1]) and losses[1] > 1e5
    assert (runs / "fcn32s" / "loss.png").is_file() and (runs / "fcn32s" / "final.caffemodel").is_file()
    assert "fcn32s: preset heavy, 2 updates" in result.stderr


def test_cvpr_under_torchrun_two_processes_of_ten(
    real_size: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_synthetic(tmp_path / "data", n_train=12, n_val=3, size=(64, 96))
    runs = tmp_path / "runs"
    argv = stage_argv(
        "fcn32s",
        "cvpr",
        {"voc": data.voc_root, "sbd": data.sbd_root, "base": real_size["base"]},
        runs,
        "--max-iter",
        "2",
        "--eval-every",
        "0",
        "--images-per-update",
        "20",
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one core per process
    result = run_cli(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "reproduce.stage", *argv
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [record["loss"] for record in records(runs / "fcn32s") if "loss" in record]
    assert losses[0] == pytest.approx(first_loss("cvpr"), rel=1e-4)
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    solver = (runs / "fcn32s" / "solver.prototxt").read_text()
    assert "iter_size: 10" in solver  # per process: 2 x 10 images per update
    assert (runs / "fcn32s" / "final.caffemodel").is_file()
    assert "\r" not in result.stdout + result.stderr
