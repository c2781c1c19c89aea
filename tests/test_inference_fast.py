"""The CPU inference path (`porting.inference.InferenceNet`) and the executor's in-place ReLU.

InferenceNet must give OpenCV's scores (the independent reference, on files our writer
produced) at odd sizes, including sizes other than the one its weights were packed for,
with bilinear (diagonal, run grouped) and random (dense) upsampling weights, both with
oneDNN's private prepacked kernels and with the public fallback they fall back to.
Private torch API (`torch.ops.`, `torch._C`) appears nowhere but in porting/inference.py.
The in-place ReLU must keep Caffe's semantics: the caller's input is never written, and
a blob sharing memory with the ReLU's bottom (an identity Dropout top) keeps its value.
"""

import platform
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    VOC_NETS,
    deploy_net,
    layer_net,
    opencv_forward,
    opencv_net,
    randomize,
    relative_difference,
    write_net,
)

import porting.inference
from porting import CaffeNet
from porting.inference import (
    ChannelsLastConvolution,
    DiagonalDeconvolution,
    InferenceNet,
    PackedConvolution,
    PointwiseConvolution,
    onednn_kernels_available,
    retain_freed_memory,
)

TOL = 1e-5
SIZES = [(37, 53), (101, 77), (64, 64)]
ROOT = Path(__file__).resolve().parents[1]
#: convolution kernel per `onednn` setting; the private one only where this torch has it
KERNELS = [
    pytest.param(
        True, PackedConvolution, marks=pytest.mark.skipif(not onednn_kernels_available(), reason="no oneDNN kernels")
    ),
    pytest.param(False, ChannelsLastConvolution),
]


def random_image(size, seed) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, *size), dtype=np.float32) * np.float32(60)


@pytest.mark.parametrize(("onednn", "convolution"), KERNELS)
@pytest.mark.parametrize(("name", "bilinear"), [(name, True) for name in VOC_NETS] + [("voc-fcn8s", False)])
def test_scores_match_opencv_and_plain_path_at_odd_sizes(tmp_path, reference, name, bilinear, onednn, convolution):
    net = randomize(CaffeNet(deploy_net(reference, name, width_divisor=16)), seed=3, bilinear_deconv=bilinear)
    cv_net = opencv_net(*write_net(net, tmp_path))
    fast = InferenceNet(net, onednn=onednn)
    kinds = {type(kernel) for kernel in fast.kernels.values()}
    assert convolution in kinds and (PackedConvolution in kinds) == onednn
    assert (DiagonalDeconvolution in kinds) == bilinear
    for index, size in enumerate(SIZES):
        x = random_image(size, index)
        score = fast(torch.from_numpy(x))["score"]
        assert score.is_contiguous()
        with torch.no_grad():
            plain = net(torch.from_numpy(x))["score"].numpy()
        reference = opencv_forward(cv_net, {"data": x}, ["score"])["score"]
        assert relative_difference(score.numpy(), reference) < TOL, size
        assert relative_difference(score.numpy(), plain) < TOL, size


def test_without_the_private_kernels_the_public_fallback_runs(monkeypatch, reference):
    """A torch build without oneDNN's private operators: the feature check says so and
    InferenceNet plans the public kernels, with the plain path's scores."""
    monkeypatch.setattr(porting.inference, "onednn_kernels_available", lambda: False)
    net = randomize(CaffeNet(deploy_net(reference, "voc-fcn16s", width_divisor=16)), seed=5, bilinear_deconv=True)
    fast = InferenceNet(net)
    assert not fast.onednn
    assert {type(k) for k in fast.kernels.values()} == {
        ChannelsLastConvolution,
        PointwiseConvolution,  # fc7 and the score layers: 1x1, a matrix product
        DiagonalDeconvolution,
        type(None),
    }
    assert {name for name, k in fast.kernels.items() if isinstance(k, PointwiseConvolution)} == {
        "fc7",
        "score_fr",
        "score_pool4",
    }
    x = torch.from_numpy(random_image((45, 61), 0))
    with torch.no_grad():
        plain = net(x)["score"].numpy()
    assert relative_difference(fast(x)["score"].numpy(), plain) < TOL
    with pytest.raises(ValueError, match="lacks the oneDNN kernels"):
        InferenceNet(net, onednn=True)


