"""Pooling with Caffe's output size and window clipping.

Caffe (CEIL mode) outputs ceil((H + 2p - k) / s) + 1 windows and, when either pad (h or
w) is nonzero, drops on each axis a last window that would start past the input plus its
padding (`if (pad_h_ || pad_w_)` in PoolingLayer::Reshape). PyTorch's ceil mode drops it for
p = 0 too, and PyTorch refuses p > k / 2; where that can matter at some input size
(`torch_pools_like_caffe`, decided per layer, not per size) the layer pads explicitly and
pools without padding, which reproduces Caffe exactly: MAX starts from -FLT_MAX (so an
empty window gives -FLT_MAX) and AVE divides the zero-padded sum by Caffe's pool size
(hend - hstart per axis, hend clipped to H + p; computed before hstart is clipped, so a window
starting at H + p has size 0 and gives 0 / 0 = NaN, one starting past it a negative size and
gives 0 / -size = -0, or +0 where both axes are negative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from porting.layers.base import CaffeLayer, Shape
from porting.proto import caffe_pb2
from porting.window import read_window

P = caffe_pb2.PoolingParameter
FLT_MAX = float(torch.finfo(torch.float32).max)


def caffe_pooled_size(
    size: int, kernel: int, stride: int, pad: int, ceil_mode: bool = True, clip: bool | None = None
) -> int:
    """Caffe's PoolingLayer::Reshape output extent along one axis.

    `clip`: whether the last-window rule applies, which Caffe decides for both axes at once
    (either pad nonzero); by default, whether this axis's pad is. The rule drops a last window
    that starts at or past size + pad, so the extent is at most the number of windows starting
    before it, ceil((size + pad) / stride). Written in integer arithmetic and `torch.sym_min`,
    without a branch on the size, so an exported graph computes it for every input size.
    """
    span = size + 2 * pad - kernel
    pooled = (span + stride - 1 if ceil_mode else span) // stride + 1
    if bool(pad) if clip is None else clip:
        pooled = torch.sym_min(pooled, (size + pad + stride - 1) // stride)
    return pooled


def torch_pools_like_caffe(kernel: Shape, stride: Shape, pad: Shape, ceil_mode: bool) -> bool:
    """Whether torch's pooling makes Caffe's windows at every input size.

    Torch needs 2p <= k. Then the extents agree except in ceil mode without any pad (where
    Caffe never drops a window) for k < s, where a last window can start past the input
    (for k >= s it cannot: ceil((H - k) / s) * s < H). With a pad, both drop that window by
    the same rule on each axis; in floor mode no window starts that far once p < k.
    """
    clip = any(pad)
    return all(2 * p <= k and not (ceil_mode and not clip and k < s) for k, s, p in zip(kernel, stride, pad))


class Pooling(CaffeLayer):
    """Caffe Pooling (MAX, AVE; global_pooling; round_mode CEIL/FLOOR)."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)
        p = param.pooling_param
        if p.pool not in (P.MAX, P.AVE):
            raise self.error(f"pool method {P.PoolMethod.Name(p.pool)} is not supported (MAX, AVE)")
        if len(bottom_shapes[0]) != 4:
            raise self.error(f"expected a 4-D bottom (N, C, H, W), found shape {bottom_shapes[0]}")
        self.is_max = p.pool == P.MAX
        self.global_pooling = p.global_pooling
        self.ceil_mode = p.round_mode == P.CEIL
        window = read_window(param, self.location)
        self.pad, self.stride = window.pad, window.stride
        self.kernel = window.kernel or (0, 0)
        if not self.global_pooling and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
            raise self.error(f"pad {self.pad} must be smaller than kernel {self.kernel}")
        # decided once, not per input size, so an exported graph holds for every size
        self.native = torch_pools_like_caffe(self.kernel, self.stride, self.pad, self.ceil_mode)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.global_pooling:
            return 1, 1
        clip = any(self.pad)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        return (
            caffe_pooled_size(height, kh, sh, ph, self.ceil_mode, clip),
            caffe_pooled_size(width, kw, sw, pw, self.ceil_mode, clip),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.dim() != 4:
            raise self.bad_input(f"expected a 4-D input (N, C, H, W), found {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if self.global_pooling:
            if self.is_max:  # max(dim) sends the gradient to the first maximum, as Caffe; amax splits ties
                return [x.flatten(2).max(dim=2, keepdim=True).values.unsqueeze(3)]
            return [x.mean(dim=(2, 3), keepdim=True)]
        out = self.output_size(height, width)
        if min(out) <= 0:
            raise self.bad_input(f"input {height}x{width} is too small for kernel {self.kernel} with pad {self.pad}")
        if self.native:
            if self.is_max:
                return [F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode)]
            return [
                F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode, count_include_pad=True)
            ]
        return [self._explicit(x, out)]

    def _explicit(self, x: Tensor, out: tuple[int, int]) -> Tensor:
        """Pad to exactly the extent Caffe's windows cover, then pool without padding."""
        extents = [(o - 1) * s + k for o, s, k in zip(out, self.stride, self.kernel)]
        right = [e - n - p for e, n, p in zip(extents, x.shape[-2:], self.pad)]
        padding = (self.pad[1], right[1], self.pad[0], right[0])
        if self.is_max:
            return F.max_pool2d(F.pad(x, padding, value=-FLT_MAX), self.kernel, self.stride)
        # the mean over the whole (explicitly padded) kernel, times kernel area / Caffe's pool size:
        # Caffe's sum / pool size, written without avg_pool2d's divisor_override, which torch's ONNX
        # exporter drops
        mean = F.avg_pool2d(F.pad(x, padding), self.kernel, self.stride)
        height, width = (self._pool_extents(x, axis, out[axis]) for axis in (0, 1))
        return mean * (self.kernel[0] * self.kernel[1] / (height[:, None] * width[None, :]))

    def _pool_extents(self, x: Tensor, axis: int, count: int) -> Tensor:
        """Caffe's pool size along one axis per window: min(start + k, n + p) - start, start = i * s - p.

        Signed as Caffe computes it (zero or negative for a window starting at or past n + p), in
        tensor ops on the input's size so an exported graph computes it at every size.
        """
        kernel, stride, pad = self.kernel[axis], self.stride[axis], self.pad[axis]
        start = torch.arange(count, dtype=x.dtype, device=x.device) * stride - pad
        end = start + kernel
        return end - (end - (x.shape[2 + axis] + pad)).clamp_min(0) - start
