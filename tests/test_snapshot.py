"""Snapshots: atomic files, exact resume, and a training process killed mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_train import TinyNet, fake_caffemodel_writer, make_samples, solver_for

from porting.checkpoint import CheckpointError
from reproduce.snapshot import latest_snapshot, load_snapshot, save_snapshot, snapshot_path
from reproduce.train import TrainConfig, Trainer

TESTS = Path(__file__).resolve().parent
SAMPLES = dict(count=7, sizes=[(8, 8), (11, 7), (5, 9)])


def train(out_dir: Path, max_iter: int, resume: Path | None = None, snapshot_every: int = 0) -> TinyNet:
    """A run of the stand-in net: 4 images per update, dropout on (so RNG handling matters)."""
    net = TinyNet()
    config = TrainConfig(
        images_per_update=4, max_iter=max_iter, display=1, snapshot_every=snapshot_every, out_dir=out_dir
    )
    Trainer(net, solver_for(net, 4), make_samples(**SAMPLES), config).run(resume=resume)
    return net


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), f"{name} differs"


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_caffemodel_writer(monkeypatch)
    straight = train(tmp_path / "straight", 7)
    train(tmp_path / "split", 3)
    resumed = train(tmp_path / "split", 7, resume=tmp_path / "split")
    assert_same_weights(straight, resumed)
    logs = [
        [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        for run in ("straight", "split")
    ]
    losses = [[r for r in log if "loss" in r] for log in logs]
    assert [r["iter"] for r in losses[1]] == list(range(7))
    assert [r["loss"] for r in losses[0]] == [r["loss"] for r in losses[1]]
    assert [r for r in logs[0] if "ids" in r] == [r for r in logs[1] if "ids" in r]  # each update once, same images


def test_snapshot_round_trip_and_latest(tmp_path: Path) -> None:
    net = TinyNet()
    solver = solver_for(net, 4)
    for spec in net.param_specs()[:4]:
        spec.parameter.grad = torch.ones_like(spec.parameter)
    solver.step()
    for iteration in (9, 10):
        save_snapshot(snapshot_path(tmp_path, iteration), net, solver, {"iter": iteration})
    (tmp_path / ".snapshot_iter_11.pt.123.tmp").write_bytes(b"half a file")
    assert latest_snapshot(tmp_path) == tmp_path / "snapshot_iter_10.pt"
    assert latest_snapshot(tmp_path / "absent") is None
    other = TinyNet(seed=5)
    other_solver = solver_for(other, 4)
    assert load_snapshot(tmp_path / "snapshot_iter_10.pt", other, other_solver) == {"iter": 10}
    assert_same_weights(net, other)
    assert other_solver.iter == 1
    for name, history in solver.state_dict()["history"].items():
        assert torch.equal(history, other_solver.state_dict()["history"][name])


def test_damaged_or_foreign_snapshots_are_named_errors(tmp_path: Path) -> None:
    net = TinyNet()
    solver = solver_for(net, 4)
    good = save_snapshot(tmp_path / "snapshot_iter_1.pt", net, solver, {})
    truncated = tmp_path / "snapshot_iter_2.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="snapshot_iter_2.pt: not a readable snapshot"):
        load_snapshot(truncated, net, solver)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="weights.pt: not a training snapshot"):
        load_snapshot(foreign, net, solver)
    wider = TinyNet()
    wider.score = torch.nn.Conv2d(4, 5, 1)
    with pytest.raises(CheckpointError, match="snapshot_iter_1.pt: weights do not fit the net"):
        load_snapshot(good, wider, solver_for(wider, 4))


def test_resume_with_another_seed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_caffemodel_writer(monkeypatch)
    train(tmp_path, 1)
    net = TinyNet()
    config = TrainConfig(images_per_update=4, max_iter=2, seed=1, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="snapshot_iter_1.pt: snapshot was taken with seed 1337"):
        Trainer(net, solver_for(net, 4), make_samples(**SAMPLES), config).run(resume=tmp_path)


CHILD = """
import os, sys, time
import torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})
import porting
from pathlib import Path
from test_snapshot import train
porting.write_caffemodel = lambda net, path: torch.save(net.state_dict(), path)
real_fsync = os.fsync

def fsync_that_stalls_on_the_second_snapshot(descriptor):
    name = os.readlink(f"/proc/self/fd/{{descriptor}}")
    if "snapshot_iter_4" in name:
        print("WRITING", name, flush=True)
        time.sleep(120)
    real_fsync(descriptor)

os.fsync = fsync_that_stalls_on_the_second_snapshot
train(Path({out!r}), 6, snapshot_every=2)
"""


def test_sigkill_during_snapshot_write_resumes_from_last_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_caffemodel_writer(monkeypatch)
    out = tmp_path / "killed"
    script = CHILD.format(tests=str(TESTS), threads=torch.get_num_threads(), out=str(out))
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=TESTS.parent,
    )
    try:
        deadline = time.monotonic() + 60
        line = ""
        while not line.startswith("WRITING") and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line or child.poll() is None, "training child exited before the snapshot write"
        assert line.startswith("WRITING"), "the child never reached the second snapshot"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "snapshot_iter_4.pt").exists()
    assert list(out.glob(".snapshot_iter_4.pt.*.tmp")), "the half-written temporary should be left behind"
    assert latest_snapshot(out) == out / "snapshot_iter_2.pt"
    resumed = train(out, 6, resume=out, snapshot_every=2)
    straight = train(tmp_path / "straight", 6, snapshot_every=2)
    assert_same_weights(straight, resumed)
    assert latest_snapshot(out) == out / "snapshot_iter_6.pt"
