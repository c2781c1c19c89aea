"""The training loop: one image per forward/backward, gradients summed to a Caffe update.

FCN trains on whole images of different sizes, so a "minibatch of 20" is Caffe's
`iter_size: 20` with batch 1: twenty forward/backward passes whose parameter gradients
add up, scaled by 1/20, then one solver update. Across P processes each takes 20/P of
those images; gradients are summed over processes before the single scaling, so 1x20,
2x10 and 4x5 make the same update from the same twenty images.

The image at global position n (n = update * images_per_update + slot) is the n-th of
one order, `TrainConfig.order`:

- "authors": the authors' data layer (`voc_layers.py`): `random.seed(seed)` once, then
  `random.randint(0, N - 1)` for every image, with replacement (`fcndata.sample_order`);
- "permutation": a fresh seeded permutation of the N images per epoch.

The torch RNG is reseeded from (seed, n) before each pass. Data order and dropout masks
therefore depend only on (seed, n): several processes split the one sequence, and a run
resumes from a snapshot without stored RNG state. Every update's image ids go to
log.jsonl as `{"iter": k, "ids": [...]}` (k: updates done before it), so a run's order
can be checked and a bad image found: the ids the samples themselves carried into the
passes (every process's, in slot order), not a second computation of the order.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import porting
from fcndata import net_feed
from fcndata.splits import sample_order
from porting.checkpoint import CheckpointError
from porting.errors import FcnError
from reproduce.distributed import DistContext, all_reduce_sum, broadcast_from_main, current_context, gather_lists
from reproduce.monitor import Progress, TrainLog
from reproduce.snapshot import latest_snapshot, load_snapshot, save_snapshot, snapshot_path
from reproduce.solver import CaffeSGD, SolverConfig

Evaluate = Callable[[nn.Module], Mapping[str, float]]
#: training image orders (`TrainConfig.order`), see the module docstring
ORDERS = ("authors", "permutation")


@dataclass(frozen=True)
class TrainConfig:
    """How the loop runs; the update rule itself is the solver's `SolverConfig`."""

    images_per_update: int = 20
    max_iter: int = 100_000
    display: int = 20
    average_loss: int = 20
    snapshot_every: int = 0
    out_dir: Path = Path("train")
    seed: int = 1337
    eval_every: int = 0
    num_workers: int = 0
    order: str = "permutation"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")

    @classmethod
    def from_solver(cls, solver: SolverConfig, out_dir: Path, **overrides: Any) -> TrainConfig:
        """Loop settings as a Caffe solver file gives them (batch 1, so images per update = iter_size)."""
        fields: dict[str, Any] = dict(
            images_per_update=solver.iter_size,
            max_iter=solver.max_iter,
            display=solver.display,
            average_loss=solver.average_loss,
            snapshot_every=solver.snapshot,
            out_dir=Path(out_dir),
        )
        if solver.random_seed >= 0:
            fields["seed"] = solver.random_seed
        fields.update(overrides)
        return cls(**fields)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run leaves behind (files are written by rank 0 only)."""

    iter: int
    loss: float | None
    snapshot: Path | None
    caffemodel: Path
    log_csv: Path
    log_jsonl: Path
    plot: Path


class AuthorsOrder:
    """Dataset index of the image at global position n: the n-th draw of the authors' stream."""

    def __init__(self, seed: int, length: int) -> None:
        self._stream = sample_order(length, seed)
        self._drawn: list[int] = []

    def __getitem__(self, position: int) -> int:
        if position >= len(self._drawn):
            self._drawn.extend(itertools.islice(self._stream, position + 1 - len(self._drawn)))
        return self._drawn[position]


class ImageOrder:
    """Dataset index of the image at global position n: a fresh seeded permutation per epoch."""

    def __init__(self, seed: int, length: int) -> None:
        self.seed = seed
        self.length = length
        self._epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.length)
        if epoch != self._epoch:
            self._permutation = np.random.default_rng((self.seed, epoch)).permutation(self.length)
            self._epoch = epoch
        return int(self._permutation[offset])


def image_order(order: str, seed: int, length: int) -> AuthorsOrder | ImageOrder:
    """The `TrainConfig.order` named `order` over `length` images."""
    return AuthorsOrder(seed, length) if order == "authors" else ImageOrder(seed, length)


def validation_note(validating: bool, config: TrainConfig) -> str:
    """What the plot's validation panel says before the first validation of a run."""
    if not validating:
        return "no validation in this run (--eval-every 0, or no validation set)"
    return f"no validation yet: every {config.eval_every} updates and after the last ({config.max_iter})"


