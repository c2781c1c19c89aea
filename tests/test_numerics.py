"""Every entry point asks for IEEE fp32 convolutions and matmuls (Caffe's arithmetic), TF32
only when the user passes --tf32; the flags are process-wide, so no GPU is needed to check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval import table
from porting import parse_prototxt
from porting.inference import InferenceNet
from porting.net import CaffeNet
from porting.numerics import fp32_precision, onnxruntime_provider, set_fp32_precision

IEEE = {"conv": "ieee", "matmul": "ieee"}
TF32 = {"conv": "tf32", "matmul": "tf32"}


def test_helper_sets_cuda_and_onednn_flags():
    set_fp32_precision(tf32=True)
    assert fp32_precision() == TF32 and torch.backends.mkldnn.conv.fp32_precision == "tf32"
    set_fp32_precision()
    assert fp32_precision() == IEEE
    assert (torch.backends.mkldnn.conv.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision) == ("ieee", "ieee")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    ep = torch.export.export(torch.nn.Conv2d(1, 1, 3), (torch.zeros(1, 1, 5, 5),))  # reads the flags: must not raise
    assert ep is not None


@pytest.mark.parametrize("extra, expected", [([], IEEE), (["--tf32"], TF32)])
def test_eval_table_sets_precision(tmp_path, capsys, extra, expected):
    set_fp32_precision(tf32=expected == IEEE)  # the opposite, so the entry point must change it
    assert (
        table.main(["--split", "voc2012val", "--runs", str(tmp_path / "none"), "--device", "cpu", *extra]) == 1
    )  # a runtime error (no runs folder), after the precision is set
    assert fp32_precision() == expected


def test_inference_net_sets_precision():
    net = CaffeNet(
        parse_prototxt(
            'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 '
            'dim: 4 dim: 4 } } } layer { name: "c" type: "Convolution" bottom: "x" top: "c" '
            "convolution_param { num_output: 1 kernel_size: 1 } }"
        )
    )
    set_fp32_precision(tf32=True)
    InferenceNet(net)
    assert fp32_precision() == IEEE
    InferenceNet(net, tf32=True)
    assert fp32_precision() == TF32


def test_onnxruntime_cuda_provider_turns_tf32_off():
    assert onnxruntime_provider("CUDAExecutionProvider") == ("CUDAExecutionProvider", {"use_tf32": "0"})
    assert onnxruntime_provider("CUDAExecutionProvider", tf32=True)[1] == {"use_tf32": "1"}
    assert onnxruntime_provider("CPUExecutionProvider") == ("CPUExecutionProvider", {})


@pytest.mark.parametrize("before", [False, True])
def test_the_device_benchs_precisions_restore_the_switches_and_keep_export_working(before):
    from bench.device_table import PRECISIONS, precision

    set_fp32_precision(tf32=before)
    for name in PRECISIONS:
        with precision(name, torch.device("cpu")):
            assert fp32_precision() == (TF32 if name == "tf32" else IEEE)
        assert fp32_precision() == (TF32 if before else IEEE)
    ep = torch.export.export(torch.nn.Conv2d(1, 1, 3), (torch.zeros(1, 1, 5, 5),))  # reads the flags: must not raise
    assert ep is not None


def test_a_test_that_turns_tf32_on_leaves_the_switches_as_it_found_them(tmp_path):
    """The suite's fixture (conftest.py) puts the switches back after each test: run two tests in a
    pytest of their own with it, the first turning TF32 on, and the second sees the switches as before."""
    (tmp_path / "test_leak.py").write_text(
        "from porting.numerics import set_fp32_precision, switches\n"
        "BEFORE = switches()\n"
        "def test_turns_tf32_on():\n"
        "    set_fp32_precision(tf32=True)\n"
        "    assert switches() != BEFORE\n"
        "def test_sees_the_switches_as_before():\n"
        "    assert switches() == BEFORE\n"
    )
    tests = Path(__file__).resolve().parent
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", str(tmp_path)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr
