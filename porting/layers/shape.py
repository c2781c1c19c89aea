"""Layers that route blobs without arithmetic: Concat, Slice, Split, Silence, Crop."""

from __future__ import annotations

import torch
from torch import Tensor

from porting.layers.base import CaffeLayer, Shape, canonical_axis
from porting.proto import caffe_pb2


class Concat(CaffeLayer):
    """Caffe Concat along `axis` (or the legacy `concat_dim`)."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        if self.num_bottoms < 1:
            raise self.error("needs at least one bottom")
        p = param.concat_param
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        self.axis = canonical_axis(self, axis, len(bottom_shapes[0]))

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        return [torch.cat(bottoms, dim=self.axis)]


class Slice(CaffeLayer):
    """Caffe Slice along `axis` at `slice_point`s, or into equal parts when none are given."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)
        p = param.slice_param
        axis = p.slice_dim if p.HasField("slice_dim") else p.axis
        self.axis = canonical_axis(self, axis, len(bottom_shapes[0]))
        self.points = [int(v) for v in p.slice_point]
        if self.points and len(self.points) != self.num_tops - 1:
            raise self.error(f"{len(self.points)} slice points for {self.num_tops} tops (need tops - 1)")
        if self.points != sorted(set(self.points)):
            raise self.error(f"slice points {self.points} must be strictly increasing")

    def forward(self, x: Tensor) -> list[Tensor]:
        extent = x.shape[self.axis]
        if self.points:
            if self.points[-1] >= extent:
                raise self.bad_input(f"slice point {self.points[-1]} beyond axis extent {extent}")
            edges = [0, *self.points, extent]
            sizes = [b - a for a, b in zip(edges, edges[1:])]
        else:
            if extent % self.num_tops:
                raise self.bad_input(f"axis extent {extent} does not split evenly into {self.num_tops} tops")
            sizes = [extent // self.num_tops] * self.num_tops
        return list(torch.split(x, sizes, dim=self.axis))


class Split(CaffeLayer):
    """Caffe Split: the same blob under several names."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x] * self.num_tops


class Silence(CaffeLayer):
    """Caffe Silence: consumes blobs so they are not net outputs."""

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        return []


class Crop(CaffeLayer):
    """Caffe Crop: bottom 0 cropped to bottom 1's extent on axes >= `axis`.

    Offsets: none -> 0 everywhere; one -> that offset on every cropped axis; otherwise
    one per cropped axis. The result is a view of bottom 0 (no copy).
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(2)
        rank = len(bottom_shapes[0])
        if len(bottom_shapes[1]) != rank:
            raise self.error(f"bottoms have different ranks: {bottom_shapes[0]} and {bottom_shapes[1]}")
        p = param.crop_param
        self.axis = canonical_axis(self, p.axis, rank)
        cropped = rank - self.axis
        offsets = [int(v) for v in p.offset]
        if len(offsets) == 0:
            offsets = [0] * cropped
        elif len(offsets) == 1:
            offsets = offsets * cropped
        elif len(offsets) != cropped:
            raise self.error(f"{len(offsets)} offsets for {cropped} cropped axes (give 0, 1 or {cropped})")
        self.offsets = offsets

    def forward(self, x: Tensor, reference: Tensor) -> list[Tensor]:
        index = [slice(None)] * self.axis
        for dim, offset in enumerate(self.offsets, start=self.axis):
            size = reference.shape[dim]
            if offset + size > x.shape[dim]:
                raise self.bad_input(
                    f"cannot crop axis {dim} of {tuple(x.shape)} at offset {offset} to the reference's "
                    f"{size} (reference shape {tuple(reference.shape)}); the input may be too small"
                )
            index.append(slice(offset, offset + size))
        return [x[tuple(index)]]
