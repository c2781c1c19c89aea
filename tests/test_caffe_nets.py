"""Every published train net against Caffe itself: the loss and every parameter gradient (issue 21, 2b).

The project's generator writes the 15 train nets (VOC FCN-32s/16s/8s/8s-at-once and FCN-AlexNet,
PASCAL-Context, NYUDv2, SIFT Flow), narrowed to 1/16 of their width (the score layers keep their
classes). Both sides get the same random weights (deconvolutions bilinear as surgery makes them, or
random), the same inputs at odd sizes and random labels with ignored pixels; our side runs the
generated train net itself (its Python data layer's tops are the net's inputs), Caffe the same net with
that layer replaced by an Input layer. All 31 cases run in one Caffe process.

Dropout's mask comes from Caffe's random generator, which torch's cannot replay, so each net is
compared twice: with its Dropout layers removed, and with them in place and the mask Caffe drew read
back from its output (Caffe's TRAIN Dropout computes `top = bottom * mask * scale`, so where the bottom
is nonzero, top / bottom is 0 or scale = 1 / (1 - ratio)); our Dropout then draws that mask (its uniform
draw made to fall on the same side of the ratio) and its scaling and backward are what is compared.
There the fc7 Dropouts' ratio is 0.3 instead of the published 0.5, where 1 / (1 - ratio) and 1 / ratio
would agree. Caffe's generator is seeded (net_job.py), so its masks, and this comparison, are the same on
every run.

Weights are He-scaled and the inputs unit-scale, so the scores stay moderate: no pixel's probability
reaches SoftmaxWithLoss's log(FLT_MIN) clamp (checked on Caffe's scores), where Caffe's float32 loss sum
drifts from the exact one. One more case, voc-fcn32s with its score layer 300x, puts most pixels into
that clamp: there the loss (each clamped pixel counts -log(FLT_MIN)) and the gradients (Caffe's
unclamped p - 1) are compared too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from caffe_oracle.oracle import NetCase, NetResult, assert_close_to_caffe, run_nets
from helpers import randomize

from porting import CaffeNet, to_text
from porting.proto import caffe_pb2
from prototxt import nets

pytestmark = pytest.mark.caffe

WIDTH = 1 / 16
RTOL = 1e-4
IGNORE_LABEL = 255
NETS = tuple(nets.NETS)
FC7_DROPOUT = 0.3
LOG_FLT_MIN = float(np.log(np.finfo(np.float32).tiny))
#: the variants of each net compared (the clamp variant for CLAMP_NET only)
VARIANTS = ("no-dropout", "caffe-dropout-mask")
CLAMP_NET, CLAMP_SCALE = "voc-fcn32s", 300.0


@dataclass(frozen=True)
class Case:
    """One net as both sides run it."""

    name: str
    variant: str  # one of VARIANTS, or "clamp"
    net_param: caffe_pb2.NetParameter  # the generated train net (Dropout removed but in "caffe-dropout-mask")
    inputs: dict[str, np.ndarray]
    params: dict[str, np.ndarray]


def train_net(name: str, dropout: bool) -> caffe_pb2.NetParameter:
    """The generator's train net of `name` at 1/16 width, its Dropout layers removed unless `dropout`
    (then the fc7 ones drop 30%, not 50%)."""
    info = nets.info(name)
    net = nets.build(name, info.splits[0], width=WIDTH)
    if dropout:
        for layer in net.layer:
            if layer.type == "Dropout" and layer.name.startswith("drop7"):
                layer.dropout_param.dropout_ratio = FC7_DROPOUT
    else:
        kept = [layer for layer in net.layer if layer.type != "Dropout"]
        del net.layer[:]
        net.layer.extend(kept)
    return net


def data_layer(net: caffe_pb2.NetParameter) -> caffe_pb2.LayerParameter:
    (layer,) = [layer for layer in net.layer if layer.type == "Python"]
    return layer


def with_input_layer(net: caffe_pb2.NetParameter, shapes: dict[str, tuple[int, ...]]) -> caffe_pb2.NetParameter:
    """The net with its Python data layer replaced by an Input layer of the same tops and the given shapes."""
    caffe_net = caffe_pb2.NetParameter()
    caffe_net.CopyFrom(net)
    layer = data_layer(caffe_net)
    tops = list(layer.top)
    name = layer.name
    layer.Clear()
    layer.name, layer.type = name, "Input"
    layer.top.extend(tops)
    for top in tops:
        layer.input_param.shape.add().dim.extend(shapes[top])
    return caffe_net


def odd_size(index: int) -> tuple[int, int]:
    """A different odd height and width per net (the crops' offsets and the pooling's ceil at work)."""
    return 27 + 2 * (index % 5), 45 - 2 * (index % 7)


def make_case(index: int, name: str, variant: str) -> Case:
    """Net `name` with seeded random weights, inputs at an odd size and random labels (20% ignored);
    the "clamp" variant has its class scores scaled up by CLAMP_SCALE."""
    net_param = train_net(name, dropout=variant == "caffe-dropout-mask")
    tops = list(data_layer(net_param).top)
    losses = label_tops(net_param)
    height, width = odd_size(index)
    shapes = {top: (1, 1 if top in losses or top == "depth" else 3, height, width) for top in tops}
    net = CaffeNet(net_param, phase="TRAIN", input_shapes=shapes)
    randomize(net, seed=index, bilinear_deconv=index % 2 == 0)
    if variant == "clamp":
        with torch.no_grad():
            for blob in net.layers["score_fr"].blobs():
                blob.mul_(CLAMP_SCALE)
    rng = np.random.default_rng(index)
    inputs = {}
    for top, shape in shapes.items():
        if top in losses:
            label = rng.integers(0, net.inferred_shapes[losses[top]][1], shape).astype(np.float32)
            label[rng.random(shape) < 0.2] = IGNORE_LABEL
            inputs[top] = label
        else:
            inputs[top] = rng.standard_normal(shape, dtype=np.float32)
    params = {
        f"{layer}.{i}": np.array(blob) for layer, blobs in net.blobs_numpy().items() for i, blob in enumerate(blobs)
    }
    return Case(name, variant, net_param, inputs, params)


@pytest.fixture(scope="module")
def compared(caffe, tmp_path_factory) -> dict[tuple[str, str], tuple[Case, NetResult]]:
    """Every net in each variant, and Caffe's forward and backward of it, all in one Caffe process."""
    cases = [make_case(index, name, variant) for variant in VARIANTS for index, name in enumerate(NETS)]
    cases.append(make_case(NETS.index(CLAMP_NET), CLAMP_NET, "clamp"))
    net_cases = [
        NetCase(
            to_text(with_input_layer(case.net_param, {t: a.shape for t, a in case.inputs.items()})),
            case.params,
            case.inputs,
        )
        for case in cases
    ]
    results = run_nets(caffe, net_cases, tmp_path_factory.mktemp("caffe_nets"))
    return {(case.name, case.variant): (case, result) for case, result in zip(cases, results)}


