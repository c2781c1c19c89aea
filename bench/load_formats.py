"""Loading a VGG16-FCN-8s-sized net from each weights format: caffemodel, `.pt`, `.safetensors`.

The voc-fcn8s deploy net (`prototxt.nets`, full width: 134M weights) gets seeded random
weights and is written as a caffemodel (our writer, the prototxt beside it) and as the two
converted checkpoints (`porting.save_checkpoint`); then `porting.load` of each runs in a
fresh process (`bench.port`'s worker protocol: peak RSS is VmHWM minus the RSS after the
shared imports and one unfilled build of the net, which does torch's one-time set-up), best of `repeats` taken in turns, every file read once beforehand so all
see a warm page cache. Per format:

- `<format>_s`: until `porting.load` returns (a safetensors file is memory-mapped: nothing
  of its weights has been read by then);
- `<format>_ready_s`: the load plus one pass over every weight (their sum), the least a
  first forward pays, so that the mapped file is read too;
- `<format>_peak_rss_mb`: after that pass (mapped pages count, as they are resident).

`python -m bench.load_formats` prints a table; `--update DIR` also puts the figures under
`load_formats` in `DIR/results.json` and rewrites `DIR/results.md` from it, without
rerunning the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.port import in_fresh_process, status_mb

NET = "voc-fcn8s"
FORMATS = ("safetensors", "pt", "caffemodel")
SUFFIXES = {"safetensors": ".safetensors", "pt": ".pt", "caffemodel": ".caffemodel"}


def build(workdir: Path, width: float = 1.0, seed: int = 0) -> dict[str, Path]:
    """Write the net at `width` with seeded random weights in every format; returns format -> file."""
    import numpy as np

    import porting
    from prototxt import nets

    net_param = nets.build(NET, "deploy", width=width)
    shapes = {name: layer.blob_shapes() for name, layer in porting.CaffeNet(net_param, fill=False).layers.items()}
    rng = np.random.default_rng(seed)
    blobs = {name: [rng.standard_normal(s, dtype=np.float32) for s in shape] for name, shape in shapes.items() if shape}
    files = {kind: workdir / f"{NET}{suffix}" for kind, suffix in SUFFIXES.items()}
    files["caffemodel"].with_suffix(".prototxt").write_text(porting.to_text(net_param))
    porting.write_caffemodel((net_param, blobs), files["caffemodel"])
    del blobs
    net = porting.load(files["caffemodel"].with_suffix(".prototxt"), files["caffemodel"])
    porting.save_checkpoint(net, files["pt"], "pt")
    porting.save_checkpoint(net, files["safetensors"], "safetensors")
    return files


def _load(kind: str, path: str) -> dict:
    """Load `path` in this process: seconds to `porting.load`, seconds to one pass over every weight."""
    import torch

    import porting

    start = time.perf_counter()
    net = porting.load(Path(path).with_suffix(".prototxt"), path) if kind == "caffemodel" else porting.load(path)
    loaded = time.perf_counter() - start
    with torch.no_grad():
        total = sum(float(p.sum()) for p in net.parameters())
    ready = time.perf_counter() - start
    assert total == total, "weights read back as NaN"
    return {"load_s": loaded, "ready_s": ready}


def run(workdir: Path, width: float = 1.0, repeats: int = 3) -> dict:
    """Build the files in `workdir`, time every format (best of `repeats` fresh processes, in turns)."""
    files = build(Path(workdir), width)
    for path in files.values():  # warm the page cache for every format alike
        with open(path, "rb") as file:
            while file.read(1 << 24):
                pass
    runs: dict[str, list[dict]] = {kind: [] for kind in FORMATS}
    for _ in range(repeats):
        for kind in FORMATS:
            runs[kind].append(in_fresh_process("bench.load_formats", kind, str(files[kind])))
    import porting

    params = sum(p.numel() for p in porting.load(files["safetensors"]).parameters())
    figures: dict = {"net": NET, "width": width, "params": params, "repeats": repeats}
    for kind in FORMATS:
        figures[f"{kind}_s"] = min(r["load_s"] for r in runs[kind])
        figures[f"{kind}_ready_s"] = min(r["ready_s"] for r in runs[kind])
        figures[f"{kind}_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs[kind])
        figures[f"{kind}_file_mb"] = files[kind].stat().st_size / 2**20
    for other in ("pt", "caffemodel"):
        figures[f"{other}_vs_safetensors"] = figures[f"{other}_s"] / figures["safetensors_s"]
        figures[f"{other}_vs_safetensors_ready"] = figures[f"{other}_ready_s"] / figures["safetensors_ready_s"]
    for kind in FORMATS:
        figures[f"{kind}_peak_vs_file"] = figures[f"{kind}_peak_rss_mb"] / figures[f"{kind}_file_mb"]
    return figures


def render(figures: dict) -> list[str]:
    """The markdown section of results.md."""
    lines = [
        f"## Loading a VGG16-FCN-8s-sized net from each format ({figures['net']} at width {figures['width']:g})",
        "",
        f"{figures['params']:,} weights, seeded random; `porting.load` in fresh processes, best of "
        f"{figures['repeats']} taken in turns, page cache warm. Ready: the load plus one pass over every weight.",
        "",
        "| format | file MB | load s | ready s | peak RSS MB | peak / file |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in FORMATS:
        lines.append(
            f"| {kind} | {figures[f'{kind}_file_mb']:.0f} | {figures[f'{kind}_s']:.3f} | "
            f"{figures[f'{kind}_ready_s']:.3f} | {figures[f'{kind}_peak_rss_mb']:.0f} | "
            f"{figures[f'{kind}_peak_vs_file']:.2f} |"
        )
    lines += [
        "",
        f"load: .pt / safetensors {figures['pt_vs_safetensors']:.1f}x, caffemodel / safetensors "
        f"{figures['caffemodel_vs_safetensors']:.1f}x; ready: .pt / safetensors "
        f"{figures['pt_vs_safetensors_ready']:.2f}x, caffemodel / safetensors {figures['caffemodel_vs_safetensors_ready']:.2f}x.",
    ]
    if "command" in figures:
        lines.append(f"Written by `{figures['command']}`.")
    return lines


def update(folder: Path, figures: dict) -> None:
    """Put `figures` under `load_formats` in `folder/results.json` and rewrite `folder/results.md` from it."""
    from bench.__main__ import render as render_all
    from porting import cli

    results = json.loads((folder / "results.json").read_text())
    results["load_formats"] = figures
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(render_all(results))
    cli.wrote(folder / "results.json")
    cli.wrote(folder / "results.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=1.0, help="channel width of the net (default: 1, the authors')")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per format (default: 3)")
    parser.add_argument("--workdir", type=Path, help="where the temporary files go (default: a temp dir)")
    parser.add_argument("--update", type=Path, metavar="DIR", help="merge into DIR/results.json and rewrite results.md")
    parser.add_argument("--worker", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import porting

        # every format starts from the same imports and from torch's lazy set-up done (one net built unfilled)
        porting.CaffeNet(porting.read_prototxt(Path(args.worker[1]).with_suffix(".prototxt")), fill=False)
        baseline = status_mb("VmRSS")
        figures = _load(*args.worker)
        print(json.dumps({**figures, "peak_rss_mb": status_mb("VmHWM") - baseline}))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        figures = run(Path(workdir), args.width, args.repeats)
    figures["command"] = " ".join(["python -m bench.load_formats", *(sys.argv[1:] if argv is None else argv)])
    print("\n".join(render(figures)))
    if args.update is not None:
        update(args.update, figures)


if __name__ == "__main__":
    main()
