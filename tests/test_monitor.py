"""Watching a run: the training curves plot any loss a real run produces, and a failing
plot or log file never stops training (one warning, then silence)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import TinyNet, fake_caffemodel_writer, make_samples, solver_for

from reproduce import monitor
from reproduce.monitor import PLOT_DPI, PLOT_SIZE_INCHES, plot_curves
from reproduce.train import TrainConfig, Trainer

PLOT_PIXELS = (round(PLOT_SIZE_INCHES[0] * PLOT_DPI), round(PLOT_SIZE_INCHES[1] * PLOT_DPI))
LOSS_RGB = (31, 119, 180)  # matplotlib's tab:blue
IU_RGB = (255, 127, 14)  # tab:orange


def _colour_rows(path: Path, rgb: tuple[int, int, int]) -> np.ndarray:
    """Row indices of the pixels drawn in (close to) `rgb`."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == PLOT_PIXELS
        pixels = np.asarray(image.convert("RGB")).astype(int)
    close = np.abs(pixels - np.array(rgb)).sum(axis=2) < 30
    return np.nonzero(close)[0]


def _loss_records(losses: list[float]) -> list[dict]:
    return [{"iter": 20 * index, "loss": loss, "lr": 1e-10} for index, loss in enumerate(losses)]


@pytest.mark.parametrize(
    "losses",
    [
        [64458.6],  # the crash: one unnormalized loss record
        [5.7e5] * 6,  # constant
        list(np.geomspace(1e6, 1e-3, 10)),  # nine orders of magnitude
        [0.0, 3.0, 2.5],  # a zero loss (no log axis then)
        [float("nan"), 2.0, float("inf"), 1.5],  # non-finite records are left out
        [],
    ],
)
def test_plot_draws_any_loss(tmp_path: Path, losses: list[float]) -> None:
    records = _loss_records(losses) + [{"iter": 40, "mean_iu": 0.25}, {"iter": 80, "mean_iu": 0.5}]
    plot_curves(records, tmp_path / "loss.png")
    assert len(_colour_rows(tmp_path / "loss.png", IU_RGB)) > 0
    if any(np.isfinite(losses)):
        assert len(_colour_rows(tmp_path / "loss.png", LOSS_RGB)) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]  # no temporary left behind


def test_wide_loss_range_spreads_over_the_axis(tmp_path: Path) -> None:
    """A loss falling from 1e6 to 1e-3 uses the loss panel's height: on a linear axis all
    but the first point would sit in its bottom few pixels."""
    plot_curves(_loss_records(list(np.geomspace(1e6, 1e-3, 10))), tmp_path / "loss.png")
    rows = _colour_rows(tmp_path / "loss.png", LOSS_RGB)
    panel_height = PLOT_PIXELS[1] / 2
    assert rows.max() - rows.min() > 0.6 * panel_height
    assert np.median(rows) < rows.max() - 0.25 * panel_height  # the middle points are not squashed at the bottom


def _train(tmp_path: Path, updates: int = 4) -> Trainer:
    net = TinyNet()
    config = TrainConfig(images_per_update=2, max_iter=updates, display=1, snapshot_every=2, out_dir=tmp_path)
    trainer = Trainer(net, solver_for(net, 2), make_samples(4, [(8, 8), (6, 9)]), config)
    trainer.result = trainer.run()
    return trainer


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_failing_plot_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_caffemodel_writer(monkeypatch)
    calls = []

    def broken_plot(records, path, *_) -> None:
        calls.append(len(records))
        raise ValueError("no room on the canvas")

    monkeypatch.setattr(monitor, "plot_curves", broken_plot)
    trainer = _train(tmp_path)
    result = trainer.result
    assert result.iter == 4 and result.caffemodel.is_file() and result.snapshot.name == "snapshot_iter_4.pt"
    assert len(calls) == 5  # tried after the restart and after each of the 4 display records
    records = [json.loads(line) for line in result.log_jsonl.read_text().splitlines()]
    assert [record["iter"] for record in records if "loss" in record] == [0, 1, 2, 3]
    assert [record["iter"] for record in records if "ids" in record] == [0, 1, 2, 3]
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "plotting" in warnings[0] and str(result.plot) in warnings[0] and "no room on the canvas" in warnings[0]
    assert "training goes on" in warnings[0]
    assert not result.plot.exists()


