"""Element-wise, routing, normalization and loss layers against OpenCV and numpy references."""

import math

import numpy as np
import pytest
import torch
from helpers import compare_with_opencv, layer_net, net_from_text, random_inputs, randomize

from porting import PrototxtError, UnsupportedLayerError
from porting.fillers import fill
from porting.proto import caffe_pb2

TOL = 1e-4

OPENCV_CASES = {
    "relu_slope": ('layer { name: "r" type: "ReLU" bottom: "a" top: "r" relu_param { negative_slope: 0.1 } }', ["r"]),
    "eltwise_coeff": (
        'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }',
        ["e"],
    ),
    "eltwise_prod": (
        'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e" eltwise_param { operation: PROD } }',
        ["e"],
    ),
    "eltwise_max": (
        'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e" eltwise_param { operation: MAX } }',
        ["e"],
    ),
    "scale_learned_bias": (
        'layer { name: "s" type: "Scale" bottom: "a" top: "s" scale_param { bias_term: true } }',
        ["s"],
    ),
    "scale_two_bottoms": (
        'layer { name: "s" type: "Scale" bottom: "a" bottom: "c" top: "s" scale_param { axis: 1 } }',
        ["s"],
    ),
    "lrn_across_k1": (
        'layer { name: "n" type: "LRN" bottom: "a" top: "n" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 1 } }',
        ["n"],
    ),
    "concat": ('layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }', ["cat"]),
    "concat_h": (
        'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" concat_param { axis: 2 } }',
        ["cat"],
    ),
    "slice": (
        'layer { name: "sl" type: "Slice" bottom: "a" top: "s1" top: "s2" slice_param { slice_point: 1 } }',
        ["sl"],
    ),
    "softmax": ('layer { name: "sm" type: "Softmax" bottom: "a" top: "sm" }', ["sm"]),
    "crop": (
        'layer { name: "cr" type: "Crop" bottom: "a" bottom: "d" top: "cr" crop_param { axis: 2 offset: 1 offset: 3 } }',
        ["cr"],
    ),
    "inner_product": (
        'layer { name: "ip" type: "InnerProduct" bottom: "a" top: "ip" inner_product_param { num_output: 7 } }',
        ["ip"],
    ),
}


@pytest.mark.parametrize("case", sorted(OPENCV_CASES))
def test_layer_matches_opencv(tmp_path, case):
    text, layers = OPENCV_CASES[case]
    shapes = {"a": (2, 4, 6, 7), "b": (2, 4, 6, 7), "c": (4,), "d": (1, 1, 3, 4)}
    used = {name: shape for name, shape in shapes.items() if f'bottom: "{name}"' in text}
    net = randomize(layer_net(text, **used), seed=2)
    inputs = random_inputs(net, seed=4)
    diffs = compare_with_opencv(net, tmp_path, inputs, layers)
    assert max(diffs.values()) < TOL, diffs


def test_crop_offsets_and_axes_are_views():
    x = torch.arange(2 * 3 * 8 * 9, dtype=torch.float32).reshape(2, 3, 8, 9)
    cases = {
        "axis: 2 offset: 3": (slice(None), slice(None), slice(3, 6), slice(3, 7)),
        "axis: 2 offset: 1 offset: 5": (slice(None), slice(None), slice(1, 4), slice(5, 9)),
        "axis: 1 offset: 1 offset: 0 offset: 2": (slice(None), slice(1, 3), slice(0, 3), slice(2, 6)),
        "axis: -1 offset: 4": (slice(None), slice(None), slice(None), slice(4, 8)),
        "": (slice(None), slice(None), slice(0, 3), slice(0, 4)),
    }
    for params, index in cases.items():
        net = layer_net(
            f'layer {{ name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "c" crop_param {{ {params} }} }}',
            x=(2, 3, 8, 9),
            ref=(2, 2, 3, 4),
        )
        out = net(x=x, ref=torch.zeros(2, 2, 3, 4))["c"]
        np.testing.assert_array_equal(out.numpy(), x.numpy()[index], err_msg=params)
        assert out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_crop_too_small_input_names_the_layer():
    net = layer_net(
        'layer { name: "score" type: "Crop" bottom: "x" bottom: "ref" top: "score" crop_param { offset: 19 } }',
        x=(1, 1, 40, 40),
        ref=(1, 1, 10, 10),
    )
    with pytest.raises(Exception, match="layer 'score'"):
        net(x=torch.zeros(1, 1, 20, 20), ref=torch.zeros(1, 1, 10, 10))


