"""`python -m bench`: every benchmark in one run; writes bench/results.md and results.json.

Measures the machine's fp32 peak, runs the FCN-8s forward table (CPU, with the bf16
InferenceNet beside it; the device table on CUDA where torch sees a GPU), one training
step's throughput, the FCN-32s forward of CVPR 2015 Table 1's three backbones, the VGG16
caffemodel port bench, loading FCN-8s from each weights format (caffemodel, .pt, safetensors:
`bench.load_formats`, which can also run alone and merge its figures) and the
confusion-matrix bench, then prints the same markdown it
writes. `--quick` runs everything on tiny inputs, without torch.compile, as a smoke test
(its figures mean nothing), including the device table on the CPU where there is no GPU;
`--out` writes elsewhere than the bench package.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import backbones, forward, load_formats, metrics, port
from porting import cli
from porting.numerics import TF32_HELP, set_fp32_precision
from porting.optional import require

#: import names of the packages the [bench] extra brings (the peers: OpenCV, ONNX Runtime, ONNX export)
BENCH_MODULES = ("cv2", "onnxruntime", "onnx", "onnxscript")

FULL: dict[str, dict[str, Any]] = {
    "peak": dict(gemm_n=4096, repeats=3),
    "forward": dict(width=1.0, size=500, repeats=5, warmup=1),
    "train": dict(width=1.0, size=500, steps=2),
    "device": dict(width=1.0, size=500, repeats=10),
    "backbones": dict(width=1.0, size=500, repeats=5, warmup=1),
    "port": dict(),
    "load_formats": dict(),
    "metrics": dict(),
}
QUICK: dict[str, dict[str, Any]] = {
    "peak": dict(gemm_n=256, repeats=1),
    "forward": dict(width=1 / 16, size=64, repeats=2, warmup=1),
    "train": dict(width=1 / 16, size=64, steps=1),
    "device": dict(width=1 / 16, size=48, repeats=1),
    "backbones": dict(width=1 / 16, size=64, repeats=1, warmup=1),
    "port": dict(params=200_000, repeats=1),
    "load_formats": dict(width=1 / 16, repeats=1),
    "metrics": dict(n_images=2, height=64, width=64, repeats=1),
}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(command: str, quick: bool, compile_module: bool) -> dict:
    """Run every benchmark; the figures as results.json holds them."""
    from bench import (  # main() names a missing [bench] package first
        device_table,
        peak,
    )

    settings = QUICK if quick else FULL
    started = time.time()
    results: dict = {
        "command": command,
        "machine": {"cpu": _cpu_name(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
    }
    results["peak_cpu"] = peak.measure(**settings["peak"])
    with tempfile.TemporaryDirectory(prefix="fcn-bench-") as scratch:
        workdir = Path(scratch)
        results["fcn8s_forward_cpu"] = forward.run(
            workdir / "cpu",
            peak_gflop_s=results["peak_cpu"]["peak_gflop_s"],
            compile_module=compile_module,
            **settings["forward"],
        )
        results["train_cpu"] = {
            "images_s": forward.train_images_per_second(torch.device("cpu"), **settings["train"]),
            "input": f"1x3x{settings['train']['size']}x{settings['train']['size']}",
        }
        results["table1_backbones_cpu"] = backbones.run(**settings["backbones"])
        if torch.cuda.is_available():
            table = device_table.run(
                workdir / "cuda", torch.device("cuda"), compile_module=compile_module, **settings["device"]
            )
            results["fcn8s_forward_cuda"] = table
            results["train_cuda"] = table.pop("train")
        else:
            results["cuda"] = forward.CUDA_ABSENT
            if quick:
                results["device_table_smoke"] = device_table.run(
                    workdir / "smoke", torch.device("cpu"), compile_module=False, **settings["device"]
                )
        (workdir / "port").mkdir()
        results["port_vgg16"] = port.run(workdir / "port", **settings["port"])
        (workdir / "formats").mkdir()
        results["load_formats"] = load_formats.run(workdir / "formats", **settings["load_formats"])
    results["metrics"] = metrics.run(**settings["metrics"])
    results["wall_s"] = time.time() - started
    return results


def _peer_table(block: dict) -> list[str]:
    lines = [
        "| peer | median ms | ratio to fastest | GFLOP/s | of fp32 peak | max rel. diff vs ours eager |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in sorted(block["peers"].items(), key=lambda item: item[1]["median_ms"]):
        lines.append(
            f"| {name} | {row['median_ms']:.1f} | {row['ratio_to_fastest']:.2f} | {row['gflop_s']:.0f} | "
            f"{row['fraction_of_peak']:.0%} | {row['max_rel_diff_vs_ours_eager']:.1e} |"
        )
    return lines


def _peak_line(peak: dict) -> str:
    fma = peak["fma_loop_gflop_s"]
    loop = f"vectorised FMA loop {fma:.0f}" if fma is not None else "FMA loop not built (no C compiler)"
    return (
        f"fp32 peak {peak['peak_gflop_s']:.0f} GFLOP/s, the best of: {loop}, oneDNN GEMM "
        f"{peak['onednn_gemm_gflop_s']:.0f}, BLAS matmul {peak['blas_gemm_gflop_s']:.0f} "
        f"({peak['gemm_n']}^3, {peak['threads']} threads)."
    )


def _device_table(table: dict, train: dict) -> list[str]:
    """The device table: one row per mode, precision and batch."""

    def memory(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f} MB"

    lines = [
        f"{table['device']}; FCN-8s {table['input']} at width {table['width']:g}; {table['gflop']:.1f} GFLOP per image; "
        f"fp32 matmul peak {table['matmul_peak_gflop_s']:.0f} GFLOP/s; OpenCV: {table['opencv']}.",
        "",
        "| mode | precision | batch | median ms | images/s | peak memory | argmax agreement vs fp32 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table["rows"]:
        lines.append(
            f"| {row['mode']} | {row['precision']} | {row['batch']} | {row['median_ms']:.2f} | {row['images_per_s']:.1f} | "
            f"{memory(row['peak_memory_mb'])} | {row['argmax_agreement_vs_fp32']:.2%} |"
        )
    provider = table["provider"] or "none usable (no CUDA provider loaded)"
    lines += [
        "",
        f"ONNX Runtime provider: {provider}. Faithful training (batch 1 per image, fp32): "
        f"{train['images_per_s']:.2f} images/s, peak memory {memory(train['peak_memory_mb'])}.",
    ]
    return lines


def render(results: dict) -> str:
    """results.json as the markdown table the README quotes."""

    cpu = results["fcn8s_forward_cpu"]
    fastest_peer = min(cpu["onnxruntime_ms"], cpu["opencv_ms"])
    verdict = "met" if cpu["ours_ms"] <= fastest_peer else "not met"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{results['command']}` in one run ({results['wall_s']:.0f} s). "
        f"Machine: {results['machine']['cpu']}, torch threads {results['machine']['torch_threads']}; "
        f"torch {cpu['versions']['torch']}, onnxruntime {cpu['versions']['onnxruntime']}, opencv {cpu['versions']['opencv']}.",
        "",
        f"## FCN-8s forward, CPU ({cpu['input']}, batch 1)",
        "",
        f"FCN-8s at width {cpu['width']:g} (1 = the authors' VGG16 widths) with seeded random weights; the same prototxt + caffemodel "
        f"(our writer) for OpenCV, our ONNX export for ONNX Runtime. Median of {cpu['repeats']} interleaved runs.",
        "",
        *_peer_table(cpu),
        "",
        f"{cpu['gflop']:.1f} GFLOP per forward. {_peak_line(results['peak_cpu'])}",
        "",
        f"bf16 (`InferenceNet(net, dtype=torch.bfloat16)`, in rounds of its own with the fp32 InferenceNet): {cpu['bf16_ms']:.1f} ms, "
        f"{cpu['bf16_speedup']:.2f}x the fp32 InferenceNet; argmax agreement with fp32 "
        f"{cpu['bf16_argmax_agreement']:.2%} of pixels (random inputs, random weights); "
        f"native bf16 on this CPU: {'yes' if cpu['bf16_native'] else 'no (emulated)'}.",
    ]
    if cpu["compile_s"] is not None:
        lines.append(f"torch.compile: {cpu['compile_s']:.0f} s to compile (first call, not in the table).")
    lines += [
        f"Target (ours no slower than the fastest of ONNX Runtime and OpenCV): **{verdict}**; "
        f"best of ours ({cpu['ours_variant']}) {cpu['ours_ms']:.1f} ms vs {fastest_peer:.1f} ms.",
        "",
        "## Training, one FCN-8s step (forward, loss, backward, SGD), batch 1",
        "",
        f"CPU: {results['train_cpu']['images_s']:.3f} images/s at {results['train_cpu']['input']}.",
        "",
        *backbones.render(results["table1_backbones_cpu"]),
        "",
        "## CUDA",
        "",
    ]
    if "fcn8s_forward_cuda" in results:
        lines += _device_table(results["fcn8s_forward_cuda"], results["train_cuda"])
    else:
        lines.append(f"CUDA: {results['cuda']}.")
        if "device_table_smoke" in results:
            smoke = results["device_table_smoke"]
            lines += [
                "",
                "The same table's code run on the CPU as a smoke test (figures mean nothing):",
                "",
                *_device_table(smoke, smoke["train"]),
            ]
    vgg, met = results["port_vgg16"], results["metrics"]
    lines += [
        "",
        "## Porting a VGG16-sized caffemodel (V1 layout)",
        "",
        f"{vgg['params']:,} weights, {vgg['file_mb']:.0f} MB; best of fresh processes.",
        "",
        "| method | seconds | peak RSS MB |",
        "| --- | ---: | ---: |",
        f"| plain read of the file | {vgg['read_s']:.3f} | {vgg['read_peak_rss_mb']:.0f} |",
        f"| ours (read_caffemodel) | {vgg['ours_s']:.3f} | {vgg['peak_rss_mb']:.0f} |",
        f"| porting.load(prototxt, caffemodel): the whole net | {vgg['porting_load_s']:.3f} | "
        f"{vgg['porting_load_peak_rss_mb']:.0f} |",
        f"| naive protobuf + np.array | {vgg['naive_s']:.3f} | {vgg['naive_peak_rss_mb']:.0f} |",
        "",
        f"ours / plain read: {vgg['ours_vs_read']:.2f}x; naive / ours: {vgg['naive_vs_ours']:.1f}x; "
        f"porting.load peak RSS / file size: {vgg['porting_load_vs_file']:.2f}x.",
        "",
        *(load_formats.render(results["load_formats"]) + [""] if "load_formats" in results else []),
        "## Confusion-matrix accumulation",
        "",
        f"{met['images']} labels ({met['megapixels']:.1f} Mpx): eval.metrics {met['ours_mpx_s']:.0f} Mpx/s "
        f"({met['ours_1thread_mpx_s']:.0f} on one thread) vs the authors' numpy bincount {met['numpy_mpx_s']:.0f} Mpx/s "
        f"({met['ratio']:.1f}x).",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("bench", __doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs, few repeats: a smoke run, not figures")
    parser.add_argument("--no-compile", dest="compile_module", action="store_false", help="leave out torch.compile")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder for results.md and results.json (default: the bench package)",
    )
    parser.add_argument("--tf32", action="store_true", help=TF32_HELP)
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    set_fp32_precision(args.tf32)
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    return cli.run(lambda: bench(args, command))


def bench(args: argparse.Namespace, command: str) -> None:
    """Run the benchmarks and write their figures (the output folder is made first, so a bad --out fails fast).

    Raises:
        MissingExtraError: a package of the [bench] extra is not installed.
    """
    for module in BENCH_MODULES:
        require(module, extra="bench", needed_by="python -m bench")
    args.out.mkdir(parents=True, exist_ok=True)
    results = collect(command, args.quick, args.compile_module and not args.quick)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    cli.wrote(args.out / "results.json")
    markdown = render(results)
    (args.out / "results.md").write_text(markdown)
    cli.wrote(args.out / "results.md")
    print(markdown)


if __name__ == "__main__":
    sys.exit(main())
