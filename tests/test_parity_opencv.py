"""Layer-by-layer parity of the reference VOC nets with OpenCV's Caffe importer.

Every layer's output (OpenCV `forward(names)`, fusion off; in-place ReLU outputs are
reported per layer, so `conv1_1` is pre-ReLU on both sides) must agree with
`CaffeNet.trace` to 1e-4 relative (max abs diff / max abs reference), on odd input
sizes, with seeded He-scaled random weights written by our caffemodel writer.
Reduced width (num_output / 16 except the 21-class score layers) covers all nets,
sizes and both upsampling initializations; full width covers every net at every size
(random upsampling for FCN-32s/16s/8s-atonce, bilinear for FCN-8s) and the authors' demo
image through FCN-8s. Every other generated deploy net (FCN-AlexNet, PASCAL-Context,
NYUDv2 with one or two inputs, SIFT Flow with two heads) is compared at width 1/16.
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
from prototxt import nets

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
def test_reduced_width_all_sizes(tmp_path, reference, name, upsampling):
    net = randomize(
        CaffeNet(deploy_net(reference, name, width_divisor=16)), seed=11, bilinear_deconv=upsampling == "bilinear"
    )
    cv_net = opencv_net(*write_net(net, tmp_path))
    for index, size in enumerate(SIZES):
        assert_parity(layer_differences(net, cv_net, random_image(size, index)), f"{name} /16 {upsampling} {size}")


@pytest.fixture(scope="module")
def full_fcn8s(tmp_path_factory, reference):
    """Full-width FCN-8s (~540 MB caffemodel), written once for this module."""
    net = randomize(CaffeNet(deploy_net(reference, "voc-fcn8s")), seed=5, bilinear_deconv=True)
    prototxt, caffemodel = write_net(net, tmp_path_factory.mktemp("fcn8s"))
    cv_net = opencv_net(prototxt, caffemodel)
    caffemodel.unlink()
    yield net, cv_net
    del net, cv_net
    gc.collect()


@pytest.mark.parametrize("name", [n for n in VOC_NETS if n != "voc-fcn8s"])
def test_full_width_all_sizes(tmp_path, reference, name):
    net = randomize(CaffeNet(deploy_net(reference, name)), seed=6, bilinear_deconv=False)
    prototxt, caffemodel = write_net(net, tmp_path)
    cv_net = opencv_net(prototxt, caffemodel)
    caffemodel.unlink()
    for index, size in enumerate(SIZES):
        assert_parity(layer_differences(net, cv_net, random_image(size, 3 + index)), f"{name} full {size}")


def test_full_width_fcn8s_all_sizes(full_fcn8s):
    net, cv_net = full_fcn8s
    for index, size in enumerate(SIZES):
        assert_parity(layer_differences(net, cv_net, random_image(size, 7 + index)), f"voc-fcn8s full {size}")


def test_demo_image_full_width_fcn8s(full_fcn8s, reference):
    net, cv_net = full_fcn8s
    image = demo_image(reference)
    assert image.shape[:2] == (1, 3)
    diffs = layer_differences(net, cv_net, image)
    assert_parity(diffs, f"voc-fcn8s full, demo image {image.shape[2:]}")


def family_inputs(net: CaffeNet, size: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Random inputs of `size` for every input top of a generated deploy net (color, depth, hha, data)."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((1, net.input_shapes[name][1], *size), dtype=np.float32) * np.float32(60)
        for name in net.inputs
    }


@pytest.mark.parametrize("name", [net for net in nets.NETS if net not in VOC_NETS])
def test_generated_deploy_nets_of_every_family(tmp_path, name):
    """Every other generated deploy net (FCN-AlexNet's grouped convolutions and LRN, PASCAL-Context,
    NYUDv2's early and late fusion of two inputs, SIFT Flow's two heads) at width 1/16, odd sizes."""
    net = randomize(CaffeNet(nets.build(name, "deploy", width=1 / 16)), seed=13, bilinear_deconv=False)
    cv_net = opencv_net(*write_net(net, tmp_path))
    names = [layer for layer, module in net.layers.items() if not module.is_input]
    for index, size in enumerate([(37, 53), (101, 77)]):
        x = family_inputs(net, size, index)
        reference = opencv_forward(cv_net, x, names)
        trace = net.trace(**{key: torch.from_numpy(value) for key, value in x.items()})
        scores = [
            top
            for top in trace
            if top.startswith("score") and net.layers[top].layer_type == "Crop" and top in net.outputs
        ]
        assert scores and all(trace[top].shape[2:] == size for top in scores)
        diffs = {layer: relative_difference(trace[layer].numpy(), reference[layer]) for layer in names}
        assert_parity(diffs, f"{name} /16 {size}")