def lrn_numpy(x, size, alpha, beta, k, across):
    x = x.astype(np.float64)
    pad = (size - 1) // 2
    sq = x**2
    if across:
        padded = np.pad(sq, ((0, 0), (pad, pad), (0, 0), (0, 0)))
        window = sum(padded[:, i : i + x.shape[1]] for i in range(size))
        return x * (k + alpha / size * window) ** -beta
    padded = np.pad(sq, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    window = sum(padded[:, :, i : i + x.shape[2], j : j + x.shape[3]] for i in range(size) for j in range(size))
    return x * (1 + alpha * window / size**2) ** -beta  # Caffe's within-channel shift is 1, not k


@pytest.mark.parametrize("region, k", [("ACROSS_CHANNELS", 2.0), ("ACROSS_CHANNELS", 1.0), ("WITHIN_CHANNEL", 3.0)])
def test_lrn_numpy(region, k):
    net = layer_net(
        f'layer {{ name: "n" type: "LRN" bottom: "x" top: "n" '
        f"lrn_param {{ local_size: 5 alpha: 0.3 beta: 0.6 k: {k} norm_region: {region} }} }}",
        x=(2, 7, 5, 6),
    )
    x = np.random.default_rng(0).standard_normal((2, 7, 5, 6)).astype(np.float32) * 3
    out = net(torch.from_numpy(x))["n"].numpy()
    np.testing.assert_allclose(out, lrn_numpy(x, 5, 0.3, 0.6, k, region == "ACROSS_CHANNELS"), rtol=1e-5, atol=1e-6)


def test_dropout_train_is_inverted_and_test_is_identity():
    text = 'layer { name: "d" type: "Dropout" bottom: "x" top: "d" dropout_param { dropout_ratio: 0.25 } }'
    x = torch.ones(1, 1, 200, 200)
    np.testing.assert_array_equal(layer_net(text, x=(1, 1, 200, 200))(x)["d"].numpy(), x.numpy())
    train = net_from_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 200 dim: 200 } } }' + text,
        phase="TRAIN",
    )
    torch.manual_seed(0)
    out = train(x)["d"].numpy()
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}
    assert abs((out == 0).mean() - 0.25) < 0.02


def test_scale_axis_num_axes_and_filler():
    net = layer_net(
        'layer { name: "s" type: "Scale" bottom: "x" top: "s" scale_param { axis: 1 num_axes: 2 '
        'filler { type: "constant" value: 0.01 } bias_term: true bias_filler { type: "constant" value: 3 } } }',
        x=(2, 3, 4, 5),
    )
    assert net.layers["s"].blob_shapes() == [(3, 4), (3, 4)]
    x = torch.randn(2, 3, 4, 5)
    np.testing.assert_allclose(net(x)["s"].detach().numpy(), x.numpy() * 0.01 + 3, rtol=1e-6)
    default = layer_net('layer { name: "s" type: "Scale" bottom: "x" top: "s" }', x=(1, 3, 2, 2))
    np.testing.assert_array_equal(default.blobs_numpy()["s"][0], np.ones(3))


