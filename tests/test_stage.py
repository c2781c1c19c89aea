"""`python -m reproduce.stage`: clear errors for missing inputs, and a tiny staged run whose
weights hand over from stage to stage exactly as the recipe says."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest

import porting
from fcndata import SBDSegmentation
from fcndata.synthetic import write_synthetic
from porting.numerics import fp32_precision, set_fp32_precision
from porting.surgery import bilinear_kernel
from prototxt import solvers
from reproduce import stage
from reproduce.basenet import train_base_net

WIDTH = 1 / 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    paths = write_synthetic(root / "data", n_train=6, n_val=6, size=(32, 40))
    train = SBDSegmentation(paths.sbd_root, "train")
    base = train_base_net(
        [train[i] for i in range(len(train))], root / "base.caffemodel", width=WIDTH, steps=1, batch_size=2
    )
    return {"voc": paths.voc_root, "sbd": paths.sbd_root, "base": base, "root": root}


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = stage.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err, captured.out


def _data(tiny: dict[str, Path]) -> list[str]:
    return ["--voc-root", str(tiny["voc"]), "--sbd-root", str(tiny["sbd"])]


def test_no_dataset_points_to_sources_and_demo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = _run(capsys, "fcn32s", "--out", str(tmp_path))
    assert code == 1
    assert err.startswith("error: no dataset given") and err.count("\n") == 1
    for hint in ("--sbd-root", "benchmark.tgz", "--voc-root", "VOC2011", "python -m reproduce.demo"):
        assert hint in err


def test_missing_dataset_folder_names_path_and_layout(tmp_path: Path, capsys: pytest.CaptureFixture, tiny) -> None:
    missing = tmp_path / "nowhere"
    code, err, _ = _run(
        capsys,
        "fcn32s",
        "--out",
        str(tmp_path),
        "--sbd-root",
        str(missing),
        "--voc-root",
        str(tiny["voc"]),
        "--base-weights",
        str(tiny["base"]),
    )
    assert code == 1
    assert str(missing) in err and "benchmark.tgz" in err


def test_missing_base_weights_says_where_to_get_vgg16(tmp_path: Path, capsys: pytest.CaptureFixture, tiny) -> None:
    code, err, _ = _run(capsys, "fcn32s", "--out", str(tmp_path), *_data(tiny))
    assert code == 1
    assert "--base-weights" in err and "VGG_ILSVRC_16_layers.caffemodel" in err and "Model Zoo" in err
    absent = tmp_path / "vgg16.caffemodel"
    code, err, _ = _run(capsys, "fcn8s-atonce", "--out", str(tmp_path), *_data(tiny), "--base-weights", str(absent))
    assert code == 1
    assert str(absent) in err and "not found" in err and "VGG16" in err


def test_later_stage_needs_the_previous_one(tmp_path: Path, capsys: pytest.CaptureFixture, tiny) -> None:
    code, err, _ = _run(capsys, "fcn16s", "--out", str(tmp_path), *_data(tiny))
    assert code == 1
    assert str(tmp_path / "fcn32s" / "final.caffemodel") in err
    assert "python -m reproduce.stage fcn32s" in err


def _blobs(path: Path) -> dict[str, list[np.ndarray]]:
    return porting.read_caffemodel(path)


def test_staged_run_hands_weights_over(tmp_path: Path, capsys: pytest.CaptureFixture, tiny) -> None:
    runs = tmp_path / "runs"
    common = [
        "--out",
        str(runs),
        *_data(tiny),
        "--preset",
        "demo",
        "--width",
        repr(WIDTH),
        "--device",
        "cpu",
        "--images-per-update",
        "2",
        "--eval-images",
        "2",
    ]
    base = _blobs(tiny["base"])

    # fcn32s with no update: VGG-style fc6/fc7 cast to convolutions, score zero, upsampling bilinear.
    assert _run(capsys, "fcn32s", *common, "--base-weights", str(tiny["base"]), "--max-iter", "0")[0] == 0
    start = _blobs(runs / "fcn32s" / "final.caffemodel")
    fc6 = start["fc6"][0]
    assert fc6.shape[2:] == (7, 7)
    assert np.array_equal(fc6, base["fc6"][0].reshape(fc6.shape))
    assert np.array_equal(start["fc7"][0], base["fc7"][0].reshape(start["fc7"][0].shape))
    assert np.array_equal(start["conv1_1"][0], base["conv1_1"][0])
    assert "fc8" not in start
    assert not start["score_fr"][0].any() and not start["score_fr"][1].any()
    assert np.array_equal(start["upscore"][0], bilinear_kernel(21, 64))

    # fcn32s trained for two updates, validated after each.
    assert (
        _run(capsys, "fcn32s", *common, "--base-weights", str(tiny["base"]), "--max-iter", "2", "--eval-every", "1")[0]
        == 0
    )
    directory = runs / "fcn32s"
    for name in (
        "train.prototxt",
        "val.prototxt",
        "deploy.prototxt",
        "solver.prototxt",
        "log.csv",
        "log.jsonl",
        "loss.png",
        "final.caffemodel",
        "snapshot_iter_2.pt",
    ):
        assert (directory / name).is_file(), name
    records = [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "mean_iu" in r] == [1, 2]
    assert all(0.0 <= r["mean_iu"] <= 1.0 for r in records if "mean_iu" in r)
    solver = porting.read_solver(directory / "solver.prototxt")
    assert (solver.iter_size, solver.max_iter) == (2, 2) and solver.momentum == pytest.approx(0.9)
    train_text = (directory / "train.prototxt").read_text()
    assert str(tiny["sbd"]) in train_text and "normalize: true" in train_text
    trained = _blobs(directory / "final.caffemodel")
    assert trained["score_fr"][0].any()

    # fcn16s picks up fcn32s automatically: shared layers equal, new ones zero / bilinear.
    assert _run(capsys, "fcn16s", *common, "--max-iter", "0", "--eval-every", "0")[0] == 0
    sixteen = _blobs(runs / "fcn16s" / "final.caffemodel")
    for name, blobs in trained.items():
        if name != "upscore":
            for got, want in zip(sixteen[name], blobs, strict=True):
                assert np.array_equal(got, want), name
    assert not sixteen["score_pool4"][0].any()
    assert np.array_equal(sixteen["upscore2"][0], bilinear_kernel(21, 4))
    assert np.array_equal(sixteen["upscore16"][0], bilinear_kernel(21, 32))

    # One update of fcn16s learns upscore2 (demo preset); fcn8s starts its class-to-same-class filters
    # bilinear again and keeps the learned cross-class ones, as the authors' voc-fcn8s/solve.py calls
    # surgery.interp (which writes data[range(m), range(k)]) on every layer named "*up*" after copy_from.
    assert _run(capsys, "fcn16s", *common, "--max-iter", "1", "--eval-every", "0")[0] == 0
    learned = _blobs(runs / "fcn16s" / "final.caffemodel")["upscore2"][0]
    assert not np.array_equal(learned, bilinear_kernel(21, 4))
    assert _run(capsys, "fcn8s", *common, "--max-iter", "0", "--eval-every", "0")[0] == 0
    eight = _blobs(runs / "fcn8s" / "final.caffemodel")
    diagonal = np.eye(21, dtype=bool)
    assert np.array_equal(eight["upscore2"][0][diagonal], bilinear_kernel(21, 4)[diagonal])
    assert np.array_equal(eight["upscore2"][0][~diagonal], learned[~diagonal]) and learned[~diagonal].any()
    assert np.array_equal(eight["upscore_pool4"][0], bilinear_kernel(21, 4))
    assert np.array_equal(eight["upscore8"][0], bilinear_kernel(21, 16))
    assert not eight["score_pool3"][0].any()


def test_resume_continues_from_the_latest_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture, tiny
) -> None:
    common = [
        "fcn32s",
        "--out",
        str(tmp_path),
        *_data(tiny),
        "--preset",
        "demo",
        "--width",
        repr(WIDTH),
        "--device",
        "cpu",
        "--images-per-update",
        "1",
        "--eval-every",
        "0",
        "--base-weights",
        str(tiny["base"]),
    ]
    assert _run(capsys, *common, "--max-iter", "1")[0] == 0
    with caplog.at_level(logging.INFO, logger="reproduce"):
        code, _, _ = _run(capsys, *common, "--max-iter", "2", "--resume")
    assert code == 0
    directory = tmp_path / "fcn32s"
    assert caplog.messages[-4:] == [
        "fcn32s: preset demo, 2 updates, loss " + caplog.messages[-4].rsplit(" ", 1)[1],
        f"  log:     {directory / 'log.jsonl'} (and log.csv)",
        f"  plot:    {directory / 'loss.png'}",
        f"  weights: {directory / 'final.caffemodel'}",
    ]
    assert (tmp_path / "fcn32s" / "snapshot_iter_2.pt").is_file()


def test_heavy_stage_takes_the_authors_images_in_fp32(tmp_path: Path, capsys: pytest.CaptureFixture, tiny) -> None:
    """The heavy preset's images are the authors' stream (voc_layers.py: random.seed(1337), then
    randint(0, n - 1) per image, which Python 2 computed as int(random() * n)) over SBD
    train.txt in file order; log.jsonl names them per update. The stage asks for IEEE fp32
    convolutions and matmuls, TF32 only with --tf32."""
    set_fp32_precision(tf32=True)
    common = [
        "fcn32s",
        "--out",
        str(tmp_path),
        *_data(tiny),
        "--preset",
        "heavy",
        "--width",
        repr(WIDTH),
        "--device",
        "cpu",
        "--eval-every",
        "0",
        "--base-weights",
        str(tiny["base"]),
    ]
    assert _run(capsys, *common, "--max-iter", "3")[0] == 0
    assert fp32_precision() == {"conv": "ieee", "matmul": "ieee"}
    train_ids = (tiny["sbd"] / "train.txt").read_text().split()
    random.seed(1337)
    expected = [[train_ids[int(random.random() * len(train_ids))]] for _ in range(3)]
    records = [json.loads(line) for line in (tmp_path / "fcn32s" / "log.jsonl").read_text().splitlines()]
    assert [r["ids"] for r in records if "ids" in r] == expected

    assert _run(capsys, *common, "--max-iter", "4", "--resume", "--tf32")[0] == 0
    assert fp32_precision() == {"conv": "tf32", "matmul": "tf32"}
    records = [json.loads(line) for line in (tmp_path / "fcn32s" / "log.jsonl").read_text().splitlines()]
    expected.append([train_ids[int(random.random() * len(train_ids))]])
    assert [r["ids"] for r in records if "ids" in r] == expected


def test_solver_file_is_what_caffe_would_run_on_each_gpu(tmp_path: Path) -> None:
    """Caffe with P GPUs averages P solvers of iter_size k (P x k images per update), so the
    stage writes iter_size 20 / P; no random_seed (torch's dropout draws no Caffe RNG stream)."""
    options = stage.StageOptions("fcn32s", tmp_path, preset="cvpr")
    for ranks, per_gpu in ((1, 20), (2, 10), (4, 5)):
        solver = stage.stage_solver(options, solvers.build("cvpr", "voc-fcn32s"), ranks)
        assert solver.iter_size == per_gpu and not solver.HasField("random_seed")
    assert "4 GPUs averages 4 solvers" in solvers.notes("cvpr", 4) and solvers.notes("heavy", 1) == ""
    assert "summed" in solvers.notes("cvpr") and "summed" not in solvers.notes("cvpr-mean", 2)
    with pytest.raises(porting.FcnError, match="20 images per update cannot be split over 3 processes"):
        stage.stage_solver(options, solvers.build("cvpr", "voc-fcn32s"), 3)


def test_a_stage_continues_the_net_it_starts_from(tmp_path: Path, capsys: pytest.CaptureFixture, tiny) -> None:
    """The authors' solve.py starts each stage with `solver.net.copy_from(weights)`, and Caffe's
    CopyTrainedLayersFrom aborts on a blob of another shape: fcn16s builds the fcn32s it starts
    from (width and classes from its final.json), an explicit other value is an error naming
    both, and a file of another width is refused, never half copied."""
    runs = tmp_path / "runs"
    common = [*_data(tiny), "--out", str(runs), "--preset", "demo", "--device", "cpu", "--eval-every", "0"]
    common += ["--images-per-update", "1", "--max-iter", "0"]
    base = ["--base-weights", str(tiny["base"])]
    assert _run(capsys, "fcn32s", *common, *base, "--width", "1/32")[0] == 0  # a fraction, as the user writes it
    sidecar = json.loads((runs / "fcn32s" / "final.json").read_text())
    assert sidecar["width"] == 1 / 32 and len(sidecar["classes"]) == 21

    assert _run(capsys, "fcn16s", *common)[0] == 0
    thirty_two = _blobs(runs / "fcn32s" / "final.caffemodel")
    sixteen = _blobs(runs / "fcn16s" / "final.caffemodel")
    for name in ("conv1_1", "conv5_3", "fc6", "fc7", "score_fr"):
        for got, want in zip(sixteen[name], thirty_two[name], strict=True):
            assert np.array_equal(got, want), name
    assert json.loads((runs / "fcn16s" / "final.json").read_text())["width"] == 1 / 32

    code, err, _ = _run(capsys, "fcn16s", *common, "--width", "1/8")
    assert code == 1 and err.startswith("error: --width 1/8 differs from the width 1/32") and err.count("\n") == 1
    assert str(runs / "fcn32s" / "final.json") in err
    code, err, _ = _run(capsys, "fcn16s", *common, "--classes", "5")
    assert code == 1 and "--classes 5 differs from the 21 classes" in err and "--from-net" in err

    # A final.json that says no width (or none at all): Caffe's rule still holds, with the shapes.
    (runs / "fcn32s" / "final.json").unlink()
    code, err, _ = _run(capsys, "fcn16s", *common)
    err = err.splitlines()[-1]
    assert code == 1 and err.startswith(f"error: {runs / 'fcn32s' / 'final.caffemodel'}: layer 'conv1_1' ")
    assert "layer 'conv1_1' blob 0 has shape (2, 3, 3, 3), the net's has (64, 3, 3, 3)" in err
    assert "--width 1/32" in err
    # The classifier cast for fcn32s is held to the same rule (the base net is 1/32 wide).
    code, err, _ = _run(capsys, "fcn32s", *common, *base, "--width", "0.0625")
    assert "Traceback" not in err and err.count("error:") == 1
    assert code == 1 and "layer 'conv1_1' blob 0 has shape (2, 3, 3, 3), the net's has (4, 3, 3, 3)" in err
    assert "--width 1/32" in err and "--width 1/16" in err


@pytest.mark.parametrize("text", ["1/0", "abc", "inf", "-1/8", "0"])
def test_width_takes_fractions_and_refuses_what_is_no_positive_number(text: str, capsys) -> None:
    assert stage.parse_args(["fcn32s", "--width", "1/8"])[0].width == 0.125
    assert stage.parse_args(["fcn32s", "--width", "3e-2"])[0].width == 0.03
    with pytest.raises(SystemExit) as exit_info:
        stage.parse_args(["fcn32s", "--width", text])
    assert exit_info.value.code == 2 and "--width" in capsys.readouterr().err


def test_the_stage_gives_the_trainer_its_presets_accumulation(tmp_path: Path, capsys, tiny) -> None:
    """`cvpr` (20 gradients summed, lr 1e-4) and `cvpr-mean` (averaged, lr 2e-3, decay / 20) make
    the same update only if the stage hands each preset's accumulation and its 20 images per
    update to the trainer: an averaging cvpr would move the weights 20 times less."""
    trained = {}
    for preset in ("cvpr", "cvpr-mean"):
        runs = tmp_path / preset
        argv = ["fcn32s", *_data(tiny), "--out", str(runs), "--preset", preset, "--width", "1/32", "--device", "cpu"]
        argv += ["--base-weights", str(tiny["base"]), "--max-iter", "1", "--eval-every", "0"]
        assert _run(capsys, *argv)[0] == 0
        assert porting.read_solver(runs / "fcn32s" / "solver.prototxt").iter_size == 20
        records = [json.loads(line) for line in (runs / "fcn32s" / "log.jsonl").read_text().splitlines()]
        assert [len(r["ids"]) for r in records if "ids" in r] == [20]
        trained[preset] = _blobs(runs / "fcn32s" / "final.caffemodel")
    # score_fr starts at zero, so after one update it is -lr x the gradient: equal only if both presets
    # reach the summed gradient x 1e-4 (float32 nets: agreement to a few ulps)
    weight = trained["cvpr"]["score_fr"][0]
    assert np.abs(weight).max() > 0
    np.testing.assert_allclose(trained["cvpr-mean"]["score_fr"][0], weight, rtol=1e-4, atol=1e-6 * np.abs(weight).max())
    np.testing.assert_allclose(trained["cvpr-mean"]["score_fr"][1], trained["cvpr"]["score_fr"][1], rtol=1e-4)


def test_a_later_stage_takes_the_class_count_of_the_one_before(tmp_path: Path, capsys, tiny) -> None:
    """fcn32s trained for 5 classes: fcn16s without --classes builds 5 (not VOC's 21) and copies score_fr."""
    runs = tmp_path / "runs"
    common = [*_data(tiny), "--out", str(runs), "--preset", "demo", "--device", "cpu", "--eval-every", "0"]
    common += ["--images-per-update", "1", "--max-iter", "0"]
    argv = ["fcn32s", *common, "--base-weights", str(tiny["base"]), "--width", "1/32", "--classes", "5"]
    assert _run(capsys, *argv)[0] == 0
    assert _run(capsys, "fcn16s", *common)[0] == 0
    sixteen = _blobs(runs / "fcn16s" / "final.caffemodel")
    assert sixteen["score_fr"][0].shape[0] == 5 and sixteen["score_pool4"][0].shape[0] == 5
    assert len(json.loads((runs / "fcn16s" / "final.json").read_text())["classes"]) == 5
