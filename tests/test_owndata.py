"""A dataset of one's own, end to end: train 32s -> 16s -> 8s on a 4-class `folder:` dataset, fine-tune
from a 21-class net, score with `eval.table`, segment with the result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize
from PIL import Image

import porting
from eval import table
from eval.segment import main as segment
from fcndata import net_defaults, parse_dataset
from fcndata.synthetic import write_synthetic_folder
from prototxt import fcn
from reproduce import stage
from reproduce.basenet import train_base_net
from reproduce.finetune import adapt_classes

WIDTH = 1 / 32
NAMES = ("background", "aeroplane", "car", "widget")
VOC_INDEX = {"background": 0, "aeroplane": 1, "car": 7}  # the VOC list's order (VOCdevkit)


@pytest.fixture(scope="module")
def mine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mine")
    data = write_synthetic_folder(root / "mine", n_train=6, n_val=4, size=(32, 40), class_names=NAMES)
    train = parse_dataset(f"folder:{data}").open("train")
    base = train_base_net(
        [train[i] for i in range(len(train))], root / "base.caffemodel", width=WIDTH, steps=1, batch_size=2
    )
    return {"data": data, "base": base, "root": root}


def _stage(name: str, runs: Path, data: Path, *extra: str) -> None:
    argv = [
        name,
        "--dataset",
        f"folder:{data}",
        "--out",
        str(runs),
        "--preset",
        "demo",
        "--width",
        repr(WIDTH),
        "--max-iter",
        "2",
        "--images-per-update",
        "2",
        "--eval-every",
        "1",
        "--eval-images",
        "2",
        "--device",
        "cpu",
        *extra,
    ]
    assert stage.main(argv) == 0


def confusion_by_hand(predictions: Path, labels: Path, num_classes: int) -> np.ndarray:
    """Counts of (label, prediction) over every labelled pixel of the split, from the PNG files alone."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    for label_file in sorted(labels.iterdir()):
        label = np.asarray(Image.open(label_file)).astype(np.int64)
        prediction = np.asarray(Image.open(predictions / label_file.name)).astype(np.int64)
        keep = label != 255
        counts += np.bincount(num_classes * label[keep] + prediction[keep], minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    return counts


def test_four_classes_train_in_stages_and_score_as_recomputed(mine, tmp_path, capsys):
    runs = tmp_path / "runs"
    _stage("fcn32s", runs, mine["data"], "--classes", "4", "--base-weights", str(mine["base"]))
    _stage("fcn16s", runs, mine["data"])
    _stage("fcn8s", runs, mine["data"])
    for name, skips in (("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)):
        train = porting.read_prototxt(runs / name / "train.prototxt")
        widths = {
            layer.name: layer.convolution_param.num_output
            for layer in train.layer
            if layer.type in ("Convolution", "Deconvolution") and "score" in layer.name
        }
        assert set(widths.values()) == {4} and len(widths) == 2 + 2 * skips
        assert json.loads((runs / name / "final.json").read_text())["classes"] == list(NAMES)
        records = [json.loads(line) for line in (runs / name / "log.jsonl").read_text().splitlines()]
        assert any("mean_iu" in record for record in records)
    capsys.readouterr()
    report, predictions = tmp_path / "eval.json", tmp_path / "pred"
    assert (
        table.main(
            [
                "--dataset",
                f"folder:{mine['data']}",
                "--split",
                "val",
                "--runs",
                str(runs),
                "--json",
                str(report),
                "--predictions",
                str(predictions),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "nothing published to compare" in out and "CVPR" not in out
    assert "fcn8s per-class IU: background" in out and "widget" in out
    scores = json.loads(report.read_text())
    assert list(scores) == ["fcn32s", "fcn16s", "fcn8s"]
    for name, entry in scores.items():
        counts = confusion_by_hand(predictions / name, mine["data"] / "labels" / "val", 4)
        hits = np.diag(counts).astype(np.float64)
        truth, predicted = counts.sum(1), counts.sum(0)
        present = truth > 0
        iu = hits[present] / (truth + predicted - hits)[present]
        assert entry["n_images"] == 4 and len(entry["per_class_iu"]) == 4
        assert entry["pixel_acc"] == pytest.approx(hits.sum() / counts.sum(), abs=1e-6)
        assert entry["mean_acc"] == pytest.approx(np.mean(hits[present] / truth[present]), abs=1e-6)
        assert entry["mean_iu"] == pytest.approx(np.mean(iu), abs=1e-6)
        assert entry["fw_iu"] == pytest.approx(np.sum(truth[present] * iu) / truth.sum(), abs=1e-6)
    segmented = tmp_path / "seg"
    image = next((mine["data"] / "images" / "val").iterdir())
    assert segment([str(image), "--runs", str(runs), "--out", str(segmented), "--quiet", "--device", "cpu"]) == 0
    np.testing.assert_array_equal(
        np.asarray(Image.open(segmented / f"{image.stem}.png")),
        np.asarray(Image.open(predictions / "fcn8s" / f"{image.stem}.png")),
    )


@pytest.fixture(scope="module")
def voc_net(tmp_path_factory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """A trained-looking 21-class FCN-32s (random weights everywhere) written without metadata."""
    torch.manual_seed(0)
    net = randomize(porting.CaffeNet(fcn.build("voc-fcn32s", "deploy", width=WIDTH)), seed=11, bilinear_deconv=True)
    path = tmp_path_factory.mktemp("voc") / "voc-fcn32s.caffemodel"
    porting.write_caffemodel(net, path)
    return path, porting.read_caffemodel(path)


def _fine_tune(mine, voc_net_path: Path, runs: Path, *extra: str) -> dict[str, list[np.ndarray]]:
    argv = [
        "fcn32s",
        "--dataset",
        f"folder:{mine['data']}",
        "--out",
        str(runs),
        "--width",
        repr(WIDTH),
        "--from-net",
        str(voc_net_path),
        "--max-iter",
        "0",
        "--eval-every",
        "0",
        "--device",
        "cpu",
        *extra,
    ]
    assert stage.main(argv) == 0
    return porting.read_caffemodel(runs / "fcn32s" / "final.caffemodel")


def test_fine_tune_from_a_21_class_net_keeps_the_matching_classes(mine, voc_net, tmp_path, capsys):
    path, source = voc_net
    tuned = _fine_tune(mine, path, tmp_path / "runs")
    assert "classes kept from the source net (3): background, aeroplane, car" in capsys.readouterr().err
    for layer in ("conv1_1", "conv5_3", "fc6", "fc7"):
        for ours, theirs in zip(tuned[layer], source[layer]):
            np.testing.assert_array_equal(ours, theirs)
    weight, bias = tuned["score_fr"]
    for index, name in enumerate(NAMES):
        if name in VOC_INDEX:
            np.testing.assert_array_equal(weight[index], source["score_fr"][0][VOC_INDEX[name]])
            assert bias[index] == source["score_fr"][1][VOC_INDEX[name]]
        else:
            assert not weight[index].any() and bias[index] == 0
    upscore = tuned["upscore"][0]
    assert upscore.shape[:2] == (4, 4)
    np.testing.assert_array_equal(upscore[0, 1], 0)
    np.testing.assert_allclose(upscore[2, 2], source["upscore"][0][0, 0])  # bilinear, like the source's


def test_fine_tune_reads_the_source_names_from_a_file(mine, voc_net, tmp_path):
    path, source = voc_net
    names = tmp_path / "source-classes.txt"
    names.write_text("".join(f"{name}\n" for name in ["widget", *(f"other{i}" for i in range(19)), "car"]))
    tuned = _fine_tune(mine, path, tmp_path / "runs", "--from-classes", str(names))
    weight = tuned["score_fr"][0]
    np.testing.assert_array_equal(weight[3], source["score_fr"][0][0])
    np.testing.assert_array_equal(weight[2], source["score_fr"][0][20])
    assert not weight[0].any() and not weight[1].any()


def test_class_count_that_contradicts_the_dataset(mine, tmp_path, capsys):
    code = stage.main(
        [
            "fcn32s",
            "--dataset",
            f"folder:{mine['data']}",
            "--classes",
            "5",
            "--out",
            str(tmp_path),
            "--base-weights",
            str(mine["base"]),
        ]
    )
    assert code == 1
    assert "--classes 5 differs from the 4 classes of folder:" in capsys.readouterr().err


def test_demo_runs_the_whole_path_on_ade20k(tmp_path):
    """`python -m reproduce.demo --dataset ade20k --fast`: base net, 32s -> 16s -> 8s, score, segment."""
    from reproduce import demo

    assert demo.main(["--out", str(tmp_path), "--fast", "--dataset", "ade20k"]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert list(report) == ["fcn32s", "fcn16s", "fcn8s"]
    for entry in report.values():
        assert entry["n_images"] == demo.FAST.n_val and len(entry["per_class_iu"]) == 150
    assert json.loads((tmp_path / "runs" / "fcn8s" / "final.json").read_text())["classes"][0] == "synthetic 1, thing 1"
    segmented = sorted(p.name for p in (tmp_path / "segment").iterdir())
    assert len(segmented) == 2 * demo.FAST.segment_images and all(
        name.endswith((".png", "_overlay.jpg")) for name in segmented
    )


def test_the_same_class_count_in_another_order_follows_the_names(voc_net):
    """21 classes, VOC's in reverse: score row i is VOC's row 20 - i, not VOC's row i."""
    path, source = voc_net
    voc = net_defaults(21).classes
    target = tuple(reversed(voc))
    net = porting.CaffeNet(fcn.build("voc-fcn32s", "deploy", width=WIDTH))
    adapted, transfer = adapt_classes(source, net, voc, target)
    weight, bias = adapted["score_fr"]
    for index in range(21):
        np.testing.assert_array_equal(weight[index], source["score_fr"][0][20 - index])
        assert bias[index] == source["score_fr"][1][20 - index]
    assert transfer.kept == {name: name for name in target} and transfer.resized == ["score_fr"]
    assert "upscore" not in adapted  # mixes the source's classes; the stage starts it bilinear
    same, _ = adapt_classes(source, net, voc, voc)
    assert same is source


def test_a_label_out_of_range_stops_the_run_before_its_first_update(mine, tmp_path, capsys):
    """The last training label holds a value the 4 classes cannot have: one `error:` line naming
    the file, the value and the class count, before any update (no log written)."""
    data = tmp_path / "data"
    shutil.copytree(mine["data"], data)
    bad = sorted((data / "labels" / "train").iterdir())[-1]
    with Image.open(bad) as image:
        label = np.asarray(image).copy()
    label[0, 0] = 9
    Image.fromarray(label).save(bad)  # one-channel, as a user's tool may write it
    runs = tmp_path / "runs"
    argv = ["fcn32s", "--dataset", f"folder:{data}", "--out", str(runs), "--base-weights", str(mine["base"])]
    argv += ["--width", "1/32", "--max-iter", "1", "--images-per-update", "1", "--eval-every", "0", "--device", "cpu"]
    assert stage.main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"error: {bad}: label values 9 out of range: 4 classes, so expected 0..3 or 255 = ignore"
    )
    assert not (runs / "fcn32s" / "log.jsonl").exists()


def test_a_missing_label_says_what_to_do_from_the_command_line(mine, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mine["data"], data)
    missing = sorted((data / "labels" / "train").iterdir())[2]
    missing.unlink()
    with pytest.raises(porting.FcnError) as error:
        parse_dataset(f"folder:{data}").open("train")
    message = str(error.value)
    assert message.startswith(f"{missing}: label file of id {missing.stem!r} not found")
    assert f"add each image's label PNG to {data / 'labels' / 'train'}" in message
    assert f"move the images without one out of {data / 'images' / 'train'}" in message
    assert "on_error" not in message
