"""The published-model registry (`porting.models`): the authors' URLs, and `--model` on every net-loading CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize, write_net

import porting
from porting import models
from prototxt import fcn


def authors_url(reference_dir: Path, name: str) -> str:
    found = list(reference_dir.glob(f"fcn-berkeleyvision*/{name}/caffemodel-url"))
    assert len(found) == 1, f"no caffemodel-url for {name} under {reference_dir}"
    return found[0].read_text().strip()


@pytest.mark.parametrize("name", list(models.MODELS))
def test_url_is_the_authors_caffemodel_url(reference_dir, name):
    model = models.MODELS[name]
    assert model.url == authors_url(reference_dir, name)
    assert model.filename == authors_url(reference_dir, name).rsplit("/", 1)[1]


@pytest.mark.parametrize("name", ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet"])
def test_every_voc_net_of_the_authors_is_registered_with_a_deploy_net(name):
    model = models.get(name)
    net = porting.CaffeNet(porting.read_prototxt(model.deploy_path()), fill=False)
    classes = models.class_metadata(model).classes
    assert net.inferred_shapes["score"][1] == len(classes) == 21


def test_published_scores_come_from_eval_published():
    rows = dict(models.published_scores(models.get("voc-fcn8s")))
    assert rows["repo README"]["mean_iu"] == 65.5
    assert rows["CVPR15 T2"] == {"pixel_acc": 90.3, "mean_acc": 75.9, "mean_iu": 62.7, "fw_iu": 83.2}


def test_listing_names_every_model_and_url(capsys):
    assert models.main([]) == 0
    out = capsys.readouterr().out
    for model in models.MODELS.values():
        assert model.name in out and model.url in out


def test_unknown_model_lists_the_known_ones(capsys):
    assert models.main(["voc-fcn4s"]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'voc-fcn4s'" in err and "voc-fcn8s" in err


@pytest.fixture
def narrow_registry(tmp_path, monkeypatch) -> Path:
    """The registry pointed at a narrow voc-fcn8s deploy net; returns weights written under the authors' file name."""
    torch.manual_seed(0)
    net = randomize(porting.CaffeNet(fcn.build("voc-fcn8s", "deploy", width=1 / 16)), seed=5, bilinear_deconv=True)
    nets = tmp_path / "prototxt"
    (nets / "voc-fcn8s").mkdir(parents=True)
    prototxt, caffemodel = write_net(net, tmp_path, "fcn8s-heavy-pascal")
    prototxt.rename(nets / "voc-fcn8s" / "deploy.prototxt")
    monkeypatch.setattr(models, "PROTOTXT_DIR", nets)
    return caffemodel


def test_missing_weights_name_the_url_and_the_file(tmp_path, narrow_registry, reference_dir, capsys):
    from porting.convert import main as convert

    missing = tmp_path / "absent.caffemodel"
    assert convert(["--model", "voc-fcn8s", "--caffemodel", str(missing), "--out", str(tmp_path / "m.pt")]) != 0
    err = capsys.readouterr().err
    assert (
        str(missing) in err
        and authors_url(reference_dir, "voc-fcn8s") in err
        and "fcn8s-heavy-pascal.caffemodel" in err
    )


def test_model_flag_on_convert_onnx_and_segment(tmp_path, narrow_registry, reference):
    from eval.segment import main as segment
    from porting.convert import main as convert
    from porting.onnx import main as onnx

    weights = ["--model", "voc-fcn8s", "--caffemodel", str(narrow_registry)]
    assert convert([*weights, "--out", str(tmp_path / "m.pt"), "--quiet"]) == 0
    checkpoint = porting.load(tmp_path / "m.pt")
    assert checkpoint.metadata == models.class_metadata(models.get("voc-fcn8s"))
    assert onnx([*weights, "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
    image = reference / "demo" / "image.jpg"
    assert segment([str(image), "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert segment([str(image), *weights, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    from PIL import Image

    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "a" / "image.png")), np.asarray(Image.open(tmp_path / "b" / "image.png"))
    )


def test_model_flag_on_eval_table(tmp_path, narrow_registry, capsys):
    import json

    from eval.table import main as table
    from fcndata.synthetic import write_synthetic

    paths = write_synthetic(tmp_path / "data", n_train=3, n_val=3, size=(32, 40))
    report = tmp_path / "scores.json"
    argv = [
        "--split",
        "voc2011seg11valid",
        "--voc-root",
        str(paths.voc_root),
        "--sbd-root",
        str(paths.sbd_root),
        "--model",
        "voc-fcn8s",
        "--caffemodel",
        str(narrow_registry),
        "--json",
        str(report),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert table(argv) == 0
    entry = json.loads(report.read_text())["voc-fcn8s"]
    assert entry["n_images"] == paths.seg11valid_count and len(entry["per_class_iu"]) == 21
    assert "voc-fcn8s per-class IU: background" in capsys.readouterr().out
