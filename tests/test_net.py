"""CaffeNet: graph execution, trace, phases, parameter specs, weight loading, checkpoints."""

import numpy as np
import pytest
import torch

import porting
from helpers import REFERENCE, layer_net, net_from_text, randomize
from porting import CaffeNet, CheckpointError, FormatError, ShapeMismatchError, read_prototxt
from porting.checkpoint import save_checkpoint

SMALL = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 500 dim: 500 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" include { phase: TRAIN } }
layer { name: "pool.1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool1" top: "score" param { lr_mult: 0 }
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "aux" type: "Convolution" bottom: "pool1" top: "aux" exclude { phase: TEST }
        convolution_param { num_output: 2 kernel_size: 1 } }
"""


@pytest.fixture
def small():
    return randomize(net_from_text(SMALL), seed=0)


def test_inputs_outputs_and_any_input_size(small):
    assert small.inputs == ["data"] and small.outputs == ["score"]
    for size in [(17, 9), (64, 64), (5, 31)]:
        out = small(torch.randn(2, 3, *size))
        assert out["score"].shape == (2, 2, (size[0] + 1) // 2, (size[1] + 1) // 2)


def test_trace_keeps_pre_relu_values_unaliased(small):
    x = torch.randn(1, 3, 8, 8)
    trace = small.trace(x)
    assert list(trace) == ["data", "conv1", "relu1", "pool.1", "score"]
    assert (trace["conv1"] < 0).any() and (trace["relu1"] >= 0).all()
    np.testing.assert_array_equal(trace["relu1"].numpy(), trace["conv1"].clamp_min(0).numpy())


def test_phase_rules():
    test_net, train_net = net_from_text(SMALL, "TEST"), net_from_text(SMALL, "TRAIN")
    assert "drop1" not in test_net.layers and "aux" not in test_net.layers
    assert {"drop1", "aux"} <= set(train_net.layers) and set(train_net.outputs) == {"score", "aux"}


def test_param_specs_default_to_one(small):
    specs = {(s.layer, s.index): (s.lr_mult, s.decay_mult) for s in small.param_specs()}
    assert specs == {("conv1", 0): (1, 1), ("conv1", 1): (2, 0), ("score", 0): (0, 1), ("score", 1): (1, 1)}
    assert all(s.parameter is small.layers[s.layer].blob(s.index) for s in small.param_specs())


def test_state_dict_keys_and_blobs_numpy(small):
    assert set(small.state_dict()) == {"conv1.0", "conv1.1", "score.0", "score.1"}
    blobs = small.blobs_numpy()
    assert [b.shape for b in blobs["conv1"]] == [(4, 3, 3, 3), (4,)]
    dotted = layer_net('layer { name: "a.b" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 1 kernel_size: 1 } }', x=(1, 1, 2, 2))
    assert set(dotted.state_dict()) == {"a\u2024b.0", "a\u2024b.1"} and set(dotted.blobs_numpy()) == {"a.b"}


def test_load_blobs_shape_mismatch_is_located(small):
    with pytest.raises(ShapeMismatchError) as info:
        small.load_blobs({"conv1": [np.zeros((4, 3, 5, 5), np.float32), np.zeros(4, np.float32)]}, source="w.caffemodel")
    message = str(info.value)
    assert "w.caffemodel" in message and "'conv1'" in message and "blob 0" in message
    assert "(4, 3, 3, 3)" in message and "(4, 3, 5, 5)" in message


def test_load_blobs_accepts_legacy_dims_and_reports():
    net = layer_net('layer { name: "fc6" type: "InnerProduct" bottom: "x" top: "fc6" inner_product_param { num_output: 4 } }', x=(1, 3, 2, 2))
    weight = np.arange(48, dtype=np.float32)
    report = net.load_blobs({"fc6": [weight.reshape(1, 1, 4, 12), np.ones((1, 1, 1, 4), np.float32)], "fc8": [np.zeros(2)]})
    assert report.loaded == ["fc6"] and report.ignored == ["fc8"] and report.missing == []
    np.testing.assert_array_equal(net.blobs_numpy()["fc6"][0], weight.reshape(4, 12))
    with pytest.raises(ShapeMismatchError):
        net.load_blobs({"fc6": [weight.reshape(1, 1, 12, 4), np.ones(4, np.float32)]})
    with pytest.raises(FormatError, match="fc8"):
        net.load_blobs({"fc8": [np.zeros(2)]}, strict=True)


def test_wrong_input_names_the_layer(small):
    with pytest.raises(FormatError, match="layer 'conv1'.*\\(1, 4, 8, 8\\)"):
        small(torch.zeros(1, 4, 8, 8))
    with pytest.raises(FormatError, match="layer 'conv1'"):
        small(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="data"):
        small(nope=torch.zeros(1, 3, 8, 8))


def test_multiple_inputs_outputs_and_in_place_eltwise():
    net = layer_net(
        'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "a" }'
        'layer { name: "neg" type: "ReLU" bottom: "b" top: "c" relu_param { negative_slope: -1 } }',
        a=(1, 2), b=(1, 2),
    )
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, -4.0]])
    out = net(b=b, a=a)
    assert set(out) == {"a", "c"}
    np.testing.assert_array_equal(out["a"].numpy(), [[4, -6]])
    np.testing.assert_array_equal(out["c"].numpy(), [[3, 4]])


def test_val_net_with_python_data_layer_needs_label():
    net = CaffeNet(read_prototxt(REFERENCE / "voc-fcn32s" / "val.prototxt"), input_shapes={"data": (1, 3, 64, 64), "label": (1, 1, 64, 64)})
    assert net.inputs == ["data", "label"] and net.outputs == ["loss"]
    assert net.data_layers["data"].params["split"] == "seg11valid"
    with pytest.raises(TypeError, match="label"):
        net(torch.zeros(1, 3, 64, 64))
    loss = net(torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 64, 64))["loss"]
    # zero weights: uniform scores over 21 classes, normalize: false -> sum over pixels / batch
    assert loss.item() == pytest.approx(64 * 64 * np.log(21), rel=1e-5)


def test_checkpoint_round_trip(tmp_path, small):
    path = tmp_path / "small.pt"
    save_checkpoint(small, path)
    loaded = porting.load(path)
    x = torch.randn(1, 3, 9, 11)
    np.testing.assert_array_equal(loaded(x)["score"].detach().numpy(), small(x)["score"].detach().numpy())
    assert [s.lr_mult for s in loaded.param_specs()] == [s.lr_mult for s in small.param_specs()]


def test_bad_checkpoints(tmp_path, small):
    torch.save({"format": "something-else", "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="fcn-faithfully/1"):
        porting.load(tmp_path / "other.pt")
    save_checkpoint(small, tmp_path / "good.pt")
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    payload["state_dict"]["conv1.0"] = torch.zeros(1)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="conv1"):
        porting.load(tmp_path / "bad.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        porting.load(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="missing.pt"):
        porting.load(tmp_path / "missing.pt")
