"""Two gloo processes x 2 images give the same weights as one process x 4 images."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_train import TinyNet, fake_caffemodel_writer, make_samples, solver_for

import porting
from reproduce.distributed import all_reduce_sum, current_context, init_distributed, shutdown
from reproduce.train import TrainConfig, Trainer

SAMPLES = dict(count=9, sizes=[(8, 8), (11, 7), (5, 9), (6, 10)])
UPDATES = 4


def run_training(out_dir: Path) -> TinyNet:
    """Identical in every process; the process count comes from the environment."""
    net = TinyNet(seed=int(os.environ.get("RANK", "0")))  # differing starts: rank 0's must be broadcast
    config = TrainConfig(images_per_update=4, max_iter=UPDATES, display=1, out_dir=out_dir)
    Trainer(net, solver_for(net, 4), make_samples(**SAMPLES), config).run()
    return net


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    porting.write_caffemodel = lambda net, path: torch.save(net.state_dict(), path)
    ctx = init_distributed()
    try:
        assert (ctx.rank, ctx.world_size, ctx.device.type, ctx.is_main) == (rank, 2, "cpu", rank == 0)
        tensors = [torch.full((5,), float(rank + 1)), torch.arange(3.0) * (rank + 1), torch.ones(2, 2)]
        all_reduce_sum(tensors, bucket_bytes=24)  # several buckets
        assert torch.equal(tensors[0], torch.full((5,), 3.0))
        assert torch.equal(tensors[1], torch.arange(3.0) * 3)
        assert torch.equal(tensors[2], torch.full((2, 2), 2.0))
        net = run_training(Path(out_dir) / f"rank{rank}")
        torch.save(net.state_dict(), Path(out_dir) / f"weights{rank}.pt")
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_equal_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_caffemodel_writer(monkeypatch)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_training(tmp_path / "single").state_dict()
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(tmp_path / f"weights{rank}.pt", weights_only=True) for rank in range(2)]
    for name, expected in single.items():
        torch.testing.assert_close(ranks[0][name], expected, rtol=1e-6, atol=1e-7, msg=name)
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks disagree on {name}"
    assert not torch.equal(single["conv.weight"], TinyNet().state_dict()["conv.weight"])
    assert (tmp_path / "rank0" / "log.jsonl").is_file() and not (tmp_path / "rank1").exists()


def test_single_process_context_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed()
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
    assert current_context(ctx.device) == ctx
