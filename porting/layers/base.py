"""The interface every Caffe layer module implements, and helpers they share."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from porting import fillers
from porting.errors import FormatError, PrototxtError
from porting.proto import caffe_pb2
from porting.prototxt import MAX_BLOB_COUNT

Shape = tuple[int, ...]


class CaffeLayer(nn.Module):
    """One Caffe layer: bottoms in, a list of tops out, never writing into its inputs.

    Learnable blobs are parameters named "0", "1", ... (Caffe's blob index), created on
    the meta device with their filler remembered; `reset_parameters` materializes them,
    so the net can infer shapes first and skip filling giant blobs twice.
    """

    #: layers whose tops are fed by the caller instead of computed (Input, data layers)
    is_input = False

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__()
        self.layer_name = param.name
        self.layer_type = param.type
        self.phase = phase
        self.num_bottoms = len(param.bottom)
        self.num_tops = len(param.top)
        self._fillers: list[caffe_pb2.FillerParameter] = []

    @property
    def location(self) -> str:
        """How errors name this layer: `layer 'name' (Type)`."""
        return f"layer '{self.layer_name}' ({self.layer_type})"

    def error(self, message: str) -> PrototxtError:
        """An error located at this layer, for definitions that make no valid layer."""
        return PrototxtError(self.location, message)

    def bad_input(self, message: str) -> FormatError:
        """An error for run-time inputs that do not fit this layer (wrong rank, channels, size)."""
        return FormatError(f"layer '{self.layer_name}' ({self.layer_type}): {message}")

    def expect_bottoms(self, *counts: int) -> None:
        if self.num_bottoms not in counts:
            wanted = " or ".join(str(c) for c in counts)
            raise self.error(f"expected {wanted} bottom blob(s), found {self.num_bottoms}")

    def add_blob(self, shape: Shape, filler: caffe_pb2.FillerParameter) -> None:
        """Register the next learnable blob (index = number registered so far).

        Its size is checked here, from the shape alone, so a definition whose fields are each
        plausible but whose product is absurd fails before anything is allocated.
        """
        index = len(self._fillers)
        shape = tuple(int(d) for d in shape)
        count = math.prod(shape)
        if count > MAX_BLOB_COUNT:
            raise self.error(f"blob {index} of shape {shape} holds {count} values, more than {MAX_BLOB_COUNT}")
        self.register_parameter(str(index), nn.Parameter(torch.empty(shape, device="meta")))
        self._fillers.append(filler)

    def blob(self, index: int) -> nn.Parameter:
        return getattr(self, str(index))

    def blobs(self) -> list[nn.Parameter]:
        return [self.blob(i) for i in range(len(self._fillers))]

    def blob_shapes(self) -> list[Shape]:
        """Caffe shapes of the learnable blobs, in blob-index order."""
        return [tuple(b.shape) for b in self.blobs()]

    def set_blob(self, index: int, values: Tensor) -> None:
        """Make `values` (same shape) blob `index` itself, without a copy; the parameter is replaced."""
        self.register_parameter(str(index), nn.Parameter(values, requires_grad=self.blob(index).requires_grad))

    def reset_parameters(self, generator: torch.Generator | None = None, *, unset_only: bool = False) -> None:
        """Fill the learnable blobs with their Caffe fillers (on CPU); `unset_only`: just those still on meta."""
        where = f"layer '{self.layer_name}'"
        for index, filler in enumerate(self._fillers):
            blob = self.blob(index)
            if not unset_only or blob.is_meta:
                self.set_blob(index, fillers.fill(filler, tuple(blob.shape), generator, where))

    def infer_tops(self, *bottoms: Tensor) -> list[Tensor]:
        """The tops for meta-tensor bottoms, for shape inference; a layer that makes values
        of its own (DummyData) answers with meta tensors here."""
        return self(*bottoms)

    #: each layer type defines `forward(self, <one tensor per bottom>) -> list[Tensor]` (one per top)
    forward: Callable[..., list[Tensor]]


def constant_filler(value: float) -> caffe_pb2.FillerParameter:
    return caffe_pb2.FillerParameter(type="constant", value=value)


def canonical_axis(layer: CaffeLayer, axis: int, num_axes: int) -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    if not -num_axes <= axis < num_axes:
        raise layer.error(f"axis {axis} out of range for a {num_axes}-D blob")
    return axis % num_axes
