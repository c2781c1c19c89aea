"""Element-wise layers: ReLU (with negative_slope) and Dropout (inverted, TRAIN only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from porting.layers.base import CaffeLayer, Shape
from porting.proto import caffe_pb2


class ReLU(CaffeLayer):
    """Caffe ReLU: max(x, 0) + negative_slope * min(x, 0)."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)
        self.negative_slope = param.relu_param.negative_slope

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.negative_slope == 0:
            return [F.relu(x)]
        return [F.leaky_relu(x, self.negative_slope)]

    def run_in_place(self, x: Tensor) -> list[Tensor]:
        """`forward` written into `x` (Caffe's in-place ReLU); the executor decides when that is safe."""
        if self.negative_slope == 0:
            return [F.relu_(x)]
        return [F.leaky_relu_(x, self.negative_slope)]


class Dropout(CaffeLayer):
    """Caffe Dropout: in TRAIN keep with probability 1 - r and scale by 1 / (1 - r); TEST is identity."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)
        self.ratio = param.dropout_param.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), found {self.ratio}")

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.phase != "TRAIN" or self.ratio == 0:
            return [x]
        keep = torch.rand_like(x) >= self.ratio
        return [x * keep * (1.0 / (1.0 - self.ratio))]
