"""Layers combining blobs or applying learned affine maps: Eltwise, Scale, InnerProduct."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from porting.layers.base import CaffeLayer, Shape, canonical_axis, constant_filler
from porting.proto import caffe_pb2

E = caffe_pb2.EltwiseParameter


class Eltwise(CaffeLayer):
    """Caffe Eltwise: SUM (with per-bottom `coeff`), PROD, MAX over same-shaped bottoms; MAX's
    gradient goes to the one bottom Caffe picks (ties: bottom 1 over bottom 0, else the earliest)."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        if self.num_bottoms < 2:
            raise self.error(f"needs at least 2 bottoms, found {self.num_bottoms}")
        p = param.eltwise_param
        self.operation = p.operation
        self.coeff = [float(c) for c in p.coeff]
        if self.coeff and (self.operation != E.SUM or len(self.coeff) != self.num_bottoms):
            raise self.error(
                f"coeff needs operation SUM and one value per bottom ({self.num_bottoms}), found {len(self.coeff)}"
            )

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        first = bottoms[0]
        for i, b in enumerate(bottoms[1:], start=1):
            if b.shape != first.shape:
                raise self.bad_input(f"bottom {i} has shape {tuple(b.shape)}, bottom 0 has {tuple(first.shape)}")
        if self.operation == E.PROD:
            out = first * bottoms[1]
            for b in bottoms[2:]:
                out = out * b
        elif self.operation == E.MAX:
            # Caffe's choice, which its backward follows: bottom 1 unless bottom 0 is greater, then a
            # later bottom only where strictly greater (torch.maximum would split a tie's gradient)
            out = torch.where(first > bottoms[1], first, bottoms[1])
            for b in bottoms[2:]:
                out = torch.where(b > out, b, out)
        elif self.coeff:
            out = first * self.coeff[0]
            for c, b in zip(self.coeff[1:], bottoms[1:]):
                out = out + c * b
        else:
            out = first + bottoms[1]
            for b in bottoms[2:]:
                out = out + b
        return [out]


class Scale(CaffeLayer):
    """Caffe Scale: bottom 0 times a scale spanning axes [axis, axis + num_axes), plus an optional bias.

    With one bottom the scale is learned blob 0 (filler default constant 1); with two
    the scale is bottom 1. `bias_term` appends a learned bias blob (filler default 0).
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1, 2)
        p = param.scale_param
        rank = len(bottom_shapes[0])
        if self.num_bottoms == 2:
            scale_rank = len(bottom_shapes[1])
            self.axis = 0 if scale_rank == 0 else canonical_axis(self, p.axis, rank)
            scale_shape = tuple(bottom_shapes[1])
        else:
            self.axis = canonical_axis(self, p.axis, rank) if rank else 0
            if p.num_axes < -1:
                raise self.error(f"num_axes must be >= -1, found {p.num_axes}")
            end = rank if p.num_axes == -1 else self.axis + p.num_axes
            if end > rank:
                raise self.error(f"axis {self.axis} + num_axes {p.num_axes} exceeds the bottom's {rank} axes")
            scale_shape = tuple(bottom_shapes[0][self.axis : end])
            self.add_blob(scale_shape, p.filler if p.HasField("filler") else constant_filler(1.0))
        if tuple(bottom_shapes[0][self.axis : self.axis + len(scale_shape)]) != scale_shape:
            raise self.error(
                f"scale shape {scale_shape} does not match bottom {tuple(bottom_shapes[0])} at axis {self.axis}"
            )
        self.scale_rank = len(scale_shape)
        self.bias_term = p.bias_term
        if self.bias_term:
            self.add_blob(scale_shape, p.bias_filler)

    def _broadcast(self, t: Tensor, rank: int) -> Tensor:
        return t.reshape(t.shape + (1,) * (rank - self.axis - self.scale_rank))

    def forward(self, x: Tensor, *scale: Tensor) -> list[Tensor]:
        blobs = self.blobs()
        factor = scale[0] if scale else blobs.pop(0)
        out = x * self._broadcast(factor, x.dim())
        if self.bias_term:
            out = out + self._broadcast(blobs[0], x.dim())
        return [out]


class InnerProduct(CaffeLayer):
    """Caffe InnerProduct: axes >= `axis` flattened to K; weight (N, K), or (K, N) with `transpose`."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)
        p = param.inner_product_param
        if not p.num_output:
            raise self.error("inner_product_param.num_output must be set")
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self, p.axis, len(shape))
        self.in_features = math.prod(shape[self.axis :])
        self.transpose = p.transpose
        weight = (self.in_features, p.num_output) if self.transpose else (p.num_output, self.in_features)
        self.add_blob(weight, p.weight_filler)
        self.bias_term = p.bias_term
        if self.bias_term:
            self.add_blob((p.num_output,), p.bias_filler)

    def forward(self, x: Tensor) -> list[Tensor]:
        if math.prod(x.shape[self.axis :]) != self.in_features:
            raise self.bad_input(
                f"expected {self.in_features} features from axis {self.axis} on, found shape {tuple(x.shape)}"
            )
        flat = x.reshape(*x.shape[: self.axis], self.in_features)
        weight = self.blob(0).t() if self.transpose else self.blob(0)
        return [F.linear(flat, weight, self.blob(1) if self.bias_term else None)]