def image_seed(seed: int, position: int) -> int:
    """The torch seed for the pass over the image at global position `position`."""
    return int(np.random.SeedSequence((seed, position)).generate_state(1, np.uint64)[0] >> 1)


class _RankSampler:
    """This rank's share of the global image sequence, from update `start` to `stop`."""

    def __init__(
        self, order: AuthorsOrder | ImageOrder, start: int, stop: int, images_per_update: int, ctx: DistContext
    ) -> None:
        self.order, self.start, self.stop = order, start, stop
        self.images_per_update = images_per_update
        self.per_rank = images_per_update // ctx.world_size
        self.first_slot = ctx.rank * self.per_rank

    def positions(self) -> Iterator[int]:
        for update in range(self.start, self.stop):
            base = update * self.images_per_update + self.first_slot
            yield from range(base, base + self.per_rank)

    def __iter__(self) -> Iterator[int]:
        return (self.order[position] for position in self.positions())

    def __len__(self) -> int:
        return (self.stop - self.start) * self.per_rank


class Trainer:
    """Caffe-style training of a TRAIN-phase `CaffeNet` on a dataset of `Sample`s.

    `evaluate(net)`, if given, runs on rank 0 every `eval_every` updates and after the last
    one (a run shorter than `eval_every` is validated too; under no_grad)
    and returns metrics such as {"mean_iu": ...}; it must leave the weights alone.
    """

    def __init__(
        self,
        net: nn.Module,
        solver: CaffeSGD,
        dataset: Dataset,
        config: TrainConfig,
        *,
        evaluate: Evaluate | None = None,
    ) -> None:
        if solver.config.iter_size != config.images_per_update:
            raise FcnError(
                f"solver iter_size {solver.config.iter_size} differs from images_per_update "
                f"{config.images_per_update}; with batch 1 they must agree"
            )
        if len(cast(Sized, dataset)) == 0:
            raise FcnError("the training dataset is empty")
        self.net = net
        self.solver = solver
        self.dataset = dataset
        self.config = config
        self.evaluate = evaluate
        first = next(net.parameters())
        self.ctx = current_context(first.device)
        self.dtype = first.dtype
        if config.images_per_update % self.ctx.world_size:
            raise FcnError(
                f"images_per_update {config.images_per_update} is not divisible by {self.ctx.world_size} processes"
            )
        self.loss_weights: dict[str, float] = dict(cast(Mapping[str, float], net.loss_weights))
        #: the net's input blobs, fed with an example's tops in order (data and label for VOC)
        self.inputs = list(getattr(net, "inputs", ("data", "label")))
        if not self.loss_weights:
            raise FcnError("the net has no loss layer (no top with a nonzero loss weight)")
        self.losses: deque[float] = deque(maxlen=config.average_loss)
        self.out_dir = Path(config.out_dir)
        self.log = TrainLog(self.out_dir, validation_note(evaluate is not None and config.eval_every > 0, config))

    def trainer_state(self) -> dict[str, Any]:
        """The loop's part of a snapshot: data-order position and the smoothed-loss window."""
        return {
            "iter": self.solver.iter,
            "images_seen": self.solver.iter * self.config.images_per_update,
            "seed": self.config.seed,
            "images_per_update": self.config.images_per_update,
            "order": self.config.order,
            "losses": list(self.losses),
        }

    def _resume(self, resume: Path) -> None:
        path = latest_snapshot(resume) if Path(resume).is_dir() else Path(resume)
        if path is None:
            raise CheckpointError(f"{resume}: no snapshot to resume from")
        state = load_snapshot(path, self.net, self.solver)
        for key in ("seed", "images_per_update", "order"):
            if state.get(key) != getattr(self.config, key):
                raise CheckpointError(
                    f"{path}: snapshot was taken with {key} {state.get(key)}, "
                    f"this run has {getattr(self.config, key)}; resume needs the same"
                )
        if state.get("iter") != self.solver.iter:
            raise CheckpointError(
                f"{path}: trainer iteration {state.get('iter')} differs from solver {self.solver.iter}"
            )
        self.losses.extend(state["losses"])

    def _snapshot(self) -> Path | None:
        if not self.ctx.is_main:
            return None
        return save_snapshot(snapshot_path(self.out_dir, self.solver.iter), self.net, self.solver, self.trainer_state())

    def _forward_backward(self, sample: Any, position: int) -> torch.Tensor:
        torch.manual_seed(image_seed(self.config.seed, position))
        device = self.ctx.device
        feed = {name: value.to(device, non_blocking=True) for name, value in net_feed(sample, self.inputs).items()}
        outputs = self.net(
            **{name: value.to(self.dtype) if value.is_floating_point() else value for name, value in feed.items()}
        )
        loss = sum(weight * outputs[name].sum() for name, weight in self.loss_weights.items())
        loss.backward()
        return loss.detach()

    def _reduce_and_scale(self, loss_sum: torch.Tensor) -> float:
        """Sum gradients and loss over processes, then scale the gradients once, as Caffe's
        Normalize does (not at all under the solver's "sum" accumulation, the CVPR-era
        Caffe's); returns the mean loss per image, which Caffe displays in both eras."""
        parameters = self.solver.parameters
        grads = []
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            grads.append(parameter.grad)
        all_reduce_sum([*grads, loss_sum.reshape(1)])
        scale = 1.0 / self.config.images_per_update
        if self.solver.config.accumulation == "mean":
            for grad in grads:
                grad.mul_(scale)
        return loss_sum.item() * scale

    def run(self, resume: Path | None = None) -> TrainResult:
        """Train to `config.max_iter` updates, from scratch or from a snapshot (file or directory)."""
        config = self.config
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            self._resume(resume)
        else:
            broadcast_from_main(list(self.net.state_dict().values()))
        if self.ctx.is_main:
            self.log.restart(self.solver.iter)
        start = self.solver.iter
        sampler = _RankSampler(
            image_order(config.order, config.seed, len(cast(Sized, self.dataset))),
            start,
            max(start, config.max_iter),
            config.images_per_update,
            self.ctx,
        )
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=config.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
        )
        with (
            Progress(config.max_iter, initial=start, enabled=self.ctx.is_main) as progress,
            progress.redirect_logging(),
        ):
            last_snapshot = self._loop(sampler, iter(loader), progress)
        caffemodel = self.out_dir / "final.caffemodel"
        if self.ctx.is_main:
            porting.write_caffemodel(self.net, caffemodel)  # atomic itself (temp + rename)
        smoothed = sum(self.losses) / len(self.losses) if self.losses else None
        return TrainResult(
            self.solver.iter,
            smoothed,
            last_snapshot or latest_snapshot(self.out_dir),
            caffemodel,
            self.log.csv,
            self.log.jsonl,
            self.log.plot,
        )

    def _loop(self, sampler: _RankSampler, samples: Iterator[Any], progress: Progress) -> Path | None:
        """Updates until max_iter with display, validation and snapshots; returns the last snapshot."""
        config = self.config
        positions = sampler.positions()
        last_snapshot: Path | None = None
        snapshot_iter = self.solver.iter
        window_start, window_iter = time.perf_counter(), self.solver.iter
        self.net.train()
        while self.solver.iter < config.max_iter:
            iteration = self.solver.iter
            self.solver.zero_grad()
            loss_sum = torch.zeros((), dtype=self.dtype, device=self.ctx.device)
            used: list[str] = []  # the ids of the samples this process trained on, as they came
            for _ in range(sampler.per_rank):
                sample = next(samples)
                used.append(str(sample.id))
                loss_sum += self._forward_backward(sample, next(positions))
            ids = gather_lists(used)
            self.losses.append(self._reduce_and_scale(loss_sum))
            rate = self.solver.step()
            smoothed = sum(self.losses) / len(self.losses)
            progress.step(self.solver.iter, smoothed)
            if self.ctx.is_main:
                self.log.append_ids(iteration, ids)
            if self.ctx.is_main and config.display and iteration % config.display == 0:
                elapsed = time.perf_counter() - window_start
                images_per_s = (self.solver.iter - window_iter) * config.images_per_update / max(elapsed, 1e-9)
                progress.display(iteration, smoothed, rate, images_per_s)
                self.log.append({"iter": iteration, "loss": smoothed, "lr": rate, "images_per_s": images_per_s})
                window_start, window_iter = time.perf_counter(), self.solver.iter
            if config.eval_every and (self.solver.iter % config.eval_every == 0 or self.solver.iter == config.max_iter):
                self._evaluate(progress)
            if config.snapshot_every and self.solver.iter % config.snapshot_every == 0:
                last_snapshot, snapshot_iter = self._snapshot(), self.solver.iter
        if snapshot_iter != self.solver.iter:
            last_snapshot = self._snapshot()
        return last_snapshot

    def _evaluate(self, progress: Progress) -> None:
        if self.evaluate is None or not self.ctx.is_main:
            return
        with torch.no_grad():
            metrics = {key: float(value) for key, value in self.evaluate(self.net).items()}
        self.net.train()
        progress.validation(self.solver.iter, metrics)
        self.log.append({"iter": self.solver.iter, **metrics})
