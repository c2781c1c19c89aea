"""CaffeNet: graph execution, trace, phases, parameter specs, weight loading, checkpoints."""

import re

import numpy as np
import pytest
import torch
from helpers import layer_net, net_from_text, randomize

import porting
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
    dotted = layer_net(
        'layer { name: "a.b" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 1 kernel_size: 1 } }',
        x=(1, 1, 2, 2),
    )
    assert set(dotted.state_dict()) == {"a\u2024b.0", "a\u2024b.1"} and set(dotted.blobs_numpy()) == {"a.b"}


def test_load_blobs_shape_mismatch_is_located(small):
    with pytest.raises(ShapeMismatchError) as info:
        small.load_blobs(
            {"conv1": [np.zeros((4, 3, 5, 5), np.float32), np.zeros(4, np.float32)]}, source="w.caffemodel"
        )
    message = str(info.value)
    assert "w.caffemodel" in message and "'conv1'" in message and "blob 0" in message
    assert "(4, 3, 3, 3)" in message and "(4, 3, 5, 5)" in message


def test_load_blobs_accepts_legacy_dims_and_reports():
    net = layer_net(
        'layer { name: "fc6" type: "InnerProduct" bottom: "x" top: "fc6" inner_product_param { num_output: 4 } }',
        x=(1, 3, 2, 2),
    )
    weight = np.arange(48, dtype=np.float32)
    report = net.load_blobs(
        {"fc6": [weight.reshape(1, 1, 4, 12), np.ones((1, 1, 1, 4), np.float32)], "fc8": [np.zeros(2)]}
    )
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
        a=(1, 2),
        b=(1, 2),
    )
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, -4.0]])
    out = net(b=b, a=a)
    assert set(out) == {"a", "c"}
    np.testing.assert_array_equal(out["a"].numpy(), [[4, -6]])
    np.testing.assert_array_equal(out["c"].numpy(), [[3, 4]])


def test_val_net_with_python_data_layer_needs_label(reference):
    net = CaffeNet(
        read_prototxt(reference / "voc-fcn32s" / "val.prototxt"),
        input_shapes={"data": (1, 3, 64, 64), "label": (1, 1, 64, 64)},
    )
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


def ip_chain(width: int, outputs: list[int]) -> str:
    """Input (1, width) followed by InnerProduct layers ip0, ip1, ... of the given num_outputs."""
    text = f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 1 dim: {width} }} }} }}\n'
    bottom = "x"
    for index, out in enumerate(outputs):
        text += (
            f'layer {{ name: "ip{index}" type: "InnerProduct" bottom: "{bottom}" top: "ip{index}" '
            f"inner_product_param {{ num_output: {out} bias_term: false }} }}\n"
        )
        bottom = f"ip{index}"
    return text


def test_weight_sizes_are_bounded_before_allocation():
    from porting.net import MAX_NET_PARAMS
    from porting.prototxt import MAX_BLOB_COUNT

    # each blob is exactly at the per-blob bound; the third one takes the net past its total bound
    per_blob = 2**15 * 2**16
    assert per_blob == MAX_BLOB_COUNT and 2 * per_blob <= MAX_NET_PARAMS < 3 * per_blob
    text = ip_chain(2**15, [2**16, 2**15, 2**16])
    with pytest.raises(porting.PrototxtError, match=rf"big.prototxt: layer 'ip2'.*{3 * per_blob}.*{MAX_NET_PARAMS}"):
        CaffeNet(porting.parse_prototxt(text), source="big.prototxt")
    with pytest.raises(porting.PrototxtError, match=rf"layer 'ip0'.*\(65537, 32768\).*{MAX_BLOB_COUNT}"):
        CaffeNet(porting.parse_prototxt(ip_chain(2**15, [2**16 + 1])), source="big.prototxt")


def test_net_broken_only_in_the_chosen_phase_is_rejected():
    text = SMALL + 'layer { name: "again" type: "ReLU" bottom: "pool1" top: "score" include { phase: TEST } }\n'
    net_param = porting.parse_prototxt(text)  # valid in TRAIN
    assert "again" not in CaffeNet(net_param, phase="TRAIN").layers
    with pytest.raises(porting.PrototxtError, match="n.prototxt: layer 'again': top 'score' is already produced"):
        CaffeNet(net_param, phase="TEST", source="n.prototxt")


def test_cycle_is_named_as_such():
    text = SMALL.replace('bottom: "pool1" top: "score"', 'bottom: "later" top: "score"')
    text += 'layer { name: "late" type: "ReLU" bottom: "score" top: "later" }\n'
    with pytest.raises(porting.PrototxtError, match="layer 'score'.*only by the later layer 'late'.*a cycle"):
        porting.parse_prototxt(text, source="c.prototxt")


@pytest.mark.parametrize(
    "change, says",
    [
        (
            ("pool: MAX kernel_size: 2", "pool: MAX kernel_size: 900"),
            "layer 'pool.1' \\(Pooling\\): input 500x500 is too small",
        ),
        (('type: "ReLU"', 'type: "Frobnicate"'), "layer 'relu1': type 'Frobnicate' is not supported"),
        (
            ("num_output: 2 kernel_size: 1", "num_output: 2 kernel_size: 1 weight_filler { type: 'nope' }"),
            "layer 'score'.*unknown filler type 'nope'",
        ),
    ],
)
def test_build_errors_name_the_file(tmp_path, change, says):
    path = tmp_path / "broken.prototxt"
    path.write_text(SMALL.replace(*change))
    with pytest.raises(FormatError, match=f"^{path}: {says}") as info:
        porting.load(path)
    assert isinstance(info.value, (porting.PrototxtError, porting.UnsupportedLayerError))


