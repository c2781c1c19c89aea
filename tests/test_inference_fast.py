"""The CPU inference path (`porting.inference.InferenceNet`) and the executor's in-place ReLU.

InferenceNet must give OpenCV's scores (the independent reference, on files our writer
produced) at odd sizes, including sizes other than the one its weights were packed for,
with bilinear (diagonal, run grouped) and random (dense) upsampling weights.
The in-place ReLU must keep Caffe's semantics: the caller's input is never written, and
a blob sharing memory with the ReLU's bottom (an identity Dropout top) keeps its value.
"""

import platform

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
from porting import CaffeNet
from porting.inference import DiagonalDeconvolution, InferenceNet, PackedConvolution, retain_freed_memory, supported

TOL = 1e-5
SIZES = [(37, 53), (101, 77), (64, 64)]

pytestmark = pytest.mark.skipif(not supported(), reason="this torch build has no oneDNN")


def random_image(size, seed) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, *size), dtype=np.float32) * np.float32(60)


@pytest.mark.parametrize(("name", "bilinear"), [(name, True) for name in VOC_NETS] + [("voc-fcn8s", False)])
def test_scores_match_opencv_and_plain_path_at_odd_sizes(tmp_path, name, bilinear):
    net = randomize(CaffeNet(deploy_net(name, width_divisor=16)), seed=3, bilinear_deconv=bilinear)
    cv_net = opencv_net(*write_net(net, tmp_path))
    fast = InferenceNet(net)
    kinds = {type(kernel) for kernel in fast.kernels.values()}
    assert PackedConvolution in kinds
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
