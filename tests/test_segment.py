"""`python -m eval.segment`: label PNGs, overlays and scores for any image, checked against the net run by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MEAN_BGR, randomize, write_net
from PIL import Image

import porting
from eval.segment import main, segment
from fcndata import siftflow
from porting.metadata import NetMetadata
from prototxt import fcn, nets


@pytest.fixture(scope="module")
def demo_image(reference: Path) -> Path:
    """The authors' demo photo (a real VOC image)."""
    return reference / "demo" / "image.jpg"


@pytest.fixture(scope="module")
def fcn8s_files(tmp_path_factory) -> tuple[Path, Path]:
    """A narrow FCN-8s with random weights (score layers too, so the labels vary) as Caffe files."""
    torch.manual_seed(0)
    net = randomize(porting.CaffeNet(fcn.build("voc-fcn8s", "deploy", width=1 / 16)), seed=3, bilinear_deconv=True)
    return write_net(net, tmp_path_factory.mktemp("fcn8s"), "fcn8s")


def by_hand(prototxt: Path, caffemodel: Path, image: Path, mean=MEAN_BGR) -> np.ndarray:
    """Decode, flip RGB to BGR, subtract the mean, run `porting.load`'s net, argmax: written out here.

    As the authors' demo does it: a float32 BGR array minus the mean given as float64 numbers,
    in place (numpy subtracts in float64 and rounds once to float32).
    """
    bgr = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)[:, :, ::-1].copy()
    bgr -= np.array(mean)
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]
    net = porting.load(str(prototxt), str(caffemodel))
    with torch.no_grad():
        scores = net(x)["score"][0]
    return scores.argmax(0).numpy()


def test_demo_image_gives_the_three_outputs_equal_to_the_net_run_by_hand(fcn8s_files, tmp_path, capsys, demo_image):
    prototxt, caffemodel = fcn8s_files
    out = tmp_path / "seg"
    argv = [
        str(demo_image),
        "--prototxt",
        str(prototxt),
        "--caffemodel",
        str(caffemodel),
        "--out",
        str(out),
        "--scores",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    assert f"wrote {out}: 1 segmentation(s)" in capsys.readouterr().err
    expected = by_hand(prototxt, caffemodel, demo_image)
    assert len(np.unique(expected)) > 1, "random weights should give more than one class"
    with Image.open(out / "image.png") as png:
        assert png.mode == "P" and png.size == Image.open(demo_image).size
        np.testing.assert_array_equal(np.asarray(png), expected)
    with Image.open(out / "image_overlay.jpg") as jpg:
        assert jpg.format == "JPEG" and jpg.height >= expected.shape[0] and jpg.width > expected.shape[1]
    scores = np.load(out / "image.npz")
    probabilities = scores["probabilities"]
    assert probabilities.shape == (21, *expected.shape) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
    assert list(scores["classes"][:2]) == ["background", "aeroplane"]


def test_library_segment_uses_the_mean_the_net_carries(fcn8s_files, demo_image):
    prototxt, caffemodel = fcn8s_files
    net = porting.load(str(prototxt), str(caffemodel))
    net.metadata = NetMetadata(mean=(0.0, 0.0, 0.0))
    rgb = np.asarray(Image.open(demo_image).convert("RGB"))
    np.testing.assert_array_equal(segment(net, rgb), by_hand(prototxt, caffemodel, demo_image, mean=(0, 0, 0)))


def test_real_size_folder_with_an_unreadable_file(fcn8s_files, tmp_path, capsys):
    """500x375 and 375x500 photos in a folder; a corrupt file is skipped, named, and makes the exit status 1."""
    prototxt, caffemodel = fcn8s_files
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in {"wide": (375, 500), "tall": (500, 375)}.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "seg"
    argv = [str(photos), "--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(out), "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "corrupt or unreadable image" in err and "Traceback" not in err
    for name in ("wide", "tall"):
        with Image.open(out / f"{name}.png") as png:
            np.testing.assert_array_equal(np.asarray(png), by_hand(prototxt, caffemodel, photos / f"{name}.png"))
    assert not (out / "broken.png").exists() and not (out / "notes.png").exists()


def test_checkpoint_carries_classes_and_mean_into_the_outputs(fcn8s_files, tmp_path, demo_image):
    from porting.convert import main as convert

    prototxt, caffemodel = fcn8s_files
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing{i}\n" for i in range(21)))
    checkpoint = tmp_path / "fcn8s.pt"
    assert (
        convert(
            [
                "--prototxt",
                str(prototxt),
                "--caffemodel",
                str(caffemodel),
                "--out",
                str(checkpoint),
                "--classes-file",
                str(names),
                "--mean",
                "10,20,30",
                "--quiet",
            ]
        )
        == 0
    )
    loaded = porting.load(checkpoint)
    assert loaded.metadata == NetMetadata(tuple(f"thing{i}" for i in range(21)), (10.0, 20.0, 30.0))
    out = tmp_path / "seg"
    assert main([str(demo_image), "--checkpoint", str(checkpoint), "--out", str(out), "--scores", "--quiet"]) == 0
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "image.png")), by_hand(prototxt, caffemodel, demo_image, mean=(10, 20, 30))
    )
    assert list(np.load(out / "image.npz")["classes"]) == [f"thing{i}" for i in range(21)]


