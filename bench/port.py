"""Porting a VGG16-sized caffemodel: our wire-format reader against a plain read and protobuf.

A synthetic file with the ILSVRC VGG16 layer shapes (V1 `layers`, legacy 4-D dims, seeded
random weights: 138,357,544 floats, ~553 MB) is written with our writer, then each method
runs in its own subprocess so its peak RSS is its own (VmHWM minus the RSS after the shared
imports, i.e. what the method itself holds at its peak):

- read: the file's bytes in one `read()` (the floor: disk/page-cache speed, 1x file memory);
- ours: `porting.read_caffemodel` (float32 arrays in Caffe shapes);
- porting_load: `porting.load(prototxt, caffemodel)`, the whole net as users get it (the
  deploy prototxt of the same shapes is written next to the file); its peak against the
  file size is `porting_load_vs_file`;
- naive: `NetParameter.ParseFromString` + `np.array(blob.data)` per blob.

The file is read once before timing so every method sees a warm page cache; each method's
time is the best of `repeats` fresh processes, the methods taken in turns (this is a
shared, noisy machine).
`python -m bench.port [--params N]` prints a table; `run()` returns the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from porting.prototxt import to_text
from prototxt import vgg16

#: conv1_1 .. conv5_3, fc6, fc7, fc8
LEARNED_LAYERS = sum(convs for _, convs in vgg16.VGG16_STAGES) + 3


@functools.cache
def vgg16_shapes(width: float = 1.0) -> dict[str, list[tuple[int, ...]]]:
    """Weight and bias shapes per learned layer of the ILSVRC VGG16 classifier (`prototxt.vgg16`) at a width."""
    from porting.net import CaffeNet

    net = CaffeNet(vgg16.classifier(width=width).to_proto(), fill=False)
    return {step.name: shapes for step in net.steps if (shapes := step.layer.blob_shapes())}


def vgg16_params(width: float = 1.0) -> int:
    """The classifier's number of weights (138,357,544 at full width)."""
    return sum(math.prod(shape) for shapes in vgg16_shapes(width).values() for shape in shapes)


def width_for(params: int | None) -> float:
    """The width multiplier that brings VGG16 near `params` weights (None: full VGG16)."""
    return 1.0 if params is None else math.sqrt(params / vgg16_params())


def build(path: Path, width: float = 1.0, seed: int = 0) -> int:
    """Write the synthetic V1-layout caffemodel of the classifier at `width`; return its number of weights."""
    import numpy as np

    from porting.caffemodel import write_caffemodel

    net = vgg16.classifier(width=width).to_proto()
    net.name = vgg16.NAME
    rng = np.random.default_rng(seed)
    blobs = {
        name: [rng.standard_normal(shape, dtype=np.float32) * 0.01 for shape in shapes]
        for name, shapes in vgg16_shapes(width).items()
    }
    write_caffemodel((net, blobs), path, layout="v1", legacy_dims=True)
    return sum(a.size for arrays in blobs.values() for a in arrays)


def deploy_prototxt(width: float = 1.0) -> str:
    """The VGG16 deploy net (224x224 input, so pool5 is 7x7 as fc6 expects) with the file's layer shapes."""
    net = vgg16.classifier(width=width).to_proto()
    net.name = vgg16.NAME
    return to_text(net)


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _method(name: str, path: str) -> float:
    """Run one method in this process; return its seconds."""
    if name == "read":
        start = time.perf_counter()
        with open(path, "rb") as file:
            data = file.read()
        seconds = time.perf_counter() - start
        assert len(data) == os.path.getsize(path)
        return seconds
    if name == "ours":
        from porting.caffemodel import read_caffemodel

        start = time.perf_counter()
        blobs = read_caffemodel(path)
        seconds = time.perf_counter() - start
        assert sum(1 for arrays in blobs.values() if arrays) == LEARNED_LAYERS
        return seconds
    if name == "porting_load":
        import porting

        start = time.perf_counter()
        net = porting.load(Path(path).with_suffix(".prototxt"), path)
        seconds = time.perf_counter() - start
        assert sum(1 for arrays in net.blobs_numpy().values() if arrays) == LEARNED_LAYERS
        return seconds
    if name == "naive":
        import numpy as np

        from porting.proto import caffe_pb2

        start = time.perf_counter()
        with open(path, "rb") as file:
            net = caffe_pb2.NetParameter.FromString(file.read())
        blobs = {
            layer.name: [
                np.array(b.data, np.float32).reshape(b.num, b.channels, b.height, b.width) for b in layer.blobs
            ]
            for layer in net.layers
            if layer.blobs
        }
        seconds = time.perf_counter() - start
        assert sum(1 for arrays in blobs.values() if arrays) == LEARNED_LAYERS
        return seconds
    raise ValueError(f"unknown method {name!r}")


