"""Datasets by name (`folder:ROOT`, `ade20k:ROOT`): layouts, label decoding, class names, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import MEAN_BGR
from PIL import Image

from fcndata import DATASETS, DatasetError, DatasetKind, parse_dataset, register_dataset
from fcndata.synthetic import ADE20K_SCENE_VALUES, write_synthetic_ade20k, write_synthetic_folder

NAMES = ("background", "aeroplane", "car", "widget")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_synthetic_folder(
        tmp_path_factory.mktemp("folder") / "mine", n_train=4, n_val=3, size=(16, 24), class_names=NAMES
    )


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> Path:
    return write_synthetic_ade20k(
        tmp_path_factory.mktemp("ade") / "ADEChallengeData2016", n_train=3, n_val=2, size=(16, 24)
    )


def test_folder_reads_classes_splits_and_both_label_modes(folder):
    spec = parse_dataset(f"folder:{folder}")
    assert spec.classes == NAMES
    train, val = spec.open("train"), spec.open("val")
    assert train.ids == sorted(p.stem for p in (folder / "images" / "train").iterdir())
    assert len(val) == 3
    modes = set()
    for index, image_id in enumerate(train.ids):
        path = folder / "labels" / "train" / f"{image_id}.png"
        with Image.open(path) as png:
            modes.add(png.mode)
            stored = np.asarray(png)
        sample = train[index]
        np.testing.assert_array_equal(sample.label.numpy(), stored)
        rgb = np.asarray(Image.open(folder / "images" / "train" / f"{image_id}.jpg").convert("RGB"), np.float64)
        expected = (rgb[:, :, ::-1] - np.asarray(MEAN_BGR)).transpose(2, 0, 1).astype(np.float32)
        np.testing.assert_array_equal(sample.image.numpy(), expected)
    assert modes == {"P", "L"}
    assert set(np.unique(np.concatenate([train[i].label.numpy().ravel() for i in range(len(train))]))) <= {
        0,
        1,
        2,
        3,
        255,
    }


def test_dataset_mean_is_applied(folder):
    plain, zero = (
        parse_dataset(f"folder:{folder}").open("val"),
        parse_dataset(f"folder:{folder}").open("val", (0, 0, 0)),
    )
    difference = zero[0].image.numpy() - plain[0].image.numpy()
    np.testing.assert_allclose(
        difference, np.broadcast_to(np.asarray(MEAN_BGR, np.float32)[:, None, None], difference.shape), rtol=1e-6
    )


def test_ade20k_maps_other_to_ignore_and_shifts_classes(ade):
    spec = parse_dataset(f"ade20k:{ade}")
    assert len(spec.classes) == 150 and spec.classes[0] == "synthetic 1, thing 1"
    training = spec.open("training")
    assert spec.open("train").ids == training.ids == ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"]
    for index, image_id in enumerate(training.ids):
        stored = np.asarray(Image.open(ade / "annotations" / "training" / f"{image_id}.png"))
        label = training[index].label.numpy()
        assert set(np.unique(stored)) <= {0, *ADE20K_SCENE_VALUES}
        np.testing.assert_array_equal(label[stored == 0], 255)
        np.testing.assert_array_equal(label[stored > 0], stored[stored > 0].astype(np.int64) - 1)


def test_object_info_in_the_release_format(tmp_path, ade):
    """The release's file has stray spaces after some indices and names ("22 \\t", "bed \\t"): they are stripped."""
    from fcndata.ade20k import read_object_info

    lines = ["Idx\tRatio\tTrain\tVal\tName"] + [
        f"{i}{' ' if i == 22 else ''}\t0.01\t10\t1\t{'bed ' if i == 8 else f'name {i}'}" for i in range(1, 151)
    ]
    path = tmp_path / "objectInfo150.txt"
    path.write_text("\n".join(lines) + "\n")
    names = read_object_info(path)
    assert names[7] == "bed" and names[21] == "name 22" and len(names) == 150


