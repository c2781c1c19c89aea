"""Pooling: Caffe's output size (ceil, last window clipped to start inside the padded input),
AVE divisors, and the pad-0 kernel < stride window past the input, against OpenCV and a
direct transcription of Caffe's pooling loops."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import compare_with_opencv, layer_net, random_inputs

from porting.layers.pooling import caffe_pooled_size, torch_pools_like_caffe

FLT_MAX = np.finfo(np.float32).max


def caffe_pool(x: np.ndarray, pool: str, k: tuple, s: tuple, p: tuple, out: tuple) -> np.ndarray:
    """Caffe's PoolingLayer::Forward_cpu loops, written out in numpy (float64)."""
    n, c, height, width = x.shape
    top = np.empty((n, c, *out))
    for ph, pw in np.ndindex(*out):
        hstart, wstart = ph * s[0] - p[0], pw * s[1] - p[1]
        hend, wend = min(hstart + k[0], height + p[0]), min(wstart + k[1], width + p[1])
        pool_size = (hend - hstart) * (wend - wstart)
        hstart, wstart = max(hstart, 0), max(wstart, 0)
        hend, wend = min(hend, height), min(wend, width)
        window = x[:, :, hstart:hend, wstart:wend].reshape(n, c, -1)
        if pool == "MAX":
            top[:, :, ph, pw] = np.maximum(window.max(axis=2), -FLT_MAX) if window.shape[2] else -FLT_MAX
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                top[:, :, ph, pw] = window.sum(axis=2) / np.float64(pool_size)
    return top


def pool_net(pool, kernel, stride, pad, shape, extra=""):
    return layer_net(
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ pool: {pool} '
        f"kernel_size: {kernel} stride: {stride} pad: {pad} {extra} }} }}",
        data=shape,
    )


def test_pooled_size_is_caffe_ceil_with_clip():
    assert caffe_pooled_size(5, 2, 2, 0) == 3  # ceil(3/2)+1: the last window covers one row
    assert caffe_pooled_size(5, 2, 2, 1) == 3  # ceil(5/2)+1 = 4, but window 3 would start in the right padding
    assert caffe_pooled_size(7, 3, 2, 1) == 4
    assert caffe_pooled_size(4, 1, 2, 0) == 3  # pad 0: the window starting at 4 (past the input) is kept
    assert caffe_pooled_size(5, 2, 2, 0, ceil_mode=False) == 2


