"""The GPU tier, run by `python -m pytest -m gpu`: CUDA computes what the CPU computes.

Every test here needs a CUDA device and is skipped, with that reason, without one. All run
in strict fp32 (TF32 off for matmuls and cuDNN convolutions), the precision Caffe used:
- the four VOC nets' forward on CUDA equals the CPU forward to 1e-4 at odd sizes;
- one training update (2 images accumulated, Caffe SGD) on CUDA equals it on the CPU;
- `torchrun --nproc_per_node=2` (NCCL where two GPUs exist, gloo on CUDA tensors
  otherwise) makes the 1-process update;
- ONNX Runtime's CUDAExecutionProvider, with its CUDA libraries preloaded, runs the
  exported nets (and the test fails loudly if the session is not really on it) and
  matches PyTorch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import randomize, relative_difference

from porting import CaffeNet
from porting.onnx import export_onnx
from prototxt import fcn
from reproduce.solver import CaffeSGD, SolverConfig
from reproduce.train import TrainConfig, Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (the gpu tier: python -m pytest -m gpu)"
    ),
]

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4
SIZES = [(1, 37, 53), (2, 101, 77), (1, 64, 64)]
TRAIN_WIDTH = 1 / 8
IMAGES_PER_UPDATE = 2


@pytest.fixture(autouse=True)
def strict_fp32() -> Iterator[None]:
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def random_batch(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((batch, 3, height, width), dtype=np.float32) * np.float32(50))


@pytest.mark.parametrize("name", fcn.NETS)
def test_cuda_forward_equals_cpu_forward(name):
    net = randomize(CaffeNet(fcn.build(name, "deploy")), seed=1, bilinear_deconv=True).eval()
    on_gpu = CaffeNet(fcn.build(name, "deploy")).eval()
    on_gpu.load_state_dict(net.state_dict())
    on_gpu.cuda()
    for seed, (batch, height, width) in enumerate(SIZES):
        x = random_batch(batch, height, width, seed)
        with torch.inference_mode():
            expected = net(x)["score"].numpy()
            score = on_gpu(x.cuda())["score"].cpu().numpy()
        assert relative_difference(score, expected) < TOL, f"{name} at {batch}x3x{height}x{width}"


def _samples():
    from fcndata.image import Sample

    rng = np.random.default_rng(0)
    samples = []
    for index, (height, width) in enumerate([(45, 61), (53, 37)]):
        label = rng.integers(0, 21, (height, width))
        label[rng.random((height, width)) < 0.1] = 255
        image = torch.from_numpy(rng.standard_normal((3, height, width)).astype(np.float32) * 50)
        samples.append(Sample(image, torch.from_numpy(label), f"img{index}"))
    return samples


def train_one_update(device: torch.device, out_dir: Path) -> CaffeNet:
    """The tiny FCN-8s (width 1/8, seeded weights) after one update of 2 accumulated images on `device`."""
    net = randomize(
        CaffeNet(fcn.build("voc-fcn8s", "train", width=TRAIN_WIDTH), phase="TRAIN"), seed=4, bilinear_deconv=True
    ).to(device)
    solver = CaffeSGD(
        net.param_specs(),
        SolverConfig(base_lr=1e-6, lr_policy="fixed", momentum=0.9, weight_decay=5e-4, iter_size=IMAGES_PER_UPDATE),
    )
    config = TrainConfig(images_per_update=IMAGES_PER_UPDATE, max_iter=1, display=1, out_dir=out_dir)
    Trainer(net, solver, _samples(), config).run()
    return net


def _initial() -> dict[str, torch.Tensor]:
    net = randomize(
        CaffeNet(fcn.build("voc-fcn8s", "train", width=TRAIN_WIDTH), phase="TRAIN"), seed=4, bilinear_deconv=True
    )
    return net.state_dict()


def assert_same_update(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Each parameter's change equals the reference change to TOL (relative to its largest entry)."""
    start = _initial()
    moved = 0
    for name, before in start.items():
        expected = (reference[name].cpu() - before).double().numpy()
        change = (ours[name].cpu() - before).double().numpy()
        if np.abs(expected).max() > 0:
            moved += 1
            assert relative_difference(change, expected) < TOL, name
        else:
            assert np.abs(change).max() == 0, name
    assert moved > 0, "the update changed no parameter"


def test_one_training_update_on_cuda_equals_cpu(tmp_path):
    cpu = train_one_update(torch.device("cpu"), tmp_path / "cpu")
    gpu = train_one_update(torch.device("cuda"), tmp_path / "cuda")
    assert_same_update(gpu.state_dict(), cpu.state_dict())


def test_torchrun_two_processes_equal_one(tmp_path):
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "tests" / "gpu_train_worker.py"),
        str(tmp_path),
        backend,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert result.returncode == 0, f"torchrun ({backend}) failed:\n{result.stderr[-4000:]}"
    ranks = torch.load(tmp_path / "weights.pt", weights_only=True)
    single = train_one_update(torch.device("cuda"), tmp_path / "single")
    assert_same_update(ranks, single.state_dict())


def cuda_session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime session on CUDAExecutionProvider, or a test failure saying why not."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.fail(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider: install onnxruntime-gpu")
    ort.preload_dlls()  # onnxruntime-gpu falls back to the CPU silently when it cannot load CUDA/cuDNN
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        pytest.fail(f"ONNX Runtime fell back to {session.get_providers()}: its CUDA libraries did not load")
    return session


@pytest.mark.parametrize("name", fcn.NETS)
def test_onnxruntime_cuda_provider_matches_pytorch(tmp_path, name):
    net = randomize(CaffeNet(fcn.build(name, "deploy", width=1 / 4)), seed=2, bilinear_deconv=True).eval()
    path = tmp_path / f"{name}.onnx"
    export_onnx(net, path)
    session = cuda_session(path)
    for seed, (batch, height, width) in enumerate(SIZES):
        x = random_batch(batch, height, width, seed)
        with torch.inference_mode():
            expected = net(x)["score"].numpy()
        (score,) = session.run(["score"], {"data": x.numpy()})
        assert relative_difference(score, expected) < TOL, f"{name} at {batch}x3x{height}x{width}"
