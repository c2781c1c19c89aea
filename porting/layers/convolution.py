"""Convolution and Deconvolution with Caffe's parameters (2-D spatial, channel axis 1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from porting.layers.base import CaffeLayer, Shape
from porting.proto import caffe_pb2
from porting.window import read_window


class _ConvolutionBase(CaffeLayer):
    transposed = False

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        if self.num_bottoms < 1 or self.num_tops != self.num_bottoms:
            raise self.error(f"needs one top per bottom, found {self.num_bottoms} bottom(s) and {self.num_tops} top(s)")
        conv = param.convolution_param
        if conv.axis not in (1, -3):
            raise self.error(f"channel axis {conv.axis} is not supported (only 1)")
        if len(bottom_shapes[0]) != 4:
            raise self.error(f"expected a 4-D bottom (N, C, H, W), found shape {bottom_shapes[0]}")
        p = param.convolution_param
        window = read_window(param, self.location)
        if window.kernel is None:
            raise self.error("convolution_param needs kernel_size or kernel_h and kernel_w")
        self.kernel, self.pad, self.stride, self.dilation = window.kernel, window.pad, window.stride, window.dilation
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("convolution_param.num_output must be set")
        self.group = p.group
        channels = bottom_shapes[0][1]
        if self.group == 0 or channels % self.group or p.num_output % self.group:
            raise self.error(
                f"input channels ({channels}) and num_output ({p.num_output}) must be divisible by group ({self.group})"
            )
        self.in_channels = channels
        if self.transposed:
            weight_shape = (channels, p.num_output // self.group, *self.kernel)
        else:
            weight_shape = (p.num_output, channels // self.group, *self.kernel)
        self.add_blob(weight_shape, p.weight_filler)
        self.bias_term = p.bias_term
        if self.bias_term:
            self.add_blob((p.num_output,), p.bias_filler)

    def check_input(self, x: Tensor) -> None:
        """FormatError unless x is (N, C_in, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise self.bad_input(f"expected input (N, {self.in_channels}, H, W), found {tuple(x.shape)}")

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        weight = self.blob(0)
        bias = self.blob(1) if self.bias_term else None
        tops = []
        for x in bottoms:
            self.check_input(x)
            if self.transposed:
                tops.append(F.conv_transpose2d(x, weight, bias, self.stride, self.pad, 0, self.group, self.dilation))
            else:
                tops.append(F.conv2d(x, weight, bias, self.stride, self.pad, self.dilation, self.group))
        return tops


class Convolution(_ConvolutionBase):
    """Caffe Convolution: weight (C_out, C_in/group, kh, kw), output floor((H + 2p - d(k-1) - 1)/s) + 1."""


class Deconvolution(_ConvolutionBase):
    """Caffe Deconvolution: weight (C_in, C_out/group, kh, kw), output s(H - 1) + d(k-1) + 1 - 2p."""

    transposed = True
