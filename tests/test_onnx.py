"""ONNX export: one file per net serves every input size and matches PyTorch in ONNX Runtime.

The nets are the authors' VOC definitions (reduced width for all four, full width for
FCN-8s) with seeded random weights. Each exported file is run by ONNX Runtime (an
independent implementation of every op) at several batch sizes and odd spatial sizes it
was not traced at; the CUDA provider joins the CPU one on a machine with a GPU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import VOC_NETS, deploy_net, randomize, relative_difference, write_net

from porting import CaffeNet, save_checkpoint
from porting.numerics import onnxruntime_provider, set_fp32_precision
from porting.onnx import MIN_OPSET, export_onnx, main

TOLERANCE = 1e-4
REDUCED_SIZES = [(2, 37, 53), (1, 64, 64), (1, 101, 77)]
FULL_SIZES = [(1, 64, 64), (1, 97, 131)]


def providers() -> list[str]:
    """ONNX Runtime providers that can actually run here: CPU, plus CUDA where torch sees a GPU."""
    found = ["CPUExecutionProvider"]
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        found.append("CUDAExecutionProvider")
    return found


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def session(path: Path, provider: str) -> ort.InferenceSession:
    set_fp32_precision()  # the torch side of the parity: IEEE fp32, as Caffe
    sess = ort.InferenceSession(str(path), providers=[onnxruntime_provider(provider)])
    assert sess.get_providers()[0] == provider, f"{provider} fell back to {sess.get_providers()}"
    return sess


def check_parity(net: CaffeNet, path: Path, provider: str, sizes, seed: int = 0) -> None:
    sess = session(path, provider)
    rng = np.random.default_rng(seed)
    for batch, height, width in sizes:
        x = rng.standard_normal((batch, 3, height, width), dtype=np.float32) * np.float32(50)
        with torch.inference_mode():
            expected = net(torch.from_numpy(x))["score"].numpy()
        score, *rest = sess.run(None, {"data": x})
        assert score.shape == (batch, 21, height, width)
        assert relative_difference(score, expected) < TOLERANCE, f"{path.name} at {batch}x3x{height}x{width} on {provider}"
        if rest:
            np.testing.assert_array_equal(rest[0], score.argmax(axis=1))


@pytest.fixture(scope="module")
def reduced(tmp_path_factory) -> dict[str, tuple[CaffeNet, Path]]:
    """Every VOC net at 1/16 width, exported once with the argmax output."""
    directory = tmp_path_factory.mktemp("onnx")
    exported = {}
    for seed, name in enumerate(VOC_NETS):
        net = randomize(CaffeNet(deploy_net(name, width_divisor=16)), seed=seed)
        path = directory / f"{name}.onnx"
        export_onnx(net, path, argmax=True)
        exported[name] = net, path
    return exported


@pytest.mark.parametrize("provider", providers())
@pytest.mark.parametrize("name", VOC_NETS)
def test_reduced_width_nets_match_pytorch_at_every_size(reduced, name, provider):
    net, path = reduced[name]
    check_parity(net, path, provider, REDUCED_SIZES)


def test_graph_is_valid_with_dynamic_batch_height_width(reduced):
    _, path = reduced["voc-fcn8s"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert opset(model) >= MIN_OPSET
    (data,) = model.graph.input
    dims = data.type.tensor_type.shape.dim
    assert data.name == "data" and dims[1].dim_value == 3
    assert all(dims[i].dim_param and not dims[i].dim_value for i in (0, 2, 3))
    assert [o.name for o in model.graph.output] == ["score", "score_argmax"]
    assert model.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert {"Shape", "Slice"} <= {node.op_type for node in model.graph.node}, "Crop must follow the input size"


def test_full_width_fcn8s_matches_pytorch(tmp_path):
    net = randomize(CaffeNet(deploy_net("voc-fcn8s")), seed=7)
    path = tmp_path / "fcn8s.onnx"
    export_onnx(net, path)
    for provider in providers():
        check_parity(net, path, provider, FULL_SIZES, seed=1)


def test_cli_exports_caffe_files_and_checkpoints(reduced, tmp_path):
    net, _ = reduced["voc-fcn16s"]
    prototxt, caffemodel = write_net(net, tmp_path)
    from_caffe, from_checkpoint = tmp_path / "caffe.onnx", tmp_path / "checkpoint.onnx"
    assert main(["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(from_caffe), "--argmax"]) == 0
    save_checkpoint(net, tmp_path / "net.pt")
    assert main(["--checkpoint", str(tmp_path / "net.pt"), "--out", str(from_checkpoint), "--opset", "18"]) == 0
    check_parity(net, from_caffe, "CPUExecutionProvider", REDUCED_SIZES[:1])
    check_parity(net, from_checkpoint, "CPUExecutionProvider", REDUCED_SIZES[2:])
    assert opset(onnx.load(str(from_checkpoint))) == 18


def test_export_rejects_old_opset(reduced, tmp_path):
    net, _ = reduced["voc-fcn32s"]
    with pytest.raises(ValueError, match="opset 11"):
        export_onnx(net, tmp_path / "old.onnx", opset=11)


def test_cli_reports_a_missing_file_in_one_line(tmp_path):
    missing = tmp_path / "absent.prototxt"
    result = subprocess.run(
        [sys.executable, "-m", "porting.onnx", "--prototxt", str(missing), "--out", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr
