"""The published-model registry (`porting.models`): the authors' URLs, and `--model` on every net-loading CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize, write_net

import porting
from eval.published import ARXIV2015_CONTEXT, CVPR2015_TABLE4, CVPR2015_TABLE5
from fcndata import nyud, pascalcontext, siftflow
from fcndata.classes import TASKS, net_task
from porting import models
from prototxt import fcn, nets


def authors_url(reference_dir: Path, name: str) -> str:
    found = list(reference_dir.glob(f"fcn-berkeleyvision*/{name}/caffemodel-url"))
    assert len(found) == 1, f"no caffemodel-url for {name} under {reference_dir}"
    return found[0].read_text().strip()


@pytest.mark.parametrize("name", list(models.MODELS))
def test_url_is_the_authors_caffemodel_url(reference_dir, name):
    model = models.MODELS[name]
    assert model.url == authors_url(reference_dir, name)
    assert model.filename == authors_url(reference_dir, name).rsplit("/", 1)[1]


def test_every_caffemodel_url_of_the_authors_is_registered(reference_dir):
    published = {path.parent.name: path for path in reference_dir.glob("fcn-berkeleyvision*/*/caffemodel-url")}
    assert len(published) == 14 and "nyud-fcn32s-color-d" not in published  # the authors publish no weights for it
    assert set(published) == set(models.MODELS)
    for name, path in published.items():
        assert models.get(name).url == path.read_text().strip()


def _score_blob(model: models.PublishedModel) -> str:
    """The blob whose channels are the model's classes: SIFT Flow's semantic head, `score` elsewhere."""
    return "score_sem" if model.dataset == "siftflow" else "score"


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_has_a_deploy_net_a_task_and_its_inputs_named(name):
    model = models.get(name)
    net = porting.CaffeNet(porting.read_prototxt(model.deploy_path()), fill=False)
    metadata = models.class_metadata(model)
    assert net.inferred_shapes[_score_blob(model)][1] == len(metadata.classes) == len(set(metadata.classes))
    assert model.dataset == net_task(name) and model.dataset in TASKS
    if len(net.inputs) > 1:  # NYUD's late fusion: the input text says what each blob takes
        assert all(f"blob `{blob}`" in model.input for blob in net.inputs)


def test_task_class_lists_are_the_authors(reference_dir):
    data = reference_dir / "fcn-berkeleyvision-extra" / "data"
    context = [line.split(":", 1)[1].strip() for line in (data / "pascal-context" / "classes-59.txt").open()]
    assert tuple(context) == pascalcontext.CONTEXT_NAMES
    assert tuple((data / "nyud" / "classes.txt").read_text().splitlines()[: nyud.NUM_CLASSES]) == nyud.NYUD_NAMES
    semantic = (data / "sift-flow" / "classes.txt").read_text().split("Semantic:")[1].split("Geometric:")[0]
    assert tuple(line[3:] for line in semantic.splitlines() if line[:2].isdigit()) == siftflow.SEMANTIC_NAMES
    assert TASKS["pascalcontext"].mean == pascalcontext.MEAN_BGR and TASKS["siftflow"].mean == siftflow.MEAN_BGR
    assert (TASKS["nyud"].mean, TASKS["nyud-hha"].mean) == (nyud.MEAN_COLOR_BGR, nyud.MEAN_HHA)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_load_model_runs_every_model(name, tmp_path, monkeypatch):
    """Random weights for the model's deploy net at 1/16 width, under the authors' file name, through `load_model`."""
    model = models.get(name)
    full = porting.read_prototxt(model.deploy_path())
    narrow = nets.build(name, "deploy", width=1 / 16)
    assert [(layer.name, layer.type) for layer in narrow.layer] == [(layer.name, layer.type) for layer in full.layer]
    torch.manual_seed(0)
    deploy = tmp_path / "prototxt" / model.deploy
    deploy.parent.mkdir(parents=True)
    _, caffemodel = write_net(randomize(porting.CaffeNet(narrow), seed=1, bilinear_deconv=True), tmp_path, "w")
    deploy.write_text(porting.to_text(narrow))
    weights = caffemodel.rename(tmp_path / model.filename)
    monkeypatch.setattr(models, "PROTOTXT_DIR", tmp_path / "prototxt")

    net = models.load_model(name, tmp_path)  # a folder: the weights under the authors' file name
    report = net.load_report
    assert report is not None and not report.missing and report.loaded and weights.is_file()
    assert net.metadata == models.class_metadata(model)
    rng = np.random.default_rng(0)
    inputs = {
        blob: torch.from_numpy(rng.standard_normal((1, net.input_shapes[blob][1], 65, 67), dtype=np.float32))
        for blob in net.inputs
    }
    with torch.no_grad():
        outputs = net(**inputs)
    score = outputs[_score_blob(model)]
    assert score.shape == (1, len(net.metadata.classes), 65, 67) and torch.isfinite(score).all()
    if model.dataset == "siftflow":
        assert outputs["score_geo"].shape == (1, siftflow.GEOMETRIC_CLASSES, 65, 67)


def test_published_scores_come_from_eval_published():
    rows = dict(models.published_scores(models.get("voc-fcn8s")))
    assert rows["repo README"]["mean_iu"] == 65.5
    assert rows["CVPR15 T2"] == {"pixel_acc": 90.3, "mean_acc": 75.9, "mean_iu": 62.7, "fw_iu": 83.2}


def test_published_scores_of_the_other_families_and_of_sift_flows_two_heads():
    nyud_table, sift_table = CVPR2015_TABLE4.label, CVPR2015_TABLE5.label
    assert [label for label, _ in models.published_scores(models.get("nyud-fcn32s-color"))] == [nyud_table]
    assert dict(models.published_scores(models.get("nyud-fcn32s-color-hha")))[nyud_table]["mean_iu"] == 32.8
    assert dict(models.published_scores(models.get("pascalcontext-fcn8s")))[ARXIV2015_CONTEXT.label]["mean_iu"] == 35.1
    rows = dict(models.published_scores(models.get("siftflow-fcn16s")))
    assert rows[f"{sift_table} sem"]["mean_iu"] == 39.5 and rows[f"{sift_table} geo"]["pixel_acc"] == 94.3
    assert models.published_scores(models.get("siftflow-fcn8s")) == []


def test_describe_one_model(capsys):
    assert models.main(["nyud-fcn32s-hha", "siftflow-fcn16s"]) == 0
    out = capsys.readouterr().out
    hha, sift = out.split("\n\n")
    assert hha.startswith("nyud-fcn32s-hha: ") and "nyud-fcn32s-color" not in hha
    assert ", ".join(f"{value:g}" for value in nyud.MEAN_HHA) in hha and "40 (nyud-hha): wall, floor" in hha
    assert f"mean IU 24.2 ({CVPR2015_TABLE4.label}) on nyud-test" in hha
    table = CVPR2015_TABLE5.label
    assert f"mean IU 39.5 ({table} sem); {table} geo: pixel_acc 94.3 on siftflow-test" in sift


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


def test_load_model_returns_the_net_and_reads_the_cache(tmp_path, narrow_registry, monkeypatch):
    monkeypatch.setenv("FCN_MODELS_DIR", str(narrow_registry.parent))  # the weights under the authors' file name
    net = models.load_model("voc-fcn8s")
    assert isinstance(net, porting.CaffeNet)
    report = net.load_report
    assert report is not None and not report.missing and not report.ignored
    assert set(report.loaded) == {layer for layer, blobs in porting.read_caffemodel(narrow_registry).items() if blobs}
    given = models.load_model("voc-fcn8s", narrow_registry)
    x = torch.randn(1, 3, 33, 29)
    with torch.no_grad():
        assert torch.equal(net(x)["score"], given(x)["score"])
