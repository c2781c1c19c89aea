"""FCN-8s forward time: our `CaffeNet` against ONNX Runtime and OpenCV on the same files.

Every peer runs the same FCN-8s (our generator's deploy net, seeded random weights
written by our caffemodel writer) on the same 1x3x500x500 input, fp32, batch 1, in one
process: our module eager, in channels_last, as `porting.inference.InferenceNet` (oneDNN
with prepacked weights and fused ReLU) and under `torch.compile`; ONNX Runtime on
our ONNX export; OpenCV's Caffe importer on the prepared prototxt + caffemodel. Timed runs are
interleaved round-robin, so background load falls on every peer alike, and the median
is reported. Achieved GFLOP/s divide the net's multiply-add count (torch's flop counter,
2 per MAC) by the median time and are reported as a fraction of the machine's fp32 peak
(`bench.peak`). `InferenceNet(net, dtype=torch.bfloat16)` runs in the same rounds; it is
reported beside the table (not an exact peer) with its argmax agreement with fp32.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from porting import CaffeNet, to_text, write_caffemodel
from porting.inference import InferenceNet, native_bf16_available, retain_freed_memory
from porting.onnx import export_onnx
from porting.surgery import set_bilinear_upsampling
from prototxt import fcn

NET = "voc-fcn8s"
CUDA_ABSENT = "not available on this machine"
BF16 = "ours InferenceNet bf16"


def random_weights(net: CaffeNet, seed: int = 0) -> CaffeNet:
    """He-scaled Gaussian weights, small biases, bilinear upsampling: activations stay O(1),
    so every peer computes finite, comparable scores."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for name, layer in net.layers.items():
        arrays = []
        for shape in layer.blob_shapes():
            std = math.sqrt(2.0 / math.prod(shape[1:])) if len(shape) > 1 else 0.01
            arrays.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(std))
        if arrays:
            blobs[name] = arrays
    net.load_blobs(blobs, strict=True)
    set_bilinear_upsampling(net)
    return net


def fcn8s(width: float, size: int, split: str = "deploy", seed: int = 0) -> CaffeNet:
    """FCN-8s (`width` scales the VGG16 backbone) for size x size inputs, random weights."""
    phase = "TRAIN" if split == "train" else "TEST"
    shapes = {"data": (1, 3, size, size), "label": (1, 1, size, size)}
    return random_weights(CaffeNet(fcn.build(NET, split, width=width), phase=phase, input_shapes=shapes), seed)


def forward_gflop(net: CaffeNet, x: torch.Tensor) -> float:
    """Floating-point operations of one forward (convolutions, deconvolutions), in GFLOP, as
    torch's flop counter counts the plain net's ops (2 per multiply-add)."""
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9


