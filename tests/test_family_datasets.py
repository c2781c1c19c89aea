"""PASCAL-Context, NYUDv2 and SIFT Flow loaders on synthetic folders in the real formats.

Expected values are computed independently of the loaders: images read with OpenCV
(BGR), labels with scipy.io.loadmat, the mapping rules and means from the authors' data
layers (nyud_layers.py, siftflow_layers.py, pascalcontext_layers.py) and their class
lists in the reference folder.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from fcndata import nyud, siftflow
from fcndata.image import load_ids
from fcndata.nyud import NYUDSegmentation
from fcndata.pascalcontext import PASCALContextSegmentation
from fcndata.siftflow import SIFTFlowSegmentation
from fcndata.synthetic_families import write_nyud, write_pascalcontext, write_siftflow
from fcndata.tops import net_feed
from porting.errors import DatasetError


@pytest.fixture(scope="module")
def extra_data(reference_dir: Path) -> Path:
    """The authors' data/ notes and lists for PASCAL-Context, NYUDv2 and SIFT Flow."""
    return reference_dir / "fcn-berkeleyvision-extra" / "data"


def _names(path: Path) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in path.read_text().splitlines() if ":" in line]


@pytest.fixture(scope="module")
def context(tmp_path_factory, extra_data):
    """Synthetic PASCAL-Context with the real full (labels.txt) and task (59_labels.txt) names."""
    full = _names(extra_data / "pascal-context" / "classes-400.txt")
    task = _names(extra_data / "pascal-context" / "classes-59.txt")[1:]  # the task list has no background line
    return write_pascalcontext(tmp_path_factory.mktemp("context"), labels=(full, task)), full, task


def test_pascalcontext_maps_full_labels_to_the_59_task_with_the_authors_spellings(context):
    paths, full, task = context
    dataset = PASCALContextSegmentation(paths.voc_root, paths.context_root, "val")
    assert dataset.num_classes == 60 == len(task) + 1  # 59 classes and background
    # the names the two lists spell differently (task: full)
    for task_name, full_name in (("diningtable", "table"), ("bedcloth", "bedclothes"), ("clothes", "cloth")):
        assert task_name in task and full_name in full and task_name not in full
    for index in range(len(dataset)):
        image_id = dataset.ids[index]
        stored = scipy.io.loadmat(paths.context_root / "trainval" / f"{image_id}.mat")["LabelMap"]
        expected = np.zeros(stored.shape, dtype=np.int64)
        for position, name in enumerate(task, start=1):
            in_full = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}.get(name, name)
            expected[stored == full.index(in_full) + 1] = position
        sample = dataset[index]
        assert torch.equal(sample.label, torch.from_numpy(expected))
        bgr = cv2.imread(str(paths.voc_root / "VOC2010" / "JPEGImages" / f"{image_id}.jpg")).astype(np.float32)
        expected_input = (bgr - np.array([104.007, 116.669, 122.679], dtype=np.float32)).transpose(2, 0, 1)
        assert torch.equal(sample.image, torch.from_numpy(np.ascontiguousarray(expected_input)))
    assert any((dataset[i].label == 0).any() and (dataset[i].label > 0).any() for i in range(len(dataset)))


def test_pascalcontext_errors(context, tmp_path):
    paths, _, _ = context
    with pytest.raises(DatasetError, match="VOC2010 folder not found"):
        PASCALContextSegmentation(paths.context_root, paths.context_root)
    with pytest.raises(DatasetError, match="split must be one of train, val"):
        PASCALContextSegmentation(paths.voc_root, paths.context_root, "test")
    broken = write_pascalcontext(tmp_path, n_train=1, n_val=2)
    (broken.context_root / "59_labels.txt").write_text("1: unicorn\n")
    with pytest.raises(DatasetError, match="task class 'unicorn' is not in the full label list"):
        PASCALContextSegmentation(broken.voc_root, broken.context_root)
    broken = write_pascalcontext(tmp_path / "b", n_train=1, n_val=2)
    image_id = load_ids(broken.voc_root / "VOC2010" / "ImageSets" / "Main" / "val.txt")[0]
    scipy.io.savemat(broken.context_root / "trainval" / f"{image_id}.mat", {"LabelMap": np.full((4, 4), 9999)})
    with pytest.raises(DatasetError, match="LabelMap value 9999 is not an id of labels.txt"):
        PASCALContextSegmentation(broken.voc_root, broken.context_root)[0]


