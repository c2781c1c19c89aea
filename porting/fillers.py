"""Caffe's weight fillers, so a layer without trained weights starts where Caffe would.

Fan-in / fan-out follow Caffe's `filler.hpp`: fan_in = count / shape[0],
fan_out = count / shape[1]. The bilinear kernel is Caffe's (every (out, in) slice gets
the same kernel, `bilinear_filter`); the diagonal weight FCN's surgery builds from it lives in
`porting.surgery`.
"""

from __future__ import annotations

import math

import torch

from porting.errors import PrototxtError
from porting.proto import caffe_pb2

FILLER_TYPES = ("constant", "gaussian", "uniform", "xavier", "msra", "bilinear", "positive_unitball")


def _fan(shape: tuple[int, ...], variance_norm: int) -> float:
    count = math.prod(shape)
    fan_in = count / shape[0]
    fan_out = count / shape[1] if len(shape) > 1 else count
    if variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    if variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2
    return fan_in


def bilinear_filter(size: int) -> torch.Tensor:
    """The (size, size) float32 bilinear interpolation filter: Caffe's BilinearFiller, which is also the
    authors' `upsample_filt` (their factor (size + 1) // 2 is Caffe's f = ceil(size / 2), their center
    is Caffe's c * f = (size - 1) / 2): tap (y, x) weighs (1 - |x / f - c|) * (1 - |y / f - c|).

    Args:
        size: the kernel size (2 * factor for upsampling by `factor`).

    Returns:
        The filter, computed in float64 and rounded once.
    """
    f = math.ceil(size / 2)
    c = (size - 1) / (2.0 * f)
    axis = 1 - torch.abs(torch.arange(size, dtype=torch.float64) / f - c)
    return (axis[:, None] * axis[None, :]).to(torch.float32)


def _sparsify(values: torch.Tensor, sparse: int, generator: torch.Generator | None) -> torch.Tensor:
    keep = sparse / values.shape[0]
    mask = torch.rand(values.shape, generator=generator) < keep
    return values * mask


def fill(
    filler: caffe_pb2.FillerParameter,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    where: str = "filler",
) -> torch.Tensor:
    """A float32 CPU tensor of `shape` filled as Caffe's filler `filler.type` would."""
    kind = filler.type
    shape = tuple(int(d) for d in shape)
    if kind == "constant":
        return torch.full(shape, filler.value, dtype=torch.float32)
    if kind == "uniform":
        return torch.empty(shape).uniform_(filler.min, filler.max, generator=generator)
    if kind == "gaussian":
        values = torch.empty(shape).normal_(filler.mean, filler.std, generator=generator)
        return _sparsify(values, filler.sparse, generator) if filler.sparse >= 0 else values
    if kind == "positive_unitball":
        values = torch.rand(shape, generator=generator)
        rows = values.reshape(shape[0], -1)
        return (rows / rows.sum(dim=1, keepdim=True)).reshape(shape)
    if kind == "xavier":
        scale = math.sqrt(3.0 / _fan(shape, filler.variance_norm))
        return torch.empty(shape).uniform_(-scale, scale, generator=generator)
    if kind == "msra":
        std = math.sqrt(2.0 / _fan(shape, filler.variance_norm))
        return torch.empty(shape).normal_(0.0, std, generator=generator)
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise PrototxtError(where, f"bilinear filler needs a 4-D blob with square kernels, got shape {shape}")
        return bilinear_filter(shape[3]).expand(shape).contiguous()
    raise PrototxtError(where, f"unknown filler type '{kind}'; supported: {', '.join(FILLER_TYPES)}")
