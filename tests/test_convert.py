"""`python -m porting.convert`: a self-contained checkpoint that reproduces the Caffe files' net."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import net_from_text, randomize, write_net

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
