"""Every command follows porting.cli's convention: documented arguments, shared flag names,
`error:` + exit 1 for an output that cannot be written (no traceback), no `\\r` in piped output."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from error_catalog import jpeg, tiny_files, voc_folder

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    "porting.convert",
    "porting.onnx",
    "prototxt.generate",
    "reproduce.stage",
    "reproduce.demo",
    "eval.table",
    "bench.__main__",
)
#: commands whose parsers follow the convention but whose unwritable-output case is tested with their own inputs
PARSERS = (*COMMANDS, "eval.segment", "porting.models", "porting.fully_convolutional")
#: a 1x1 convolution to 21 classes named `score`: the smallest net eval.table accepts
SCORE_NET = """name: "score-only"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 21 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
"""


#: commands whose parser lives in another module (porting sits below prototxt, so its cast command's
#: line lives with the net writer)
PARSER_HOME = {"porting.fully_convolutional": "prototxt.backbone"}


def parser_of(module: str) -> argparse.ArgumentParser:
    return importlib.import_module(PARSER_HOME.get(module, module)).build_parser()


@pytest.mark.parametrize("module", PARSERS)
def test_every_argument_has_help(module):
    parser = parser_of(module)
    undocumented = [
        action.option_strings or [action.dest]
        for action in parser._actions
        if not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS
    ]
    assert not undocumented, f"{module}: arguments without help: {undocumented}"
    assert parser.prog == f"python -m {module.removesuffix('.__main__')}"


@pytest.mark.parametrize("module", PARSERS)
def test_shared_flags_mean_the_same_everywhere(module):
    actions = {option: action for action in parser_of(module)._actions for option in action.option_strings}
    assert "--quiet" in actions and actions["--quiet"].default is False
    if "--device" in actions:
        assert actions["--device"].default == "auto"
    if "--classes" in actions:
        assert actions["--classes"].type(" 5 ") == 5
    assert not {"--num-classes", "--no-progress"} & set(actions), "old spellings of the shared flags"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("convention")
    prototxt, caffemodel = tiny_files(folder)
    (folder / "score").mkdir()
    score_prototxt, score_caffemodel = tiny_files(folder / "score", SCORE_NET)
    voc_root = voc_folder(folder / "voc", {"2008_000001": (jpeg(8, 8), np.zeros((8, 8), np.uint8))})
    blocker = folder / "a-file"
    blocker.write_text("outputs cannot go below a plain file")
    return {
        "prototxt": prototxt,
        "caffemodel": caffemodel,
        "score_prototxt": score_prototxt,
        "score_caffemodel": score_caffemodel,
        "voc_root": voc_root,
        "blocked": blocker / "out",
    }


def unwritable_argv(module: str, f: dict[str, Path]) -> list[str]:
    out = f["blocked"]
    return {
        "porting.convert": ["--prototxt", f["prototxt"], "--caffemodel", f["caffemodel"], "--out", out / "m.pt"],
        "porting.onnx": ["--prototxt", f["prototxt"], "--caffemodel", f["caffemodel"], "--out", out / "m.onnx"],
        "prototxt.generate": ["--out", out, "--classes", "5"],
        "reproduce.stage": ["fcn32s", "--out", out, "--sbd-root", out, "--eval-every", "0", "--device", "cpu"],
        "reproduce.demo": ["--out", out, "--fast", "--device", "cpu"],
        "eval.table": [
            "--split",
            "voc2012val",
            "--voc-root",
            f["voc_root"],
            "--prototxt",
            f["score_prototxt"],
            "--caffemodel",
            f["score_caffemodel"],
            "--device",
            "cpu",
            "--json",
            out / "eval.json",
        ],
        "bench.__main__": ["--quick", "--out", out],
    }[module]


@pytest.mark.parametrize("module", COMMANDS)
def test_unwritable_output_is_one_error_line_and_exit_1(module, inputs, capfd):
    main = importlib.import_module(module).main
    code = main([str(a) for a in unwritable_argv(module, inputs)])
    err = capfd.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "a-file" in lines[-1], err
    assert "Traceback" not in err


def test_unwritable_output_in_a_process_prints_no_traceback(inputs):
    argv = unwritable_argv("eval.table", inputs)
    result = subprocess.run(
        [sys.executable, "-m", "eval.table", *map(str, argv)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error:")


@pytest.mark.parametrize(
    "module, argv",
    [
        (
            "porting.convert",
            lambda f, o: ["--prototxt", f["prototxt"], "--caffemodel", f["caffemodel"], "--out", o / "m.pt"],
        ),
        (
            "eval.table",
            lambda f, o: [
                "--split",
                "voc2012val",
                "--voc-root",
                f["voc_root"],
                "--prototxt",
                f["score_prototxt"],
                "--caffemodel",
                f["score_caffemodel"],
                "--device",
                "cpu",
                "--json",
                o / "e.json",
            ],
        ),
    ],
)
def test_piped_output_has_no_carriage_returns(module, argv, inputs, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, argv(inputs, tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("wrote "), "what was written is reported on stderr"


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_stage_leaves_no_empty_folder_behind(tmp_path, capfd, existing):
    """`reproduce.stage` makes OUT/<stage>/ before its work; when the stage fails (here: fcn16s with no
    trained fcn32s, fcn32s without its classifier) the folders it made are gone again, OUT too if it
    made OUT; a folder that was there before stays."""
    from reproduce.stage import main

    out = tmp_path / "runs"
    if existing:
        out.mkdir()
    data = ["--sbd-root", str(tmp_path), "--voc-root", str(tmp_path), "--eval-every", "0", "--device", "cpu"]
    for stage in ("fcn16s", "fcn32s"):
        assert main([stage, "--out", str(out), *data, "--quiet"]) == 1
        assert capfd.readouterr().err.startswith("error: ")
        assert sorted(path.name for path in tmp_path.iterdir()) == (["runs"] if existing else [])
    assert not existing or not any(out.iterdir())