@pytest.fixture(scope="module")
def nyud_root(tmp_path_factory):
    return write_nyud(tmp_path_factory.mktemp("nyud"))


def test_nyud_tops_follow_the_authors_preprocessing(nyud_root):
    dataset = NYUDSegmentation(nyud_root, "test", tops=("color", "depth", "hha", "label"))
    assert len(dataset) == len(load_ids(nyud_root / "test.txt"))
    image_id = dataset.ids[0]
    blobs = dataset[0].blobs
    assert list(blobs) == ["color", "depth", "hha", "label"]
    bgr = cv2.imread(str(nyud_root / "data" / "images" / f"img_{image_id}.png")).astype(np.float32)
    color = (bgr - np.array([116.190, 97.203, 92.318], dtype=np.float32)).transpose(2, 0, 1)
    assert torch.equal(blobs["color"], torch.from_numpy(np.ascontiguousarray(color)))
    raw_depth = cv2.imread(str(nyud_root / "data" / "depth" / f"img_{image_id}.png"), cv2.IMREAD_UNCHANGED)
    assert raw_depth.dtype == np.uint16
    depth = np.log(raw_depth.astype(np.float32)) - np.float32(7.844)
    assert torch.allclose(blobs["depth"][0], torch.from_numpy(depth), atol=1e-6)
    hha_rgb = cv2.imread(str(nyud_root / "data" / "hha" / f"img_{image_id}.png"))[:, :, ::-1].astype(np.float32)
    hha = (hha_rgb - np.array([132.431, 94.076, 118.477], dtype=np.float32)).transpose(2, 0, 1)
    assert torch.equal(blobs["hha"], torch.from_numpy(np.ascontiguousarray(hha)))
    raw = scipy.io.loadmat(nyud_root / "segmentation" / f"img_{image_id}.mat")["segmentation"].astype(np.int64)
    expected = np.where(raw == 0, 255, raw - 1)
    assert torch.equal(blobs["label"], torch.from_numpy(expected))
    assert set(np.unique(expected)) <= set(range(40)) | {255} and 255 in expected


def test_nyud_splits(nyud_root, tmp_path, extra_data):
    trainval = NYUDSegmentation(nyud_root, "trainval", tops=("hha", "label"))
    assert trainval.ids == load_ids(nyud_root / "train.txt") + load_ids(nyud_root / "val.txt")
    assert len(load_ids(extra_data / "nyud" / "test.txt")) == nyud.TEST_IMAGES
    listed = write_nyud(tmp_path)
    (listed / "trainval.txt").write_text("5001\n5000\n")
    assert NYUDSegmentation(listed, "trainval").ids == ["5001", "5000"]


def test_nyud_feeds_the_nets_inputs_in_the_data_layers_order(nyud_root):
    sample = NYUDSegmentation(nyud_root, "test", tops=("hha", "label"))[0]
    feed = net_feed(sample, ["data", "label"])  # nyud-fcn32s-hha names its one input `data`
    assert torch.equal(feed["data"][0], sample.blobs["hha"]) and feed["label"].shape[:2] == (1, 1)
    with pytest.raises(DatasetError, match="the example has 2 tops .* but the net takes 3 inputs"):
        net_feed(sample, ["color", "hha", "label"])


