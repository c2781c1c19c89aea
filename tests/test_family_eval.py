"""`python -m eval.table` on the PASCAL-Context, NYUDv2 and SIFT Flow splits: random-weight nets
at width 1/16 on synthetic data in the real formats. Expected metrics are counted by hand with
numpy from the net's outputs and the label files (read with scipy), with the conventions of the
papers (SIFT Flow semantic means over the classes present in the test labels) and of the
authors' released scoring (every class whose IU is defined)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from helpers import randomize

import porting
from eval import table
from eval.published import PUBLISHED
from fcndata.image import load_ids
from fcndata.siftflow import SUBFOLDER
from fcndata.synthetic_families import write_nyud, write_pascalcontext, write_siftflow
from prototxt import nets

WIDTH = 1 / 16


def _write_net(folder: Path, net: str, stem: str) -> tuple[Path, Path]:
    model = randomize(porting.CaffeNet(nets.build(net, "deploy", width=WIDTH)), seed=7)
    prototxt, caffemodel = folder / f"{stem}.prototxt", folder / f"{stem}.caffemodel"
    prototxt.write_text(porting.to_text(model.net_param))
    porting.write_caffemodel(model, caffemodel)
    return prototxt, caffemodel


def _hist(pred: np.ndarray, label: np.ndarray, classes: int) -> np.ndarray:
    keep = label < classes
    return np.bincount(classes * label[keep] + pred[keep], minlength=classes**2).reshape(classes, classes)


def _means(hist: np.ndarray, present_only: bool) -> tuple[float, float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    if present_only:
        acc, iu = acc[hist.sum(1) > 0], iu[hist.sum(1) > 0]
    return float(np.nanmean(acc)), float(np.nanmean(iu))


def _image(path: Path, mean) -> torch.Tensor:
    import cv2

    bgr = cv2.imread(str(path)).astype(np.float32) - np.asarray(mean, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]


def test_siftflow_scores_each_head_on_its_labels(tmp_path: Path, capsys) -> None:
    root = write_siftflow(tmp_path / "data", n_trainval=1, n_test=6, size=(36, 48))
    prototxt, caffemodel = _write_net(tmp_path, "siftflow-fcn16s", "siftflow-fcn16s-random")
    out = tmp_path / "scores.json"
    code = table.main(
        [
            "--split",
            "siftflow-test",
            "--siftflow-root",
            str(root),
            "--prototxt",
            str(prototxt),
            "--caffemodel",
            str(caffemodel),
            "--json",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    entry = json.loads(out.read_text())["siftflow-fcn16s-random"]
    assert set(entry) == {"score_sem", "score_geo"}

    net = porting.load(str(prototxt), str(caffemodel))
    hists = {"sem": np.zeros((33, 33), np.int64), "geo": np.zeros((3, 3), np.int64)}
    for image_id in load_ids(root / "test.txt"):
        with torch.no_grad():
            outputs = net(_image(root / "Images" / SUBFOLDER / f"{image_id}.jpg", (114.578, 115.294, 108.353)))
        sem = scipy.io.loadmat(root / "SemanticLabels" / SUBFOLDER / f"{image_id}.mat")["S"].astype(np.int64) - 1
        geo = scipy.io.loadmat(root / "GeoLabels" / SUBFOLDER / f"{image_id}.mat")["S"].astype(np.int64) - 1
        for head, label in (("sem", sem), ("geo", geo)):
            label = np.where(label < 0, 255, label)
            pred = outputs[f"score_{head}"][0].argmax(0).numpy()
            hists[head] += _hist(pred, label, hists[head].shape[0])
    sem_acc, sem_iu = _means(hists["sem"], present_only=True)
    _, sem_iu_released = _means(hists["sem"], present_only=False)
    assert (hists["sem"].sum(1) == 0).sum() >= 3  # the writer keeps 3 classes out of test, as the real set
    assert entry["score_sem"]["mean_acc"] == pytest.approx(sem_acc)
    assert entry["score_sem"]["mean_iu"] == pytest.approx(sem_iu)
    assert entry["score_sem"]["mean_iu_all_classes"] == pytest.approx(sem_iu_released)
    assert "present in the ground truth" in entry["score_sem"]["convention"]
    geo_acc, geo_iu = _means(hists["geo"], present_only=False)
    assert entry["score_geo"]["pixel_acc"] == pytest.approx(np.diag(hists["geo"]).sum() / hists["geo"].sum())
    assert entry["score_geo"]["mean_iu"] == pytest.approx(geo_iu) and "convention" not in entry["score_geo"]
    assert "siftflow-fcn16s-random sem" in printed and "siftflow-fcn16s-random geo" in printed
    assert "nothing published to compare" in printed  # 6 synthetic images, not the 200 of the test set


def test_siftflow_published_rows_on_the_real_test_set() -> None:
    metrics = {"pixel_acc": 0.85, "mean_acc": 0.5, "mean_iu": 0.4, "fw_iu": 0.75, "n_images": 200}
    rows, notes = table.table_rows(
        "siftflow-test",
        {
            "siftflow-fcn16s-heavy": {
                "score_sem": {**metrics, "mean_iu_all_classes": 0.38, "convention": "present classes"},
                "score_geo": {**metrics, "pixel_acc": 0.94},
            }
        },
    )
    published = {tuple(row[:2]): row[2:] for row in rows}
    assert published[("", "CVPR15 T5 (siftflow-fcn16s sem)")] == [
        "85.2 (-0.20)",
        "51.7 (-1.70)",
        "39.5 (+0.50)",
        "76.1 (-1.10)",
    ]
    assert published[("", "CVPR15 T5 (siftflow-fcn16s geo)")][0] == "94.3 (-0.30)"
    assert any("present classes: 38.00" in note for note in notes)


@pytest.mark.parametrize(
    "net,stem", [("nyud-fcn32s-hha", "nyud-fcn32s-hha-heavy"), ("nyud-fcn32s-color-hha", "color-hha-random")]
)
def test_nyud_nets_read_their_inputs(tmp_path: Path, capsys, net: str, stem: str) -> None:
    root = write_nyud(tmp_path / "data", n_train=1, n_val=1, n_test=3, size=(36, 44))
    prototxt, caffemodel = _write_net(tmp_path, net, stem)
    out = tmp_path / "scores.json"
    assert (
        table.main(
            [
                "--split",
                "nyud-test",
                "--nyud-root",
                str(root),
                "--prototxt",
                str(prototxt),
                "--caffemodel",
                str(caffemodel),
                "--json",
                str(out),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    entry = json.loads(out.read_text())[stem]
    model = porting.load(str(prototxt), str(caffemodel))
    hist = np.zeros((40, 40), np.int64)
    for image_id in load_ids(root / "test.txt"):
        hha = _image(root / "data" / "hha" / f"img_{image_id}.png", (0, 0, 0)).flip(1)  # HHA keeps its stored order
        hha -= torch.tensor([132.431, 94.076, 118.477]).view(1, 3, 1, 1)
        color = _image(root / "data" / "images" / f"img_{image_id}.png", (116.190, 97.203, 92.318))
        feed = {"data": hha} if net == "nyud-fcn32s-hha" else {"color": color, "hha": hha}
        with torch.no_grad():
            pred = model(**feed)["score"][0].argmax(0).numpy()
        label = scipy.io.loadmat(root / "segmentation" / f"img_{image_id}.mat")["segmentation"].astype(np.int64)
        hist += _hist(pred, np.where(label == 0, 255, label - 1), 40)
    mean_acc, mean_iu = _means(hist, present_only=False)
    assert entry["n_images"] == 3
    assert entry["mean_acc"] == pytest.approx(mean_acc, rel=1e-5) and entry["mean_iu"] == pytest.approx(
        mean_iu, rel=1e-5
    )
    assert "nyud-test: 3 images" in capsys.readouterr().out


def test_nyud_net_of_unknown_inputs_is_refused(tmp_path: Path, capsys) -> None:
    root = write_nyud(tmp_path / "data", n_train=1, n_val=1, n_test=1)
    prototxt, caffemodel = _write_net(tmp_path, "nyud-fcn32s-color", "mystery")
    assert (
        table.main(
            [
                "--split",
                "nyud-test",
                "--nyud-root",
                str(root),
                "--prototxt",
                str(prototxt),
                "--caffemodel",
                str(caffemodel),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 1
    )
    assert "cannot tell which NYUDv2 inputs the net reads (its inputs: data)" in capsys.readouterr().err
    assert table.main(["--split", "nyud-test", "--prototxt", str(prototxt), "--caffemodel", str(caffemodel)]) == 1
    assert "--nyud-root is missing: nyud-test reads" in capsys.readouterr().err


def test_pascalcontext_val_scores_60_classes(tmp_path: Path, capsys) -> None:
    paths = write_pascalcontext(tmp_path / "data", n_train=1, n_val=2, size=(36, 44))
    runs = tmp_path / "runs" / "pascalcontext-fcn8s"
    runs.mkdir(parents=True)
    _write_net(runs, "pascalcontext-fcn8s", "deploy")
    (runs / "deploy.caffemodel").rename(runs / "final.caffemodel")
    out = tmp_path / "scores.json"
    assert (
        table.main(
            [
                "--split",
                "pascalcontext-val",
                "--voc-root",
                str(paths.voc_root),
                "--pascalcontext-root",
                str(paths.context_root),
                "--runs",
                str(tmp_path / "runs"),
                "--json",
                str(out),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    entry = json.loads(out.read_text())["pascalcontext-fcn8s"]
    assert len(entry["per_class_iu"]) == 60 and entry["n_images"] == 2
    assert "pascalcontext-fcn8s" in PUBLISHED["pascalcontext-val"]