def _relabel(root: Path, change) -> None:
    path = root / "labels" / "val" / "val_0000.png"
    change(np.asarray(Image.open(path))).save(path)


def _copy_folder(folder: Path, target: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, target))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda root: (root / "classes.txt").unlink(), "classes.txt: class list not found"),
        (lambda root: (root / "labels" / "val").rename(root / "labels" / "valid"), "labels folder of split 'val'"),
        (lambda root: _relabel(root, lambda label: Image.fromarray(label).convert("RGB")), "mode 'RGB'"),
        (lambda root: _relabel(root, lambda label: Image.fromarray(np.maximum(label, 9))), "label values 9"),
        (lambda root: Image.new("RGB", (24, 16)).save(root / "images" / "val" / "val_0000.png"), "two image files"),
        (lambda root: (root / "labels" / "val" / "val_0001.png").unlink(), "label file of id 'val_0001' not found"),
    ],
    ids=["no-classes", "no-label-split", "rgb-label", "out-of-range", "two-images", "missing-label"],
)
def test_folder_errors_name_the_file_and_layout(folder, tmp_path, damage, expected):
    root = _copy_folder(folder, tmp_path / "copy")
    damage(root)
    with pytest.raises(DatasetError) as info:
        dataset = parse_dataset(f"folder:{root}").open("val")
        [dataset[i] for i in range(len(dataset))]
    assert expected in str(info.value)


def test_unknown_split_lists_the_ones_there(folder):
    with pytest.raises(DatasetError, match=r"split 'test' not found \(splits here: train, val\)"):
        parse_dataset(f"folder:{folder}").open("test")


def test_ade20k_errors(ade, tmp_path):
    with pytest.raises(DatasetError, match="pass its ADEChallengeData2016 subfolder"):
        parse_dataset(f"ade20k:{ade.parent}").open("validation")
    with pytest.raises(DatasetError, match="sceneparsing.csail.mit.edu"):
        parse_dataset(f"ade20k:{tmp_path / 'nothing'}").open("validation")
    root = _copy_folder(ade, tmp_path / "ade")
    (root / "objectInfo150.txt").write_text("Idx\tName\n1\twall\n")
    with pytest.raises(DatasetError, match="expected the header Idx / Ratio / Train / Val / Name"):
        parse_dataset(f"ade20k:{root}").classes  # noqa: B018 (reading the classes is what raises)


def test_spec_errors_list_the_kinds():
    with pytest.raises(DatasetError, match="expected KIND:ROOT"):
        parse_dataset("mydata")
    with pytest.raises(DatasetError, match="unknown kind 'cityscapes'; known: folder:ROOT, ade20k:ROOT"):
        parse_dataset("cityscapes:/data")


def test_registry_takes_new_kinds(folder, monkeypatch):
    monkeypatch.setattr("fcndata.registry.DATASETS", dict(DATASETS))
    from fcndata import registry

    kind = DATASETS["folder"]
    registry.register_dataset(DatasetKind("mine", kind.open, kind.classes, "train", "val", "layout"))
    assert parse_dataset(f"mine:{folder}").classes == NAMES
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_dataset(kind)
    assert register_dataset is registry.register_dataset


def test_bad_layouts_on_the_command_lines_give_one_error_line(folder, tmp_path, capsys):
    """`eval.table` and `reproduce.stage` with a wrong --dataset: `error: ...` naming the layout, no traceback."""
    from eval.table import main as table
    from reproduce.stage import main as stage

    root = _copy_folder(folder, tmp_path / "copy")
    (root / "classes.txt").unlink()
    weights = tmp_path / "net.caffemodel"
    weights.write_bytes(b"")
    for run in (
        lambda: table(["--dataset", f"folder:{root}", "--prototxt", str(weights), "--caffemodel", str(weights)]),
        lambda: stage(
            ["fcn32s", "--dataset", f"folder:{root}", "--base-weights", str(weights), "--out", str(tmp_path / "runs")]
        ),
    ):
        assert run() != 0
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "classes.txt: class list not found" in err and "Traceback" not in err
