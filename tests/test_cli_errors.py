"""Every CLI meets bad input with one readable line naming the file and exit status 1.

The CLIs are called through their `main(argv)` in-process (an exception escaping `main`
is exactly what would print a traceback), and one case per CLI also runs as
`python -m ...` to check what a user actually sees.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from error_catalog import TINY_NET, jpeg, tiny_files, voc_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs side by side; names are unique so a message can be traced to its file."""
    folder = tmp_path_factory.mktemp("cli")
    prototxt, caffemodel = tiny_files(folder)
    broken = folder / "broken.prototxt"
    broken.write_text(TINY_NET.replace("num_output: 4 kernel_size", "num_output: 4 kernel_sise"))
    truncated = folder / "truncated.caffemodel"
    data = caffemodel.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    not_a_checkpoint = folder / "garbage.pt"
    not_a_checkpoint.write_bytes(b"PK\x03\x04" + bytes(60))
    a_file = folder / "plain-file"
    a_file.write_text("not a folder")
    voc_root = voc_folder(folder / "voc", {"2008_000001": (jpeg(16, 16), np.zeros((16, 16), np.uint8))})
    return {
        "voc_root": voc_root,
        "prototxt": prototxt,
        "caffemodel": caffemodel,
        "broken": broken,
        "truncated": truncated,
        "missing": folder / "missing.prototxt",
        "missing_weights": folder / "missing.caffemodel",
        "garbage_pt": not_a_checkpoint,
        "missing_dir": folder / "no-such-dir",
        "file": a_file,
        "folder": folder,
    }


def run_main(module: str, argv: list[str], capfd) -> tuple[int, str]:
    main = importlib.import_module(module).main
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capfd.readouterr().err


def assert_one_line_naming(code: int, err: str, named: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, f"exit status {code}, stderr:\n{err}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert named.name in lines[0], f"message does not name {named.name}: {lines[0]}"


CASES = [
    (
        "porting.convert",
        "missing prototxt",
        lambda f, o: ["--prototxt", f["missing"], "--caffemodel", f["caffemodel"], "--out", o / "m.pt", "--quiet"],
        "missing",
    ),
    (
        "porting.convert",
        "broken prototxt",
        lambda f, o: ["--prototxt", f["broken"], "--caffemodel", f["caffemodel"], "--out", o / "m.pt", "--quiet"],
        "broken",
    ),
    (
        "porting.convert",
        "truncated caffemodel",
        lambda f, o: ["--prototxt", f["prototxt"], "--caffemodel", f["truncated"], "--out", o / "m.pt", "--quiet"],
        "truncated",
    ),
    (
        "porting.convert",
        "missing caffemodel",
        lambda f, o: [
            "--prototxt",
            f["prototxt"],
            "--caffemodel",
            f["missing_weights"],
            "--out",
            o / "m.pt",
            "--quiet",
        ],
        "missing_weights",
    ),
    (
        "porting.convert",
        "output folder missing",
        lambda f, o: [
            "--prototxt",
            f["prototxt"],
            "--caffemodel",
            f["caffemodel"],
            "--out",
            f["missing_dir"] / "m.pt",
            "--quiet",
        ],
        "missing_dir",
    ),
    (
        "porting.onnx",
        "missing prototxt",
        lambda f, o: ["--prototxt", f["missing"], "--caffemodel", f["caffemodel"], "--out", o / "m.onnx"],
        "missing",
    ),
    (
        "porting.onnx",
        "broken prototxt",
        lambda f, o: ["--prototxt", f["broken"], "--caffemodel", f["caffemodel"], "--out", o / "m.onnx"],
        "broken",
    ),
    (
        "porting.onnx",
        "truncated caffemodel",
        lambda f, o: ["--prototxt", f["prototxt"], "--caffemodel", f["truncated"], "--out", o / "m.onnx"],
        "truncated",
    ),
    (
        "porting.onnx",
        "corrupt checkpoint",
        lambda f, o: ["--checkpoint", f["garbage_pt"], "--out", o / "m.onnx"],
        "garbage_pt",
    ),
    (
        "reproduce.stage",
        "missing dataset",
        lambda f, o: [
            "fcn32s",
            "--out",
            o,
            "--sbd-root",
            f["missing_dir"],
            "--base-weights",
            f["caffemodel"],
            "--eval-every",
            "0",
            "--device",
            "cpu",
        ],
        "missing_dir",
    ),
    (
        "reproduce.stage",
        "missing base weights",
        lambda f, o: [
            "fcn32s",
            "--out",
            o,
            "--sbd-root",
            f["folder"],
            "--base-weights",
            f["missing_weights"],
            "--eval-every",
            "0",
            "--device",
            "cpu",
        ],
        "missing_weights",
    ),
    (
        "eval.table",
        "missing checkpoint",
        lambda f, o: ["--split", "voc2012val", "--voc-root", f["voc_root"], "--checkpoint", f["missing"], "--quiet"],
        "missing",
    ),
    (
        "eval.table",
        "broken prototxt",
        lambda f, o: [
            "--split",
            "voc2012val",
            "--voc-root",
            f["voc_root"],
            "--prototxt",
            f["broken"],
            "--caffemodel",
            f["caffemodel"],
            "--quiet",
        ],
        "broken",
    ),
    (
        "eval.table",
        "truncated caffemodel",
        lambda f, o: [
            "--split",
            "voc2012val",
            "--voc-root",
            f["voc_root"],
            "--prototxt",
            f["prototxt"],
            "--caffemodel",
            f["truncated"],
            "--quiet",
        ],
        "truncated",
    ),
    (
        "eval.table",
        "missing dataset",
        lambda f, o: [
            "--split",
            "voc2012val",
            "--voc-root",
            f["missing_dir"],
            "--prototxt",
            f["prototxt"],
            "--caffemodel",
            f["caffemodel"],
            "--quiet",
        ],
        "missing_dir",
    ),
    ("prototxt.generate", "output path is a file", lambda f, o: ["--out", f["file"], "--classes", "5"], "file"),
]


@pytest.mark.parametrize("module, case, argv, named", CASES, ids=[f"{m}:{c}" for m, c, _, _ in CASES])
def test_cli_bad_input(files, tmp_path, capfd, module, case, argv, named):
    code, err = run_main(module, [str(a) for a in argv(files, tmp_path)], capfd)
    assert_one_line_naming(code, err, files[named])


@pytest.mark.parametrize(
    "module, argv, named",
    [
        (
            "porting.convert",
            lambda f, o: ["--prototxt", f["prototxt"], "--caffemodel", f["truncated"], "--out", o / "m.pt"],
            "truncated",
        ),
        (
            "eval.table",
            lambda f, o: ["--split", "voc2012val", "--voc-root", f["voc_root"], "--checkpoint", f["garbage_pt"]],
            "garbage_pt",
        ),
    ],
)
def test_cli_process_prints_no_traceback(files, tmp_path, module, argv, named):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, argv(files, tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert files[named].name in result.stderr.strip().splitlines()[-1]
