"""`python -m reproduce.demo --fast` end to end, the demo's base classifier file checked
against OpenCV's Caffe importer (the same file format as the ILSVRC VGG16 download), and
the views it is trained on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import porting
from eval.metrics import METRICS
from fcndata import IGNORE_LABEL, Sample, seg11valid_ids
from porting.proto import caffe_pb2
from reproduce import demo
from reproduce.basenet import INPUT_SIZE, CentreSampler


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert demo.main(["--out", str(out), "--fast"]) == 0
    return out


def test_fast_demo_writes_eval_json(fast_demo: Path) -> None:
    report = json.loads((fast_demo / "eval.json").read_text())
    assert set(report) == {"fcn32s", "fcn16s", "fcn8s"}
    data = fast_demo / "data"
    expected_images = len(seg11valid_ids(data / "VOCdevkit", data / "sbd" / "dataset"))
    for name, entry in report.items():
        assert entry["n_images"] == expected_images, name
        for metric in METRICS:
            assert 0.0 <= entry[metric] <= 1.0, (name, metric)
        assert len(entry["per_class_iu"]) == 21
        assert all(v is None or 0.0 <= v <= 1.0 for v in entry["per_class_iu"])
        stage_dir = fast_demo / "runs" / name
        for file in ("deploy.prototxt", "final.caffemodel", "log.jsonl", "solver.prototxt"):
            assert (stage_dir / file).is_file(), (name, file)


def test_demo_repeats_bit_for_bit(fast_demo: Path, tmp_path: Path) -> None:
    # Same machine, same thread count: a second run writes the same weights, scores and label maps.
    assert demo.main(["--out", str(tmp_path), "--fast", "--quiet"]) == 0
    assert (tmp_path / "eval.json").read_text() == (fast_demo / "eval.json").read_text()
    weights = sorted(path.relative_to(fast_demo) for path in fast_demo.glob("*/**/*.caffemodel"))
    assert len(weights) >= 1 + 3  # the base net and each stage's final weights (snapshots too)
    for path in weights:  # the files name their data folders (param_str), so compare the blobs
        first, second = porting.read_caffemodel(fast_demo / path), porting.read_caffemodel(tmp_path / path)
        assert first.keys() == second.keys(), path
        for layer, blobs in first.items():
            assert all(np.array_equal(a, b) for a, b in zip(blobs, second[layer], strict=True)), (path, layer)
    labels = sorted(path.relative_to(fast_demo) for path in fast_demo.glob("segment/*.png"))
    assert len(labels) == demo.FAST.segment_images
    for path in labels:
        assert (tmp_path / path).read_bytes() == (fast_demo / path).read_bytes(), path


def test_base_net_is_a_v1_caffemodel_opencv_reads_alike(fast_demo: Path) -> None:
    weights = fast_demo / "base" / "vgg16-demo.caffemodel"
    prototxt = fast_demo / "base" / "vgg16-demo_deploy.prototxt"
    stored = caffe_pb2.NetParameter.FromString(weights.read_bytes())
    assert len(stored.layer) == 0 and len(stored.layers) > 0  # V1 layout, like VGG_ILSVRC_16_layers
    fc6 = next(layer for layer in stored.layers if layer.name == "fc6")
    blob = fc6.blobs[0]
    assert len(blob.shape.dim) == 0 and (blob.num, blob.channels) == (1, 1)  # legacy 4-D dims
    assert blob.width == math.prod(porting.read_caffemodel(weights)["conv5_3"][0].shape[:1]) * 7 * 7

    x = np.random.default_rng(0).normal(0, 50, (1, 3, 224, 224)).astype(np.float32)
    reference = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    reference.setInput(x)
    expected = reference.forward("fc8")
    ours = porting.load(str(prototxt), str(weights), phase="TEST")(torch.from_numpy(x))["fc8"].detach().numpy()
    assert ours.shape == expected.shape == (1, 21)
    assert np.allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_base_net_views_are_labelled_with_their_centre_pixel() -> None:
    # Each pixel's value names its class (class + 1), so a view's centre shows its label.
    rng = np.random.default_rng(0)
    samples = []
    for index in range(3):
        label = torch.from_numpy(rng.integers(0, 21, (30 + index, 41))).long()
        label[0, :5] = IGNORE_LABEL
        image = (label.float() + 1).expand(3, -1, -1).clone()
        samples.append(Sample(image, label, str(index)))
    centre = INPUT_SIZE // 2
    images, labels = CentreSampler(samples, (8, 64), seed=0).batch(64)
    assert images.shape == (64, 3, INPUT_SIZE, INPUT_SIZE)
    assert torch.equal(images[:, 0, centre, centre] - 1, labels.float())
    assert (labels != IGNORE_LABEL).all()
    # the view is at most 64 px wide around the centre; the rest of the canvas is the zero (mean) colour
    assert (images[:, :, : centre - 32] == 0).all() and (images[:, :, centre + 32 :] == 0).all()


def test_the_readme_and_the_help_give_the_same_durations() -> None:
    """The durations live in `reproduce.demo`; its --help shows them and the README's set-up quotes them,
    with the `--fast` command."""
    shown = " ".join(demo.build_parser().format_help().split())
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    for duration in (demo.FULL_TIME, demo.FAST_TIME):
        assert duration in shown and duration in readme
    assert "python -m reproduce.demo --fast --out" in readme