def test_nyud_errors(tmp_path):
    root = write_nyud(tmp_path, n_train=1, n_val=1, n_test=2)
    with pytest.raises(DatasetError, match="NYUDv2 root folder not found.*nyud.tar.gz"):
        NYUDSegmentation(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="pass its nyud/ subfolder"):
        NYUDSegmentation(tmp_path)
    with pytest.raises(DatasetError, match="tops must be distinct names among color, depth, hha, label"):
        NYUDSegmentation(root, tops=("rgb", "label"))
    test_ids = load_ids(root / "test.txt")
    scipy.io.savemat(root / "segmentation" / f"img_{test_ids[0]}.mat", {"segmentation": np.full((8, 8), 41)})
    with pytest.raises(DatasetError, match="label values 41 out of range"):
        NYUDSegmentation(root)[0]
    (root / "segmentation" / f"img_{test_ids[1]}.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DatasetError, match="corrupt or unreadable .mat file"):
        NYUDSegmentation(root)[1]
    cv2.imwrite(str(root / "data" / "depth" / f"img_{test_ids[1]}.png"), np.zeros((8, 8), np.uint16))
    with pytest.raises(DatasetError, match="depth has values <= 0"):
        NYUDSegmentation(root, tops=("depth",))[1]
    cv2.imwrite(str(root / "data" / "hha" / f"img_{test_ids[1]}.png"), np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"size 8x9 \(WxH\) differs from"):
        NYUDSegmentation(root, tops=("color", "hha"))[1]
    (root / "data" / "images" / f"img_{test_ids[0]}.png").unlink()
    with pytest.raises(DatasetError, match="color file of id .* not found"):
        NYUDSegmentation(root)


@pytest.fixture(scope="module")
def siftflow_root(tmp_path_factory):
    return write_siftflow(tmp_path_factory.mktemp("siftflow"))


def test_siftflow_semantic_and_geometric_labels(siftflow_root, extra_data):
    dataset = SIFTFlowSegmentation(siftflow_root, "test")
    sub = siftflow.SUBFOLDER
    for index, image_id in enumerate(dataset.ids):
        blobs = dataset[index].blobs
        assert list(blobs) == ["data", "sem", "geo"]
        bgr = cv2.imread(str(siftflow_root / "Images" / sub / f"{image_id}.jpg")).astype(np.float32)
        expected = (bgr - np.array([114.578, 115.294, 108.353], dtype=np.float32)).transpose(2, 0, 1)
        assert torch.equal(blobs["data"], torch.from_numpy(np.ascontiguousarray(expected)))
        sem = scipy.io.loadmat(siftflow_root / "SemanticLabels" / sub / f"{image_id}.mat")["S"].astype(np.int64)
        geo = scipy.io.loadmat(siftflow_root / "GeoLabels" / sub / f"{image_id}.mat")["S"].astype(np.int64)
        assert torch.equal(blobs["sem"], torch.from_numpy(np.where(sem == 0, 255, sem - 1)))
        assert torch.equal(blobs["geo"], torch.from_numpy(np.where(geo == -1, 255, geo - 1)))
        assert -1 in geo or not (sem == 0).any()
    assert len(load_ids(extra_data / "sift-flow" / "test.txt")) == siftflow.TEST_IMAGES


def test_siftflow_errors(tmp_path):
    root = write_siftflow(tmp_path, n_trainval=1, n_test=2)
    with pytest.raises(DatasetError, match="SIFT Flow GeoLabels folder not found.*SiftFlowDataset.zip"):
        (root / "GeoLabels" / siftflow.SUBFOLDER).rename(root / "elsewhere")
        SIFTFlowSegmentation(root)
    (root / "elsewhere").rename(root / "GeoLabels" / siftflow.SUBFOLDER)
    test_ids = load_ids(root / "test.txt")
    scipy.io.savemat(root / "GeoLabels" / siftflow.SUBFOLDER / f"{test_ids[0]}.mat", {"S": np.full((4, 4), 4)})
    with pytest.raises(DatasetError, match="label values 4 out of range .geometric"):
        SIFTFlowSegmentation(root)[0]
    scipy.io.savemat(root / "SemanticLabels" / siftflow.SUBFOLDER / f"{test_ids[1]}.mat", {"labels": np.ones((4, 4))})
    with pytest.raises(DatasetError, match="no variable 'S' \\(found: labels\\)"):
        SIFTFlowSegmentation(root)[1]
    with pytest.raises(DatasetError, match="split must be one of trainval, test"):
        SIFTFlowSegmentation(root, "train")
