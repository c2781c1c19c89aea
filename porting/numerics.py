"""Float32 precision of convolutions and matrix products on the GPU; deterministic kernels.

Caffe computed in IEEE fp32. torch lets cuDNN convolutions use TF32 by default (10-bit
mantissa inputs, about 1e-3 relative), so every entry point of the project (training
stages, `eval.table`, `porting.inference.InferenceNet`, the ONNX parity checks, the
benchmarks) asks for fp32 here unless the user passes `--tf32`. The settings are
process-wide: cuDNN convolutions and CUDA matmuls, and oneDNN's on the CPU (IEEE there by
default, but a process may have asked for TF32 / BF16). ONNX Runtime's CUDA provider
has its own switch (`use_tf32`, on by default), which `onnxruntime_provider` sets alike.

The CUDA switches are set through `allow_tf32`, not torch 2.13's `fp32_precision`: once
the newer API has set cuDNN's convolution flag, reading `torch.backends.cudnn.allow_tf32`
raises (it sees a "mix of the legacy and new APIs"), and `torch.export`, hence ONNX
export, reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: torch's names for the two settings: exact fp32, or TF32 tensor cores
IEEE, TF32 = "ieee", "tf32"

TF32_HELP = "let cuDNN convolutions and CUDA matmuls use TF32 (faster on Ampere and later, ~1e-3 relative off Caffe)"


def set_fp32_precision(tf32: bool = False) -> None:
    """Make CUDA convolutions and matmuls compute in IEEE fp32 (Caffe's), or allow TF32.

    Args:
        tf32: allow TensorFloat-32 for both instead of fp32.
    """
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    precision = TF32 if tf32 else IEEE
    torch.backends.mkldnn.conv.fp32_precision = precision  # type: ignore[attr-defined]
    torch.backends.mkldnn.matmul.fp32_precision = precision  # type: ignore[attr-defined]


#: the process-wide switches `set_fp32_precision` sets, as (owner, attribute)
SWITCHES = (
    (torch.backends.cudnn, "allow_tf32"),
    (torch.backends.cuda.matmul, "allow_tf32"),
    (torch.backends.mkldnn.conv, "fp32_precision"),  # type: ignore[attr-defined]
    (torch.backends.mkldnn.matmul, "fp32_precision"),  # type: ignore[attr-defined]
)


def switches() -> tuple[object, ...]:
    """The values of `SWITCHES`, in order."""
    return tuple(getattr(owner, name) for owner, name in SWITCHES)


@contextmanager
def kept_fp32_precision() -> Iterator[None]:
    """The body may change the float32 switches (`set_fp32_precision`); they are as before after it."""
    saved = switches()
    try:
        yield
    finally:
        for (owner, name), value in zip(SWITCHES, saved):
            setattr(owner, name, value)


def fp32_precision() -> dict[str, str]:
    """The CUDA settings, {"conv": ..., "matmul": ...}, each `IEEE` or `TF32`."""
    return {
        "conv": TF32 if torch.backends.cudnn.allow_tf32 else IEEE,
        "matmul": TF32 if torch.backends.cuda.matmul.allow_tf32 else IEEE,
    }


def onnxruntime_provider(name: str, tf32: bool = False) -> tuple[str, dict[str, str]]:
    """An ONNX Runtime `providers=[...]` entry computing in fp32 (or TF32) as torch is told to.

    Args:
        name: the execution provider, e.g. "CUDAExecutionProvider".
        tf32: allow TF32 on the CUDA provider.
    """
    if name == "CUDAExecutionProvider":
        return name, {"use_tf32": "1" if tf32 else "0"}
    return name, {}


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic torch kernels inside the block; the previous setting is restored after.

    With every random choice seeded, a run repeats bit for bit on the same machine, device
    and thread count (a CPU reduction split over threads sums in a thread-dependent order).
    An operation without a deterministic kernel warns instead of failing.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
