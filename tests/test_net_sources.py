"""Every CLI that loads a net meets a missing or unfinished net source with one `error:` line and exit 1.

The net sources are the flags of `eval.nets` and their counterparts: a runs folder (`--runs`:
missing, no finished stage, the asked `--stage` not finished), a checkpoint, a prototxt +
caffemodel pair, a published model (`--model`) and, for `reproduce.stage`, the weights a
stage starts from. Each CLI runs in-process through its `main(argv)` (an exception escaping
`main` is what prints a traceback); the issue's own command also runs as a user runs it.
The usage errors of the net flags (no net, `--model` without weights) exit 2 with the
file the user needs named.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from error_catalog import jpeg, tiny_files, voc_folder

from porting import models

ROOT = Path(__file__).resolve().parents[1]
#: the published model the `--model` cases name, and a name no entry has
MODEL, UNKNOWN_MODEL = "voc-fcn8s", "voc-fcn9s"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    prototxt, caffemodel = tiny_files(folder)
    unfinished = folder / "runs-unfinished" / "fcn32s"  # a stage that started and never wrote its final weights
    unfinished.mkdir(parents=True)
    shutil.copy(prototxt, unfinished / "deploy.prototxt")
    finished = folder / "runs" / "fcn32s"
    finished.mkdir(parents=True)
    shutil.copy(prototxt, finished / "deploy.prototxt")
    shutil.copy(caffemodel, finished / "final.caffemodel")
    photo = folder / "photo.jpg"
    photo.write_bytes(jpeg(16, 16))
    empty = folder / "empty"
    empty.mkdir()
    return {
        "prototxt": prototxt,
        "caffemodel": caffemodel,
        "photo": photo,
        "voc_root": voc_folder(folder / "voc", {"2008_000001": (jpeg(16, 16), np.zeros((16, 16), np.uint8))}),
        "empty": empty,
        "no_runs": folder / "no-runs",
        "unfinished": folder / "runs-unfinished",
        "runs": folder / "runs",
        "no_checkpoint": folder / "absent.pt",
        "no_prototxt": folder / "absent.prototxt",
        "no_caffemodel": folder / "absent.caffemodel",
        "out": folder / "out",
    }


#: net source -> (the net flags, what the error line must name), per kind of loader
SOURCES = {
    "runs folder missing": (lambda f: ["--runs", f["no_runs"]], lambda f: f["no_runs"].name),
    "runs folder with no finished stage": (lambda f: ["--runs", f["unfinished"]], lambda f: "no finished stage"),
    "checkpoint missing": (lambda f: ["--checkpoint", f["no_checkpoint"]], lambda f: f["no_checkpoint"].name),
    "prototxt missing": (
        lambda f: ["--prototxt", f["no_prototxt"], "--caffemodel", f["caffemodel"]],
        lambda f: f["no_prototxt"].name,
    ),
    "caffemodel missing": (
        lambda f: ["--prototxt", f["prototxt"], "--caffemodel", f["no_caffemodel"]],
        lambda f: f["no_caffemodel"].name,
    ),
    "model weights missing": (
        lambda f: ["--model", MODEL, "--caffemodel", f["no_caffemodel"]],
        lambda f: models.get(MODEL).filename,
    ),
    "unknown model": (lambda f: ["--model", UNKNOWN_MODEL, "--caffemodel", f["caffemodel"]], lambda f: UNKNOWN_MODEL),
}
#: CLI -> (its arguments around the net flags, the net sources it takes)
CLIS = {
    "eval.segment": (lambda f: [f["photo"], "--out", f["out"] / "seg", "--device", "cpu", "--quiet"], list(SOURCES)),
    "eval.table": (
        lambda f: ["--split", "voc2012val", "--voc-root", f["voc_root"], "--device", "cpu", "--quiet"],
        list(SOURCES),
    ),
    "porting.convert": (
        lambda f: ["--out", f["out"] / "m.pt", "--quiet"],
        ["prototxt missing", "caffemodel missing", "model weights missing", "unknown model"],
    ),
    "porting.onnx": (
        lambda f: ["--out", f["out"] / "m.onnx", "--quiet"],
        ["checkpoint missing", "prototxt missing", "caffemodel missing", "model weights missing", "unknown model"],
    ),
}
CASES = [(module, source) for module, (_, sources) in CLIS.items() for source in sources]
#: reproduce.stage's net sources: the weights a stage starts from
STAGE_CASES = {
    "previous stage not finished": (lambda f: ["fcn16s", "--out", f["unfinished"]], lambda f: "final.caffemodel"),
    "base weights missing": (
        lambda f: ["fcn32s", "--out", f["out"], "--base-weights", f["no_caffemodel"]],
        lambda f: f["no_caffemodel"].name,
    ),
    "--from-net missing": (
        lambda f: ["fcn32s", "--out", f["out"], "--from-net", f["no_caffemodel"]],
        lambda f: f["no_caffemodel"].name,
    ),
}


def run_main(module: str, argv: list, capfd) -> tuple[int, str]:
    main = importlib.import_module(module).main
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capfd.readouterr().err


def assert_one_error_line(code: int, err: str, named: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, f"exit status {code}, stderr:\n{err}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line, got:\n{err}"
    assert named in lines[0], f"the message does not name {named}: {lines[0]}"


@pytest.mark.parametrize("module, source", CASES, ids=[f"{m}:{s}" for m, s in CASES])
def test_missing_or_unfinished_net_is_one_error_line(files, capfd, module, source):
    around, _ = CLIS[module]
    flags, named = SOURCES[source]
    code, err = run_main(module, [*around(files), *flags(files)], capfd)
    assert_one_error_line(code, err, named(files))


def test_segment_with_a_stage_that_was_not_trained(files, capfd):
    around, _ = CLIS["eval.segment"]
    code, err = run_main("eval.segment", [*around(files), "--runs", files["runs"], "--stage", "fcn8s-atonce"], capfd)
    assert_one_error_line(code, err, "fcn8s-atonce: stage not finished (finished: fcn32s)")


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_stage_without_its_starting_weights_is_one_error_line(files, capfd, case):
    flags, named = STAGE_CASES[case]
    data = ["--sbd-root", files["empty"], "--voc-root", files["empty"], "--eval-every", "0", "--device", "cpu"]
    code, err = run_main("reproduce.stage", [*flags(files), *data, "--quiet"], capfd)
    assert_one_error_line(code, err, named(files))


def test_segment_runs_missing_as_a_user_runs_it(files):
    """The issue's command: `python -m eval.segment photo.png --runs MISSING --out seg`."""
    result = subprocess.run(
        [sys.executable, "-m", "eval.segment", str(files["photo"]), "--runs", "MISSING", "--out", "seg"],
        cwd=files["empty"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == ["error: MISSING: runs folder not found"]
    assert not (files["empty"] / "seg").exists()


@pytest.mark.parametrize("module", ["eval.segment", "eval.table", "porting.convert", "porting.onnx"])
def test_model_without_weights_names_the_file_and_where_to_get_it(files, capfd, module, tmp_path, monkeypatch):
    """No --caffemodel and an empty model cache: one error line with the file, its URL and the command."""
    monkeypatch.setenv("FCN_MODELS_DIR", str(tmp_path / "empty-cache"))
    around, _ = CLIS[module]
    code, err = run_main(module, [*around(files), "--model", MODEL], capfd)
    model = models.get(MODEL)
    last = err.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in err and last.startswith("error: "), err
    assert model.filename in last and model.url in last, last
    assert f"python -m porting.models download {MODEL}" in last, last


def test_table_names_the_pair_that_lacks_its_weights(files, capfd):
    around, _ = CLIS["eval.table"]
    code, err = run_main("eval.table", [*around(files), "--prototxt", files["prototxt"]], capfd)
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            f"error: --prototxt {files['prototxt']} has no --caffemodel: give one --caffemodel per --prototxt, in "
            "order, before those of the --model names"
        )
    )
    code, err = run_main("eval.table", [*around(files), "--checkpoint", files["prototxt"], "--caffemodel", "w"], capfd)
    assert code == 2 and "--caffemodel w has no --prototxt or --model to go with" in err
