"""Shared test helpers: the authors' reference files, random weights, and OpenCV's Caffe importer
as the independent reference implementation."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from porting import CaffeNet, parse_prototxt, read_prototxt, to_text, write_caffemodel
from porting.proto import caffe_pb2
from porting.surgery import bilinear_kernel

VOC_NETS = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce")
MEAN_BGR = (104.00699, 116.66877, 122.67892)


def net_from_text(text: str, phase: str = "TEST", input_shapes=None) -> CaffeNet:
    return CaffeNet(parse_prototxt(text, source="<test>"), phase=phase, input_shapes=input_shapes)


def layer_net(layers: str, **inputs: tuple[int, ...]) -> CaffeNet:
    """A net of one Input layer per keyword (blob name -> shape) followed by `layers` (prototxt text)."""
    heads = "".join(
        f'layer {{ name: "in_{name}" type: "Input" top: "{name}" '
        f"input_param {{ shape {{ {' '.join(f'dim: {d}' for d in shape)} }} }} }}\n"
        for name, shape in inputs.items()
    )
    return net_from_text(heads + layers)


def random_inputs(net: CaffeNet, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(net.input_shapes[name], dtype=np.float32) * np.float32(scale) for name in net.inputs
    }


def randomize(net: CaffeNet, seed: int = 0, bilinear_deconv: bool = False) -> CaffeNet:
    """He-scaled Gaussian weights (activations stay O(1) through deep ReLU stacks), small
    random biases; Deconvolutions bilinear (diagonal, as FCN's surgery) or random too."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for name, layer in net.layers.items():
        shapes = layer.blob_shapes()
        if not shapes:
            continue
        arrays = []
        for index, shape in enumerate(shapes):
            if layer.layer_type == "Deconvolution" and index == 0 and bilinear_deconv:
                arrays.append(
                    bilinear_kernel(shape[0], shape[2])
                    if shape[1] == shape[0]
                    else np.repeat(bilinear_kernel(1, shape[2]), shape[0], 0)
                )
                continue
            if layer.layer_type == "Deconvolution" and index == 0:
                fan_in = shape[0] * shape[2] * shape[3] / (layer.stride[0] * layer.stride[1])
            elif len(shape) >= 2:
                fan_in = math.prod(shape[1:])
            else:
                fan_in = 0
            std = math.sqrt(2.0 / fan_in) if fan_in else 0.1
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
            arrays.append(values + 1 if layer.layer_type == "Scale" else values)
        blobs[name] = arrays
    net.load_blobs(blobs, strict=True)
    return net


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference| (the project's parity measure)."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, f"shape {ours.shape} vs reference {reference.shape}"
    scale = np.abs(reference).max()
    return float(np.abs(ours - reference).max() / scale) if scale > 0 else float(np.abs(ours).max())


def write_net(net: CaffeNet, directory: Path, stem: str = "net") -> tuple[Path, Path]:
    """The net's definition and weights as Caffe files (our text writer and caffemodel writer)."""
    prototxt, caffemodel = directory / f"{stem}.prototxt", directory / f"{stem}.caffemodel"
    prototxt.write_text(to_text(net.net_param))
    write_caffemodel(net, caffemodel)
    return prototxt, caffemodel


def opencv_net(prototxt: Path, caffemodel: Path) -> cv2.dnn.Net:
    """OpenCV's Caffe importer, CPU, plain OpenCV backend, no layer fusion (each layer reported as computed)."""
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    cv_net.enableFusion(False)
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return cv_net


def opencv_forward(cv_net: cv2.dnn.Net, inputs: dict[str, np.ndarray], layers: list[str]) -> dict[str, np.ndarray]:
    for name, value in inputs.items():
        cv_net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
    return dict(zip(layers, cv_net.forward(layers)))


def compare_with_opencv(
    net: CaffeNet, tmp_path: Path, inputs: dict[str, np.ndarray], layers: list[str] | None = None
) -> dict[str, float]:
    """Relative difference per layer between `net.trace` and OpenCV on the same files."""
    prototxt, caffemodel = write_net(net, tmp_path)
    trace = net.trace(**{k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in inputs.items()})
    layers = layers or [name for name in trace if not net.layers[name].is_input]
    reference = opencv_forward(opencv_net(prototxt, caffemodel), inputs, layers)
    return {name: relative_difference(trace[name].numpy(), reference[name]) for name in layers}


def deploy_net(reference: Path, name: str, width_divisor: int = 1) -> caffe_pb2.NetParameter:
    """A deploy form of a reference VOC net (`reference`: the fixture's fcn-berkeleyvision folder):
    deploy.prototxt where the authors give one, else val.prototxt with its Python data layer
    replaced by an Input layer and the loss dropped. `width_divisor` divides every num_output
    except the class-score layers' (21)."""
    directory = reference / name
    if (directory / "deploy.prototxt").exists():
        net = read_prototxt(directory / "deploy.prototxt")
    else:
        net = read_prototxt(directory / "val.prototxt")
        data = net.layer[0]
        assert data.type == "Python" and list(data.top) == ["data", "label"]
        data.Clear()
        data.name, data.type = "input", "Input"
        data.top.append("data")
        data.input_param.shape.add().dim.extend([1, 3, 500, 500])
        kept = [layer for layer in net.layer if "label" not in layer.bottom]
        del net.layer[:]
        net.layer.extend(kept)
    if width_divisor > 1:
        for layer in net.layer:
            conv = layer.convolution_param
            if layer.type == "Convolution" and conv.num_output != 21:
                conv.num_output = max(1, conv.num_output // width_divisor)
    return net


def demo_image(reference: Path) -> np.ndarray:
    """The authors' demo image as the net's input: (1, 3, H, W) BGR float32, mean subtracted."""
    bgr = cv2.imread(str(reference / "demo" / "image.jpg"), cv2.IMREAD_COLOR).astype(np.float32)
    return (bgr - np.array(MEAN_BGR, dtype=np.float32)).transpose(2, 0, 1)[None].copy()
