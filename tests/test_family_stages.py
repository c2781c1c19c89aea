"""`python -m reproduce.stage` for the authors' other nets, end to end on synthetic data in the
real formats, at width 1/16: FCN-AlexNet from a CaffeNet classifier, PASCAL-Context 32s -> 16s,
NYUDv2 color / HHA / early fusion from VGG16 and late fusion from the trained color and HHA
nets, SIFT Flow 32s -> 16s with its two losses. What is checked is what the authors'
solve.py files do with the weights, computed from the files the runs read and write."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import randomize

import porting
from fcndata import SBDSegmentation
from fcndata.synthetic import write_synthetic
from fcndata.synthetic_families import write_nyud, write_pascalcontext, write_siftflow
from porting import models
from porting.metadata import read_sidecar
from reproduce import stage
from reproduce.basenet import train_base_net

WIDTH = 1 / 16
SHORT = ["--max-iter", "2", "--images-per-update", "1", "--eval-every", "2", "--eval-images", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    voc = write_synthetic(root / "voc", n_train=4, n_val=3, size=(32, 40))
    train = SBDSegmentation(voc.sbd_root, "train")
    vgg16 = train_base_net(
        [train[i] for i in range(len(train))], root / "vgg16.caffemodel", width=WIDTH, steps=1, batch_size=2
    )
    context = write_pascalcontext(root / "context", n_train=3, n_val=2, size=(32, 44))
    return {
        "root": root,
        "vgg16": vgg16,
        "sbd": voc.sbd_root,
        "voc": voc.voc_root,
        "context_voc": context.voc_root,
        "context": context.context_root,
        "nyud": write_nyud(root / "nyud", n_train=2, n_val=1, n_test=2, size=(32, 44)),
        "siftflow": write_siftflow(root / "siftflow", n_trainval=3, n_test=2, size=(32, 44)),
    }


@pytest.fixture(scope="module")
def caffenet(reference_dir: Path, data) -> Path:
    """Caffe's model-zoo CaffeNet at 1/16 width with seeded random weights, as our writer writes it."""
    net = porting.read_prototxt(reference_dir / "caffe-models" / "bvlc_reference_caffenet" / "deploy.prototxt")
    for layer in net.layer:
        for param in (layer.convolution_param, layer.inner_product_param):
            if param.num_output:
                param.num_output //= 16
    path = data["root"] / "caffenet.caffemodel"
    porting.write_caffemodel(randomize(porting.CaffeNet(net), seed=3), path)
    return path