def label_tops(net_param: caffe_pb2.NetParameter) -> dict[str, str]:
    """Label top -> the score its SoftmaxWithLoss compares it with."""
    return {layer.bottom[1]: layer.bottom[0] for layer in net_param.layer if layer.type == "SoftmaxWithLoss"}


def dropout_masks(net_param: caffe_pb2.NetParameter, result: NetResult) -> list[tuple[torch.Tensor, float]]:
    """The keep masks Caffe's Dropout layers drew, with their ratios, in execution order, read from top / bottom.

    Each Dropout's bottom is the top of the last layer before it that wrote the blob. Where the
    bottom is 0 the mask does not matter (top and every gradient through it are 0 either way).
    """
    last_writer: dict[str, str] = {}
    masks = []
    for layer in net_param.layer:
        if layer.type == "Dropout":
            scale = np.float32(1 / (1 - layer.dropout_param.dropout_ratio))
            bottom = result.tops[last_writer[layer.bottom[0]]]
            top = result.tops[layer.name]
            nonzero = bottom != 0
            ratio = np.divide(top, bottom, out=np.ones_like(top), where=nonzero)
            kept = np.isclose(ratio, scale, rtol=1e-6)
            assert (kept | (ratio == 0))[nonzero].all(), f"{layer.name}: Caffe's top / bottom is not 0 or {scale}"
            masks.append((torch.from_numpy(kept | ~nonzero), layer.dropout_param.dropout_ratio))
        for top in layer.top:
            last_writer[top] = layer.name
    return masks


