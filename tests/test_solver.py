"""Caffe SGD semantics against hand-written numpy formulas and the authors' solver files."""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from porting.errors import PrototxtError
from porting.proto import caffe_pb2
from reproduce.solver import CaffeSGD, SolverConfig, learning_rate

Spec = namedtuple("Spec", "layer index parameter lr_mult decay_mult")


def _specs(rng: np.random.Generator) -> list[Spec]:
    def blob(*shape: int) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.from_numpy(rng.standard_normal(shape)))

    return [
        Spec("conv", 0, blob(4, 3, 3, 3), 1.0, 1.0),
        Spec("conv", 1, blob(4), 2.0, 0.0),
        Spec("score", 0, blob(5, 4, 1, 1), 0.1, 0.5),
        Spec("upscore", 0, blob(5, 1, 4, 4), 0.0, 1.0),
    ]


def _caffe_reference(weights, grads_per_iter, specs, config, rate_at):
    """Caffe's update, written out with numpy: clip (on the sum), decay, momentum, subtract.

    A blob with lr_mult 0 gets no backward in Caffe, so its diff is zero."""
    history = [np.zeros_like(w) for w in weights]
    weights = [w.copy() for w in weights]
    for iteration, grads in enumerate(grads_per_iter):
        diffs = [g.copy() if spec.lr_mult else np.zeros_like(g) for g, spec in zip(grads, specs)]
        if config.clip_gradients >= 0:
            summed_norm = math.sqrt(sum(float(np.sum((config.iter_size * d) ** 2)) for d in diffs))
            if summed_norm > config.clip_gradients:
                diffs = [d * (config.clip_gradients / summed_norm) for d in diffs]
        for i, spec in enumerate(specs):
            if spec.lr_mult == 0:
                continue
            decay = config.weight_decay * spec.decay_mult
            penalty = weights[i] if config.regularization_type == "L2" else np.sign(weights[i])
            diff = diffs[i] + decay * penalty
            history[i] = config.momentum * history[i] + rate_at(iteration) * spec.lr_mult * diff
            weights[i] = weights[i] - history[i]
    return weights


