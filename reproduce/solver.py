"""Caffe's SGD solver: learning-rate policies and the per-blob momentum update.

The update is Caffe's `SGDSolver::ApplyUpdate`, step for step, so that a net trained here
follows the same trajectory as under `caffe train` with the same solver file:

1. `clip_gradients` (when >= 0) rescales all gradients by one global L2 norm. Caffe clips
   the *accumulated* diff (the sum over `iter_size` passes), before dividing by
   `iter_size`; we receive the averaged gradient, so the norm compared is
   `iter_size * ||mean gradient||`. With P GPUs Caffe first averages the P solvers'
   diffs (P2PSync / NCCL scale the sum by 1 / solver_count), so the norm compared is
   `iter_size / P * ||mean||` (`solver_count`; `iter_size` here counts all P solvers' passes).

`accumulation` is no caffe.proto field: it says how the `iter_size` passes combine.
"mean" is Caffe since May 2015 (55585f5, then `Normalize` in 0e7a078: the accumulated
diff divided by `iter_size`); "sum" is the Caffe that introduced `iter_size` for FCN
(41cf06c, Aug 2014) and that the CVPR 2015 paper trained with: the diff is the plain sum,
so lr and decay act on 20x the mean gradient. A "sum" run equals a "mean" run with
`base_lr * iter_size` and `weight_decay / iter_size` (the `cvpr` and `cvpr-mean`
presets of `prototxt.solvers`).
2. regularize: `diff += local_decay * data` (L2) or `local_decay * sign(data)` (L1), with
   `local_decay = weight_decay * decay_mult`.
3. `history = momentum * history + local_rate * diff`, `local_rate = lr * lr_mult`.
4. `data -= history`.

Bias 2x learning rate and zero decay are the net's `param { lr_mult decay_mult }` specs,
not solver settings; they reach us through `CaffeNet.param_specs()`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from porting.checkpoint import CheckpointError
from porting.errors import PrototxtError
from porting.proto import caffe_pb2

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
#: the policies whose gamma Caffe's GetLearningRate checks is >= 0 (it aborts otherwise)
GAMMA_POLICIES = ("step", "exp", "inv", "multistep", "sigmoid")
REGULARIZATION_TYPES = ("L1", "L2")
ACCUMULATIONS = ("mean", "sum")


class ParamSpecLike(Protocol):
    """What the solver needs from `CaffeNet.param_specs()` entries (read-only, as `ParamInfo` is frozen)."""

    @property
    def layer(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def parameter(self) -> torch.nn.Parameter: ...
    @property
    def lr_mult(self) -> float: ...
    @property
    def decay_mult(self) -> float: ...


@dataclass(frozen=True)
class SolverConfig:
    """The SGD-relevant fields of a Caffe `SolverParameter`, with Caffe's defaults."""

    base_lr: float = 0.0
    lr_policy: str = "fixed"
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalue: tuple[int, ...] = ()
    momentum: float = 0.0
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    iter_size: int = 1
    max_iter: int = 0
    snapshot: int = 0
    display: int = 0
    average_loss: int = 1
    clip_gradients: float = -1.0
    random_seed: int = -1
    accumulation: str = "mean"

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_proto(cls, solver_param: caffe_pb2.SolverParameter, source: str = "solver") -> SolverConfig:
        """Read a parsed solver file; `source` names it in error messages."""
        solver_type = solver_param.type if solver_param.HasField("type") else _legacy_solver_type(solver_param)
        if solver_type != "SGD":
            raise PrototxtError(source, f"solver type {solver_type!r} is not supported (only 'SGD')")
        if not solver_param.HasField("lr_policy"):
            raise PrototxtError(source, f"lr_policy is required (one of {', '.join(LR_POLICIES)})")
        return cls._checked(
            source,
            base_lr=solver_param.base_lr,
            lr_policy=solver_param.lr_policy,
            gamma=solver_param.gamma,
            power=solver_param.power,
            stepsize=solver_param.stepsize,
            stepvalue=tuple(solver_param.stepvalue),
            momentum=solver_param.momentum,
            weight_decay=solver_param.weight_decay,
            regularization_type=solver_param.regularization_type,
            iter_size=solver_param.iter_size,
            max_iter=solver_param.max_iter,
            snapshot=solver_param.snapshot,
            display=solver_param.display,
            average_loss=solver_param.average_loss,
            clip_gradients=solver_param.clip_gradients,
            random_seed=solver_param.random_seed,
        )

    @classmethod
    def _checked(cls, source: str, **fields: Any) -> SolverConfig:
        try:
            return cls(**fields)
        except ValueError as error:
            raise PrototxtError(source, str(error)) from None

    def validate(self) -> None:
        """Reject settings Caffe would abort on, before any training time is spent."""
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"unknown lr_policy {self.lr_policy!r}; expected one of {', '.join(LR_POLICIES)}")
        if self.regularization_type not in REGULARIZATION_TYPES:
            raise ValueError(f"unknown regularization_type {self.regularization_type!r}; expected L1 or L2")
        if self.accumulation not in ACCUMULATIONS:
            raise ValueError(f"unknown accumulation {self.accumulation!r}; expected one of {', '.join(ACCUMULATIONS)}")
        if self.iter_size < 1:
            raise ValueError(f"iter_size must be >= 1, found {self.iter_size}")
        if self.average_loss < 1:
            raise ValueError(f"average_loss must be >= 1, found {self.average_loss}")
        if self.lr_policy in ("step", "sigmoid") and self.stepsize <= 0:
            raise ValueError(f"lr_policy '{self.lr_policy}' needs stepsize > 0, found {self.stepsize}")
        if self.lr_policy in GAMMA_POLICIES and self.gamma < 0:
            raise ValueError(f"lr_policy '{self.lr_policy}' needs gamma >= 0, found {self.gamma}")
        if self.lr_policy == "poly" and self.max_iter <= 0:
            raise ValueError(f"lr_policy 'poly' needs max_iter > 0, found {self.max_iter}")
        if any(b <= a for a, b in zip(self.stepvalue, self.stepvalue[1:])):
            raise ValueError(f"stepvalue must be strictly increasing, found {list(self.stepvalue)}")


