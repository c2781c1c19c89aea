"""End to end: `python -m eval.table` on a tiny dataset in the real VOC layout, a net with known output.

The images are gray rectangles on 8-pixel-aligned blocks (exact through JPEG) in three
levels; the net is one 1x1 convolution whose argmax maps dark -> 0, mid -> 15, bright -> 1.
The expected metrics are a hand count over those known predictions, not eval.metrics.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from error_catalog import jpeg, voc_folder
from PIL import Image

import porting
from eval.published import PUBLISHED
from eval.table import format_table, main

GRAY_TO_CLASS = {0: 0, 128: 15, 255: 1}  # what the constructed net predicts
NET_TEXT = """
name: "constructed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 21 kernel_size: 1 } }
"""


def write_net(prototxt, caffemodel):
    """score_1 = 2 B - 100, score_15 = B / 2 + 20, others 0, on the mean-subtracted blue channel B."""
    weight = np.zeros((21, 3, 1, 1), np.float32)
    bias = np.zeros(21, np.float32)
    weight[1, 0], bias[1] = 2.0, -100.0
    weight[15, 0], bias[15] = 0.5, 20.0
    prototxt.write_text(NET_TEXT)
    porting.write_caffemodel((porting.parse_prototxt(NET_TEXT), {"score": [weight, bias]}), caffemodel)


def blocks(grid, fill_rows=8):
    """Upsample a small grid by 8 so every JPEG block is flat."""
    return np.kron(np.asarray(grid), np.ones((fill_rows, 8), dtype=np.int64))


IMAGES = {  # id: (gray levels, label)
    "2008_000001": (
        blocks([[0, 0, 255, 255, 128, 128], [0, 0, 255, 255, 128, 128], [0, 128, 128, 255, 0, 0], [0, 0, 0, 0, 0, 0]]),
        blocks([[0, 0, 1, 1, 15, 15], [0, 255, 1, 7, 7, 15], [0, 15, 0, 1, 0, 0], [255, 255, 255, 255, 0, 0]]),
    ),
    "2008_000002": (
        blocks([[255, 255, 0, 0], [255, 255, 0, 0], [128, 0, 0, 0], [128, 128, 0, 255], [0, 0, 0, 0], [0, 0, 0, 0]]),
        blocks([[1, 1, 0, 0], [1, 0, 0, 7], [255, 255, 255, 255], [15, 15, 0, 1], [0, 0, 0, 0], [0, 0, 0, 7]]),
    ),
    "2008_000003": (  # in SBD train, so not part of seg11valid
        blocks([[255, 255], [0, 0]]),
        blocks([[3, 3], [3, 3]]),
    ),
}


@pytest.fixture()
def voc(tmp_path, reference):
    voc_root, sbd_root = tmp_path / "VOCdevkit", tmp_path / "sbd" / "dataset"
    year = voc_root / "VOC2011"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (year / sub).mkdir(parents=True)
    sbd_root.mkdir(parents=True)
    with Image.open(reference / "demo" / "label.png") as label_png:
        palette = label_png.getpalette()
    for image_id, (gray, label) in IMAGES.items():
        rgb = np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
        Image.fromarray(rgb).save(year / "JPEGImages" / f"{image_id}.jpg", quality=95)
        png = Image.fromarray(label.astype(np.uint8))
        png.putpalette(palette)
        png.save(year / "SegmentationClass" / f"{image_id}.png")
    (year / "ImageSets/Segmentation/val.txt").write_text("\n".join(IMAGES) + "\n")
    (sbd_root / "train.txt").write_text("2008_000003\n2009_000010\n")
    return voc_root, sbd_root


def hand_count(pairs, n=21):
    """The paper's four metrics by counting pixels per class, NaN-skipping absent classes."""
    tp, gt, pr = np.zeros(n), np.zeros(n), np.zeros(n)
    for pred, label in pairs:
        valid = label != 255
        for c in range(n):
            tp[c] += np.sum((pred == c) & (label == c) & valid)
            gt[c] += np.sum((label == c) & valid)
            pr[c] += np.sum((pred == c) & valid)
    union = gt + pr - tp
    iu = [tp[c] / union[c] if union[c] else math.nan for c in range(n)]
    total = gt.sum()
    return {
        "pixel_acc": tp.sum() / total,
        "mean_acc": np.mean([tp[c] / gt[c] for c in range(n) if gt[c]]),
        "mean_iu": np.mean([v for v in iu if not math.isnan(v)]),
        "fw_iu": sum(gt[c] * iu[c] for c in range(n) if gt[c]) / total,
        "per_class_iu": iu,
    }


