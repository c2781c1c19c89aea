"""Randomized single-layer nets for the `caffe` tier's layer comparison (tests/test_caffe_layers.py).

Each strategy draws one configuration of one layer type (hypothesis, derandomized) and returns a
`LayerCase`: the layer's prototxt, its inputs and its learnable blobs. `draw_cases` collects a fixed
number of draws up front, so that every case runs in one Caffe process.

Inputs stay away from float32 decision ties, where two correct implementations may differ below a
flip: MAX pooling, Eltwise MAX and Accuracy read distinct values (a shuffled grid), ReLU inputs
are at least GAP from 0, PROD and its division-based gradient never see values near 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from porting import parse_prototxt
from porting.proto import caffe_pb2
from porting.window import read_window

#: the smallest |x| a ReLU input gets, far from float32's rounding of 0
GAP = 0.05

Pair = tuple[int, int]


@dataclass
class LayerCase:
    """One net: Input layers for `inputs`, then `layers`; compared forward and (unless not `backward`) backward.

    Attributes:
        item: the layer type this case checks (the row of the comparisons record).
        layers: prototxt text after the Input layers.
        inputs: input blob name -> array (float32).
        params: layer name -> its learnable blobs, in Caffe's blob order.
        labels: inputs that are labels: no diff is compared for them.
        phase: "TRAIN" or "TEST".
        backward: whether Caffe can run the backward pass here (see `empty_windows`).
        positive_diffs: draw the top diffs positive (else normal): where a diff is summed over many
            positions into a few values (a bias, a scalar scale), terms of one sign cannot cancel to a
            small value whose float32 rounding depends on the summation order.
    """

    item: str
    layers: str
    inputs: dict[str, np.ndarray]
    params: dict[str, list[np.ndarray]] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    phase: str = "TEST"
    backward: bool = True
    positive_diffs: bool = False

    def prototxt(self) -> str:
        """The whole net: `force_backward: true`, one Input layer per input, then the layers."""
        heads = "".join(
            f'layer {{ name: "in_{name}" type: "Input" top: "{name}" '
            f"input_param {{ shape {{ {' '.join(f'dim: {d}' for d in array.shape)} }} }} }}\n"
            for name, array in self.inputs.items()
        )
        return "force_backward: true\n" + heads + self.layers


def draw_cases(strategy: st.SearchStrategy[LayerCase], count: int) -> list[LayerCase]:
    """`count` draws of `strategy`, the same ones every run (derandomized, no database, no shrinking)."""
    found: list[LayerCase] = []

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: LayerCase) -> None:
        found.append(case)

    collect()
    return found


# ---- arrays


def normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct values (a shuffled grid in [-2, 2), spaced 4 / count apart): no two are tied."""
    count = math.prod(shape)
    return ((rng.permutation(count) - count / 2) * (4.0 / count)).astype(np.float32).reshape(shape)


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...], low: float = GAP) -> np.ndarray:
    magnitude = rng.uniform(low, 2.0, shape)
    return (magnitude * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def seeds() -> st.SearchStrategy[np.random.Generator]:
    return st.integers(0, 2**32 - 1).map(np.random.default_rng)


# ---- window fields, in the forms Caffe accepts


def window_text(draw: Callable, fields: dict[str, tuple[Pair, int]], repeated: bool) -> str:
    """`name: v`, `name_h: h name_w: w` or (convolution) `name: h name: w`, drawn per field.

    Args:
        draw: hypothesis' draw.
        fields: field name ("kernel", "stride", "pad", "dilation") -> ((h, w), default).
        repeated: convolution_param (repeated fields) rather than pooling_param.
    """
    parts = []
    for name, ((h, w), default) in fields.items():
        single = f"{name}_size" if name == "kernel" else name
        forms = ["hw"] if name != "dilation" else []
        if repeated:
            forms.append("repeated")
        if h == w:
            forms.append("single")
            if h == default:
                forms.append("omitted")
        form = draw(st.sampled_from(forms))
        if form == "single":
            parts.append(f"{single}: {h}")
        elif form == "hw":
            parts.append(f"{name}_h: {h} {name}_w: {w}")
        elif form == "repeated":
            parts.append(f"{single}: {h} {single}: {w}")
    return " ".join(parts)


def pairs(low: int, high: int) -> st.SearchStrategy[Pair]:
    return st.tuples(st.integers(low, high), st.integers(low, high))


# ---- the layer types


@st.composite
def convolution(draw: Callable, transposed: bool = False) -> LayerCase:
    """Convolution / Deconvolution: asymmetric kernel, stride, pad, dilation; groups; one or two bottoms."""
    rng = draw(seeds())
    group = draw(st.integers(1, 3))
    channels, outputs = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 3))
    kernel, stride, pad, dilation = draw(pairs(1, 4)), draw(pairs(1, 3)), draw(pairs(0, 3)), draw(pairs(1, 3))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if transposed:
        size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        assume(all(s * (n - 1) + e - 2 * p >= 1 for n, s, e, p in zip(size, stride, extent, pad)))
    else:
        size = tuple(draw(st.integers(max(1, e - 2 * p), max(1, e - 2 * p) + 8)) for e, p in zip(extent, pad))
    batch, bottoms = draw(st.integers(1, 2)), draw(st.sampled_from([1, 1, 2]))
    bias = draw(st.booleans())
    kind = "Deconvolution" if transposed else "Convolution"
    window = window_text(
        draw, {"kernel": (kernel, 0), "stride": (stride, 1), "pad": (pad, 0), "dilation": (dilation, 1)}, True
    )
    names = [f"x{i}" for i in range(bottoms)]
    bottom_fields = " ".join(f'bottom: "{n}"' for n in names)
    top_fields = " ".join(f'top: "y{i}"' for i in range(bottoms))
    layers = (
        f'layer {{ name: "conv" type: "{kind}" {bottom_fields} {top_fields} '
        f"convolution_param {{ num_output: {outputs} group: {group} {window} bias_term: {str(bias).lower()} }} }}"
    )
    weight_shape = (channels, outputs // group, *kernel) if transposed else (outputs, channels // group, *kernel)
    fan_in = math.prod(weight_shape[1:])
    params = [normal(rng, weight_shape, 1 / math.sqrt(fan_in))] + ([normal(rng, (outputs,), 0.1)] if bias else [])
    inputs = {n: normal(rng, (batch, channels, *size)) for n in names}
    return LayerCase(kind, layers, inputs, {"conv": params}, positive_diffs=True)


def pooled_extent(size: int, kernel: int, stride: int, pad: int, ceil: bool, clip: bool) -> int:
    """PoolingLayer::Reshape along one axis (written out here independently of the port)."""
    span = (size + 2 * pad - kernel) / stride
    pooled = (math.ceil(span) if ceil else math.floor(span)) + 1
    if clip and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def empty_windows(size: int, kernel: int, stride: int, pad: int, pooled: int) -> int:
    """How many of the windows along one axis hold no input position (MAX leaves them at -FLT_MAX)."""
    return sum(min(i * stride - pad + kernel, size) <= max(i * stride - pad, 0) for i in range(pooled))


@st.composite
def pooling(draw: Callable, past_the_input: bool = False, ties: bool = False) -> LayerCase:
    """Pooling MAX / AVE: asymmetric windows, CEIL / FLOOR, global; `past_the_input`: pad 0 and
    kernel < stride with a last window that starts at or past the input's end; `ties`: MAX over
    small integers, so windows hold exactly equal maxima (Caffe's diff goes to the first).

    MAX pooling with a window that covers no input position runs forward only: Caffe's backward adds
    that window's diff at mask index -1, before the channel's plane (see test_caffe_layers)."""
    rng = draw(seeds())
    pool = "MAX" if ties else draw(st.sampled_from(["MAX", "AVE"]))
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))

    def values(shape: tuple[int, ...]) -> np.ndarray:
        if ties:
            return rng.integers(0, 3, shape).astype(np.float32)
        return distinct(rng, shape) if pool == "MAX" else normal(rng, shape)

    if not past_the_input and draw(st.integers(0, 9)) == 0:
        size = draw(pairs(1, 7))
        shape = (batch, channels, *size)
        layers = f'layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param {{ pool: {pool} global_pooling: true }} }}'
        return LayerCase("Pooling", layers, {"x": values(shape)})
    if past_the_input:
        kernel = draw(pairs(1, 3))
        stride = tuple(draw(st.integers(k + 1, k + 3)) for k in kernel)
        pad, ceil = (0, 0), True
        size = tuple(draw(st.integers(1, 12)) for _ in kernel)
        assume(all(n >= k for n, k in zip(size, kernel)))
        assume(any(math.ceil((n - k) / s) * s >= n for n, k, s in zip(size, kernel, stride)))
    else:
        kernel, stride = draw(pairs(1, 4)), draw(pairs(1, 4))
        pad = tuple(draw(st.sampled_from(range(k))) for k in kernel)
        ceil = draw(st.booleans())
        size = tuple(draw(st.integers(max(1, k - 2 * p), max(1, k - 2 * p) + 9)) for k, p in zip(kernel, pad))
    clip = any(pad)
    out = [pooled_extent(n, k, s, p, ceil, clip) for n, k, s, p in zip(size, kernel, stride, pad)]
    empty = sum(empty_windows(n, k, s, p, o) for n, k, s, p, o in zip(size, kernel, stride, pad, out))
    rounding = "" if ceil and draw(st.booleans()) else f"round_mode: {'CEIL' if ceil else 'FLOOR'}"
    window = window_text(draw, {"kernel": (kernel, 0), "stride": (stride, 1), "pad": (pad, 0)}, False)
    layers = (
        f'layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y" '
        f"pooling_param {{ pool: {pool} {window} {rounding} }} }}"
    )
    x = values((batch, channels, *size))
    return LayerCase("Pooling", layers, {"x": x}, backward=not (pool == "MAX" and empty))


