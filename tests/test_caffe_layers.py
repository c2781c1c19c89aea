"""Every layer type against Caffe itself: forward and backward on randomized configurations.

The cases (tests/caffe_layer_cases.py) are drawn with hypothesis up front and run in one Caffe process
(tests/caffe_oracle/net_job.py, `force_backward: true`). Our side builds the same prototxt with
`porting`, loads the same blobs and runs forward and backward in float32: the objective is each loss
top times its `loss_weight` plus each other output times the diff given to Caffe for it. Every top,
every input diff and every parameter diff must be within 1e-5 of Caffe's, relative to the blob's
largest |value|. Values Caffe leaves at -FLT_MAX (a MAX window over no input) or NaN (an AVE window
of pool size 0) must be the same there, and compare the rest of the blob on its own scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from caffe_layer_cases import CORNERS, LayerCase, all_cases, distinct, features, normal
from caffe_oracle import oracle
from helpers import net_from_text

pytestmark = pytest.mark.caffe

RTOL = 1e-5
FLT_MAX = float(np.finfo(np.float32).max)


@dataclass
class Computed:
    """One side's results for a case: output blobs, input diffs, parameter diffs (`<layer>.<i>`)."""

    tops: dict[str, np.ndarray]
    input_diffs: dict[str, np.ndarray]
    param_diffs: dict[str, np.ndarray]


def run_ours(case: LayerCase, seed: int) -> tuple[Computed, dict[str, np.ndarray]]:
    """Forward and backward of `case` with porting, float32.

    Returns:
        Our results, and the top diffs drawn for every net output that is not a loss (a loss's
        diff is its loss_weight), to give Caffe the same (see LayerCase.positive_diffs).
    """
    net = net_from_text(case.prototxt(), case.phase)
    if case.params:
        net.load_blobs(case.params, strict=True)
    rng = np.random.default_rng(seed)
    losses = net.loss_weights
    top_diffs = {
        name: rng.uniform(0.5, 1.5, shape).astype(np.float32) if case.positive_diffs else normal(rng, shape)
        for name, shape in net.inferred_shapes.items()
        if name in net.outputs and name not in losses
    }
    inputs = {
        name: torch.tensor(array, requires_grad=case.backward and name not in case.labels)
        for name, array in case.inputs.items()
    }
    outputs = net(**inputs)
    input_diffs: dict[str, np.ndarray] = {}
    param_diffs: dict[str, np.ndarray] = {}
    if case.backward:
        terms = [weight * outputs[name] for name, weight in losses.items() if name in outputs]
        terms += [(outputs[name] * torch.from_numpy(diff)).sum() for name, diff in top_diffs.items()]
        if any(term.requires_grad for term in terms):
            torch.stack([term.reshape(()) for term in terms]).sum().backward()
        for name, tensor in inputs.items():
            if name not in case.labels:
                grad = tensor.grad
                input_diffs[name] = np.zeros_like(case.inputs[name]) if grad is None else grad.numpy()
        for spec in net.param_specs():
            grad = spec.parameter.grad
            param_diffs[f"{spec.layer}.{spec.index}"] = (
                np.zeros(tuple(spec.parameter.shape), np.float32) if grad is None else grad.numpy()
            )
    tops = {name: value.detach().numpy() for name, value in outputs.items()}
    return Computed(tops, input_diffs, param_diffs), top_diffs


def compare(ours: np.ndarray, caffe: np.ndarray, what: str) -> float:
    """assert_close_to_caffe, after requiring the same values where Caffe has -FLT_MAX, FLT_MAX or NaN."""
    ours, caffe = np.asarray(ours), np.asarray(caffe)
    assert ours.shape == caffe.shape, f"{what}: shape {ours.shape}, Caffe {caffe.shape}"
    special = np.isnan(caffe) | (np.abs(caffe) == FLT_MAX)
    np.testing.assert_array_equal(ours[special], caffe[special], err_msg=f"{what}: Caffe's -FLT_MAX / NaN places")
    return oracle.assert_close_to_caffe(np.where(special, 0, ours), np.where(special, 0, caffe), what, RTOL)


