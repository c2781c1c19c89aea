"""VGG16 is defined once (prototxt.vgg16); the FCN nets, the demo's V1 base net and the port
benchmark's file all come from that definition."""

from __future__ import annotations

import math

from bench import port
from porting.prototxt import parse_prototxt
from porting.upgrade import downgrade_net, upgrade_net
from prototxt import fcn, vgg16
from reproduce.basenet import base_net_text

#: weights of the ILSVRC VGG16 classifier (configuration D) as the released caffemodel holds them
VGG16_WEIGHTS = 138_357_544


def test_classifier_has_vgg16s_weights():
    assert port.vgg16_params() == VGG16_WEIGHTS
    shapes = port.vgg16_shapes()
    assert shapes["fc6"][0] == (4096, 512 * 7 * 7) and shapes["fc8"][0] == (1000, 4096)
    assert len(shapes) == port.LEARNED_LAYERS == 16


def test_fcn_trunk_is_the_classifiers():
    classifier = {layer.name: layer for layer in vgg16.classifier().to_proto().layer}
    voc = fcn.build("voc-fcn32s", "deploy")
    trunk = [
        layer
        for layer in voc.layer
        if layer.name.startswith(("conv", "relu", "pool"))
        and layer.name[-1].isdigit()
        and not layer.name.startswith(("relu6", "relu7"))
    ]
    assert len(trunk) == 13 * 2 + 5
    for layer in trunk:
        ours = classifier[layer.name]
        assert (layer.type, list(layer.top)) == (ours.type, list(ours.top)), layer.name
        if layer.type == "Convolution":
            expected = 100 if layer.name == "conv1_1" else 1
            assert list(layer.convolution_param.pad) == [expected]
            assert layer.convolution_param.num_output == ours.convolution_param.num_output


def test_v1_text_upgrades_back_to_the_definition():
    net = vgg16.classifier(21, width=1 / 8).to_proto()
    v1 = downgrade_net(net)
    assert not v1.layer and len(v1.layers) == len(net.layer) - 1 and list(v1.input_dim) == [1, 3, 224, 224]
    back = upgrade_net(v1)
    assert [(layer.name, layer.type, list(layer.bottom), list(layer.top)) for layer in back.layer[1:]] == [
        (layer.name, layer.type, list(layer.bottom), list(layer.top)) for layer in net.layer[1:]
    ]
    assert [layer.convolution_param for layer in back.layer[1:]] == [layer.convolution_param for layer in net.layer[1:]]


def test_demo_base_net_is_the_v1_classifier():
    text = base_net_text(21, 1 / 8)
    assert "layers {" in text and "input_dim: 224" in text
    parsed = parse_prototxt(text)
    fc8 = [layer for layer in parsed.layer if layer.name == "fc8"][0]
    assert fc8.inner_product_param.num_output == 21 and fc8.inner_product_param.weight_filler.type == "msra"
    conv1 = parsed.layer[1].convolution_param
    assert math.isclose(conv1.weight_filler.std, math.sqrt(2 / 27) / 64, rel_tol=1e-5)