def test_param_str_error_names_the_construct():
    text = SMALL.replace(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 500 dim: 500 } } }',
        'layer { name: "data" type: "Python" top: "data" python_param { module: "m" layer: "L" param_str: "{\'a\': f(1)}" } }',
    )
    with pytest.raises(porting.PrototxtError) as info:
        CaffeNet(porting.parse_prototxt(text), source="p.prototxt")
    assert str(info.value) == (
        "p.prototxt: layer 'data' (Python): param_str must be a Python literal, "
        "but a function call (column 7) is not a literal: \"{'a': f(1)}\""
    )


def test_unfilled_net_adopts_writable_arrays_and_fills_the_rest():
    filled = "num_output: 2 kernel_size: 1 bias_filler { type: 'constant' value: 3 } }"
    text = SMALL.replace("num_output: 2 kernel_size: 1 }", filled, 1)
    net = CaffeNet(porting.parse_prototxt(text), fill=False)
    assert all(p.is_meta for p in net.parameters())
    weight, bias = np.ones((4, 3, 3, 3), np.float32), np.arange(4, dtype=np.float32)
    bias.flags.writeable = False
    report = net.load_blobs({"conv1": [weight, bias]})
    assert report.loaded == ["conv1"] and report.missing == ["score"]
    conv_weight, conv_bias = net.layers["conv1"].blobs()
    assert conv_weight.data_ptr() == weight.ctypes.data  # adopted, not copied
    assert conv_bias.data_ptr() != bias.ctypes.data  # a read-only array is copied
    np.testing.assert_array_equal(conv_bias.detach().numpy(), bias)
    assert not any(p.is_meta for p in net.parameters())
    np.testing.assert_array_equal(net.blobs_numpy()["score"][1], [3, 3])  # its filler
    assert [s.lr_mult for s in net.param_specs()] == [1, 2, 0, 1] and conv_weight.requires_grad


def test_filled_net_copies_instead_of_aliasing(small):
    weight = np.ones((4, 3, 3, 3), np.float32)
    small.load_blobs({"conv1": [weight, np.zeros(4, np.float32)]})
    weight[...] = 5
    assert (small.blobs_numpy()["conv1"][0] == 1).all()


def test_checkpoint_save_failures_leave_nothing(tmp_path, small):
    with pytest.raises(CheckpointError, match="no-such-dir.*does not exist"):
        save_checkpoint(small, tmp_path / "no-such-dir" / "m.pt")
    (tmp_path / "taken.pt").mkdir()  # the target is a folder: the final rename fails
    with pytest.raises(CheckpointError, match="taken.pt: cannot write"):
        save_checkpoint(small, tmp_path / "taken.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.pt"]


def test_checkpoint_recognised_by_content_and_damage_named(tmp_path, small):
    save_checkpoint(small, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(data)
    assert porting.load(renamed).outputs == ["score"]
    renamed.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.bin: truncated or damaged checkpoint"):
        porting.load(renamed)


def test_checkpoint_with_code_is_refused_briefly(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fcn-faithfully/1", "x": _Exec()}, path)
    with pytest.raises(CheckpointError) as info:
        porting.load(path)
    assert str(info.value) == f"{path}: refuses global 'builtins.exec': checkpoints hold tensors and plain data only"


class _Exec:
    def __reduce__(self):
        return (exec, ("pass",))


def test_net_without_layers_is_a_format_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.prototxt"
    empty.write_text("# a comment and nothing else\n")
    with pytest.raises(porting.FormatError, match=rf"{re.escape(str(empty))}: the net has no layers;.*empty file"):
        porting.load(empty)
    train_only = tmp_path / "train_only.prototxt"
    train_only.write_text(
        'layer { name: "x" type: "Input" top: "x" include { phase: TRAIN } input_param { shape { dim: 1 } } }\n'
    )
    with pytest.raises(porting.FormatError, match=r"no layers in phase TEST \(all 1 are excluded\)"):
        porting.load(train_only)


def test_caffemodel_matching_no_layer_is_a_format_error_naming_both(tmp_path):
    """Caffe's CopyTrainedLayersFrom matches by layer name; 2 learnable layers in the file,
    named unlike the net's 2, must not load silently as random weights."""
    text = (
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }'
        'layer { name: "{a}" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 1 kernel_size: 1 } }'
        'layer { name: "{b}" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 1 kernel_size: 1 } }'
    )
    source = porting.CaffeNet(porting.parse_prototxt(text.replace("{a}", "fc6").replace("{b}", "fc7")))
    weights = tmp_path / "other.caffemodel"
    porting.write_caffemodel(source, weights)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text.replace("{a}", "conv1").replace("{b}", "conv2"))
    with pytest.raises(
        porting.FormatError,
        match=rf"{re.escape(str(weights))}: none of its 2 layers with weights "
        rf"is named like a layer of {re.escape(str(prototxt))} "
        r"\('fc6', 'fc7' vs the net's 'conv1', 'conv2'\)",
    ):
        porting.load(prototxt, weights)
    prototxt.write_text(text.replace("{a}", "fc6").replace("{b}", "conv2"))
    assert porting.load(prototxt, weights) is not None  # one layer matching is a partial load, as in Caffe
