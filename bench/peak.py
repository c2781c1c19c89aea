"""The machine's fp32 peak: the best of a vectorised FMA loop on every thread and large GEMMs.

A single matmul is no peak: BLAS reaches a fraction of the FMA units' rate that depends
on the library and the CPU (MKL on AMD, for one), and a convolution that beats it would
show above 100%. The FMA loop (`fma_peak.c`, built here with the machine's own
instruction set) runs independent vector FMA chains on every torch thread, the rate no
kernel can exceed; the GEMMs (torch's BLAS matmul and oneDNN through a prepacked 1x1
convolution) show what libraries reach. The peak is the best of all of them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from porting import CaffeNet, parse_prototxt
from porting.inference import InferenceNet

FMA_SOURCE = Path(__file__).resolve().parent / "fma_peak.c"


def _compiler() -> str | None:
    configured = (sysconfig.get_config_var("CC") or "").split()
    for name in (os.environ.get("CC"), configured[0] if configured else None, "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def fma_loop_gflops(threads: int, seconds: float = 0.3, repeats: int = 3) -> float | None:
    """Best GFLOP/s of the FMA loop on `threads` threads; None without a C compiler with OpenMP."""
    compiler = _compiler()
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory(prefix="fcn-fma-") as scratch:
        library = Path(scratch) / "fma_peak.so"
        build = [
            compiler,
            "-O3",
            "-march=native",
            "-ffp-contract=fast",
            "-fopenmp",
            "-shared",
            "-fPIC",
            "-o",
            str(library),
            str(FMA_SOURCE),
        ]
        if subprocess.run(build, check=False, capture_output=True).returncode != 0:
            return None
        lib = ctypes.CDLL(str(library))
    lib.fma_loop.restype = ctypes.c_double
    lib.fma_loop.argtypes = [ctypes.c_long, ctypes.c_int]
    flops = lib.flops_per_iteration() * threads
    iterations = 100_000
    start = time.perf_counter()
    lib.fma_loop(iterations, threads)
    iterations = max(iterations, int(iterations * seconds / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        lib.fma_loop(iterations, threads)
        best = min(best, time.perf_counter() - start)
    return flops * iterations / best / 1e9


def _best_seconds(run, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def blas_gemm_gflops(n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n x n fp32 matmul through torch's BLAS."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def onednn_gemm_gflops(n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n x n fp32 GEMM run by oneDNN: a 1x1 convolution of n channels
    to n outputs over n pixels, with the weight prepacked as InferenceNet packs FCN's."""
    side = int(n**0.5)
    pixels = side * side
    text = (
        f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 1 dim: {n} dim: {side} dim: {side} }} }} }}\n'
        f'layer {{ name: "gemm" type: "Convolution" bottom: "x" top: "y" '
        f"convolution_param {{ num_output: {n} kernel_size: 1 bias_term: false }} }}"
    )
    net = CaffeNet(parse_prototxt(text, source="<gemm>"))
    net.load_blobs({"gemm": [torch.randn(n, n, 1, 1).numpy()]}, strict=True)
    fast = InferenceNet(net)
    x = torch.randn(1, n, side, side).contiguous(memory_format=torch.channels_last)
    return 2 * pixels * n * n / _best_seconds(lambda: fast(x), repeats) / 1e9


def measure(gemm_n: int = 4096, repeats: int = 3) -> dict:
    """{"peak_gflop_s", "fma_loop_gflop_s", "blas_gemm_gflop_s", "onednn_gemm_gflop_s", "threads", "gemm_n"}."""
    threads = torch.get_num_threads()
    figures = {
        "fma_loop_gflop_s": fma_loop_gflops(threads, repeats=repeats),
        "blas_gemm_gflop_s": blas_gemm_gflops(gemm_n, repeats),
        "onednn_gemm_gflop_s": onednn_gemm_gflops(gemm_n, repeats),
    }
    measured = [value for value in figures.values() if value is not None]
    return {"peak_gflop_s": max(measured), **figures, "threads": threads, "gemm_n": gemm_n}


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