def by_layer(params: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """`<layer>.<i>` -> array as layer -> its blobs in order (copies: the net adopts them)."""
    layers: dict[str, list[np.ndarray]] = {}
    for key in sorted(params, key=lambda key: int(key.rsplit(".", 1)[1])):
        layers.setdefault(key.rsplit(".", 1)[0], []).append(params[key].copy())
    return layers


def ours(case: Case, masks: list[tuple[torch.Tensor, float]], monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """Our losses (loss top -> value) and parameter gradients (`<layer>.<i>` -> array, for the blobs
    with a nonzero lr_mult) of a case, our Dropout drawing Caffe's `masks` in execution order."""
    net = CaffeNet(case.net_param, phase="TRAIN", input_shapes={t: a.shape for t, a in case.inputs.items()}, fill=False)
    net.load_blobs(by_layer(case.params), strict=True)
    queue = list(masks)

    def rand_like(tensor: torch.Tensor, **kwargs: object) -> torch.Tensor:
        keep, ratio = queue.pop(0)
        assert keep.shape == tensor.shape
        return torch.where(keep, (1 + ratio) / 2, ratio / 2).to(tensor.dtype)  # kept: >= the ratio, dropped: below

    monkeypatch.setattr(torch, "rand_like", rand_like)
    labels = label_tops(case.net_param)
    feed = {top: torch.from_numpy(array) for top, array in case.inputs.items()}
    feed.update({top: feed[top].long() for top in labels})
    outputs = net(**feed)
    losses = {top: weight * outputs[top] for top, weight in net.loss_weights.items()}
    sum(loss.sum() for loss in losses.values()).backward()
    assert not queue, f"{len(queue)} of Caffe's Dropout masks left undrawn"
    grads = {
        f"{spec.layer}.{spec.index}": spec.parameter.grad.numpy() for spec in net.param_specs() if spec.lr_mult != 0
    }
    return {top: loss.item() for top, loss in losses.items()}, grads


def clamped_fraction(case: Case, result: NetResult) -> float:
    """The share of labelled pixels whose log-probability (from Caffe's scores) is below log(FLT_MIN)."""
    clamped, labelled = 0, 0
    for label_top, score_top in label_tops(case.net_param).items():
        scores = result.blobs[score_top][0].astype(np.float64)
        label = case.inputs[label_top][0, 0]
        valid = label != IGNORE_LABEL
        top = scores.max(axis=0)
        log_norm = top + np.log(np.exp(scores - top).sum(axis=0))
        picked = np.take_along_axis(scores, np.where(valid, label, 0).astype(np.int64)[None], axis=0)[0]
        clamped += int(((picked - log_norm < LOG_FLT_MIN) & valid).sum())
        labelled += int(valid.sum())
    return clamped / labelled


@pytest.mark.parametrize(
    "name, variant", [(name, variant) for variant in VARIANTS for name in NETS] + [(CLAMP_NET, "clamp")]
)
def test_loss_and_gradients_equal_caffe(name, variant, compared, caffe_comparisons, monkeypatch) -> None:
    case, result = compared[name, variant]
    clamped = clamped_fraction(case, result)
    assert clamped > 0.5 if variant == "clamp" else clamped == 0, f"{clamped:.0%} of the pixels in the clamp"
    masks = dropout_masks(case.net_param, result)
    dropouts = sum(layer.type == "Dropout" for layer in case.net_param.layer)
    assert len(masks) == (dropouts if variant == "caffe-dropout-mask" else 0)
    losses, grads = ours(case, masks, monkeypatch)
    worst = 0.0
    for top, loss in losses.items():
        worst = max(worst, assert_close_to_caffe(np.array(loss), result.blobs[top], f"{name} {top}", RTOL))
    assert set(grads) <= set(result.param_diffs)
    for key, diff in result.param_diffs.items():
        if key in grads:
            worst = max(worst, assert_close_to_caffe(grads[key], diff, f"{name} d{key}", RTOL))
        else:  # lr_mult 0: Caffe computes no gradient, we compute none either
            assert not diff.any(), f"{name}: Caffe has a gradient for the fixed blob {key}"
    regime = {
        "no-dropout": "Dropout removed",
        "caffe-dropout-mask": "Caffe's Dropout mask",
        "clamp": "most pixels in the log(FLT_MIN) clamp",
    }[variant]
    caffe_comparisons.record(f"nets: loss and parameter gradients ({regime})", 1, worst)
