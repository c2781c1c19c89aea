"""Our NetSpec emits the messages that hand-written Caffe text describes."""

import pytest

from porting.prototxt import parse_prototxt, to_text
from prototxt.netspec import NetSpec, from_proto, layers

LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]

EXPECTED = """
layer { name: "data" type: "Python" top: "data" top: "label"
        python_param { module: "voc_layers" layer: "SBDDSegDataLayer" param_str: "{'seed': 1337}" } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 8 pad: 100 kernel_size: 3 stride: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool1" top: "up" param { lr_mult: 0 }
        convolution_param { num_output: 2 bias_term: false kernel_size: 4 stride: 2 } }
layer { name: "Eltwise1" type: "Eltwise" bottom: "up" bottom: "up" top: "Eltwise1"
        eltwise_param { operation: PROD } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "Eltwise1" bottom: "label" top: "loss"
        include { phase: TRAIN } loss_weight: 1 loss_param { ignore_label: 255 normalize: false } }
"""


def _spec() -> NetSpec:
    n = NetSpec()
    n.data, n.label = layers.Python(module="voc_layers", layer="SBDDSegDataLayer", param_str="{'seed': 1337}", ntop=2)
    n.conv1 = layers.Convolution(
        n.data,
        num_output=8,
        pad=100,
        kernel_size=3,
        stride=1,
        param=LEARNED,
        weight_filler=dict(type="gaussian", std=0.01),
    )
    n.relu1 = layers.ReLU(n.conv1, in_place=True)
    n.drop1 = layers.Dropout(n.relu1, dropout_ratio=0.5, in_place=True)
    n.pool1 = layers.Pooling(n.drop1, pool="AVE", kernel_size=2, stride=2)
    n.up = layers.Deconvolution(
        n.pool1, num_output=2, bias_term=False, kernel_size=4, stride=2, param=[dict(lr_mult=0)]
    )
    fused = layers.Eltwise(n.up, n.up, operation="PROD")
    n.loss = layers.SoftmaxWithLoss(
        fused,
        n.label,
        include=dict(phase="TRAIN"),
        loss_weight=1,
        loss_param=dict(ignore_label=255, normalize=False),
    )
    return n


def test_emits_what_hand_written_caffe_text_says():
    assert _spec().to_proto() == parse_prototxt(EXPECTED)


def test_emitted_text_parses_back_to_the_same_message():
    net = _spec().to_proto()
    assert parse_prototxt(to_text(net)) == net


def test_explicit_layer_and_top_names():
    n = NetSpec()
    n.image = layers.Input(shape=dict(dim=[1, 3, 5, 5]), name="input", tops=["data"])
    n["feat"] = layers.Convolution(n.image, num_output=1, kernel_size=1)
    net = n.to_proto()
    assert [(layer.name, list(layer.top)) for layer in net.layer] == [("input", ["data"]), ("feat", ["feat"])]
    assert list(net.layer[1].bottom) == ["data"]
    assert n["feat"] is n.feat and "feat" in n


def test_unassigned_layers_emitted_bottoms_first_with_automatic_names():
    n = NetSpec()
    data = layers.Input(shape=dict(dim=[1, 1, 4, 4]))
    hidden = layers.ReLU(layers.ReLU(data))
    n.out = layers.Sigmoid(hidden)
    names = [(layer.name, list(layer.bottom), list(layer.top)) for layer in n.to_proto().layer]
    assert names == [
        ("Input1", [], ["Input1"]),
        ("ReLU1", ["Input1"], ["ReLU1"]),
        ("ReLU2", ["ReLU1"], ["ReLU2"]),
        ("out", ["ReLU2"], ["out"]),
    ]


def test_from_proto_rebuilds_the_graph_with_in_place_layers():
    net = _spec().to_proto()
    graph = from_proto(net)
    pool = graph["pool1"]
    assert pool.layer.param.type == "Pooling"
    drop = pool.layer.bottoms[0]
    assert drop.layer.param.type == "Dropout" and drop.layer.in_place
    assert drop.layer.bottoms[0].layer.param.type == "ReLU"


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: layers.Convolution(d, num_outputs=3), "ConvolutionParameter has no field 'num_outputs'"),
        (lambda d: layers.Pooling(d, pool="MEDIAN"), "'MEDIAN' is not a PoolMethod"),
        (lambda d: layers.Convolution(d, top="x"), "'top' is set by the spec"),
        (lambda d: layers.NoSuchType(d, size=1), "NoSuchType: no parameter message"),
        (lambda d: layers.ReLU(d, d, ntop=3, in_place=True), "in-place needs a bottom for each"),
    ],
)
def test_definition_mistakes_are_named(make, message):
    data = layers.Input(shape=dict(dim=[1, 1, 4, 4]))
    with pytest.raises(ValueError, match=message):
        make(data)


def test_only_tops_can_be_assigned_or_used_as_bottoms():
    n = NetSpec()
    with pytest.raises(TypeError, match="expected a Top"):
        n.x = 3
    with pytest.raises(TypeError, match="bottoms must be Top"):
        layers.ReLU("data")
    with pytest.raises(AttributeError, match="no top 'missing'"):
        n.missing  # noqa: B018 (the attribute access is what raises)


def test_lenet_with_dummy_data_and_silence_builds_and_runs():
    """pycaffe's NetSpec builds this; ours must too, and CaffeNet must run it."""
    import torch

    from porting.net import CaffeNet

    n = NetSpec()
    n.data, n.label = layers.DummyData(
        shape=[dict(dim=[2, 1, 28, 28]), dict(dim=[2])],
        data_filler=[dict(type="gaussian", std=1.0), dict(type="constant", value=3)],
        ntop=2,
    )
    n.conv1 = layers.Convolution(n.data, num_output=4, kernel_size=5, weight_filler=dict(type="xavier"))
    n.pool1 = layers.Pooling(n.conv1, kernel_size=2, stride=2, pool="MAX")
    n.ip1 = layers.InnerProduct(n.pool1, num_output=10, weight_filler=dict(type="xavier"))
    n.relu1 = layers.ReLU(n.ip1, in_place=True)
    n.loss = layers.SoftmaxWithLoss(n.relu1, n.label)
    n.silence = layers.Silence(n.conv1, ntop=0)
    proto = n.to_proto()
    assert [(layer.name, layer.type, list(layer.top)) for layer in proto.layer][-1] == ("silence", "Silence", [])
    net = CaffeNet(proto, phase="TRAIN")
    outputs = net()
    assert set(outputs) == {"loss"}
    loss = outputs["loss"]
    assert loss.shape == () and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert net.layers["conv1"].blob(0).grad.abs().sum() > 0