@st.composite
def crop(draw: Callable) -> LayerCase:
    """Crop: any axis (negative too), no offset, one offset for all axes, or one per cropped axis."""
    rng = draw(seeds())
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(rank))
    axis = draw(st.integers(-rank, rank - 1))
    start = axis % rank
    form = draw(st.sampled_from(["none", "one", "each"]))
    if form == "none":
        offsets = [0] * (rank - start)
    elif form == "one":
        offsets = [draw(st.integers(0, min(shape[start:]) - 1))] * (rank - start)
    else:
        offsets = [draw(st.integers(0, n - 1)) for n in shape[start:]]
    reference = [draw(st.integers(1, 3)) for _ in range(start)]
    reference += [draw(st.integers(1, n - o)) for n, o in zip(shape[start:], offsets)]
    fields = {"none": "", "one": f"offset: {offsets[0]}", "each": " ".join(f"offset: {o}" for o in offsets)}[form]
    layers = (
        f'layer {{ name: "crop" type: "Crop" bottom: "x" bottom: "ref" top: "y" '
        f"crop_param {{ axis: {axis} {fields} }} }}"
    )
    return LayerCase("Crop", layers, {"x": normal(rng, shape), "ref": normal(rng, tuple(reference))})


def any_shape(draw: Callable, max_rank: int = 4, max_dim: int = 5) -> tuple[int, ...]:
    rank = draw(st.integers(1, max_rank))
    return tuple(draw(st.integers(1, max_dim)) for _ in range(rank))


