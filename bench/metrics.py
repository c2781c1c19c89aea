"""Confusion-matrix accumulation throughput: eval.metrics against the authors' numpy method.

The authors' scoring code accumulates `np.bincount(n * label[k] + pred[k], minlength=n*n)`
with k the in-range label mask, one image at a time. Both methods get the same
VOC-sized images (uint8 labels with 10% void, int64 predictions as argmax gives them) in
the same process; the best of `repeats` passes is reported, in megapixels per second.
`python -m bench.metrics` prints the figures as JSON.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from eval.metrics import ConfusionMatrix

NUM_CLASSES = 21


def _images(n_images: int, height: int, width: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        label = rng.integers(0, NUM_CLASSES, (height, width)).astype(np.uint8)
        label[rng.random((height, width)) < 0.1] = 255
        pred = np.where(rng.random((height, width)) < 0.7, label, rng.integers(0, NUM_CLASSES, (height, width)))
        images.append((np.where(pred == 255, 0, pred).astype(np.int64), label))
    return images


def _numpy_method(images: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    n = NUM_CLASSES
    hist = np.zeros((n, n), dtype=np.int64)
    for pred, label in images:
        a, b = label.ravel(), pred.ravel()
        k = (a >= 0) & (a < n)
        hist += np.bincount(n * a[k].astype(int) + b[k], minlength=n * n).reshape(n, n)
    return hist


def _ours(images: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> torch.Tensor:
    confusion = ConfusionMatrix(NUM_CLASSES, device)
    for pred, label in images:
        confusion.update(pred, label)
    return confusion.hist.cpu()


def _best_seconds(fn, repeats: int, sync=lambda: None) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(n_images: int = 30, height: int = 375, width: int = 500, repeats: int = 5, seed: int = 0) -> dict:
    """{"ours_mpx_s", "numpy_mpx_s", "ratio", ...}, all on the CPU, plus "ours_cuda_mpx_s" on a GPU.

    ours_mpx_s uses torch's default thread count, ours_1thread_mpx_s one thread like numpy.
    """
    images = _images(n_images, height, width, seed)
    megapixels = n_images * height * width / 1e6
    numpy_s, numpy_hist = _best_seconds(lambda: _numpy_method(images), repeats)
    cpu = torch.device("cpu")
    tensors = [(torch.from_numpy(p), torch.from_numpy(label)) for p, label in images]
    ours_s, ours_hist = _best_seconds(lambda: _ours(tensors, cpu), repeats)
    if not np.array_equal(ours_hist.numpy(), numpy_hist):
        raise AssertionError("eval.metrics and the numpy method disagree on the confusion matrix")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # numpy's bincount path is single-threaded: the like-for-like figure
    try:
        single_s, _ = _best_seconds(lambda: _ours(tensors, cpu), repeats)
    finally:
        torch.set_num_threads(threads)
    result = {
        "ours_mpx_s": megapixels / ours_s,
        "numpy_mpx_s": megapixels / numpy_s,
        "ratio": numpy_s / ours_s,
        "ours_1thread_mpx_s": megapixels / single_s,
        "megapixels": megapixels,
        "images": f"{n_images} x {height}x{width}",
        "torch_threads": threads,
    }
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        on_gpu = [(p.to(gpu), label.to(gpu)) for p, label in tensors]
        cuda_s, cuda_hist = _best_seconds(lambda: _ours(on_gpu, gpu), repeats, torch.cuda.synchronize)
        if not np.array_equal(cuda_hist.numpy(), numpy_hist):
            raise AssertionError("eval.metrics on CUDA and the numpy method disagree on the confusion matrix")
        result["ours_cuda_mpx_s"] = megapixels / cuda_s
        result["cuda_device"] = torch.cuda.get_device_name(gpu)
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
