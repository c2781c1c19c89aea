"""Local response normalization, as Caffe computes it."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from porting.layers.base import CaffeLayer, Shape
from porting.proto import caffe_pb2

L = caffe_pb2.LRNParameter


class LRN(CaffeLayer):
    """Caffe LRN.

    ACROSS_CHANNELS: x / (k + alpha / n * sum of x^2 over n channels) ^ beta.
    WITHIN_CHANNEL: x / (1 + alpha * mean of x^2 over an n x n zero-padded window) ^ beta;
    Caffe's within-channel path shifts by 1, not `k`, and so does this layer.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)
        p = param.lrn_param
        if p.local_size % 2 == 0:
            raise self.error(f"local_size must be odd, found {p.local_size}")
        if len(bottom_shapes[0]) != 4:
            raise self.error(f"expected a 4-D bottom (N, C, H, W), found shape {bottom_shapes[0]}")
        self.size = p.local_size
        self.alpha, self.beta, self.k = p.alpha, p.beta, p.k
        self.across_channels = p.norm_region == L.ACROSS_CHANNELS

    def forward(self, x: Tensor) -> list[Tensor]:
        pad = (self.size - 1) // 2
        squared = x * x
        if self.across_channels:
            window_sum = F.avg_pool3d(
                F.pad(squared.unsqueeze(1), (0, 0, 0, 0, pad, pad)), (self.size, 1, 1), stride=1, divisor_override=1
            ).squeeze(1)
            scale = self.k + (self.alpha / self.size) * window_sum
        else:
            window_mean = F.avg_pool2d(squared, self.size, stride=1, padding=pad, count_include_pad=True)
            scale = 1.0 + self.alpha * window_mean
        return [x * scale.pow(-self.beta)]
