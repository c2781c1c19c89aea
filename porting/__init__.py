"""Caffe formats and semantics in PyTorch: read nets and weights, run them as Caffe does.

net = porting.load("deploy.prototxt", "weights.caffemodel")   # a torch.nn.Module
net = porting.load("model.safetensors")   # or "model.pt": a converted checkpoint (python -m porting.convert)
scores = net(x)["score"]          # x: float32 NCHW, BGR, mean-subtracted (net.transform(image) makes it)
per_layer = net.trace(x)          # every layer's output as that layer computed it
"""

from porting.caffemodel import iter_caffemodel, read_caffemodel, write_caffemodel
from porting.checkpoint import CheckpointError, load, load_checkpoint, save_checkpoint
from porting.errors import (
    CaffemodelError,
    FcnError,
    FormatError,
    PrototxtError,
    ShapeMismatchError,
    UnsupportedLayerError,
)
from porting.layers import LAYER_TYPES
from porting.net import CaffeNet, LoadReport, ParamInfo
from porting.prototxt import parse_prototxt, parse_solver, read_prototxt, read_solver, to_text

__all__ = [
    "LAYER_TYPES",
    "CaffeNet",
    "CaffemodelError",
    "CheckpointError",
    "FcnError",
    "FormatError",
    "LoadReport",
    "ParamInfo",
    "PrototxtError",
    "ShapeMismatchError",
    "UnsupportedLayerError",
    "iter_caffemodel",
    "load",
    "load_checkpoint",
    "parse_prototxt",
    "parse_solver",
    "read_caffemodel",
    "read_prototxt",
    "read_solver",
    "save_checkpoint",
    "to_text",
    "write_caffemodel",
]