def _legacy_solver_type(solver_param: caffe_pb2.SolverParameter) -> str:
    """Old files say `solver_type: NESTEROV` instead of `type: "Nesterov"`."""
    names = {
        "SGD": "SGD",
        "NESTEROV": "Nesterov",
        "ADAGRAD": "AdaGrad",
        "RMSPROP": "RMSProp",
        "ADADELTA": "AdaDelta",
        "ADAM": "Adam",
    }
    return names[caffe_pb2.SolverParameter.SolverType.Name(solver_param.solver_type)]


def learning_rate(config: SolverConfig, iteration: int) -> float:
    """The rate Caffe's `GetLearningRate` gives at `iteration` (updates done so far)."""
    policy = config.lr_policy
    if policy == "fixed":
        return config.base_lr
    if policy == "step":
        return config.base_lr * config.gamma ** (iteration // config.stepsize)
    if policy == "multistep":
        passed = sum(1 for value in config.stepvalue if iteration >= value)
        return config.base_lr * config.gamma**passed
    if policy == "exp":
        return config.base_lr * config.gamma**iteration
    if policy == "inv":
        return config.base_lr * (1.0 + config.gamma * iteration) ** (-config.power)
    if policy == "poly":
        return config.base_lr * (1.0 - iteration / config.max_iter) ** config.power
    if policy == "sigmoid":
        return config.base_lr / (1.0 + math.exp(-config.gamma * (iteration - config.stepsize)))
    raise ValueError(f"unknown lr_policy {policy!r}")


@dataclass(frozen=True)
class _Slot:
    name: str
    parameter: torch.nn.Parameter
    lr_mult: float
    decay_mult: float


class CaffeSGD:
    """Caffe's SGD with momentum over a net's learnable blobs.

    Parameters with `lr_mult: 0` are frozen (`requires_grad=False`): Caffe never moves
    them, and skipping their gradient saves the backward work, as Caffe's
    `param_propagate_down` does. `step()` consumes `p.grad` (Caffe regularizes the diff
    in place), so gradients must be zeroed before the next accumulation.
    """

    def __init__(self, param_specs: Iterable[ParamSpecLike], config: SolverConfig, *, solver_count: int = 1) -> None:
        self.config = config
        self.solver_count = solver_count
        self.iter = 0
        self._slots: list[_Slot] = []
        seen: set[int] = set()
        for spec in param_specs:
            if id(spec.parameter) in seen:  # a shared blob is updated once, by its owner
                continue
            seen.add(id(spec.parameter))
            if spec.lr_mult == 0:
                spec.parameter.requires_grad_(False)
                continue
            self._slots.append(_Slot(f"{spec.layer}.{spec.index}", spec.parameter, spec.lr_mult, spec.decay_mult))
        self._history = {slot.name: torch.zeros_like(slot.parameter) for slot in self._slots}

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        """The blobs this solver updates (those with a nonzero `lr_mult`)."""
        return [slot.parameter for slot in self._slots]

    def learning_rate(self) -> float:
        """The rate the next `step()` will use."""
        return learning_rate(self.config, self.iter)

    def zero_grad(self) -> None:
        for slot in self._slots:
            slot.parameter.grad = None

    @torch.no_grad()
    def step(self) -> float:
        """Apply one Caffe update from the accumulated gradients (averaged, or summed under
        "sum" accumulation); return the rate used."""
        rate = self.learning_rate()
        grads = [
            slot.parameter.grad if slot.parameter.grad is not None else torch.zeros_like(slot.parameter)
            for slot in self._slots
        ]
        self._clip(grads)
        for slot, grad in zip(self._slots, grads):
            local_decay = self.config.weight_decay * slot.decay_mult
            if local_decay:
                data = slot.parameter if self.config.regularization_type == "L2" else torch.sign(slot.parameter)
                grad.add_(data, alpha=local_decay)
            history = self._history[slot.name]
            history.mul_(self.config.momentum).add_(grad, alpha=rate * slot.lr_mult)
            slot.parameter.sub_(history)
        self.iter += 1
        return rate

    def _clip(self, grads: list[torch.Tensor]) -> None:
        if self.config.clip_gradients < 0 or not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        summed = self.config.iter_size * norm if self.config.accumulation == "mean" else norm
        summed_norm = summed / self.solver_count
        if summed_norm > self.config.clip_gradients:
            scale = self.config.clip_gradients / summed_norm
            for grad in grads:
                grad.mul_(scale)

    def state_dict(self) -> dict[str, Any]:
        """Iteration and momentum history: all Caffe keeps in a `.solverstate`."""
        return {"iter": self.iter, "history": {name: h.detach().clone() for name, h in self._history.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        history = state["history"]
        if set(history) != set(self._history):
            missing = sorted(set(self._history) - set(history))
            extra = sorted(set(history) - set(self._history))
            raise CheckpointError(f"solver history does not fit the net: missing {missing}, unexpected {extra}")
        for name, target in self._history.items():
            if tuple(history[name].shape) != tuple(target.shape):
                raise CheckpointError(
                    f"solver history '{name}': expected shape {tuple(target.shape)}, found {tuple(history[name].shape)}"
                )
        for name, target in self._history.items():
            target.copy_(history[name])
        self.iter = int(state["iter"])