def in_fresh_process(module: str, *args: str) -> dict:
    """Run `python -m <module> --worker ARGS...` from the project root; its last stdout line, as JSON."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--worker", *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure(method: str, path: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of `method` in a fresh interpreter."""
    figures = in_fresh_process("bench.port", method, str(path))
    return figures["seconds"], figures["peak_rss_mb"]


def run(workdir: Path, params: int | None = None, repeats: int = 5) -> dict:
    """Build the file in `workdir`, time every method (best of `repeats` fresh processes, taken in
    turns), delete the file."""
    path = Path(workdir) / "vgg16_v1_synthetic.caffemodel"
    prototxt = path.with_suffix(".prototxt")
    try:
        width = width_for(params)
        weights = build(path, width)
        prototxt.write_text(deploy_prototxt(width))
        with open(path, "rb") as file:  # warm the page cache for every method alike
            while file.read(1 << 24):
                pass
        figures: dict[str, float] = {"params": weights, "file_mb": path.stat().st_size / 2**20}
        methods = ("read", "ours", "porting_load", "naive")
        runs: dict[str, list[tuple[float, float]]] = {method: [] for method in methods}
        for _ in range(repeats):  # round-robin, so a busy spell of the machine falls on every method alike
            for method in methods:
                runs[method].append(_measure(method, path))
        for method in methods:
            seconds, peak = min(s for s, _ in runs[method]), max(p for _, p in runs[method])
            prefix = "" if method == "ours" else f"{method}_"
            figures[f"{method}_s"] = seconds
            figures[f"{prefix}peak_rss_mb" if method != "ours" else "peak_rss_mb"] = peak
        figures["ours_vs_read"] = figures["ours_s"] / figures["read_s"]
        figures["naive_vs_ours"] = figures["naive_s"] / figures["ours_s"]
        figures["porting_load_vs_file"] = figures["porting_load_peak_rss_mb"] / figures["file_mb"]
        return figures
    finally:
        path.unlink(missing_ok=True)
        prototxt.unlink(missing_ok=True)


def _table(figures: dict) -> str:
    rows = [
        ("plain read", figures["read_s"], figures["read_peak_rss_mb"]),
        ("ours (read_caffemodel)", figures["ours_s"], figures["peak_rss_mb"]),
        ("porting.load(prototxt, caffemodel)", figures["porting_load_s"], figures["porting_load_peak_rss_mb"]),
        ("naive protobuf + np.array", figures["naive_s"], figures["naive_peak_rss_mb"]),
    ]
    lines = [
        f"VGG16-sized V1 caffemodel: {figures['params']:,} weights, {figures['file_mb']:.0f} MB",
        f"{'method':<34}{'seconds':>10}{'peak RSS MB':>14}",
    ]
    lines += [f"{name:<34}{seconds:>10.3f}{peak:>14.0f}" for name, seconds, peak in rows]
    lines.append(
        f"ours / plain read: {figures['ours_vs_read']:.2f}x; naive / ours: {figures['naive_vs_ours']:.1f}x; "
        f"porting.load peak / file size: {figures['porting_load_vs_file']:.2f}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, help="number of weights (default: VGG16's)")
    parser.add_argument("--workdir", type=Path, help="where the temporary file goes (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import porting  # noqa: F401  (every method starts from the same imports, torch included)

        baseline = status_mb("VmRSS")
        seconds = _method(*args.worker)
        print(json.dumps({"seconds": seconds, "peak_rss_mb": status_mb("VmHWM") - baseline}))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        figures = run(Path(workdir), args.params)
    print(json.dumps(figures, indent=2) if args.json else _table(figures))


if __name__ == "__main__":
    main()
