"""Optional packages: a missing one is named with the pip extra that installs it, and that extra lists it."""

from __future__ import annotations

import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from helpers import net_from_text

import porting.onnx
from bench.__main__ import BENCH_MODULES
from bench.__main__ import main as bench_main
from porting.optional import MissingExtraError, require

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
TINY = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\n'


def extra_distributions(extra: str) -> set[str]:
    """Distribution names an extra of pyproject.toml installs, through the extras it names of this project."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    names: set[str] = set()
    for requirement in project["optional-dependencies"][extra]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
        if name == project["name"]:
            for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                names |= extra_distributions(inner.strip())
        else:
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("module", "extra"), [*((m, "bench") for m in BENCH_MODULES), ("onnx", "onnx"), ("onnxscript", "onnx")]
)
def test_the_named_extra_installs_the_module(module, extra):
    installed_by = {name.lower() for name in packages_distributions()[module]}
    assert installed_by & extra_distributions(extra), f"[{extra}] lists none of {installed_by}"


def test_a_missing_module_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(
        MissingExtraError, match=r"the bench needs the 'onnxruntime' package.*pip install -e '\.\[bench\]'"
    ):
        require("onnxruntime", extra="bench", needed_by="the bench")
    assert require("json", extra="bench", needed_by="the bench").dumps([]) == "[]"


@pytest.mark.parametrize("module", BENCH_MODULES)
def test_bench_names_the_extra_of_a_missing_peer(monkeypatch, capsys, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)
    assert bench_main(["--quick", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: python -m bench needs the '{module}' package") and "'.[bench]'" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("module", ["onnx", "onnxscript"])
def test_onnx_export_names_the_onnx_extra(monkeypatch, capsys, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=rf"ONNX export.* needs the '{module}' package.*'\.\[onnx\]'"):
        porting.onnx.export_onnx(net_from_text(TINY), tmp_path / "m.onnx")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(TINY)
    assert porting.onnx.main(["--prototxt", str(prototxt), "--out", str(tmp_path / "m.onnx")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ONNX export") and f"needs the '{module}' package" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()