def compare_case(case: LayerCase, ours: Computed, caffe: oracle.NetResult) -> float:
    """Every top, input diff and parameter diff; returns the worst relative error."""
    errors = [compare(ours.tops[name], caffe.blobs[name], f"top {name}") for name in ours.tops]
    if case.backward:
        errors += [compare(diff, caffe.input_diffs[name], f"diff of {name}") for name, diff in ours.input_diffs.items()]
        assert set(ours.param_diffs) == set(caffe.param_diffs)
        errors += [compare(diff, caffe.param_diffs[key], f"diff of {key}") for key, diff in ours.param_diffs.items()]
    return max(errors, default=0.0)


def caffe_case(case: LayerCase, top_diffs: dict[str, np.ndarray]) -> oracle.NetCase:
    params = {f"{layer}.{i}": blob for layer, blobs in case.params.items() for i, blob in enumerate(blobs)}
    return oracle.NetCase(
        case.prototxt(), params, case.inputs, phase=case.phase, backward=case.backward, top_diffs=top_diffs
    )


@pytest.fixture(scope="module")
def cases() -> list[LayerCase]:
    return all_cases()


@pytest.fixture(scope="module")
def compared(
    caffe: oracle.CaffeInstall, cases: list[LayerCase], tmp_path_factory
) -> dict[str, list[tuple[LayerCase, Computed, oracle.NetResult]]]:
    """item -> (case, ours, Caffe's) for every drawn case, Caffe's from one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a thread pool costs more than it gives, on a busy machine ~5x
    try:
        ours = [run_ours(case, seed) for seed, case in enumerate(cases)]
    finally:
        torch.set_num_threads(threads)
    jobs = [caffe_case(case, top_diffs) for case, (_, top_diffs) in zip(cases, ours)]
    results = oracle.run_nets(caffe, jobs, tmp_path_factory.mktemp("layers"))
    by_item: dict[str, list[tuple[LayerCase, Computed, oracle.NetResult]]] = {}
    for case, (computed, _), result in zip(cases, ours, results):
        by_item.setdefault(case.item, []).append((case, computed, result))
    return by_item


ITEMS = [
    "Convolution",
    "Deconvolution",
    "Pooling",
    "Crop",
    "Eltwise",
    "ReLU",
    "Dropout (TEST)",
    "LRN",
    "Scale",
    "Concat",
    "Slice",
    "Split",
    "Softmax",
    "SoftmaxWithLoss",
    "SoftmaxWithLoss (clamped)",
    "InnerProduct",
    "Accuracy",
    "DummyData",
    "Silence",
]


@pytest.mark.parametrize("item", ITEMS)
def test_layer_matches_caffe(item, compared, caffe_comparisons):
    runs = compared[item]
    worst, failures = 0.0, []
    for index, (case, ours, result) in enumerate(runs):
        try:
            worst = max(worst, compare_case(case, ours, result))
        except AssertionError as failure:
            shapes = ", ".join(f"{name} {array.shape}" for name, array in case.inputs.items())
            failures.append(f"case {index}: {case.layers}\n  inputs {shapes}: {str(failure).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(runs)} {item} cases differ from Caffe:\n" + "\n".join(failures[:8])
    caffe_comparisons.record(f"layers: {item}", len(runs), worst)


def test_the_draws_reach_every_corner(cases):
    reached: dict[str, set[str]] = {}
    for case in cases:
        reached.setdefault(case.item, set()).update(features(case))
    missing = {item: corners - reached.get(item, set()) for item, corners in CORNERS.items()}
    assert not any(missing.values()), missing


def test_every_layer_type_is_compared():
    from porting.layers import LAYER_TYPES

    data_layers = {"Python", "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData"}  # fed, not computed
    covered = {item.split(" ")[0] for item in ITEMS} | {"Input"}
    assert set(LAYER_TYPES) - data_layers <= covered


def test_max_pooling_diff_of_a_window_over_no_input_goes_astray_in_caffe(caffe, tmp_path):
    """Caffe's MAX backward sends a window's diff to its argmax, which stays -1 for a window over no
    input (pad 0, kernel 1 < stride 3 on 5x5: windows start at 0, 3, 6): `bottom_diff[-1] += diff`,
    the last value of the previous channel's plane, or the memory before the blob for the first plane
    (heap corruption: Caffe aborts with "double free or corruption" when that diff is not 0). Ours sends
    it nowhere. The tier's drawn cases therefore compare such MAX poolings forward only; here the
    first plane's stray diffs are 0 and the others' show where Caffe puts them."""
    rng = np.random.default_rng(3)
    case = LayerCase(
        "Pooling",
        'layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 1 stride: 3 } }',
        {"x": distinct(rng, (1, 3, 5, 5))},
    )
    over_nothing = np.zeros((3, 3), dtype=bool)
    over_nothing[2, :] = over_nothing[:, 2] = True
    diff = normal(rng, (1, 3, 3, 3))
    diff[0, 0][over_nothing] = 0
    [result] = oracle.run_nets(caffe, [caffe_case(case, {"y": diff})], tmp_path)
    x = torch.tensor(case.inputs["x"], requires_grad=True)
    top = net_from_text(case.prototxt())(x=x)["y"]
    (top * torch.from_numpy(diff)).sum().backward()
    compare(top.detach().numpy(), result.blobs["y"], "top y")
    ours = x.grad.numpy()
    expected = np.zeros_like(ours)  # kernel 1: window (i, j) reads input (3i, 3j)
    expected[..., ::3, ::3] = diff[..., :2, :2]
    np.testing.assert_array_equal(ours, expected)
    astray = np.zeros_like(ours)
    astray[0, :2, -1, -1] = [diff[0, c][over_nothing].sum() for c in (1, 2)]
    np.testing.assert_allclose(result.input_diffs["x"], ours + astray, rtol=1e-6)


DROPOUT_CASES = [(0.5, (2, 3, 4, 5)), (0.1, (4, 7)), (0.9, (3, 2, 6)), (0.25, (1, 1, 9, 9))]


def test_dropout_in_train_equals_caffe_given_caffes_mask(caffe, tmp_path, monkeypatch, caffe_comparisons):
    """Dropout's mask comes from each side's RNG; given the mask Caffe drew (read back from its top:
    inputs are positive, so a zero is a dropped value), our scaling 1 / (1 - ratio) and gradient
    equal Caffe's."""
    rng = np.random.default_rng(4)
    cases = [
        LayerCase(
            "Dropout",
            f'layer {{ name: "drop" type: "Dropout" bottom: "x" top: "y" dropout_param {{ dropout_ratio: {ratio} }} }}',
            {"x": rng.uniform(0.5, 2.0, shape).astype(np.float32)},
            phase="TRAIN",
        )
        for ratio, shape in DROPOUT_CASES
    ]
    diffs = [{"y": normal(rng, case.inputs["x"].shape)} for case in cases]
    results = oracle.run_nets(caffe, [caffe_case(c, d) for c, d in zip(cases, diffs)], tmp_path)
    worst = 0.0
    for case, diff, result in zip(cases, diffs, results):
        kept = result.blobs["y"] != 0
        assert 0 < kept.mean() < 1
        uniform = torch.from_numpy(kept.astype(np.float32))  # 1 >= ratio: kept; 0 < ratio: dropped
        monkeypatch.setattr(torch, "rand_like", lambda x, u=uniform: torch.empty_like(x) if x.is_meta else u)
        x = torch.tensor(case.inputs["x"], requires_grad=True)
        top = net_from_text(case.prototxt(), "TRAIN")(x=x)["y"]
        (top * torch.from_numpy(diff["y"])).sum().backward()
        worst = max(
            worst,
            compare(top.detach().numpy(), result.blobs["y"], f"{case.layers}: top"),
            compare(x.grad.numpy(), result.input_diffs["x"], f"{case.layers}: diff"),
        )
    caffe_comparisons.record("layers: Dropout (TRAIN, Caffe's mask)", len(cases), worst)


@pytest.mark.parametrize(
    "definition, message",
    [
        ('top: "loss" top: "prob"', "loss_weight must be unspecified or specified once per top blob"),
        ('top: "loss" top: "prob" loss_weight: 1 loss_weight: 0', "loss_weight must be unspecified or specified once"),
        ('top: "loss" softmax_param { axis: 2 }', "The data and label should have the same first dimension"),
    ],
)
def test_caffe_refuses_the_softmax_losses_we_refuse(caffe, tmp_path, definition, message):
    """What tests/test_layers_misc.py's refusals rest on: Caffe itself cannot set these up."""
    case = LayerCase(
        "SoftmaxWithLoss",
        f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" {definition} }}',
        {
            "x": np.zeros((2, 3, 4), np.float32),
            "label": np.zeros((1, 6) if "axis" in definition else (2, 4), np.float32),
        },
    )
    with pytest.raises(oracle.CaffeFailed, match=message):
        oracle.run_nets(caffe, [caffe_case(case, {})], tmp_path)