def test_bfloat16_copy_agrees_with_fp32_and_returns_fp32(reference):
    net = randomize(CaffeNet(deploy_net(reference, "voc-fcn8s", width_divisor=16)), seed=3, bilinear_deconv=True)
    x = torch.from_numpy(random_image((53, 41), 1))
    with torch.no_grad():
        reference = net(x)["score"]
    fast = InferenceNet(net, dtype=torch.bfloat16)
    score = fast(x)["score"]
    assert next(net.parameters()).dtype == torch.float32, "the caller's net keeps its fp32 weights"
    assert score.dtype == torch.float32 and score.shape == reference.shape
    # bf16 keeps 8 significant bits: ~0.4% per rounding, a few percent through 16 layers
    assert relative_difference(score.numpy(), reference.numpy()) < 0.05
    assert (score.argmax(1) == reference.argmax(1)).float().mean() > 0.9
    with pytest.raises(ValueError, match="float16"):
        InferenceNet(net, dtype=torch.float16)


def test_private_torch_api_only_in_the_inference_module():
    private = re.compile(r"torch\.ops\.|torch\._C\b|torch\._[a-z]")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("porting", "prototxt", "fcndata", "eval", "reproduce", "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "porting" / "inference.py" and "proto" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert not offenders, offenders


def test_conv_relu_fusion_only_where_nothing_reads_the_pre_relu_value():
    net = layer_net(
        """
        layer { name: "c1" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 4 kernel_size: 3 } }
        layer { name: "r1" type: "ReLU" bottom: "a" top: "a" }
        layer { name: "c2" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "twice" type: "Eltwise" bottom: "b" bottom: "b" top: "p" }
        layer { name: "r2" type: "ReLU" bottom: "b" top: "b" }
        layer { name: "sum" type: "Eltwise" bottom: "b" bottom: "p" top: "y" }
        """,
        x=(1, 3, 9, 9),
    )
    randomize(net, seed=1)
    fast = InferenceNet(net)
    assert fast.kernels["r1"] is None and "r2" not in fast.kernels
    x = torch.randn(1, 3, 9, 9)
    conv = torch.nn.functional.conv2d
    with torch.no_grad():
        a = conv(x, net.layers["c1"].blob(0), net.layers["c1"].blob(1)).relu()
        b = conv(a, net.layers["c2"].blob(0), net.layers["c2"].blob(1))
        expected = b.relu() + 2 * b
    assert relative_difference(fast(x)["y"].numpy(), expected.numpy()) < TOL


def test_in_place_relu_keeps_callers_input_and_aliased_blobs():
    net = layer_net(
        """
        layer { name: "keep" type: "Dropout" bottom: "x" top: "kept" }
        layer { name: "copy" type: "Eltwise" bottom: "x" bottom: "x" top: "h" eltwise_param { coeff: 0.5 coeff: 0.5 } }
        layer { name: "r0" type: "ReLU" bottom: "x" top: "x" }
        layer { name: "same" type: "Dropout" bottom: "h" top: "alias" }
        layer { name: "r1" type: "ReLU" bottom: "h" top: "h" }
        layer { name: "r2" type: "ReLU" bottom: "alias" top: "alias" relu_param { negative_slope: 0.5 } }
        """,
        x=(2, 3, 4, 4),
    )
    x = torch.randn(2, 3, 4, 4)
    original = x.clone()
    with torch.no_grad():
        out = net(x)
    assert torch.equal(x, original)
    assert torch.equal(out["kept"], original)
    assert torch.equal(out["x"], original.relu())
    assert torch.equal(out["h"], original.relu())
    assert torch.equal(out["alias"], torch.nn.functional.leaky_relu(original, 0.5))


def test_in_place_relu_writes_into_the_net_s_own_blob():
    net = layer_net(
        """
        layer { name: "copy" type: "Eltwise" bottom: "x" bottom: "x" top: "h" eltwise_param { coeff: 0.5 coeff: 0.5 } }
        layer { name: "r" type: "ReLU" bottom: "h" top: "h" }
        """,
        x=(1, 2, 3, 3),
    )
    seen = []
    net.layers["copy"].register_forward_hook(lambda module, args, tops: seen.append(tops[0]))
    x = torch.randn(1, 2, 3, 3)
    with torch.no_grad():
        out = net(x)["h"]
    assert out.data_ptr() == seen[0].data_ptr()
    assert torch.equal(out, x.relu())
    assert net.trace(x)["copy"].min() < 0


def test_retain_freed_memory_where_libc_is_glibc():
    assert retain_freed_memory() == (platform.libc_ver()[0] == "glibc")