def known_prediction(gray):
    return np.vectorize(GRAY_TO_CLASS.__getitem__)(gray)


def test_scores_every_kind_of_net_source_with_exact_metrics(voc, tmp_path, capsys):
    voc_root, sbd_root = voc
    runs = tmp_path / "runs"
    (runs / "fcn8s").mkdir(parents=True)
    write_net(runs / "fcn8s" / "deploy.prototxt", runs / "fcn8s" / "final.caffemodel")
    prototxt, weights = tmp_path / "constructed.prototxt", tmp_path / "constructed.caffemodel"
    write_net(prototxt, weights)
    porting.save_checkpoint(porting.load(prototxt, weights), tmp_path / "converted.pt")

    out_json, predictions = tmp_path / "out" / "eval.json", tmp_path / "pred"
    argv = [
        "--split",
        "voc2011seg11valid",
        "--voc-root",
        str(voc_root),
        "--sbd-root",
        str(sbd_root),
        "--runs",
        str(runs),
        "--checkpoint",
        str(tmp_path / "converted.pt"),
        "--prototxt",
        str(prototxt),
        "--caffemodel",
        str(weights),
        "--json",
        str(out_json),
        "--predictions",
        str(predictions),
        "--panels",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()

    scored = ["2008_000001", "2008_000002"]
    expected = hand_count([(known_prediction(IMAGES[i][0]), IMAGES[i][1]) for i in scored])
    results = json.loads(out_json.read_text())
    assert list(results) == ["fcn8s", "converted", "constructed"]
    for entry in results.values():
        assert entry["n_images"] == 2
        for metric in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
            assert entry[metric] == pytest.approx(expected[metric], rel=1e-12), metric
        for got, want in zip(entry["per_class_iu"], expected["per_class_iu"]):
            assert got is None if math.isnan(want) else got == pytest.approx(want, rel=1e-12)
        assert len(entry["per_class_acc"]) == 21
    for image_id in scored:
        with Image.open(predictions / "constructed" / f"{image_id}.png") as png:
            np.testing.assert_array_equal(np.array(png), known_prediction(IMAGES[image_id][0]))
        assert (predictions / "fcn8s" / "panels" / f"{image_id}.png").is_file()
    assert not (predictions / "fcn8s" / "2008_000003.png").exists()
    # the published fcn8s numbers are for the real 736-image seg11valid: not compared here
    assert "nothing published to compare" in captured.out
    assert f"{100 * expected['mean_iu']:.2f}" in captured.out
    assert "\r" not in captured.err, "no progress bar drawn into a pipe"


def test_missing_dataset_is_one_clear_line(tmp_path, capsys):
    prototxt, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    write_net(prototxt, weights)
    missing = tmp_path / "nowhere"
    code = main(
        ["--split", "voc2012val", "--voc-root", str(missing), "--prototxt", str(prototxt), "--caffemodel", str(weights)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert str(missing) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_split_without_its_folders_names_the_flag_and_where_to_get_the_data(tmp_path, capsys):
    """The VOC site and SBD's benchmark.tgz, as the README's data section names them."""
    prototxt, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    write_net(prototxt, weights)
    net = ["--prototxt", str(prototxt), "--caffemodel", str(weights), "--quiet"]
    assert main(["--split", "voc2011seg11valid", *net]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: split 'voc2011seg11valid' needs --voc-root") and "\n" not in line
    assert "http://host.robots.ox.ac.uk/pascal/VOC/" in line and "VOCdevkit" in line
    voc = voc_folder(tmp_path, {"2008_000001": (jpeg(16, 16), np.zeros((16, 16), np.uint8))})
    (voc / "VOC2012").rename(voc / "VOC2011")
    assert main(["--split", "voc2011seg11valid", "--voc-root", str(voc), *net]) == 1
    line = capsys.readouterr().err.strip()
    assert (
        line.startswith("error: seg11valid is VOC2011 seg val minus SBD train: it needs --sbd-root")
        and "\n" not in line
    )
    assert "benchmark.tgz" in line and "--ids FILE" in line and "--voc-root" not in line


def test_bad_net_sources_are_reported(tmp_path, capsys):
    assert main(["--split", "sbdval", "--sbd-root", str(tmp_path), "--runs", str(tmp_path)]) == 1
    assert "no finished stage" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--split", "sbdval", "--prototxt", "a.prototxt"])
    assert exit_info.value.code == 2


def test_table_sets_measured_beside_published_on_the_real_set():
    published = {p.source.label: p for p in PUBLISHED["voc2011seg11valid"]["fcn8s"]}
    measured = {"pixel_acc": 0.9123, "mean_acc": 0.7761, "mean_iu": 0.6551, "fw_iu": 0.8455, "n_images": 736}
    text = format_table("voc2011seg11valid", 736, {"fcn8s-heavy-pascal": measured})
    cvpr = published["CVPR15 T2"]
    for metric in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        diff = 100 * measured[metric] - cvpr.value(metric)
        assert f"{cvpr.value(metric):g} ({diff:+.2f})" in text
    readme = published["repo README"]
    assert f"{readme.mean_iu:g} ({100 * measured['mean_iu'] - readme.mean_iu:+.2f})" in text
    assert "nothing published" not in text
    markdown = format_table("voc2011seg11valid", 736, {"fcn8s": measured}, markdown=True)
    assert "| fcn8s | measured | 91.23 | 77.61 | 65.51 | 84.55 |" in markdown
    assert "nothing published to compare" in format_table("voc2012val", 1449, {"fcn8s": measured})


def test_score_runs_on_the_nets_device_without_gradients(voc):
    from eval.infer import score
    from fcndata import dataset_for_split

    voc_root, sbd_root = voc
    net = porting.CaffeNet(porting.parse_prototxt(NET_TEXT))
    dataset = dataset_for_split("voc2011seg11valid", voc_root, sbd_root)
    entry = score(net, dataset, progress=False)
    # zero-initialized score layer: every score ties, the first maximum (background) wins
    labels = [IMAGES[i][1] for i in dataset.ids]
    expected = hand_count([(np.zeros_like(label), label) for label in labels])
    assert entry["mean_iu"] == pytest.approx(expected["mean_iu"], rel=1e-12)
    assert entry["pixel_acc"] == pytest.approx(expected["pixel_acc"], rel=1e-12)
    assert all(p.grad is None for p in net.parameters())
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    "conv, message",
    [("num_output: 5 kernel_size: 1", "expected N x 21"), ("num_output: 21 kernel_size: 2 stride: 2", "must crop")],
)
def test_score_blob_that_does_not_fit_the_labels_is_a_format_error(voc, conv, message):
    from eval.infer import score
    from fcndata import dataset_for_split

    voc_root, sbd_root = voc
    text = NET_TEXT.replace("num_output: 21 kernel_size: 1", conv)
    net = porting.CaffeNet(porting.parse_prototxt(text))
    with pytest.raises(porting.FormatError, match=message):
        score(net, dataset_for_split("voc2011seg11valid", voc_root, sbd_root), progress=False)


def test_file_names_map_to_published_nets():
    from eval.published import published_name

    assert published_name("fcn8s-heavy-pascal") == "fcn8s"
    assert published_name("fcn8s-atonce-pascal") == "fcn8s-atonce"
    assert published_name("voc-fcn32s") == "fcn32s"
    assert published_name("fcn-alexnet-pascal") == "fcn-alexnet"
    assert published_name("fcn8satonce") is None