ODD_CASES = [
    (kernel, stride, pad, size)
    for kernel, stride, pad in [(2, 2, 0), (2, 2, 1), (3, 2, 0), (3, 2, 1), (3, 3, 1), (2, 1, 1), (5, 3, 2)]
    for size in [(7, 9), (10, 5)]
]


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel, stride, pad, size", ODD_CASES)
def test_pooling_matches_opencv_and_caffe_loops(tmp_path, pool, kernel, stride, pad, size):
    net = pool_net(pool, kernel, stride, pad, (2, 3, *size))
    inputs = random_inputs(net, seed=sum(size) + kernel)
    out = net(torch.from_numpy(inputs["data"]))["pool"].numpy()
    expected_size = tuple(caffe_pooled_size(n, kernel, stride, pad) for n in size)
    assert out.shape[2:] == expected_size
    expected = caffe_pool(
        inputs["data"].astype(np.float64), pool, (kernel,) * 2, (stride,) * 2, (pad,) * 2, expected_size
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert compare_with_opencv(net, tmp_path, inputs)["pool"] < 1e-4


def test_average_pooling_divides_by_window_clipped_to_padded_input():
    # 3x3 input of ones, k=3 s=2 p=1 -> 2x2 output. Window (0, 0) spans padded rows -1..1:
    # 9 cells, 4 of them real -> 4/9. Window (1, 1) starts at 1 and is clipped to the padded
    # extent (rows 1..3, 3 = H + p - 1): 9 cells, 4 real -> 4/9 as well.
    net = pool_net("AVE", 3, 2, 1, (1, 1, 3, 3))
    out = net(torch.ones(1, 1, 3, 3))["pool"][0, 0]
    np.testing.assert_allclose(out.numpy(), np.full((2, 2), 4 / 9), rtol=1e-6)
    # 4x4 ones, k=3 s=2 p=1 -> 3x3 (ceil(3/2)+1 = 3; window 2 starts at 3 < 4 + 1). Window 2
    # covers padded rows 3..4 only (hend = min(3 + 3, 4 + 1) = 5): 2 rows, 1 real.
    net = pool_net("AVE", 3, 2, 1, (1, 1, 4, 4))
    out = net(torch.ones(1, 1, 4, 4))["pool"][0, 0].numpy()
    rows = np.array([2 / 3, 1.0, 1 / 2])  # real / counted cells per axis: 2/3, 3/3, 1/2
    np.testing.assert_allclose(out, np.outer(rows, rows), rtol=1e-6)


def test_window_starting_past_the_input_is_kept_as_caffe_does():
    # pad 0, kernel 1 < stride 2, H = W = 4: Caffe makes 3x3 windows starting at 0, 2, 4;
    # the one at 4 is empty: MAX leaves -FLT_MAX, AVE divides 0 by pool size 0 (NaN).
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    top = pool_net("MAX", 1, 2, 0, (1, 1, 4, 4))(x)["pool"][0, 0].numpy()
    assert top.shape == (3, 3)
    np.testing.assert_array_equal(top[:2, :2], [[0, 2], [8, 10]])
    assert np.all(top[2, :] == -FLT_MAX) and np.all(top[:, 2] == -FLT_MAX)
    ave = pool_net("AVE", 1, 2, 0, (1, 1, 4, 4))(x)["pool"][0, 0].numpy()
    np.testing.assert_array_equal(ave[:2, :2], [[0, 2], [8, 10]])
    assert np.isnan(ave[2, :]).all() and np.isnan(ave[:, 2]).all()
    expected = caffe_pool(x.numpy().astype(np.float64), "AVE", (1, 1), (2, 2), (0, 0), (3, 3))[0, 0]
    np.testing.assert_array_equal(np.isnan(ave), np.isnan(expected))


def test_average_of_a_window_starting_beyond_the_input_is_zero_over_a_negative_pool_size():
    # 5x5 input 1..25, AVE kernel 1 stride 3, pad 0: windows start at 0, 3, 6 (ceil(4 / 3) + 1 = 3,
    # no pad so none is dropped). The one at 6 starts past H = 5: Caffe's hend = min(6 + 1, 5 + 0) = 5,
    # pool size 5 - 6 = -1 on that axis, nothing summed: 0 / -1 = -0, and 0 / (-1 * -1) = +0 in the
    # corner. (A window starting exactly at H has pool size 0: 0 / 0 = NaN, as in the test above.)
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5)
    top = pool_net("AVE", 1, 3, 0, (1, 1, 5, 5))(x)["pool"][0, 0].numpy()
    expected = np.array([[1, 4, -0.0], [16, 19, -0.0], [-0.0, -0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(top, expected)
    np.testing.assert_array_equal(np.signbit(top), np.signbit(expected))


def test_last_window_rule_applies_to_both_axes_when_either_is_padded():
    """PoolingLayer::Reshape clips the last window on both axes `if (pad_h_ || pad_w_)`.

    H = W = 4, kernel 1 x 2, stride 2, pad_h 0, pad_w 1. Rows: ceil((4 - 1) / 2) + 1 = 3,
    and the third would start at row 4 >= 4 + 0, so Caffe drops it: 2 rows. Columns:
    ceil((4 + 2 - 2) / 2) + 1 = 3, the third starts at column 4 - 1 = 3 < 4 + 1: kept.
    """
    net = layer_net(
        'layer { name: "pool" type: "Pooling" bottom: "x" top: "pool" '
        "pooling_param { pool: MAX kernel_h: 1 kernel_w: 2 stride: 2 pad_h: 0 pad_w: 1 } }",
        x=(1, 1, 4, 4),
    )
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    top = net(x)["pool"][0, 0].numpy()
    # row i reads input row 2i; column j the max over input columns 2j-1 .. 2j (inside 0..3)
    np.testing.assert_array_equal(top, [[0, 2, 3], [8, 10, 11]])


def test_global_pooling_and_floor_rounding():
    x = torch.randn(2, 3, 5, 7)
    out = layer_net(
        'layer { name: "g" type: "Pooling" bottom: "data" top: "g" pooling_param { pool: AVE global_pooling: true } }'
        'layer { name: "m" type: "Pooling" bottom: "data" top: "m" pooling_param { pool: MAX global_pooling: true } }'
        'layer { name: "f" type: "Pooling" bottom: "data" top: "f" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }",
        data=(2, 3, 5, 7),
    )(x)
    np.testing.assert_allclose(out["g"].numpy()[..., 0, 0], x.numpy().mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_array_equal(out["m"].numpy()[..., 0, 0], x.numpy().max(axis=(2, 3)))
    assert out["f"].shape[2:] == (math.floor(3 / 2) + 1, math.floor(5 / 2) + 1)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pad_larger_than_half_kernel_matches_caffe_loops(pool):
    # Caffe allows any pad < kernel; PyTorch's pooling refuses pad > kernel / 2.
    net = pool_net(pool, 3, 2, 2, (1, 2, 6, 5))
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 5)).astype(np.float32)
    out = net(torch.from_numpy(x))["pool"].numpy()
    size = tuple(caffe_pooled_size(n, 3, 2, 2) for n in (6, 5))
    np.testing.assert_allclose(
        out, caffe_pool(x.astype(np.float64), pool, (3, 3), (2, 2), (2, 2), size), rtol=1e-5, atol=1e-6
    )


def torch_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int | None:
    """The extent torch's own `F.max_pool2d` gives along one axis; None where it refuses (2p > k)."""
    if 2 * pad > kernel:
        return None
    x = torch.zeros(1, 1, size, 1)
    return F.max_pool2d(x, (kernel, 1), (stride, 1), (pad, 0), ceil_mode=ceil_mode).shape[2]


@pytest.mark.parametrize("ceil_mode", [True, False])
def test_the_per_layer_choice_of_torch_pooling_holds_at_every_size(ceil_mode):
    # Wherever torch_pools_like_caffe says yes, torch's extent equals Caffe's (PoolingLayer::Reshape,
    # written out in caffe_pooled_size) at every size with a window; where it says no, some size differs.
    for kernel in range(1, 7):
        for stride in range(1, 6):
            for pad in range(kernel):
                for other_pad in (0, 1):  # Caffe clips both axes when either is padded
                    clip = bool(pad or other_pad)
                    sizes = [n for n in range(1, 60) if n + 2 * pad >= kernel]
                    same = all(
                        caffe_pooled_size(n, kernel, stride, pad, ceil_mode, clip)
                        == torch_pooled_size(n, kernel, stride, pad, ceil_mode)
                        for n in sizes
                    )
                    says = torch_pools_like_caffe((kernel, 2), (stride, 1), (pad, other_pad), ceil_mode)
                    assert says == same, (kernel, stride, pad, other_pad)  # 2p > k: torch refuses, never "same"


def caffe_reshape_extent(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool, clip: bool) -> int:
    """PoolingLayer::Reshape, line for line: ceil (or floor) of the span over the stride, plus one,
    then `if (pad_h_ || pad_w_) { if ((pooled - 1) * stride >= size + pad) --pooled; }`."""
    span = (size + 2 * pad - kernel) / stride
    pooled = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if clip and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def test_branch_free_extent_is_caffe_reshape_line_for_line():
    for kernel in range(1, 7):
        for stride in range(1, 6):
            for pad in range(kernel):
                for clip in (bool(pad), True):
                    for ceil_mode in (True, False):
                        for size in range(max(1, kernel - 2 * pad), 50):
                            expected = caffe_reshape_extent(size, kernel, stride, pad, ceil_mode, clip)
                            got = caffe_pooled_size(size, kernel, stride, pad, ceil_mode, clip)
                            assert got == expected, (size, kernel, stride, pad, ceil_mode, clip)
