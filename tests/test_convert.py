"""`python -m porting.convert`: a self-contained checkpoint that reproduces the Caffe files' net."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import net_from_text, randomize, write_net
from PIL import Image

import porting
from porting.convert import main

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "up" type: "Deconvolution" bottom: "conv1" top: "up" param { lr_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 4 stride: 2 bias_term: false } }
"""


@pytest.fixture
def caffe_files(tmp_path):
    net = randomize(net_from_text(NET), seed=7)
    prototxt, caffemodel = write_net(net, tmp_path)
    return net, prototxt, caffemodel


def test_convert_round_trip(tmp_path, caffe_files, capsys):
    net, prototxt, caffemodel = caffe_files
    out = tmp_path / "model.pt"
    assert main(["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "\r" not in err, "no progress bar drawn into a pipe"
    loaded = porting.load(out)
    x = torch.randn(1, 3, 21, 13)
    np.testing.assert_array_equal(loaded(x)["up"].detach().numpy(), net(x)["up"].detach().numpy())
    assert [s.lr_mult for s in loaded.param_specs()] == [1, 1, 0]
    direct = porting.load(prototxt, caffemodel)
    np.testing.assert_array_equal(direct(x)["up"].detach().numpy(), net(x)["up"].detach().numpy())


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--prototxt", "--caffemodel", "--out", "--phase"):
        assert option in text


def test_mismatched_weights_fail_with_one_line(tmp_path, caffe_files):
    _, prototxt, caffemodel = caffe_files
    other = tmp_path / "other.prototxt"
    other.write_text(prototxt.read_text().replace("num_output: 4", "num_output: 5", 1))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "porting.convert",
            "--prototxt",
            str(other),
            "--caffemodel",
            str(caffemodel),
            "--out",
            str(tmp_path / "x.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "'conv1'" in lines[-1] and "(5, 3, 3, 3)" in lines[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.pt").exists()


def test_missing_file_is_one_line(tmp_path, capsys):
    assert (
        main(["--prototxt", str(tmp_path / "nope.prototxt"), "--caffemodel", "w", "--out", str(tmp_path / "o.pt")]) == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.prototxt" in err and "\n" not in err


def test_layers_without_weights_get_their_fillers(tmp_path, caffe_files, capsys):
    net, prototxt, caffemodel = caffe_files
    extended = tmp_path / "extended.prototxt"
    extended.write_text(
        prototxt.read_text()
        + (
            'layer { name: "extra" type: "Convolution" bottom: "up" top: "extra" convolution_param { num_output: 2 '
            'kernel_size: 1 weight_filler { type: "constant" value: 0.5 } bias_filler { type: "constant" value: -1 } } }\n'
        )
    )
    out = tmp_path / "model.pt"
    assert main(["--prototxt", str(extended), "--caffemodel", str(caffemodel), "--out", str(out), "--quiet"]) == 0
    assert "no weights for extra" in capsys.readouterr().err
    loaded = porting.load(out).blobs_numpy()
    assert (loaded["extra"][0] == 0.5).all() and (loaded["extra"][1] == -1).all()
    np.testing.assert_array_equal(loaded["conv1"][0], net.blobs_numpy()["conv1"][0])


def test_unwritable_output_leaves_nothing(tmp_path, caffe_files, capsys):
    _, prototxt, caffemodel = caffe_files
    out = tmp_path / "absent" / "model.pt"
    assert main(["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "absent" in err and "\n" not in err
    assert not (tmp_path / "absent").exists()


def _safetensors_layout(path):
    """The file read by the format's definition (8-byte little-endian header length, JSON header,
    raw little-endian data), without the safetensors package: {key: (dtype, shape, bytes)}, metadata."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    metadata = header.pop("__metadata__")
    return {k: (v["dtype"], tuple(v["shape"]), body[slice(*v["data_offsets"])]) for k, v in header.items()}, metadata


def test_safetensors_holds_one_tensor_per_blob_and_the_net(tmp_path, caffe_files):
    from safetensors.torch import load_file

    net, prototxt, caffemodel = caffe_files
    out = tmp_path / "model.safetensors"
    argv = ["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(out), "--quiet"]
    assert main([*argv, "--format", "safetensors", "--mean", "1,2,3", "--classes-file", str(_classes(tmp_path))]) == 0
    assert not out.read_bytes().startswith(b"PK"), "no zip, no pickle"

    tensors, metadata = _safetensors_layout(out)
    blobs = net.blobs_numpy()  # the seeded values the caffemodel was written from
    expected = {f"{layer}.{i}": array for layer, arrays in blobs.items() for i, array in enumerate(arrays)}
    assert tensors.keys() == expected.keys() == net.state_dict().keys()
    for key, (dtype, shape, raw) in tensors.items():
        assert dtype == "F32" and shape == expected[key].shape and raw == expected[key].astype("<f4").tobytes()
    assert metadata["format"] == "fcn-faithfully/1" and metadata["phase"] == "TEST"
    assert json.loads(metadata["mean"]) == [1, 2, 3] and json.loads(metadata["classes"]) == ["a", "b", "c", "d"]
    assert porting.to_text(porting.parse_prototxt(metadata["net_text"], "<header>")) == porting.to_text(net.net_param)

    loaded = load_file(out)  # the ecosystem's reader gives the state_dict's tensors
    state = net.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)

    model = porting.load(out)
    assert model.metadata.mean == (1, 2, 3) and model.metadata.classes == ("a", "b", "c", "d")
    x = torch.randn(1, 3, 21, 13)
    np.testing.assert_array_equal(model(x)["up"].detach().numpy(), net(x)["up"].detach().numpy())
    assert [s.lr_mult for s in model.param_specs()] == [1, 1, 0]
    maps = Path("/proc/self/maps")
    if maps.exists():  # memory-mapped, not read: the file stays mapped while the net holds its weights
        assert str(out.resolve()) in maps.read_text()


def _classes(folder):
    path = folder / "classes.txt"
    path.write_text("a\nb\nc\nd\n")
    return path


def test_format_follows_the_suffix_and_loading_the_content(tmp_path, caffe_files):
    _, prototxt, caffemodel = caffe_files
    files = ["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--quiet", "--out"]
    assert main([*files, str(tmp_path / "a.safetensors")]) == 0
    assert main([*files, str(tmp_path / "b.pt")]) == 0
    assert main([*files, str(tmp_path / "c.weights"), "--format", "safetensors"]) == 0
    assert (
        _safetensors_layout(tmp_path / "a.safetensors")[0].keys()
        == _safetensors_layout(tmp_path / "c.weights")[0].keys()
    )
    assert (tmp_path / "b.pt").read_bytes().startswith(b"PK\x03\x04")
    x = torch.randn(1, 3, 9, 11)
    outputs = [porting.load(tmp_path / name)(x)["up"] for name in ("a.safetensors", "b.pt", "c.weights")]
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_checkpoint_flags_read_safetensors(tmp_path):
    from eval.segment import main as segment
    from porting.onnx import main as onnx

    scored = NET + (
        'layer { name: "classify" type: "Convolution" bottom: "up" top: "classes" convolution_param { num_output: 3 '
        "kernel_size: 1 } }\n"
        'layer { name: "crop" type: "Crop" bottom: "classes" bottom: "data" top: "score" crop_param { axis: 2 } }\n'
    )
    prototxt, caffemodel = write_net(randomize(net_from_text(scored), seed=3), tmp_path, "scored")
    for suffix in ("pt", "safetensors"):
        argv = ["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(tmp_path / f"m.{suffix}")]
        assert main([*argv, "--quiet"]) == 0
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(image)
    for suffix in ("pt", "safetensors"):
        checkpoint = str(tmp_path / f"m.{suffix}")
        assert segment([str(image), "--checkpoint", checkpoint, "--out", str(tmp_path / suffix), "--quiet"]) == 0
        assert onnx(["--checkpoint", checkpoint, "--out", str(tmp_path / f"m_{suffix}.onnx")]) == 0
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "pt" / "image.png")),
        np.asarray(Image.open(tmp_path / "safetensors" / "image.png")),
    )
    import onnxruntime

    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16), dtype=np.float32)
    pt, st = (
        onnxruntime.InferenceSession(str(tmp_path / f"m_{suffix}.onnx")).run(None, {"data": x})[0]
        for suffix in ("pt", "safetensors")
    )
    np.testing.assert_array_equal(pt, st)
