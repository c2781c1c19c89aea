"""Data never runs code: not a Python layer's param_str, not its module, not a checkpoint's pickle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from error_catalog import TINY_NET

import porting
from porting.checkpoint import CheckpointError
from porting.errors import FcnError, PrototxtError

INPUT_LAYER = (
    'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }'
)


def python_data_layer(module: str, param_str: str) -> str:
    escaped = param_str.replace("\\", "\\\\").replace('"', '\\"')
    layer = (
        f'layer {{ name: "data" type: "Python" top: "data" '
        f'python_param {{ module: "{module}" layer: "Layer" param_str: "{escaped}" }} }}'
    )
    return TINY_NET.replace(INPUT_LAYER, layer)


@pytest.mark.parametrize(
    "template",
    [
        "__import__('os').system('touch {marker}')",
        "{{'split': __import__('os').system('touch {marker}')}}",
        "(lambda: open('{marker}', 'w'))()",
        "{{'seed': 1, **__import__('pathlib').Path('{marker}').touch()}}",
    ],
)
def test_param_str_code_is_refused_unrun(tmp_path, template):
    marker = tmp_path / "ran"
    text = python_data_layer("fcn_harmless_data", template.format(marker=marker))
    with pytest.raises(PrototxtError, match="param_str"):
        porting.CaffeNet(porting.parse_prototxt(text, source="evil.prototxt"))
    assert not marker.exists()


def test_param_str_literal_is_read(tmp_path):
    text = python_data_layer(
        "voc_layers", "{'voc_dir': '../data/pascal', 'seed': 1337, 'mean': (104.00699, 116.66877, 122.67892)}"
    )
    net = porting.CaffeNet(porting.parse_prototxt(text, source="net.prototxt"))
    assert net.data_layers["data"].params == {
        "voc_dir": "../data/pascal",
        "seed": 1337,
        "mean": (104.00699, 116.66877, 122.67892),
    }


def test_python_module_named_in_prototxt_is_never_imported(tmp_path, monkeypatch):
    """An importable module that would leave a marker: building and running the net must not import it."""
    module = "fcn_evil_layer_module"
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(python_data_layer(module, "{'split': 'train'}"))
    net = porting.load(prototxt)
    net(torch.zeros(1, 3, 16, 16))
    assert net.data_layers["data"].python_layer == f"{module}.Layer"
    assert module not in sys.modules
    assert not marker.exists()


class _RunsCode:
    """Pickles as a call of `exec` that would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    net = porting.CaffeNet(porting.parse_prototxt(TINY_NET, source="tiny"))
    path = tmp_path / "model.pt"
    porting.save_checkpoint(net, path)
    payload = torch.load(path, weights_only=True)
    payload["phase"] = _RunsCode(marker)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=str(path)):
        porting.load(path)
    assert not marker.exists()


def test_plain_pickle_given_as_net_is_refused(tmp_path):
    """A legacy (non-zip) pickle is not taken for a checkpoint and never unpickled."""
    import pickle

    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(FcnError, match=str(path)):
        porting.load(path)
    assert not marker.exists()
