"""`reproduce.stage fcn32s --backbone ...`: each Table 1 classifier (model-zoo definition, random
weights written by our writer, reduced width) cast, trained a few updates on the demo's synthetic
data, and scored by `eval.table`, which sets the nets' Table 1 columns beside the paper's."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from helpers import randomize
from test_fully_convolutional import CLASSIFIERS

import porting
from eval import table
from fcndata.synthetic import write_synthetic
from porting import CaffeNet, read_prototxt, write_caffemodel
from prototxt import solvers
from prototxt.backbone import BACKBONES, narrow
from reproduce import stage

WIDTH = {"alexnet": 1 / 16, "caffenet": 1 / 16, "googlenet": 1 / 8}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic(tmp_path_factory.mktemp("data"), n_train=4, n_val=3, size=(33, 47))


@pytest.mark.parametrize("backbone", list(WIDTH))
def test_backbone_trains_and_is_scored(tmp_path: Path, synthetic, reference_dir: Path, backbone: str, capsys) -> None:
    zoo = reference_dir / "caffe-models" / CLASSIFIERS[backbone][0] / "deploy.prototxt"
    classifier = randomize(CaffeNet(narrow(read_prototxt(zoo), WIDTH[backbone])), seed=0)
    weights = tmp_path / "classifier.caffemodel"
    write_caffemodel(classifier, weights)
    runs = tmp_path / "runs"
    argv = [
        "fcn32s",
        "--backbone",
        backbone,
        "--base-prototxt",
        str(zoo),
        "--base-weights",
        str(weights),
        "--width",
        repr(WIDTH[backbone]),
        "--out",
        str(runs),
        "--voc-root",
        str(synthetic.voc_root),
        "--sbd-root",
        str(synthetic.sbd_root),
        "--device",
        "cpu",
        "--max-iter",
        "3",
        "--images-per-update",
        "2",
        "--eval-every",
        "3",
        "--eval-images",
        "3",
    ]
    assert stage.main(argv) == 0, capsys.readouterr().err
    directory = runs / f"fcn32s-{backbone}"
    records = [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert [r["iter"] for r in records if "mean_iu" in r] == [3]

    # The CVPR Table 1 recipe is the default for the cast backbones.
    solver = porting.read_solver(directory / "solver.prototxt")
    recipe = solvers.PRESETS["cvpr"]
    assert solver.base_lr == pytest.approx(recipe.base_lr[f"voc-fcn32s-{backbone}"])
    assert solver.base_lr == pytest.approx({"alexnet": 1e-3, "caffenet": 1e-3, "googlenet": 5e-5}[backbone])
    assert (solver.momentum, solver.iter_size) == (pytest.approx(0.9), 2)

    # The start was the classifier: cast fc layers carry its weights, trained ones moved from there.
    final = porting.read_caffemodel(directory / "final.caffemodel")
    start = classifier.blobs_numpy()
    assert final["score_fr"][0].any()
    first_conv = next(layer.name for layer in classifier.net_param.layer if layer.type == "Convolution")
    assert final[first_conv][0].shape == start[first_conv][0].shape
    if backbone != "googlenet":
        assert final["fc6"][0].shape[2:] == (6, 6)
        assert final["fc6"][0].size == start["fc6"][0].size

    code = table.main(
        [
            "--split",
            "voc2011seg11valid",
            "--voc-root",
            str(synthetic.voc_root),
            "--sbd-root",
            str(synthetic.sbd_root),
            "--runs",
            str(runs),
            "--quiet",
            "--json",
            str(tmp_path / "eval.json"),
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert 0.0 <= scores[f"fcn32s-{backbone}"]["mean_iu"] <= 1.0
    assert "CVPR 2015 Table 1 columns" in out and f"fcn32s-{backbone}" in out
    assert ("FCN-GoogLeNet" if backbone == "googlenet" else "FCN-AlexNet") in out


def test_vgg16_backbone_is_the_generated_fcn32s(tmp_path: Path, synthetic, capsys) -> None:
    """`--backbone vgg16` (the default) trains the project's voc-fcn32s from a VGG16-shaped V1 classifier,
    with the heavy recipe by default, and eval.table sets it beside Table 1's FCN-VGG16."""
    from reproduce.basenet import base_net_text

    width = 1 / 32
    classifier = randomize(CaffeNet(porting.parse_prototxt(base_net_text(21, width))), seed=0)
    weights = tmp_path / "vgg16.caffemodel"
    write_caffemodel(classifier, weights, layout="v1", legacy_dims=True)
    runs = tmp_path / "runs"
    argv = [
        "fcn32s",
        "--backbone",
        "vgg16",
        "--base-weights",
        str(weights),
        "--width",
        repr(width),
        "--out",
        str(runs),
        "--voc-root",
        str(synthetic.voc_root),
        "--sbd-root",
        str(synthetic.sbd_root),
        "--device",
        "cpu",
        "--max-iter",
        "1",
        "--eval-every",
        "0",
    ]
    assert stage.main(argv) == 0, capsys.readouterr().err
    solver = porting.read_solver(runs / "fcn32s" / "solver.prototxt")
    assert solver.base_lr == pytest.approx(solvers.PRESETS["heavy"].base_lr["voc-fcn32s"])
    assert (
        table.main(
            [
                "--split",
                "voc2011seg11valid",
                "--voc-root",
                str(synthetic.voc_root),
                "--sbd-root",
                str(synthetic.sbd_root),
                "--runs",
                str(runs),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "CVPR15 T1 (FCN-VGG16)" in out
    assert re.search(r"^fcn32s\s+measured\s+16\s+\S+M\s+404\s+32\s", out, re.MULTILINE), out


def test_backbone_needs_its_definition(tmp_path: Path, synthetic, capsys) -> None:
    argv = [
        "fcn32s",
        "--backbone",
        "googlenet",
        "--base-weights",
        str(tmp_path / "w.caffemodel"),
        "--out",
        str(tmp_path),
        "--voc-root",
        str(synthetic.voc_root),
        "--sbd-root",
        str(synthetic.sbd_root),
    ]
    (tmp_path / "w.caffemodel").write_bytes(b"")
    assert stage.main(argv) == 1
    err = capsys.readouterr().err
    assert "--base-prototxt" in err and "bvlc_googlenet" in err
    assert (
        stage.main(
            [
                "fcn16s",
                "--backbone",
                "alexnet",
                "--out",
                str(tmp_path),
                "--voc-root",
                str(synthetic.voc_root),
                "--sbd-root",
                str(synthetic.sbd_root),
            ]
        )
        == 1
    )
    assert "trains fcn32s only" in capsys.readouterr().err


@pytest.mark.parametrize("backbone", ["alexnet", "googlenet"])
def test_narrow_keeps_groups_and_the_classifier(reference_dir: Path, backbone: str) -> None:
    zoo = reference_dir / "caffe-models" / CLASSIFIERS[backbone][0] / "deploy.prototxt"
    net = narrow(read_prototxt(zoo), 1 / 16)
    wide = read_prototxt(zoo)
    for layer, original in zip(net.layer, wide.layer):
        if layer.type == "Convolution":
            expected = max(1, math.floor(original.convolution_param.num_output / 16 + 0.5))
            group = 2 if backbone == "alexnet" else 1
            assert layer.convolution_param.num_output % group == 0
            assert abs(layer.convolution_param.num_output - expected) < group
    assert net.layer[-2].inner_product_param.num_output == 1000  # the classifier keeps its classes
    CaffeNet(net, fill=False)  # the narrowed net is a valid net
    assert BACKBONES[backbone].drop == CLASSIFIERS[backbone][1]
    assert len(net.layer) == len(wide.layer)


def test_table1_rows_beside_full_voc2011_val_scores() -> None:
    """On all 1,111 images of VOC2011 val (Table 1's set) each backbone's run sits beside its Table 1 mean IU."""
    measured = {"pixel_acc": 0.8, "mean_acc": 0.5, "mean_iu": 0.4, "fw_iu": 0.7, "n_images": 1111}
    text = table.format_table("voc2011val", 1111, {"fcn32s-googlenet": measured, "fcn32s-caffenet": measured})
    assert "CVPR15 T1 (fcn32s-googlenet)" in text and "42.5 (-2.50)" in text
    assert "CVPR15 T1 (fcn32s-caffenet)" in text and "39.8 (+0.20)" in text
    seg11 = table.format_table("voc2011seg11valid", 736, {"fcn32s-alexnet": {**measured, "n_images": 736}})
    assert "CVPR15 T2" not in seg11  # FCN-AlexNet is not Table 2's FCN-VGG16