@st.composite
def eltwise(draw: Callable) -> LayerCase:
    """Eltwise SUM (with coefficients, some 0 or negative), PROD (both gradients), MAX (also over small
    integers: exact ties, whose diff Caffe gives to one bottom); 2-4 bottoms."""
    rng = draw(seeds())
    shape = any_shape(draw)
    count = draw(st.integers(2, 4))
    variant = draw(
        st.sampled_from(["SUM", "SUM by default", "SUM with coeff", "PROD", "PROD by division", "MAX", "MAX with ties"])
    )
    operation = variant.split(" ")[0]
    fields = "" if variant == "SUM by default" else f"operation: {operation}"
    if variant == "SUM with coeff":
        coeffs = [draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, -2.5, 3.25])) for _ in range(count)]
        fields += " " + " ".join(f"coeff: {c}" for c in coeffs)
    if operation == "PROD":
        fields += f" stable_prod_grad: {str(variant == 'PROD').lower()}"
    names = [f"x{i}" for i in range(count)]
    if variant == "MAX with ties":
        inputs = {n: rng.integers(0, 3, shape).astype(np.float32) for n in names}
    elif operation == "MAX":
        values = distinct(rng, (count, *shape))
        inputs = {n: values[i] for i, n in enumerate(names)}
    elif operation == "PROD":
        inputs = {n: away_from_zero(rng, shape, 0.5) for n in names}
    else:
        inputs = {n: normal(rng, shape) for n in names}
    bottoms = " ".join(f'bottom: "{n}"' for n in names)
    layers = f'layer {{ name: "elt" type: "Eltwise" {bottoms} top: "y" eltwise_param {{ {fields} }} }}'
    return LayerCase("Eltwise", layers, inputs)