def test_converted_21_class_net_defaults_to_voc_names_and_vgg_mean(fcn8s_files, tmp_path, reference):
    from porting.convert import main as convert

    prototxt, caffemodel = fcn8s_files
    checkpoint = tmp_path / "fcn8s.pt"
    assert (
        convert(["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(checkpoint), "--quiet"])
        == 0
    )
    metadata = porting.load(checkpoint).metadata
    reference_names = (reference / "data" / "pascal" / "classes.txt").read_text().split()
    assert metadata.classes == tuple(reference_names[:21])
    assert metadata.mean == MEAN_BGR


def test_class_names_of_the_wrong_count_are_refused(fcn8s_files, tmp_path, capsys, demo_image):
    prototxt, caffemodel = fcn8s_files
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    argv = [
        str(demo_image),
        "--prototxt",
        str(prototxt),
        "--caffemodel",
        str(caffemodel),
        "--out",
        str(tmp_path / "seg"),
        "--classes-file",
        str(names),
        "--quiet",
    ]
    assert main(argv) == 1
    assert "3 class names given but the net's 'score' blob has 21 classes" in capsys.readouterr().err


def test_inputs_sharing_a_stem_are_a_usage_error(fcn8s_files, tmp_path, capsys):
    prototxt, caffemodel = fcn8s_files
    for suffix in ("jpg", "png"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"same.{suffix}")
    with pytest.raises(SystemExit) as info:
        main(
            [
                str(tmp_path / "same.jpg"),
                str(tmp_path / "same.png"),
                "--prototxt",
                str(prototxt),
                "--caffemodel",
                str(caffemodel),
                "--out",
                str(tmp_path / "seg"),
            ]
        )
    assert info.value.code == 2
    assert "share the name 'same'" in capsys.readouterr().err


def test_bf16_precision_keeps_the_fp32_labels_on_nearly_every_pixel(fcn8s_files, tmp_path, demo_image):
    # --precision bf16 runs a bfloat16 copy of the net (porting.inference.InferenceNet); the fp32
    # labels are the net run by hand, and bf16 rounding may flip only near-tied pixels (this
    # random, 1/16-wide net has many: 98.7% agree; the full-width bench net agrees on 99.8%).
    prototxt, caffemodel = fcn8s_files
    out = tmp_path / "bf16"
    argv = [str(demo_image), "--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(out)]
    assert main([*argv, "--precision", "bf16", "--quiet"]) == 0
    labels = np.asarray(Image.open(out / "image.png"))
    expected = by_hand(prototxt, caffemodel, demo_image)
    assert labels.shape == expected.shape
    assert (labels == expected).mean() >= 0.97
    assert len(np.unique(expected)) > 1


def test_sift_flow_net_segments_by_its_semantic_head_and_a_two_input_net_is_refused(tmp_path, capsys, demo_image):
    # A two-headed net's labels are its first head's (`score_sem`, 33 classes), by hand here;
    # NYUDv2's late-fusion net reads color and HHA, which one photo cannot feed.
    torch.manual_seed(0)
    sift = randomize(
        porting.CaffeNet(nets.build("siftflow-fcn8s", "deploy", width=1 / 16)), seed=2, bilinear_deconv=True
    )
    prototxt, caffemodel = write_net(sift, tmp_path, "siftflow-fcn8s")
    out = tmp_path / "seg"
    argv = [str(demo_image), "--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--quiet"]
    mean = ",".join(map(str, siftflow.MEAN_BGR))  # a bare caffemodel carries none (--model would)
    assert main([*argv, "--out", str(out), "--mean", mean]) == 0
    bgr = np.asarray(Image.open(demo_image).convert("RGB"), dtype=np.float32)[:, :, ::-1] - np.array(siftflow.MEAN_BGR)
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1), dtype=np.float32))[None]
    with torch.no_grad():
        by_hand = porting.load(prototxt, caffemodel)(x)["score_sem"][0].argmax(0).numpy()
    assert by_hand.max() < siftflow.SEMANTIC_CLASSES
    assert np.array_equal(np.asarray(Image.open(out / "image.png")), by_hand)

    fused = randomize(porting.CaffeNet(nets.build("nyud-fcn32s-color-hha", "deploy", width=1 / 16)), seed=2)
    prototxt, caffemodel = write_net(fused, tmp_path, "nyud-fcn32s-color-hha")
    argv = [str(demo_image), "--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(out)]
    assert main([*argv, "--quiet"]) == 1
    assert "the net reads 2 inputs (color, hha)" in capsys.readouterr().err


def test_label_pngs_keep_class_ids_past_255(tmp_path):
    """A 300-class net's label map keeps ids above 255 (a 16-bit PNG), not ids wrapped by a uint8 cast."""
    from eval.segment import write_outputs
    from fcndata.image import load_png_label

    scores = torch.zeros(300, 2, 3)
    expected = np.array([[0, 255, 256], [299, 1, 270]])
    for (row, column), index in np.ndenumerate(expected):
        scores[index, row, column] = 1.0
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    write_outputs(tmp_path, "many", image, scores, [f"class{i}" for i in range(300)], with_scores=False)
    np.testing.assert_array_equal(load_png_label(tmp_path / "many.png"), expected)
