"""FCN-8s on an accelerator: precision x execution mode x batch, training images/s, peak memory.

On a CUDA machine `python -m bench` runs this table on the GPU: FCN-8s (500x500, seeded
random weights) at batch 1 and 8 in strict fp32 (TF32 off for matmuls and cuDNN
convolutions), TF32 (opt-in), and bf16 and fp16 autocast, each eager and under
`torch.compile`, plus ONNX Runtime's CUDA provider (and TensorRT's where installed) on
our fp32 export; faithful training (batch 1 per image, as the recipes) in images/s; the
peak device memory of every row. Reduced precisions report their argmax agreement with
strict fp32 eager on the same inputs (random inputs through the random-weight net).
Where no GPU is at hand, `python -m bench --quick` runs the same code on the CPU at a tiny
size, so the code paths and the table layout are exercised; those figures mean nothing.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from bench.forward import (
    argmax_agreement,
    fcn8s,
    forward_gflop,
    matmul_peak_gflops,
    sync,
    time_interleaved,
    train_images_per_second,
)
from porting import CaffeNet
from porting.numerics import TF32, fp32_precision, set_fp32_precision
from porting.onnx import export_onnx

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
BATCHES = (1, 8)
#: ONNX Runtime providers tried on a CUDA device, fp32, in this order
ORT_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@contextmanager
def precision(name: str, device: torch.device) -> Iterator[None]:
    """Run the body in `name`: strict fp32, TF32 matmuls and convolutions, or bf16/fp16 autocast.

    Through `porting.numerics` (torch's legacy switches), as every entry point sets them: the
    newer `fp32_precision` API would make a later read of `cudnn.allow_tf32` (torch.export's)
    raise for the mix of the two.
    """
    saved_tf32 = fp32_precision()["conv"] == TF32
    set_fp32_precision(name == "tf32")
    autocast = torch.autocast(device.type, dtype=AUTOCAST[name]) if name in AUTOCAST else nullcontext()
    try:
        with autocast:
            yield
    finally:
        set_fp32_precision(saved_tf32)


def ort_session(model: Path, provider: str) -> ort.InferenceSession | None:
    """A session that really runs on `provider` (CUDA libraries preloaded first), else None:
    onnxruntime-gpu falls back to the CPU silently when it cannot load them."""
    if provider not in ort.get_available_providers():
        return None
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    session = ort.InferenceSession(str(model), providers=[provider])
    return session if session.get_providers()[0] == provider else None


def peak_memory_mb(device: torch.device, run: Callable[[], object]) -> float | None:
    """Peak device memory (MB) torch allocated during one `run()`; None off CUDA."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def _module_runs(
    net: CaffeNet, x: torch.Tensor, device: torch.device, compile_module: bool
) -> dict[tuple[str, str], Callable]:
    """(mode, precision) -> a callable returning the fp32 score, for eager and compiled modules."""
    modules: dict[str, Callable[..., Any]] = {"eager": net}
    if compile_module:
        modules["torch.compile"] = torch.compile(net, dynamic=False)
    runs = {}
    for mode, module in modules.items():
        for name in PRECISIONS:

            def run(module=module, name=name) -> torch.Tensor:
                with torch.inference_mode(), precision(name, device):
                    return module(x)["score"].float()

            runs[(mode, name)] = run
    return runs


def _ort_runs(net: CaffeNet, x: torch.Tensor, workdir: Path, device: torch.device) -> dict[tuple[str, str], Callable]:
    if device.type != "cuda":
        return {}
    model = workdir / "fcn8s_device.onnx"
    export_onnx(net.cpu(), model)
    net.to(device)
    runs = {}
    x_numpy = x.cpu().numpy()
    for provider in ORT_PROVIDERS:
        session = ort_session(model, provider)
        if session is not None:
            runs[(f"onnxruntime {provider.removesuffix('ExecutionProvider')}", "fp32")] = lambda session=session: (
                torch.from_numpy(session.run(["score"], {"data": x_numpy})[0]).to(device)
            )
    return runs


def run(
    workdir: Path,
    device: torch.device,
    *,
    width: float = 1.0,
    size: int = 500,
    repeats: int = 10,
    compile_module: bool = True,
    batches: tuple[int, ...] = BATCHES,
) -> dict:
    """The device table: one row per (mode, precision, batch), the acceptance summary keys, training."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    net = fcn8s(width, size).eval().to(device)
    rng = np.random.default_rng(1)
    rows: list[dict[str, Any]] = []
    for batch in batches:
        x = torch.from_numpy(rng.standard_normal((batch, 3, size, size), dtype=np.float32) * np.float32(50)).to(device)
        runs = {**_module_runs(net, x, device, compile_module), **_ort_runs(net, x, workdir, device)}
        reference = runs[("eager", "fp32")]()
        agreement = {key: argmax_agreement(reference, fn()) for key, fn in runs.items()}
        memory = {key: peak_memory_mb(device, fn) for key, fn in runs.items()}
        times = time_interleaved({f"{mode} {name}": fn for (mode, name), fn in runs.items()}, repeats, 2, device)
        for mode, name in runs:
            median_s = statistics.median(times[f"{mode} {name}"])
            rows.append(
                {
                    "mode": mode,
                    "precision": name,
                    "batch": batch,
                    "median_ms": median_s * 1e3,
                    "images_per_s": batch / median_s,
                    "peak_memory_mb": memory[(mode, name)],
                    "argmax_agreement_vs_fp32": agreement[(mode, name)],
                }
            )
    with precision("fp32", device):
        gflop = forward_gflop(net, torch.zeros(1, 3, size, size, device=device))
        train = {
            "images_per_s": train_images_per_second(device, width=width, size=size, steps=repeats),
            "peak_memory_mb": peak_memory_mb(
                device, lambda: train_images_per_second(device, width=width, size=size, steps=1)
            ),
        }
        peak = matmul_peak_gflops(8192 if device.type == "cuda" else 256, 5, device)
    first = {(row["mode"], row["precision"]): row for row in rows if row["batch"] == batches[0]}
    ort_rows = [row for row in rows if row["mode"].startswith("onnxruntime") and row["batch"] == batches[0]]
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} (smoke run)",
        "input": f"{size}x{size}",
        "width": width,
        "rows": rows,
        **{f"{name}_ms": first[("eager", name)]["median_ms"] for name in PRECISIONS},
        "onnxruntime_cuda_ms": ort_rows[0]["median_ms"] if ort_rows else None,
        "provider": ort_rows[0]["mode"].removeprefix("onnxruntime ") if ort_rows else None,
        "peak_memory_mb": first[("eager", "fp32")]["peak_memory_mb"],
        "gflop": gflop,
        "matmul_peak_gflop_s": peak,
        "train": train,
        "opencv": "the pip OpenCV build has no CUDA backend",
    }