@st.composite
def relu(draw: Callable) -> LayerCase:
    rng = draw(seeds())
    slope = draw(st.sampled_from([None, 0.0, 0.1, 0.01, -0.5, 1.5]))
    fields = "" if slope is None else f"relu_param {{ negative_slope: {slope} }}"
    layers = f'layer {{ name: "relu" type: "ReLU" bottom: "x" top: "y" {fields} }}'
    x = away_from_zero(rng, any_shape(draw))
    x[rng.random(x.shape) < 0.2] = 0  # exactly 0: both sides' rule (0 > 0 is false: the slope's diff)
    return LayerCase("ReLU", layers, {"x": x})


@st.composite
def dropout_test(draw: Callable) -> LayerCase:
    rng = draw(seeds())
    ratio = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]))
    layers = f'layer {{ name: "drop" type: "Dropout" bottom: "x" top: "y" dropout_param {{ dropout_ratio: {ratio} }} }}'
    return LayerCase("Dropout (TEST)", layers, {"x": normal(rng, any_shape(draw))})


@st.composite
def lrn(draw: Callable) -> LayerCase:
    """LRN ACROSS_CHANNELS (local_size up to more than the channels) and WITHIN_CHANNEL."""
    rng = draw(seeds())
    across = draw(st.booleans())
    size = draw(st.sampled_from([1, 3, 5, 7] if across else [1, 3, 5]))
    alpha = draw(st.sampled_from([1e-4, 0.01, 0.5, 2.0]))
    beta = draw(st.sampled_from([0.75, 0.5, 1.0, 1.5, 0.1]))
    k = draw(st.sampled_from([1.0, 2.0, 0.5]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 8)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    region = "ACROSS_CHANNELS" if across else "WITHIN_CHANNEL"
    layers = (
        f'layer {{ name: "lrn" type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: {size} '
        f"alpha: {alpha} beta: {beta} k: {k} norm_region: {region} }} }}"
    )
    return LayerCase("LRN", layers, {"x": normal(rng, shape, 2.0)})


@st.composite
def scale(draw: Callable) -> LayerCase:
    """Scale: a learned scale over [axis, axis + num_axes) (num_axes -1 and 0 too) or a second bottom; bias."""
    rng = draw(seeds())
    shape = any_shape(draw)
    rank = len(shape)
    axis = draw(st.integers(-rank, rank - 1))
    start = axis % rank
    bias = draw(st.booleans())
    inputs = {"x": rng.uniform(0.5, 1.5, shape).astype(np.float32)}  # the scale's diff sums x * diff: no cancelling
    if draw(st.sampled_from([True, True, False])):
        num_axes = draw(st.sampled_from(range(-1, rank - start + 1)))
        scale_shape = shape[start:] if num_axes == -1 else shape[start : start + num_axes]
        fields = f"axis: {axis} num_axes: {num_axes}"
        params = [normal(rng, scale_shape) + np.float32(1)]
        bottoms = 'bottom: "x"'
    else:
        scale_shape = shape[start : start + draw(st.integers(1, rank - start))]
        fields = f"axis: {axis}"
        inputs["s"] = normal(rng, scale_shape) + np.float32(1)
        params = []
        bottoms = 'bottom: "x" bottom: "s"'
    if bias:
        params.append(normal(rng, scale_shape))
    layers = (
        f'layer {{ name: "scale" type: "Scale" {bottoms} top: "y" '
        f"scale_param {{ {fields} bias_term: {str(bias).lower()} }} }}"
    )
    return LayerCase("Scale", layers, inputs, {"scale": params} if params else {}, positive_diffs=True)


@st.composite
def concat(draw: Callable) -> LayerCase:
    rng = draw(seeds())
    shape = any_shape(draw)
    rank = len(shape)
    axis = draw(st.integers(-rank, rank - 1))
    count = draw(st.integers(1, 3))
    inputs = {}
    for i in range(count):
        part = list(shape)
        part[axis % rank] = draw(st.integers(1, 4))
        inputs[f"x{i}"] = normal(rng, tuple(part))
    legacy = axis >= 0 and draw(st.booleans())
    fields = f"concat_dim: {axis}" if legacy else f"axis: {axis}"
    bottoms = " ".join(f'bottom: "{n}"' for n in inputs)
    layers = f'layer {{ name: "concat" type: "Concat" {bottoms} top: "y" concat_param {{ {fields} }} }}'
    return LayerCase("Concat", layers, inputs)


@st.composite
def slice_layer(draw: Callable) -> LayerCase:
    rng = draw(seeds())
    shape = list(any_shape(draw))
    rank = len(shape)
    axis = draw(st.integers(-rank, rank - 1))
    tops = draw(st.integers(1, 4))
    if draw(st.booleans()):
        shape[axis % rank] = tops * draw(st.integers(1, 3))
        points = ""
    else:
        extent = draw(st.integers(max(2, tops), tops + 4))
        shape[axis % rank] = extent
        cuts = sorted(draw(st.sets(st.integers(1, extent - 1), min_size=tops - 1, max_size=tops - 1)))
        points = " ".join(f"slice_point: {p}" for p in cuts)
    legacy = axis >= 0 and draw(st.booleans())
    fields = (f"slice_dim: {axis}" if legacy else f"axis: {axis}") + f" {points}"
    names = " ".join(f'top: "y{i}"' for i in range(tops))
    layers = f'layer {{ name: "slice" type: "Slice" bottom: "x" {names} slice_param {{ {fields} }} }}'
    return LayerCase("Slice", layers, {"x": normal(rng, tuple(shape))})


@st.composite
def split(draw: Callable) -> LayerCase:
    rng = draw(seeds())
    names = " ".join(f'top: "y{i}"' for i in range(draw(st.integers(1, 3))))
    return LayerCase(
        "Split", f'layer {{ name: "split" type: "Split" bottom: "x" {names} }}', {"x": normal(rng, any_shape(draw))}
    )


@st.composite
def softmax(draw: Callable) -> LayerCase:
    rng = draw(seeds())
    shape = any_shape(draw)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    layers = f'layer {{ name: "softmax" type: "Softmax" bottom: "x" top: "y" softmax_param {{ axis: {axis} }} }}'
    return LayerCase("Softmax", layers, {"x": normal(rng, shape, 3.0)})


#: every normalization, the legacy flag alone, and the flag where `normalization` overrides it
NORMALIZATIONS = [
    (f"normalization: {mode}",) * bool(mode) + (f"normalize: {legacy}",) * bool(legacy)
    for mode in ("", "FULL", "VALID", "BATCH_SIZE", "NONE")
    for legacy in ("", "true", "false")
]


@st.composite
def softmax_loss(draw: Callable, normalization: tuple[str, ...], clamped: bool = False) -> LayerCase:
    """SoftmaxWithLoss with `normalization` (loss_param fields, one of NORMALIZATIONS), with and without
    `ignore_label` (some, none or all positions ignored), `loss_weight`.

    `clamped`: scores where some true classes trail by ~120, below log(FLT_MIN) (the loss clamps them)."""
    rng = draw(seeds())
    rank = draw(st.integers(2, 4))
    shape = [draw(st.integers(2, 5)) for _ in range(rank)]
    axis = draw(st.integers(-rank + 1, rank - 1).filter(lambda a: a % rank != 0))  # LossLayer: labels keep axis 0
    start = axis % rank
    shape[start] = draw(st.integers(2, 5))
    label_shape = tuple(shape[:start] + shape[start + 1 :]) or (1,)
    labels = rng.integers(0, shape[start], label_shape)
    fields = list(normalization)
    ignore = draw(st.sampled_from([None, 255, 0, -1]))
    if ignore is not None:
        fields.append(f"ignore_label: {ignore}")
        fraction = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
        labels = np.where(rng.random(label_shape) < fraction, ignore, labels)
    weight = draw(st.sampled_from([None, 1.0, 0.5, 3.0]))
    scores = normal(rng, tuple(shape), 2.0)
    if clamped:
        onehot = np.moveaxis(np.eye(shape[start], dtype=bool)[np.clip(labels, 0, shape[start] - 1)], -1, start)
        scores = np.where(onehot & (rng.random(tuple(shape)) < 0.5), scores - 120.0, scores).astype(np.float32)
    layers = (
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" '
        + ("" if weight is None else f"loss_weight: {weight} ")
        + f"softmax_param {{ axis: {axis} }} loss_param {{ {' '.join(fields)} }} }}"
    )
    item = "SoftmaxWithLoss (clamped)" if clamped else "SoftmaxWithLoss"
    return LayerCase(item, layers, {"x": scores, "label": labels.astype(np.float32)}, labels=("label",))


@st.composite
def inner_product(draw: Callable) -> LayerCase:
    rng = draw(seeds())
    shape = any_shape(draw)
    rank = len(shape)
    assume(rank >= 2)
    axis = draw(st.integers(-rank + 1, rank - 1).filter(lambda a: a % rank != 0))
    outputs = draw(st.integers(1, 5))
    transpose, bias = draw(st.booleans()), draw(st.booleans())
    features = math.prod(shape[axis % rank :])
    weight = normal(rng, (features, outputs) if transpose else (outputs, features), 1 / math.sqrt(features))
    params = [weight] + ([normal(rng, (outputs,), 0.1)] if bias else [])
    layers = (
        f'layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param {{ num_output: {outputs} '
        f"axis: {axis} transpose: {str(transpose).lower()} bias_term: {str(bias).lower()} }} }}"
    )
    return LayerCase("InnerProduct", layers, {"x": normal(rng, shape)}, {"ip": params}, positive_diffs=True)


@st.composite
def accuracy(draw: Callable) -> LayerCase:
    """Accuracy (forward only: Caffe's backward is NOT_IMPLEMENTED): top_k, axis, ignore_label."""
    rng = draw(seeds())
    rank = draw(st.integers(2, 4))
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    axis = draw(st.integers(-rank, rank - 1))
    start = axis % rank
    shape[start] = draw(st.integers(2, 6))
    label_shape = tuple(shape[:start] + shape[start + 1 :]) or (1,)
    labels = rng.integers(0, shape[start], label_shape)
    fields = [f"top_k: {draw(st.integers(1, shape[start]))}", f"axis: {axis}"]
    if draw(st.booleans()):
        ignore = draw(st.sampled_from([0, 255]))
        fields.append(f"ignore_label: {ignore}")
        labels = np.where(rng.random(label_shape) < 0.3, ignore, labels)
    layers = (
        f'layer {{ name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "accuracy" '
        f"accuracy_param {{ {' '.join(fields)} }} }}"
    )
    ties = draw(st.booleans())  # small integers: the true class tied with others (Caffe counts >=)
    scores = rng.integers(0, 3, tuple(shape)).astype(np.float32) if ties else distinct(rng, tuple(shape))
    inputs = {"x": scores, "label": labels.astype(np.float32)}
    return LayerCase("Accuracy", layers, inputs, labels=("label",), backward=False)


def fixed_cases() -> list[LayerCase]:
    """Layers without configurations worth drawing: DummyData's constant filler, Silence."""
    rng = np.random.default_rng(0)
    dummy = (
        'layer { name: "dummy" type: "DummyData" top: "d" dummy_data_param { shape { dim: 2 dim: 3 dim: 4 } '
        'data_filler { type: "constant" value: 0.75 } } }\n'
        'layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "d" top: "y" }'
    )
    silence = 'layer { name: "silence" type: "Silence" bottom: "x" }'
    return [
        LayerCase("DummyData", dummy, {"x": normal(rng, (2, 3, 4))}),
        LayerCase("Silence", silence, {"x": normal(rng, (2, 3))}),
    ]


#: strategy -> number of draws; the tier's whole layer comparison
STRATEGIES: list[tuple[st.SearchStrategy[LayerCase], int]] = [
    (convolution(), 60),
    (convolution(transposed=True), 40),
    (pooling(), 120),
    (pooling(past_the_input=True), 30),
    (pooling(ties=True), 30),
    (crop(), 40),
    (eltwise(), 50),
    (relu(), 20),
    (dropout_test(), 10),
    (lrn(), 40),
    (scale(), 50),
    (concat(), 25),
    (slice_layer(), 25),
    (split(), 8),
    (softmax(), 20),
    *((softmax_loss(normalization), 7) for normalization in NORMALIZATIONS),
    *((softmax_loss(normalization, clamped=True), 2) for normalization in NORMALIZATIONS[::2]),
    (inner_product(), 30),
    (accuracy(), 30),
]


def all_cases() -> list[LayerCase]:
    """Every drawn case and the fixed ones."""
    cases = [case for strategy, count in STRATEGIES for case in draw_cases(strategy, count)]
    return cases + fixed_cases()


def features(case: LayerCase) -> set[str]:
    """The corners one case exercises, named as `CORNERS` names them (read back from its definition)."""
    layer = parse_prototxt(case.prototxt()).layer[-1]
    found = set()
    if layer.type in ("Convolution", "Deconvolution"):
        conv, window = layer.convolution_param, read_window(layer, "<case>")
        found |= {name for name, yes in _asymmetry(window.kernel, window.stride, window.pad) if yes}
        found |= {"dilation" for _ in [0] if max(window.dilation) > 1}
        found |= {"groups" for _ in [0] if conv.group > 1} | {"two bottoms" for _ in [0] if len(layer.bottom) == 2}
        found |= {"no bias" for _ in [0] if not conv.bias_term}
    elif layer.type == "Pooling":
        pool = layer.pooling_param
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(pool.pool)
        if pool.global_pooling:
            return {f"{method} global"} | {
                f"{method} global exact ties" for _ in [0] if np.unique(case.inputs["x"]).size < case.inputs["x"].size
            }
        window = read_window(layer, "<case>")
        assert window.kernel is not None
        found |= {f"{method} {name}" for name, yes in _asymmetry(window.kernel, window.stride, window.pad) if yes}
        found |= {f"{method} FLOOR" for _ in [0] if pool.round_mode == caffe_pb2.PoolingParameter.FLOOR}
        found |= {f"{method} exact ties" for _ in [0] if np.unique(case.inputs["x"]).size < case.inputs["x"].size}
        found |= {
            f"{method} pad over half the kernel"
            for _ in [0]
            if any(2 * p > k for p, k in zip(window.pad, window.kernel))
        }
        size = case.inputs["x"].shape[2:]
        ceil, clip = pool.round_mode == caffe_pb2.PoolingParameter.CEIL, any(window.pad)
        for n, k, s, p in zip(size, window.kernel, window.stride, window.pad):
            starts = [i * s - p for i in range(pooled_extent(n, k, s, p, ceil, clip))]
            found |= {f"{method} window starting at the input's end" for a in starts if a == n + p}
            found |= {f"{method} window starting past the input's end" for a in starts if a > n + p}
    elif layer.type == "Crop":
        found.add({0: "no offset", 1: "one offset"}.get(len(layer.crop_param.offset), "an offset per axis"))
        found |= {"negative axis" for _ in [0] if layer.crop_param.axis < 0}
    elif layer.type == "Eltwise":
        param = layer.eltwise_param
        found.add(caffe_pb2.EltwiseParameter.EltwiseOp.Name(param.operation))
        found |= {"coefficients" for _ in [0] if param.coeff} | {"3+ bottoms" for _ in [0] if len(layer.bottom) > 2}
        stacked = np.stack(list(case.inputs.values()))
        found |= {
            "MAX exact ties"
            for _ in [0]
            if param.operation == param.MAX and (stacked == stacked.max(0)).sum(0).max() > 1
        }
        found |= {"PROD by division" for _ in [0] if param.operation == param.PROD and not param.stable_prod_grad}
    elif layer.type == "LRN":
        found.add(caffe_pb2.LRNParameter.NormRegion.Name(layer.lrn_param.norm_region))
        found |= {
            "window wider than the channels" for _ in [0] if layer.lrn_param.local_size > case.inputs["x"].shape[1]
        }
    elif layer.type == "Scale":
        param = layer.scale_param
        found.add("second bottom" if len(layer.bottom) == 2 else f"num_axes {min(param.num_axes, 1)}")
        found |= {"bias" for _ in [0] if param.bias_term} | {"negative axis" for _ in [0] if param.axis < 0}
    elif layer.type == "SoftmaxWithLoss":
        param = layer.loss_param
        mode = caffe_pb2.LossParameter.NormalizationMode.Name(param.normalization)
        if param.HasField("normalize"):
            found.add(
                f"normalize: {str(param.normalize).lower()}"
                + (f" under {mode}" if param.HasField("normalization") else "")
            )
        elif param.HasField("normalization"):
            found.add(mode)
        found.add("ignore_label" if param.HasField("ignore_label") else "no ignore_label")
        found |= {
            "every label ignored"
            for _ in [0]
            if param.HasField("ignore_label") and (case.inputs["label"] == param.ignore_label).all()
        }
        found |= {"loss_weight" for _ in [0] if layer.loss_weight}
        ignored = case.inputs["label"] == param.ignore_label
        found |= {"some labels ignored" for _ in [0] if param.HasField("ignore_label") and 0 < ignored.mean() < 1}
    elif layer.type == "ReLU":
        found |= {"exact zeros" for _ in [0] if (case.inputs["x"] == 0).any()}
        found |= {"negative_slope" for _ in [0] if layer.relu_param.negative_slope}
    elif layer.type == "Accuracy":
        scores = case.inputs["x"]
        found |= {"exact ties" for _ in [0] if np.unique(scores).size < scores.size}
        found |= {"top_k > 1" for _ in [0] if layer.accuracy_param.top_k > 1}
        found |= {"ignore_label" for _ in [0] if layer.accuracy_param.HasField("ignore_label")}
    elif layer.type in ("Concat", "Slice"):
        found.add(
            "legacy axis field"
            if layer.concat_param.HasField("concat_dim") or layer.slice_param.HasField("slice_dim")
            else "axis"
        )
    return found


def _asymmetry(kernel: Pair, stride: Pair, pad: Pair) -> list[tuple[str, bool]]:
    return [
        ("kernel_h != kernel_w", kernel[0] != kernel[1]),
        ("stride_h != stride_w", stride[0] != stride[1]),
        ("pad_h != pad_w", pad[0] != pad[1]),
        ("stride > kernel", any(s > k for s, k in zip(stride, kernel))),
    ]


#: item -> the corners its draws must reach (tests/test_caffe_layers.py checks them)
CORNERS: dict[str, set[str]] = {
    "Convolution": {
        "kernel_h != kernel_w",
        "stride_h != stride_w",
        "pad_h != pad_w",
        "dilation",
        "groups",
        "two bottoms",
        "no bias",
    },
    "Deconvolution": {
        "kernel_h != kernel_w",
        "stride_h != stride_w",
        "pad_h != pad_w",
        "dilation",
        "groups",
        "two bottoms",
        "no bias",
    },
    "Pooling": {
        f"{method} {corner}"
        for method in ("MAX", "AVE")
        for corner in (
            "global",
            "kernel_h != kernel_w",
            "stride_h != stride_w",
            "pad_h != pad_w",
            "FLOOR",
            "pad over half the kernel",
            "window starting at the input's end",
            "window starting past the input's end",
        )
    }
    | {"MAX exact ties", "MAX global exact ties"},
    "Crop": {"no offset", "one offset", "an offset per axis", "negative axis"},
    "ReLU": {"exact zeros", "negative_slope"},
    "Accuracy": {"exact ties", "top_k > 1", "ignore_label"},
    "Eltwise": {"SUM", "PROD", "MAX", "coefficients", "3+ bottoms", "PROD by division", "MAX exact ties"},
    "LRN": {"ACROSS_CHANNELS", "WITHIN_CHANNEL", "window wider than the channels"},
    "Scale": {"num_axes -1", "num_axes 0", "num_axes 1", "second bottom", "bias", "negative axis"},
    "SoftmaxWithLoss": {
        "FULL",
        "VALID",
        "BATCH_SIZE",
        "NONE",
        "normalize: true",
        "normalize: false",
        "normalize: true under FULL",
        "normalize: false under VALID",
        "ignore_label",
        "no ignore_label",
        "every label ignored",
        "loss_weight",
    },
    "Concat": {"axis", "legacy axis field"},
    "Slice": {"axis", "legacy axis field"},
}