def matmul_peak_gflops(n: int, repeats: int, device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of an n x n x n matmul: what this machine's BLAS reaches at best."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    peers: Mapping[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of every run per peer; each round runs every peer once."""
    for run in peers.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(repeats):
        for name, run in peers.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def _as_numpy(score) -> np.ndarray:
    return score.float().cpu().numpy() if isinstance(score, torch.Tensor) else np.asarray(score)


def _relative(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def _channels_last(net: CaffeNet) -> CaffeNet:
    """A copy of `net` whose 4-D parameters and buffers are stored channels-last, as
    `Module.to(memory_format=torch.channels_last)` makes them (an overload torch 2.13's stubs lack)."""
    last = copy.deepcopy(net)
    for tensor in (*last.parameters(), *last.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.to(memory_format=torch.channels_last)
    return last


def _module_peers(net: CaffeNet, x: torch.Tensor, compile_module: bool) -> dict[str, Callable[[], torch.Tensor]]:
    """Our module as eager, channels_last, InferenceNet and (optionally) compiled callables returning the score."""
    last = _channels_last(net)
    x_last = x.contiguous(memory_format=torch.channels_last)
    fast = InferenceNet(net)
    peers = {
        "ours eager": lambda: net(x)["score"],
        "ours channels_last": lambda: last(x_last)["score"],
        "ours InferenceNet": lambda: fast(x)["score"],
    }
    if compile_module:
        compiled = torch.compile(net, options={"freezing": True})  # weights as constants: inference only
        peers["ours torch.compile"] = lambda: compiled(x)["score"]
    return peers


def _inference(run: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def wrapped() -> torch.Tensor:
        with torch.inference_mode():
            return run()

    return wrapped


def _summarize(times: dict[str, list[float]], outputs: dict[str, np.ndarray], gflop: float, peak: float) -> dict:
    medians = {name: statistics.median(t) for name, t in times.items()}
    fastest = min(medians.values())
    reference = outputs["ours eager"]
    return {
        name: {
            "median_ms": medians[name] * 1e3,
            "min_ms": min(times[name]) * 1e3,
            "ratio_to_fastest": medians[name] / fastest,
            "gflop_s": gflop / medians[name],
            "fraction_of_peak": gflop / medians[name] / peak,
            "max_rel_diff_vs_ours_eager": _relative(outputs[name], reference),
        }
        for name in times
    }


def argmax_agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Fraction of pixels whose argmax over channels (axis 1) is the same in both score maps."""
    return float((reference.argmax(1) == other.argmax(1)).double().mean())


def _bf16_agreement(net: CaffeNet, fast_bf16: InferenceNet, size: int, inputs: int = 2) -> float:
    """Argmax agreement of the bf16 InferenceNet with the fp32 net on random size x size inputs."""
    rng = np.random.default_rng(11)
    agreements = []
    for _ in range(inputs):
        x = torch.from_numpy(rng.standard_normal((1, 3, size, size), dtype=np.float32) * np.float32(50))
        with torch.inference_mode():
            agreements.append(argmax_agreement(net(x)["score"], fast_bf16(x)["score"]))
    return statistics.mean(agreements)


def run(
    workdir: Path,
    *,
    peak_gflop_s: float,
    width: float = 1.0,
    size: int = 500,
    repeats: int = 5,
    warmup: int = 1,
    compile_module: bool = True,
) -> dict:
    """The CPU table: per-peer figures plus the DESIGN keys ours_ms / onnxruntime_ms / opencv_ms,
    and the bf16 InferenceNet's time and argmax agreement."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    malloc_retains = retain_freed_memory()  # for every peer alike: ORT and OpenCV keep arenas anyway
    cpu = torch.device("cpu")
    net = fcn8s(width, size).eval()
    prototxt, caffemodel, model = workdir / "fcn8s.prototxt", workdir / "fcn8s.caffemodel", workdir / "fcn8s.onnx"
    prototxt.write_text(to_text(net.net_param))
    write_caffemodel(net, caffemodel)
    export_onnx(net, model)
    x = torch.from_numpy(
        np.random.default_rng(1).standard_normal((1, 3, size, size), dtype=np.float32) * np.float32(50)
    )

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    x_numpy = x.numpy()

    def opencv() -> np.ndarray:
        cv_net.setInput(x_numpy)
        return cv_net.forward()

    peers: dict[str, Callable[[], object]] = {
        name: _inference(fn) for name, fn in _module_peers(net, x, compile_module).items()
    }
    peers["onnxruntime"] = lambda: session.run(["score"], {"data": x_numpy})[0]
    peers["opencv"] = opencv
    fast_bf16 = InferenceNet(net, dtype=torch.bfloat16)
    compile_s = None
    if "ours torch.compile" in peers:
        start = time.perf_counter()
        peers["ours torch.compile"]()
        compile_s = time.perf_counter() - start
    outputs = {name: _as_numpy(fn()) for name, fn in peers.items()}
    times = time_interleaved(peers, repeats, warmup, cpu)
    gflop = forward_gflop(net, x)
    table = _summarize(times, outputs, gflop, peak_gflop_s)
    # bf16 in rounds of its own with the fp32 InferenceNet: an emulated bf16 forward takes ten times
    # as long and leaves the heap fragmented, which would tax the fp32 peers run after it
    fp32_fast = peers["ours InferenceNet"]
    pair = time_interleaved({"fp32": fp32_fast, BF16: _inference(lambda: fast_bf16(x)["score"])}, repeats, warmup, cpu)
    bf16_s = statistics.median(pair[BF16])
    bf16_speedup = statistics.median(pair["fp32"]) / bf16_s
    ours = min((name for name in table if name.startswith("ours")), key=lambda n: table[n]["median_ms"])
    return {
        "ours_ms": table[ours]["median_ms"],
        "ours_variant": ours,
        "onnxruntime_ms": table["onnxruntime"]["median_ms"],
        "opencv_ms": table["opencv"]["median_ms"],
        "peers": table,
        "bf16_ms": bf16_s * 1e3,
        "bf16_speedup": bf16_speedup,
        "bf16_argmax_agreement": _bf16_agreement(net, fast_bf16, size),
        "bf16_native": native_bf16_available(),
        "gflop": gflop,
        "peak_gflop_s": peak_gflop_s,
        "compile_s": compile_s,
        "input": f"1x3x{size}x{size} fp32",
        "width": width,
        "repeats": repeats,
        "threads": {"torch": torch.get_num_threads(), "opencv": cv2.getNumThreads()},
        "malloc_retains_freed_memory": malloc_retains,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "opencv": cv2.__version__},
    }


def train_images_per_second(device: torch.device, *, width: float = 1.0, size: int = 500, steps: int = 3) -> float:
    """Images/s of full FCN-8s training steps (forward, SoftmaxWithLoss, backward, SGD) at batch 1."""
    net = fcn8s(width, size, split="train").to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-14, momentum=0.99)
    generator = torch.Generator().manual_seed(2)
    x = (torch.randn((1, 3, size, size), generator=generator) * 50).to(device)
    label = torch.randint(0, 21, (1, 1, size, size), generator=generator).float().to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        net(data=x, label=label)["loss"].backward()
        optimizer.step()

    times = time_interleaved({"train": step}, steps, 1, device)["train"]
    return 1.0 / statistics.median(times)