def test_inner_product_axis_and_transpose():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    net = layer_net(
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 6 axis: 2 transpose: true } }',
        x=(2, 3, 4, 5),
    )
    weight, bias = rng.standard_normal((20, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    net.load_blobs({"ip": [weight, bias]})
    out = net(torch.from_numpy(x))["ip"].detach().numpy()
    assert out.shape == (2, 3, 6)
    np.testing.assert_allclose(out, x.reshape(2, 3, 20) @ weight + bias, rtol=1e-5, atol=1e-5)


def softmax_loss_numpy(scores, labels, ignore, mode):
    z = scores - scores.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    valid = labels != ignore
    picked = np.take_along_axis(logp, np.where(valid, labels, 0)[:, None], axis=1)[:, 0]
    total = -(picked * valid).sum()
    normalizer = {"FULL": labels.size, "VALID": valid.sum(), "BATCH_SIZE": labels.shape[0], "NONE": 1}[mode]
    return total / max(1, normalizer)


@pytest.mark.parametrize(
    "loss_param, mode",
    [
        ("normalization: FULL", "FULL"),
        ("normalization: VALID", "VALID"),
        ("normalization: BATCH_SIZE", "BATCH_SIZE"),
        ("normalization: NONE", "NONE"),
        ("", "VALID"),
        ("normalize: true", "VALID"),
        ("normalize: false", "BATCH_SIZE"),
        # caffe.proto: `normalize` is "ignored if normalization is specified"; each mode
        # below comes with the legacy flag that would pick another one.
        ("normalize: true normalization: FULL", "FULL"),
        ("normalize: false normalization: VALID", "VALID"),
        ("normalize: true normalization: BATCH_SIZE", "BATCH_SIZE"),
        ("normalize: true normalization: NONE", "NONE"),
    ],
)
def test_softmax_with_loss_normalization(loss_param, mode):
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((2, 5, 3, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 5, (2, 1, 3, 4))
    labels[0, 0, 0, :3] = 255
    net = layer_net(
        f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "loss" loss_weight: 2 '
        f"loss_param {{ ignore_label: 255 {loss_param} }} }}",
        s=(2, 5, 3, 4),
        l=(2, 1, 3, 4),
    )
    loss = net(s=torch.from_numpy(scores), l=torch.from_numpy(labels.astype(np.float32)))["loss"]
    assert loss.shape == ()
    np.testing.assert_allclose(
        loss.item(), softmax_loss_numpy(scores.astype(np.float64), labels[:, 0], 255, mode), rtol=1e-5
    )
    assert net.loss_weights == {"loss": 2.0}


@pytest.mark.parametrize("gap", [100.0, 1e6, 1e10])
@pytest.mark.parametrize("true_class", [0, 1])
def test_softmax_with_loss_gradient_is_unclamped_where_the_value_is_clamped(true_class, gap):
    """Caffe's forward adds -log(max(p, FLT_MIN)); its backward is p - onehot, unclamped.

    Two classes, the true one trailing by `gap`: p(true) = 1 / (1 + e^gap) underflows below
    FLT_MIN, so the loss is -log(FLT_MIN) = 87.3365 however far behind (a diverging run logs
    that, not 0), and the gradient is -1 on the true class, +1 on the other (1 valid pixel:
    VALID normalizes by 1).
    """
    logits = [0.0, 0.0]
    logits[1 - true_class] = gap
    scores = torch.tensor(logits).reshape(1, 2, 1, 1).requires_grad_()
    net = layer_net(
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "loss" }',
        s=(1, 2, 1, 1),
        l=(1, 1, 1, 1),
    )
    loss = net(s=scores, l=torch.tensor([[[[float(true_class)]]]]))["loss"]
    flt_min = np.finfo(np.float32).tiny
    assert loss.item() == pytest.approx(-math.log(flt_min), rel=1e-6)
    loss.backward()
    expected = [1.0, 1.0]
    expected[true_class] = -1.0
    np.testing.assert_allclose(scores.grad.flatten().numpy(), expected, rtol=1e-6)


def test_eltwise_max_sends_a_tied_gradient_where_caffe_does():
    """EltwiseLayer::Forward_cpu: bottoms 0 and 1 by `a > b ? 0 : 1` (a tie goes to bottom 1), then each
    later bottom only where strictly greater; Backward_cpu gives the whole diff to that one bottom."""
    net = layer_net(
        'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "e" eltwise_param { operation: MAX } }',
        a=(4,),
        b=(4,),
        c=(4,),
    )
    a = torch.tensor([1.0, 2.0, 5.0, 0.0], requires_grad=True)
    b = torch.tensor([1.0, 2.0, 3.0, 0.0], requires_grad=True)
    c = torch.tensor([0.0, 2.0, 5.0, 0.0], requires_grad=True)
    top = net(a=a, b=b, c=c)["e"]
    top.backward(torch.tensor([10.0, 20.0, 30.0, 40.0]))
    np.testing.assert_array_equal(top.detach().numpy(), [1, 2, 5, 0])
    # position 0: a = b -> b; 1: a = b -> b, c ties b -> stays b; 2: a > b -> a, c ties a -> stays a; 3: b
    np.testing.assert_array_equal(a.grad.numpy(), [0, 0, 30, 0])
    np.testing.assert_array_equal(b.grad.numpy(), [10, 20, 0, 40])
    np.testing.assert_array_equal(c.grad.numpy(), [0, 0, 0, 0])


def test_global_max_pooling_sends_a_tied_gradient_to_the_first_maximum():
    """PoolingLayer's MAX keeps the first position of the window holding the maximum (`>` from
    -FLT_MAX, row by row), and its backward sends the whole diff there."""
    net = layer_net(
        'layer { name: "g" type: "Pooling" bottom: "x" top: "g" pooling_param { pool: MAX global_pooling: true } }',
        x=(1, 2, 2, 3),
    )
    x = torch.tensor([[[[1.0, 3.0, 0.0], [3.0, 2.0, 3.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]], requires_grad=True)
    top = net(x=x)["g"]
    top.backward(torch.tensor([5.0, 7.0]).reshape(1, 2, 1, 1))
    np.testing.assert_array_equal(top.detach().numpy().ravel(), [3, 0])
    expected = np.zeros((1, 2, 2, 3), dtype=np.float32)
    expected[0, 0, 0, 1] = 5.0  # the first 3, row-major
    expected[0, 1, 0, 0] = 7.0  # the first 0
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_softmax_with_loss_refuses_what_caffe_cannot_set_up():
    # Caffe's SoftmaxWithLoss sets up an inner Softmax from a copy of its own definition, one
    # loss_weight per top included (LossLayer adds loss_weight 1 when none is given): with a second
    # top, either the outer layer (2 tops, 1 weight) or the inner Softmax (1 top, 2 weights) fails
    # Layer::SetLossWeights' count check. LossLayer::Reshape also requires scores and labels to share
    # their first dimension.
    head = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "loss" '
    for weights in ("", "loss_weight: 1 loss_weight: 0 "):
        with pytest.raises(PrototxtError, match="has one top"):
            layer_net(head + f'top: "prob" {weights}}}', s=(2, 3, 4), l=(2, 4))
    with pytest.raises(PrototxtError, match="first dimension"):
        layer_net(head + "softmax_param { axis: 2 } }", s=(2, 3, 4), l=(1, 6))
    assert layer_net(head + "softmax_param { axis: 2 } }", s=(2, 3, 4), l=(2, 3)).outputs == ["loss"]


def test_accuracy_top_k_and_ignore_label():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [2.0, 2.0, 0.0], [0.0, 1.0, 2.0]]).reshape(4, 3, 1, 1)
    labels = torch.tensor([0.0, 0.0, 1.0, 255.0]).reshape(4, 1, 1, 1)
    text = 'layer {{ name: "acc" type: "Accuracy" bottom: "s" bottom: "l" top: "acc" accuracy_param {{ {} ignore_label: 255 }} }}'
    top1 = layer_net(text.format("top_k: 1"), s=(4, 3, 1, 1), l=(4, 1, 1, 1))(s=scores, l=labels)["acc"]
    top2 = layer_net(text.format("top_k: 2"), s=(4, 3, 1, 1), l=(4, 1, 1, 1))(s=scores, l=labels)["acc"]
    # sample 0 right; 1 wrong at k=1,2; 2: tie with a better-indexed class counts against (Caffe's >=)
    assert top1.item() == pytest.approx(1 / 3) and top2.item() == pytest.approx(2 / 3)


def test_concat_slice_split_silence_routing():
    net = layer_net(
        'layer { name: "sl" type: "Slice" bottom: "x" top: "a" top: "b" top: "c" slice_param { axis: 1 slice_point: 1 slice_point: 3 } }'
        'layer { name: "cat" type: "Concat" bottom: "c" bottom: "a" top: "cat" concat_param { axis: 1 } }'
        'layer { name: "sp" type: "Split" bottom: "cat" top: "u" top: "v" }'
        'layer { name: "quiet" type: "Silence" bottom: "b" bottom: "v" }',
        x=(1, 6, 2, 2),
    )
    x = torch.arange(24, dtype=torch.float32).reshape(1, 6, 2, 2)
    out = net(x)
    assert list(out) == ["u"]
    np.testing.assert_array_equal(out["u"].numpy(), torch.cat([x[:, 3:], x[:, :1]], 1).numpy())


@pytest.mark.parametrize("kind", ["xavier", "msra"])
def test_fillers_scale_by_fan(kind):
    filler = caffe_pb2.FillerParameter(type=kind)
    values = fill(filler, (64, 32, 3, 3), torch.Generator().manual_seed(0)).numpy()
    fan_in = 32 * 9
    if kind == "xavier":
        assert np.abs(values).max() <= math.sqrt(3 / fan_in) and values.std() == pytest.approx(
            math.sqrt(1 / fan_in), rel=0.05
        )
    else:
        assert values.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)


def test_bilinear_and_unitball_fillers():
    kernel = fill(caffe_pb2.FillerParameter(type="bilinear"), (2, 3, 4, 4))[1, 2].numpy()
    taps = np.array([0.25, 0.75, 0.75, 0.25])  # f = 2, c = 3/4: 1 - |x/2 - 3/4|
    np.testing.assert_allclose(kernel, np.outer(taps, taps))
    ball = fill(caffe_pb2.FillerParameter(type="positive_unitball"), (5, 2, 3)).numpy()
    assert (ball >= 0).all()
    np.testing.assert_allclose(ball.reshape(5, -1).sum(axis=1), np.ones(5), rtol=1e-6)
    uniform = fill(caffe_pb2.FillerParameter(type="uniform", min=-2, max=-1), (1000,)).numpy()
    assert uniform.min() >= -2 and uniform.max() <= -1
    gauss = fill(caffe_pb2.FillerParameter(type="gaussian", std=0.5, mean=3), (20000,)).numpy()
    assert gauss.mean() == pytest.approx(3, abs=0.02) and gauss.std() == pytest.approx(0.5, rel=0.03)


def test_python_data_layer_param_str_is_a_literal():
    text = (
        'layer { name: "data" type: "Python" top: "data" top: "label" python_param { module: "voc_layers" '
        "layer: \"VOCSegDataLayer\" param_str: \"{'split': 'seg11valid', 'mean': (104.0, 116.6, 122.6), 'seed': 1337}\" } }"
    )
    net = net_from_text(text)
    spec = net.data_layers["data"]
    assert spec.params == {"split": "seg11valid", "mean": (104.0, 116.6, 122.6), "seed": 1337}
    assert spec.python_layer == "voc_layers.VOCSegDataLayer" and spec.tops == ("data", "label")
    assert net.inputs == ["data", "label"]
    evil = text.replace("{'split'", "__import__('os').system('true') or {'split'")
    with pytest.raises(PrototxtError, match="layer 'data'"):
        net_from_text(evil)


def test_unknown_layer_type_lists_supported_types():
    with pytest.raises(UnsupportedLayerError, match="'BatchNorm'.*Convolution") as info:
        layer_net('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "bn" }', x=(1, 1, 2, 2))
    assert "layer 'bn'" in str(info.value)
