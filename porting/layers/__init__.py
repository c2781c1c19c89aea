"""One torch module per Caffe layer type; `LAYER_TYPES` maps Caffe's type string to it."""

from __future__ import annotations

from porting.errors import UnsupportedLayerError
from porting.layers.activation import Dropout, ReLU
from porting.layers.arithmetic import Eltwise, InnerProduct, Scale
from porting.layers.base import CaffeLayer, Shape
from porting.layers.convolution import Convolution, Deconvolution
from porting.layers.data import DataLayer, DataLayerSpec, DummyData, Input
from porting.layers.loss import Accuracy, Softmax, SoftmaxWithLoss
from porting.layers.normalization import LRN
from porting.layers.pooling import Pooling
from porting.layers.shape import Concat, Crop, Silence, Slice, Split
from porting.proto import caffe_pb2

LAYER_TYPES: dict[str, type[CaffeLayer]] = {
    "Input": Input,
    "Python": DataLayer,
    "Data": DataLayer,
    "ImageData": DataLayer,
    "HDF5Data": DataLayer,
    "MemoryData": DataLayer,
    "WindowData": DataLayer,
    "DummyData": DummyData,
    "Convolution": Convolution,
    "Deconvolution": Deconvolution,
    "Pooling": Pooling,
    "ReLU": ReLU,
    "Dropout": Dropout,
    "InnerProduct": InnerProduct,
    "Crop": Crop,
    "Eltwise": Eltwise,
    "Scale": Scale,
    "LRN": LRN,
    "Concat": Concat,
    "Slice": Slice,
    "Split": Split,
    "Silence": Silence,
    "Softmax": Softmax,
    "SoftmaxWithLoss": SoftmaxWithLoss,
    "Accuracy": Accuracy,
}

#: layer types whose first top is a loss (loss_weight defaults to 1 for them, 0 otherwise)
LOSS_TYPES = frozenset({"SoftmaxWithLoss"})


def make_layer(param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> CaffeLayer:
    """Build the module for one layer definition (parameters still on the meta device)."""
    try:
        cls = LAYER_TYPES[param.type]
    except KeyError:
        raise UnsupportedLayerError(
            f"layer '{param.name}': type '{param.type}' is not supported; supported types: {', '.join(sorted(LAYER_TYPES))}"
        ) from None
    return cls(param, bottom_shapes, phase)


__all__ = ["LAYER_TYPES", "LOSS_TYPES", "CaffeLayer", "DataLayerSpec", "make_layer"]
