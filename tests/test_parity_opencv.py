"""Layer-by-layer parity of the reference VOC nets with OpenCV's Caffe importer.

Every layer's output (OpenCV `forward(names)`, fusion off; in-place ReLU outputs are
reported per layer, so `conv1_1` is pre-ReLU on both sides) must agree with
`CaffeNet.trace` to 1e-4 relative (max abs diff / max abs reference), on odd input
sizes, with seeded He-scaled random weights written by our caffemodel writer.
Reduced width (num_output / 16 except the 21-class score layers) covers all nets,
sizes and both upsampling initializations; full width covers every net at every size
(random upsampling for FCN-32s/16s/8s-atonce, bilinear for FCN-8s) and the authors' demo
image through FCN-8s.
"""

import gc

import numpy as np
import pytest
import torch

from helpers import (
    VOC_NETS,
    demo_image,
    deploy_net,
    opencv_forward,
    opencv_net,
    randomize,
    relative_difference,
    write_net,
)
from porting import CaffeNet

TOL = 1e-4
SIZES = [(37, 53), (64, 64), (101, 77)]


def layer_differences(net: CaffeNet, cv_net, x: np.ndarray) -> dict[str, float]:
    names = [name for name, layer in net.layers.items() if not layer.is_input]
    reference = opencv_forward(cv_net, {"data": x}, names)
    trace = net.trace(torch.from_numpy(x))
    assert list(trace)[1:] == names
    assert trace["score"].shape[2:] == x.shape[2:]
    return {name: relative_difference(trace[name].numpy(), reference[name]) for name in names}


def random_image(size, seed) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, *size), dtype=np.float32) * np.float32(60)


def assert_parity(diffs: dict[str, float], label: str) -> None:
    worst = max(diffs, key=diffs.get)
    print(f"{label}: max relative difference {diffs[worst]:.2e} at {worst} over {len(diffs)} layers")
    failing = {name: d for name, d in diffs.items() if not d < TOL}
    assert not failing, f"{label}: {failing}"


@pytest.mark.parametrize("upsampling", ["bilinear", "random"])
@pytest.mark.parametrize("name", VOC_NETS)
def test_reduced_width_all_sizes(tmp_path, name, upsampling):
    net = randomize(CaffeNet(deploy_net(name, width_divisor=16)), seed=11, bilinear_deconv=upsampling == "bilinear")
    cv_net = opencv_net(*write_net(net, tmp_path))
    for index, size in enumerate(SIZES):
        assert_parity(layer_differences(net, cv_net, random_image(size, index)), f"{name} /16 {upsampling} {size}")


@pytest.fixture(scope="module")
def full_fcn8s(tmp_path_factory):
    """Full-width FCN-8s (~540 MB caffemodel), written once for this module."""
    net = randomize(CaffeNet(deploy_net("voc-fcn8s")), seed=5, bilinear_deconv=True)
    prototxt, caffemodel = write_net(net, tmp_path_factory.mktemp("fcn8s"))
    cv_net = opencv_net(prototxt, caffemodel)
    caffemodel.unlink()
    yield net, cv_net
    del net, cv_net
    gc.collect()


@pytest.mark.parametrize("name", [n for n in VOC_NETS if n != "voc-fcn8s"])
def test_full_width_all_sizes(tmp_path, name):
    net = randomize(CaffeNet(deploy_net(name)), seed=6, bilinear_deconv=False)
    prototxt, caffemodel = write_net(net, tmp_path)
    cv_net = opencv_net(prototxt, caffemodel)
    caffemodel.unlink()
    for index, size in enumerate(SIZES):
        assert_parity(layer_differences(net, cv_net, random_image(size, 3 + index)), f"{name} full {size}")


def test_full_width_fcn8s_all_sizes(full_fcn8s):
    net, cv_net = full_fcn8s
    for index, size in enumerate(SIZES):
        assert_parity(layer_differences(net, cv_net, random_image(size, 7 + index)), f"voc-fcn8s full {size}")


def test_demo_image_full_width_fcn8s(full_fcn8s):
    net, cv_net = full_fcn8s
    image = demo_image()
    assert image.shape[:2] == (1, 3)
    diffs = layer_differences(net, cv_net, image)
    assert_parity(diffs, f"voc-fcn8s full, demo image {image.shape[2:]}")
