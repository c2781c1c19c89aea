"""Convolution and Deconvolution against OpenCV's Caffe importer and hand-computed values."""

import numpy as np
import pytest
import torch
from helpers import compare_with_opencv, layer_net, random_inputs, randomize

TOL = 1e-4

CONVOLUTIONS = {
    "plain": "num_output: 5 kernel_size: 3",
    "pad_stride": "num_output: 4 kernel_size: 3 pad: 2 stride: 2",
    "group": "num_output: 6 kernel_size: 3 group: 3 pad: 1",
    "depthwise": "num_output: 6 kernel_size: 3 group: 6",
    "dilation": "num_output: 4 kernel_size: 3 dilation: 2 pad: 1",
    "hw": "num_output: 4 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 3",
    "no_bias": "num_output: 3 kernel_size: 2 stride: 2 bias_term: false",
    "pairs": "num_output: 4 kernel_size: 3 kernel_size: 1 pad: 0 pad: 1 stride: 1 stride: 2",
}


# OpenCV ignores dilation in Deconvolution: that case is hand-computed below.
CASES = [
    (t, c)
    for t in ("Convolution", "Deconvolution")
    for c in sorted(CONVOLUTIONS)
    if (t, c) != ("Deconvolution", "dilation")
]


@pytest.mark.parametrize("layer_type, config", CASES)
def test_convolution_matches_opencv(tmp_path, layer_type, config):
    net = layer_net(
        f'layer {{ name: "conv" type: "{layer_type}" bottom: "data" top: "conv" '
        f"convolution_param {{ {CONVOLUTIONS[config]} }} }}",
        data=(2, 6, 11, 13),
    )
    randomize(net, seed=3)
    diffs = compare_with_opencv(net, tmp_path, random_inputs(net))
    assert diffs["conv"] < TOL, diffs


def test_output_sizes_follow_caffe():
    net = layer_net(
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 1 dilation: 2 } }"
        'layer { name: "d" type: "Deconvolution" bottom: "data" top: "d" '
        "convolution_param { num_output: 2 kernel_size: 4 stride: 3 pad: 1 } }",
        data=(1, 1, 10, 7),
    )
    out = net(torch.zeros(1, 1, 10, 7))
    # Caffe: conv (H + 2p - (d(k-1)+1)) / s + 1 (floor); deconv s(H-1) + k - 2p
    assert out["c"].shape[2:] == ((10 + 2 - 5) // 2 + 1, (7 + 2 - 5) // 2 + 1)
    assert out["d"].shape[2:] == (3 * 9 + 4 - 2, 3 * 6 + 4 - 2)


def test_deconvolution_weight_layout_is_cin_cout_k_k():
    net = layer_net(
        'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" '
        "convolution_param { num_output: 3 kernel_size: 3 stride: 2 bias_term: false } }",
        data=(1, 2, 1, 1),
    )
    assert net.layers["up"].blob_shapes() == [(2, 3, 3, 3)]
    weight = np.arange(2 * 3 * 9, dtype=np.float32).reshape(2, 3, 3, 3)
    net.load_blobs({"up": [weight]})
    x = np.array([2.0, -1.0], dtype=np.float32)
    out = net(torch.from_numpy(x).reshape(1, 2, 1, 1))["up"][0].detach().numpy()
    # one input pixel scatters its kernel: out[o] = sum_i x[i] * W[i, o]
    np.testing.assert_allclose(out, np.einsum("i,iokl->okl", x, weight), rtol=1e-6)


def test_grouped_convolution_weight_layout_hand_computed():
    net = layer_net(
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 4 kernel_size: 1 group: 2 } }",
        data=(1, 4, 1, 1),
    )
    weight = np.arange(8, dtype=np.float32).reshape(4, 2, 1, 1)
    bias = np.array([1, 2, 3, 4], dtype=np.float32)
    net.load_blobs({"c": [weight, bias]})
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    out = net(torch.from_numpy(x).reshape(1, 4, 1, 1))["c"].detach().flatten().numpy()
    expected = [weight[o, :, 0, 0] @ x[(o // 2) * 2 : (o // 2) * 2 + 2] + bias[o] for o in range(4)]
    np.testing.assert_allclose(out, expected)


def test_dilated_deconvolution_hand_computed():
    net = layer_net(
        'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" '
        "convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 1 dilation: 2 } }",
        data=(1, 3, 4, 5),
    )
    randomize(net, seed=1)
    weight, bias = net.blobs_numpy()["up"]
    x = random_inputs(net)["data"][0]
    s, p, d, k = 2, 1, 2, 3
    height, width = s * (4 - 1) + d * (k - 1) + 1 - 2 * p, s * (5 - 1) + d * (k - 1) + 1 - 2 * p
    full = np.zeros((2, height + 2 * p, width + 2 * p))
    for c, i, j, o, ki, kj in np.ndindex(3, 4, 5, 2, k, k):
        full[o, i * s + d * ki, j * s + d * kj] += x[c, i, j] * weight[c, o, ki, kj]
    expected = full[:, p : p + height, p : p + width] + bias[:, None, None]
    out = net(torch.from_numpy(x[None]))["up"][0].detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