def _run(capsys: pytest.CaptureFixture, runs: Path, net: str, *argv: str) -> str:
    code = stage.main([net, "--out", str(runs), "--width", str(WIDTH), *SHORT, *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (runs / net / "final.caffemodel").is_file()
    # final.json: the class names and mean of the published model (color-d, unpublished, is a colour net)
    model = models.get(net if net in models.MODELS else "nyud-fcn32s-color")
    expected = dataclasses.replace(models.class_metadata(model), width=WIDTH)  # the next stage builds this width
    assert read_sidecar(runs / net / "final.caffemodel") == expected
    return captured.err  # the stage's messages


def _log(runs: Path, net: str) -> list[dict]:
    return [json.loads(line) for line in (runs / net / "log.jsonl").read_text().splitlines()]


def test_fcn_alexnet_from_caffenet(tmp_path: Path, capsys: pytest.CaptureFixture, data, caffenet) -> None:
    runs = tmp_path / "runs"
    out = _run(
        capsys,
        runs,
        "voc-fcn-alexnet",
        "--sbd-root",
        str(data["sbd"]),
        "--voc-root",
        str(data["voc"]),
        "--base-weights",
        str(caffenet),
        "--max-iter",
        "1",
        "--images-per-update",
        "2",
        "--eval-every",
        "1",
    )
    solver = porting.read_solver(runs / "voc-fcn-alexnet" / "solver.prototxt")
    assert (solver.momentum, solver.iter_size, solver.base_lr) == (pytest.approx(0.9), 2, pytest.approx(1e-4))
    train = porting.read_prototxt(runs / "voc-fcn-alexnet" / "train.prototxt")
    assert next(layer for layer in train.layer if layer.name == "loss").loss_param.normalize
    # fc6, an InnerProduct over pool5 (16 x 6 x 6 at this width), is cast into a 6x6 convolution
    assert "fc6.0 (256, 576) -> (256, 16, 6, 6)" in out and "conv2.0" in out and "fc8" in out
    assert [record["mean_iu"] for record in _log(runs, "voc-fcn-alexnet") if "mean_iu" in record]


def test_pascalcontext_32s_then_16s(tmp_path: Path, capsys: pytest.CaptureFixture, data) -> None:
    runs = tmp_path / "runs"
    roots = ["--voc-root", str(data["context_voc"]), "--pascalcontext-root", str(data["context"])]
    _run(capsys, runs, "pascalcontext-fcn32s", *roots, "--base-weights", str(data["vgg16"]))
    out = _run(capsys, runs, "pascalcontext-fcn16s", *roots)
    assert str(runs / "pascalcontext-fcn32s" / "final.caffemodel") in out
    first, second = (
        porting.read_caffemodel(runs / net / "final.caffemodel")
        for net in ("pascalcontext-fcn32s", "pascalcontext-fcn16s")
    )
    assert first["score_fr"][0].shape[0] == 60 and "score_pool4" in second
    records = [record for record in _log(runs, "pascalcontext-fcn16s") if "mean_iu" in record]
    assert records and 0 <= records[-1]["pixel_acc"] <= 1


def test_nyud_single_modalities_early_and_late_fusion(tmp_path: Path, capsys: pytest.CaptureFixture, data) -> None:
    runs = tmp_path / "runs"
    nyud = ["--nyud-root", str(data["nyud"])]
    for net in ("nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-d"):
        _run(capsys, runs, net, *nyud, "--base-weights", str(data["vgg16"]))
    out = _run(capsys, runs, "nyud-fcn32s-color-hha", *nyud, "--max-iter", "0")
    assert "conv1_1color.0" in out and "conv1_1hha.0" in out
    # no update ran: the fused net holds each stream's trained weights under its suffix
    fused = porting.read_caffemodel(runs / "nyud-fcn32s-color-hha" / "final.caffemodel")
    for stream in ("color", "hha"):
        single = porting.read_caffemodel(runs / f"nyud-fcn32s-{stream}" / "final.caffemodel")
        for layer in ("conv1_1", "fc7", "score_fr"):
            for ours, theirs in zip(fused[f"{layer}{stream}"], single[layer]):
                np.testing.assert_array_equal(ours, theirs)
    solver = porting.read_solver(runs / "nyud-fcn32s-color-hha" / "solver.prototxt")
    assert solver.base_lr == pytest.approx(1e-12) and solver.snapshot == 2000


def test_nyud_early_fusion_starts_from_vgg16_conv1_1(tmp_path: Path, capsys: pytest.CaptureFixture, data) -> None:
    runs = tmp_path / "runs"
    _run(
        capsys,
        runs,
        "nyud-fcn32s-color-d",
        "--nyud-root",
        str(data["nyud"]),
        "--base-weights",
        str(data["vgg16"]),
        "--max-iter",
        "0",
        "--eval-every",
        "0",
    )
    conv = porting.read_caffemodel(runs / "nyud-fcn32s-color-d" / "final.caffemodel")["conv1_1_bgrd"]
    weight, bias = porting.read_caffemodel(data["vgg16"])["conv1_1"]
    np.testing.assert_array_equal(conv[0][:, :3], weight)
    np.testing.assert_allclose(conv[0][:, 3], weight.mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(conv[1], bias.reshape(-1))  # the classifier stores legacy 1x1x1xN biases


def test_siftflow_two_heads(tmp_path: Path, capsys: pytest.CaptureFixture, data) -> None:
    runs = tmp_path / "runs"
    sift = ["--siftflow-root", str(data["siftflow"])]
    _run(capsys, runs, "siftflow-fcn32s", *sift, "--base-weights", str(data["vgg16"]))
    _run(capsys, runs, "siftflow-fcn16s", *sift)
    weights = porting.read_caffemodel(runs / "siftflow-fcn16s" / "final.caffemodel")
    assert weights["score_fr_sem"][0].shape[0] == 33 and weights["score_fr_geo"][0].shape[0] == 3
    evaluated = [record for record in _log(runs, "siftflow-fcn16s") if "mean_iu" in record]
    assert evaluated and {"geo_pixel_acc", "geo_mean_iu"} <= evaluated[-1].keys()
    solver = porting.read_solver(runs / "siftflow-fcn16s" / "solver.prototxt")
    assert not solver.HasField("snapshot")


def test_family_errors_name_the_missing_flag(tmp_path: Path, capsys: pytest.CaptureFixture, data) -> None:
    assert stage.main(["nyud-fcn32s-color", "--out", str(tmp_path)]) == 1
    assert "--nyud-root is missing" in capsys.readouterr().err
    assert stage.main(["siftflow-fcn16s", "--out", str(tmp_path), "--siftflow-root", str(data["siftflow"])]) == 1
    err = capsys.readouterr().err
    assert "python -m reproduce.stage siftflow-fcn32s" in err
    assert stage.main(["nyud-fcn32s-color-hha", "--out", str(tmp_path), "--nyud-root", str(data["nyud"])]) == 1
    assert "nyud-fcn32s-color/final.caffemodel" in capsys.readouterr().err
    assert (
        stage.main(
            ["voc-fcn-alexnet", "--out", str(tmp_path), "--sbd-root", str(data["sbd"]), "--voc-root", str(data["voc"])]
        )
        == 1
    )
    assert "bvlc_reference_caffenet" in capsys.readouterr().err
    assert stage.main(["pascalcontext-fcn32s", "--out", str(tmp_path), "--preset", "cvpr"]) == 1
    assert "the cvpr preset has no pascalcontext-fcn32s" in capsys.readouterr().err
