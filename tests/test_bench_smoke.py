"""`python -m bench --quick` end to end on tiny inputs: the files, the keys, the peers' agreement.

No timing is asserted (the machine's load decides those); what must hold is that one
run writes both files with the documented keys and that every peer computed the same
scores as our module.
"""

from __future__ import annotations

import json
import math

from conftest import find_reference_dir

from bench.__main__ import main

DESIGN_KEYS = {
    "fcn8s_forward_cpu": {"ours_ms", "onnxruntime_ms", "opencv_ms", "bf16_ms", "peak_gflop_s"},
    "peak_cpu": {"peak_gflop_s", "blas_gemm_gflop_s", "onednn_gemm_gflop_s"},
    "port_vgg16": {"ours_s", "read_s", "naive_s", "peak_rss_mb", "file_mb"},
    "metrics": {"ours_mpx_s", "numpy_mpx_s"},
    "load_formats": {
        f"{kind}_{figure}" for kind in ("safetensors", "pt", "caffemodel") for figure in ("s", "ready_s", "peak_rss_mb")
    },
}


def test_quick_run_writes_results_with_the_documented_keys(tmp_path, capsys, monkeypatch):
    reference = find_reference_dir()  # the model-zoo nets for the Table 1 rows; the bench runs without them too
    if reference is not None:
        monkeypatch.setenv("FCN_REFERENCE_DIR", str(reference))
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for section, keys in DESIGN_KEYS.items():
        for key in keys:
            value = results[section][key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, f"{section}.{key} = {value!r}"
    assert "fcn8s_forward_cuda" in results or results["cuda"] == "not available on this machine"

    cpu = results["fcn8s_forward_cpu"]
    assert {"ours eager", "ours channels_last", "onnxruntime", "opencv"} <= set(cpu["peers"])
    for name, row in cpu["peers"].items():
        assert row["max_rel_diff_vs_ours_eager"] < 1e-4, f"{name} disagrees with our module"
    assert min(row["ratio_to_fastest"] for row in cpu["peers"].values()) == 1.0
    assert cpu["gflop"] > 0
    peak = results["peak_cpu"]
    measured = [
        peak[k] for k in ("fma_loop_gflop_s", "blas_gemm_gflop_s", "onednn_gemm_gflop_s") if peak[k] is not None
    ]
    assert cpu["peak_gflop_s"] == peak["peak_gflop_s"] == max(measured)
    for row in cpu["peers"].values():
        assert row["fraction_of_peak"] == row["gflop_s"] / peak["peak_gflop_s"]
    assert 0.9 <= cpu["bf16_argmax_agreement"] <= 1.0
    assert results["train_cpu"]["images_s"] > 0
    table1 = results["table1_backbones_cpu"]
    zoo = {"alexnet", "googlenet"} if reference is not None else set()
    assert set(table1["nets"]) == {"vgg16", *zoo} and not set(table1["missing"]) & zoo
    for row in table1["nets"].values():
        assert row["ours_ms"] > 0 and row["gflop"] > 0 and row["parameters"] > 0

    # the device table: on CUDA the real one, else its code run on the CPU as a smoke test
    device = results.get("fcn8s_forward_cuda", results.get("device_table_smoke"))
    combos = {(row["mode"], row["precision"], row["batch"]) for row in device["rows"]}
    assert {("eager", p, b) for p in ("fp32", "tf32", "bf16", "fp16") for b in (1, 8)} <= combos
    for row in device["rows"]:
        assert row["median_ms"] > 0 and 0.9 <= row["argmax_agreement_vs_fp32"] <= 1.0, row
    smoke = device["device"].endswith("(smoke run)")
    assert all(row["argmax_agreement_vs_fp32"] == 1.0 for row in device["rows"] if smoke and row["precision"] == "fp32")
    assert {"fp32_ms", "tf32_ms", "bf16_ms", "fp16_ms", "onnxruntime_cuda_ms", "provider", "peak_memory_mb"} <= set(
        device
    )

    markdown = (tmp_path / "results.md").read_text()
    assert markdown.strip() in capsys.readouterr().out, "the printed table is the written one"
    assert "| mode | precision | batch | median ms |" in markdown
    for heading in (
        "## FCN-8s forward, CPU",
        "## CUDA",
        "## Porting a VGG16-sized caffemodel",
        "## Loading a VGG16-FCN-8s-sized net from each format",
        "## Confusion-matrix accumulation",
    ):
        assert heading in markdown
