"""One rank of the gpu tier's torchrun test (not a test module): `torchrun --nproc_per_node=2
tests/gpu_train_worker.py OUT BACKEND` trains the shared tiny FCN for one update on CUDA
and rank 0 writes the weights to OUT/weights.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from test_gpu import train_one_update  # the test puts tests/ on PYTHONPATH

from reproduce.distributed import init_distributed, shutdown


def main(out: Path, backend: str) -> None:
    ctx = init_distributed(backend)
    try:
        net = train_one_update(ctx.device, out / f"rank{ctx.rank}")
        if ctx.is_main:
            torch.save({name: value.cpu() for name, value in net.state_dict().items()}, out / "weights.pt")
    finally:
        shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