def test_unwritable_log_file_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_caffemodel_writer(monkeypatch)
    (tmp_path / "log.csv").mkdir()  # a folder where the CSV log should go
    result = _train(tmp_path).result
    assert result.iter == 4 and result.caffemodel.is_file()
    logged = [json.loads(line) for line in result.log_jsonl.read_text().splitlines()]
    assert len([record for record in logged if "loss" in record]) == 4 and result.plot.is_file()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "log.csv" in warnings[0] and "training goes on" in warnings[0]


def test_validation_scores_are_logged_in_percent_like_the_display(caplog: pytest.LogCaptureFixture) -> None:
    metrics = {"pixel_acc": 0.7516742, "mean_acc": 0.1, "mean_iu": 0.0751674, "fw_iu": 0.5650141, "geo_mean_iu": 0.5}
    with caplog.at_level(logging.INFO, logger="reproduce.monitor"), monitor.Progress(40, enabled=True) as progress:
        progress.validation(20, metrics)
    assert caplog.messages == [
        "Iteration 20, validation: pixel acc 75.17, mean acc 10.00, mean IU 7.52, f.w. IU 56.50, geo_mean_iu 50.00"
    ]


def test_restart_keeps_every_record_and_the_line_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A resumed run rewrites log.jsonl without the records it is about to redo; a line that is no
    record stops nothing and is kept where it was, with a warning naming the file and line."""
    records = [{"iter": k, "loss": 2.0 - k / 10, "lr": 1e-10} for k in range(4)]
    records += [{"iter": 4, "mean_iu": 0.25}, {"iter": 4, "ids": ["a"]}, {"iter": 5, "loss": 1.0}]
    lines = [json.dumps(record) for record in records]
    bad = '{"iter": 2, "loss": 1.7'  # cut short by a crash
    lines.insert(2, bad)
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    log = monitor.TrainLog(tmp_path)
    with caplog.at_level(logging.WARNING):
        log.restart(4)
    kept = [record for record in records if record["iter"] < 4] + [{"iter": 4, "mean_iu": 0.25}]
    assert log.records == kept
    assert (tmp_path / "log.jsonl").read_text().splitlines() == [*lines[:2], bad, *lines[3:6]]
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and f"{tmp_path / 'log.jsonl'}:3: not a log record" in warnings[0]


def _dark_pixels(path: Path, rows: tuple[float, float]) -> int:
    """Near-black pixels in the middle 40% of the plot's width between fractions `rows` of its height
    (inside the lower panel: no spines or tick labels there, only light grid lines)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    height, width = pixels.shape[:2]
    box = pixels[int(rows[0] * height) : int(rows[1] * height), int(0.3 * width) : int(0.7 * width)]
    return int((box.sum(axis=2) < 200).sum())


def test_the_plot_says_when_there_is_no_validation_yet(tmp_path: Path) -> None:
    """Loss records only: the lower panel holds a note (text), not an empty frame; once a mean IU
    is logged the note goes and the curve is drawn."""
    plot_curves(_loss_records([3.0, 2.0, 1.5]), tmp_path / "loss.png")
    assert _dark_pixels(tmp_path / "loss.png", (0.65, 0.85)) > 50
    assert len(_colour_rows(tmp_path / "loss.png", IU_RGB)) == 0
    plot_curves([*_loss_records([3.0, 2.0]), {"iter": 20, "mean_iu": 0.4}], tmp_path / "loss.png")
    assert _dark_pixels(tmp_path / "loss.png", (0.65, 0.85)) == 0
    assert len(_colour_rows(tmp_path / "loss.png", IU_RGB)) > 0
