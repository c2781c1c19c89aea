"""Multi-process training plumbing: `torchrun` environment, backend, device, gradient sums.

One process per device. Gradients are summed across processes with bucketed
`all_reduce` once per update (after all local images), which is what
DistributedDataParallel with `no_sync` during accumulation would do, without DDP's
requirement that every parameter receives a gradient in every pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

BUCKET_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank among `world_size`, and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, snapshots and progress."""
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group `torchrun` describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Without WORLD_SIZE (plain `python -m ...`) this is a single process and no group is
    created. The backend is NCCL when CUDA is available, gloo otherwise; `backend="gloo"` with
    more local ranks than GPUs runs several ranks on one GPU (NCCL refuses that).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())  # ranks share GPUs when fewer
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(
            chosen, rank=rank, world_size=world_size, device_id=device if chosen == "nccl" else None
        )
    return current_context(device)


def current_context(device: torch.device | None = None) -> DistContext:
    """The context of an already-initialized (or absent) process group."""
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank, world_size = 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistContext(rank, world_size, local_rank, device)


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> list[list[torch.Tensor]]:
    """Group same-dtype tensors into runs of about `bucket_bytes` so each all_reduce is one flat buffer."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if not buckets or size + nbytes > bucket_bytes or buckets[-1][0].dtype != tensor.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(tensor)
        size += nbytes
    return buckets


@torch.no_grad()
def all_reduce_sum(tensors: Sequence[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum `tensors` over all processes, in place; a no-op in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for bucket in _buckets(tensors, bucket_bytes):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for tensor in bucket:
            tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()


@torch.no_grad()
def broadcast_from_main(tensors: Sequence[torch.Tensor]) -> None:
    """Make every process start from rank 0's values (initial weights, as DDP does)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=0)


def gather_lists(items: list[str]) -> list[str]:
    """Every process's `items`, concatenated in rank order (the order of their slots in an update);
    `items` itself in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    gathered: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in (part or [])]