@pytest.mark.parametrize("regularization, clip", [("L2", -1.0), ("L1", -1.0), ("L2", 0.5)])
def test_update_matches_hand_computed_caffe_formula(regularization: str, clip: float) -> None:
    rng = np.random.default_rng(0)
    specs = _specs(rng)
    config = SolverConfig(
        base_lr=0.01,
        lr_policy="step",
        gamma=0.5,
        stepsize=2,
        momentum=0.9,
        weight_decay=5e-4 * 10,
        regularization_type=regularization,
        iter_size=4,
        clip_gradients=clip,
    )
    initial = [s.parameter.detach().numpy().copy() for s in specs]
    grads_per_iter = [[rng.standard_normal(w.shape) for w in initial] for _ in range(5)]
    solver = CaffeSGD(specs, config)
    for grads in grads_per_iter:
        for spec, grad in zip(specs, grads):
            spec.parameter.grad = torch.from_numpy(grad.copy()) if spec.parameter.requires_grad else None
        solver.step()
    expected = _caffe_reference(initial, grads_per_iter, specs, config, lambda it: 0.01 * 0.5 ** (it // 2))
    for spec, want in zip(specs, expected):
        np.testing.assert_allclose(spec.parameter.detach().numpy(), want, rtol=1e-12, atol=1e-14)
    assert solver.iter == 5
    if clip >= 0:  # the threshold must bite, or this case tests nothing
        unclipped = _caffe_reference(
            initial, grads_per_iter, specs, replace(config, clip_gradients=-1.0), lambda it: 0.01 * 0.5 ** (it // 2)
        )
        assert not np.allclose(unclipped[0], expected[0])
    assert not specs[3].parameter.requires_grad
    np.testing.assert_array_equal(specs[3].parameter.detach().numpy(), initial[3])


def test_missing_gradient_still_gets_decay_and_momentum() -> None:
    """Caffe's diff of an unused blob is zero, yet weight decay and momentum still move it."""
    weight = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    solver = CaffeSGD([Spec("a", 0, weight, 1.0, 1.0)], SolverConfig(base_lr=0.1, momentum=0.9, weight_decay=0.5))
    solver.step()
    first = 2.0 - 0.1 * 0.5 * 2.0
    assert weight.item() == pytest.approx(first, rel=1e-15)
    solver.step()
    history = 0.9 * (0.1 * 0.5 * 2.0) + 0.1 * 0.5 * first
    assert weight.item() == pytest.approx(first - history, rel=1e-15)


def test_policies_match_hand_formulas() -> None:
    base = dict(base_lr=0.01, gamma=0.1, power=0.75, stepsize=3, max_iter=10, stepvalue=(2, 5, 7))
    for it in range(10):
        assert learning_rate(SolverConfig(lr_policy="fixed", **base), it) == 0.01
        assert learning_rate(SolverConfig(lr_policy="step", **base), it) == pytest.approx(
            0.01 * 0.1 ** math.floor(it / 3), rel=1e-12
        )
        steps_passed = len([v for v in (2, 5, 7) if v <= it])
        assert learning_rate(SolverConfig(lr_policy="multistep", **base), it) == pytest.approx(
            0.01 * 0.1**steps_passed, rel=1e-12
        )
        assert learning_rate(SolverConfig(lr_policy="exp", **base), it) == pytest.approx(0.01 * 0.1**it, rel=1e-12)
        assert learning_rate(SolverConfig(lr_policy="inv", **base), it) == pytest.approx(
            0.01 / (1 + 0.1 * it) ** 0.75, rel=1e-12
        )
        assert learning_rate(SolverConfig(lr_policy="poly", **base), it) == pytest.approx(
            0.01 * (1 - it / 10) ** 0.75, rel=1e-12
        )
        assert learning_rate(SolverConfig(lr_policy="sigmoid", **base), it) == pytest.approx(
            0.01 / (1 + math.exp(-0.1 * (it - 3))), rel=1e-12
        )


def test_reads_the_authors_solver_file(reference: Path) -> None:
    param = text_format.Parse((reference / "voc-fcn32s" / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    config = SolverConfig.from_proto(param)
    assert config.lr_policy == "fixed"
    assert config.base_lr == pytest.approx(1e-10, rel=1e-6)
    assert config.momentum == pytest.approx(0.99, rel=1e-6)
    assert config.weight_decay == pytest.approx(5e-4, rel=1e-6)
    assert (config.iter_size, config.max_iter, config.snapshot, config.average_loss) == (1, 100000, 4000, 20)
    assert config.regularization_type == "L2" and config.clip_gradients < 0


@pytest.mark.parametrize(
    "text, complaint",
    [
        ('lr_policy: "cosine" base_lr: 0.1', "unknown lr_policy 'cosine'"),
        ('lr_policy: "fixed" type: "Adam"', "solver type 'Adam'"),
        ('lr_policy: "fixed" solver_type: NESTEROV', "solver type 'Nesterov'"),
        ('lr_policy: "step" gamma: 0.1', "stepsize > 0"),
        # Caffe's SGDSolver::GetLearningRate: CHECK_GT(stepsize, 0) for sigmoid too, CHECK_GE(gamma, 0)
        # for step, exp, inv, multistep and sigmoid
        ('lr_policy: "sigmoid" gamma: 0.1', "lr_policy 'sigmoid' needs stepsize > 0"),
        ('lr_policy: "exp" gamma: -0.5', "lr_policy 'exp' needs gamma >= 0"),
        ('lr_policy: "inv" gamma: -1 power: 0.5', "lr_policy 'inv' needs gamma >= 0"),
        ('lr_policy: "multistep" gamma: -0.1 stepvalue: 3', "lr_policy 'multistep' needs gamma >= 0"),
        ('lr_policy: "sigmoid" gamma: -0.1 stepsize: 3', "lr_policy 'sigmoid' needs gamma >= 0"),
        ("base_lr: 0.1", "lr_policy is required"),
        ('lr_policy: "fixed" regularization_type: "L3"', "regularization_type 'L3'"),
    ],
)
def test_bad_solver_settings_are_located_errors(text: str, complaint: str) -> None:
    param = text_format.Parse(text, caffe_pb2.SolverParameter())
    with pytest.raises(PrototxtError, match="my_solver.prototxt") as raised:
        SolverConfig.from_proto(param, source="my_solver.prototxt")
    assert complaint in str(raised.value)


def test_state_dict_round_trip_continues_identically() -> None:
    config = SolverConfig(base_lr=0.1, momentum=0.9, weight_decay=0.01)
    runs = []
    for interrupted in (False, True):
        specs = _specs(np.random.default_rng(1))
        solver = CaffeSGD(specs, config)
        grads = np.random.default_rng(2)
        for step in range(4):
            if interrupted and step == 2:
                state = solver.state_dict()
                solver = CaffeSGD(specs, config)
                solver.load_state_dict(state)
            for spec in specs[:3]:
                spec.parameter.grad = torch.from_numpy(grads.standard_normal(tuple(spec.parameter.shape)))
            solver.step()
        runs.append([s.parameter.detach().clone() for s in specs])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("accumulation, solver_count, compared", [("mean", 1, 4.0), ("mean", 2, 2.0), ("sum", 1, 1.0)])
def test_clip_compares_the_diff_caffe_clips(accumulation: str, solver_count: int, compared: float) -> None:
    """Caffe clips the accumulated diff: 4 passes summed is 4 x the mean we receive; with 2
    GPUs of 2 passes each, P2PSync first scales the summed diffs by 1/2, leaving 2 x the
    mean; under "sum" accumulation we receive that sum itself. lr 1, no momentum or decay:
    the step is the clipped diff (scaled back by 1/iter_size under "mean")."""
    weight = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    config = SolverConfig(base_lr=1.0, iter_size=4, clip_gradients=1.0, accumulation=accumulation)
    solver = CaffeSGD([Spec("a", 0, weight, 1.0, 1.0)], config, solver_count=solver_count)
    weight.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)  # norm 5
    solver.step()
    clipped_norm = compared * 5.0
    expected = -np.array([3.0, 4.0]) * (1.0 / clipped_norm)
    np.testing.assert_allclose(weight.detach().numpy(), expected, rtol=1e-15)
