"""The synthetic VOC/SBD writer: real formats, the seg11valid arithmetic, determinism, learnability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy import ndimage

from fcndata import SBDSegmentation, VOCSegmentation, load_ids, seg11valid_ids
from fcndata.synthetic import write_synthetic

N_TRAIN, N_VAL, SIZE = 40, 15, (24, 41)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic(tmp_path_factory.mktemp("synthetic"), n_train=N_TRAIN, n_val=N_VAL, size=SIZE, seed=5)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path):
    first = write_synthetic(tmp_path / "a", n_train=6, n_val=6, size=(16, 23), seed=1)
    write_synthetic(tmp_path / "b", n_train=6, n_val=6, size=(16, 23), seed=1)
    write_synthetic(tmp_path / "c", n_train=6, n_val=6, size=(16, 23), seed=2)
    a, b, c = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b"), tree_bytes(tmp_path / "c")
    assert a == b
    assert a != c
    assert any(name.endswith(".mat") for name in a) and first.sbd_root.is_dir()


def test_split_lists_and_the_seg11valid_rule(synthetic):
    lists = synthetic.voc_root / "VOC2011" / "ImageSets" / "Segmentation"
    val = load_ids(lists / "val.txt")
    sbd_train = load_ids(synthetic.sbd_root / "train.txt")
    sbd_val = load_ids(synthetic.sbd_root / "val.txt")
    expected = [i for i in val if i not in set(sbd_train)]

    assert len(val) == N_VAL and len(sbd_train) == N_TRAIN
    assert seg11valid_ids(synthetic.voc_root, synthetic.sbd_root) == expected
    assert len(expected) == synthetic.seg11valid_count == N_VAL - N_VAL // 3
    assert 0 < len(expected) < len(val)  # the subtraction removes some, not all
    assert set(expected) & set(sbd_val)  # like the real split, some are in SBD val
    for year in ("2011", "2012"):
        year_lists = synthetic.voc_root / f"VOC{year}" / "ImageSets" / "Segmentation"
        train, val_y = load_ids(year_lists / "train.txt"), load_ids(year_lists / "val.txt")
        assert train == sorted(train) and val_y == sorted(val_y) and not set(train) & set(val_y)
        assert load_ids(year_lists / "trainval.txt") == sorted(train + val_y)
    assert set(val) < set(load_ids(synthetic.voc_root / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"))


def test_files_are_in_the_real_formats(synthetic, reference):
    ds = VOCSegmentation(synthetic.voc_root, "2011", "val")
    sbd = SBDSegmentation(synthetic.sbd_root, "train")
    palette = Image.open(reference / "demo" / "label.png").getpalette()[:768]
    shared = sorted(set(ds.ids) & set(sbd.ids))
    assert shared
    for image_id in shared:
        with Image.open(ds.image_path(image_id)) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
        with Image.open(ds.label_path(image_id)) as png:
            assert png.format == "PNG" and png.mode == "P" and png.getpalette()[:768] == palette
            voc_label = np.asarray(png)
        mat = scipy.io.loadmat(sbd.label_path(image_id))  # read as the authors' layer reads it
        sbd_label = mat["GTcls"][0]["Segmentation"][0]
        assert sbd_label.dtype == np.uint8 and 255 not in sbd_label
        present = mat["GTcls"][0]["CategoriesPresent"][0].ravel()
        assert sorted(present.tolist()) == sorted(set(np.unique(sbd_label).tolist()) - {0})
        assert mat["GTcls"][0]["Boundaries"][0].shape == (20, 1)
        # VOC's copy is SBD's plus a void band: every pixel with a differing 3x3 neighbour
        void = voc_label == 255
        outline = ndimage.maximum_filter(sbd_label, 3, mode="nearest") != ndimage.minimum_filter(
            sbd_label, 3, mode="nearest"
        )
        np.testing.assert_array_equal(void, outline)
        np.testing.assert_array_equal(voc_label[~void], sbd_label[~void])


def test_everything_loads_through_the_real_loaders(synthetic):
    datasets = [
        VOCSegmentation(synthetic.voc_root, year, split)
        for year in ("2011", "2012")
        for split in ("train", "val", "trainval")
    ]
    datasets += [VOCSegmentation(synthetic.voc_root, "2011", "seg11valid", sbd_root=synthetic.sbd_root)]
    datasets += [SBDSegmentation(synthetic.sbd_root, split) for split in ("train", "val")]
    sizes, classes = set(), set()
    for ds in datasets:
        for sample in ds:
            h, w = sample.label.shape
            assert sample.image.shape == (3, h, w)
            assert SIZE[0] <= h <= SIZE[1] and SIZE[0] <= w <= SIZE[1]
            sizes.add((h, w))
            classes |= set(sample.label.unique().tolist())
    assert any(h % 2 or w % 2 for h, w in sizes) and len(sizes) > 10
    assert 0 in classes and 255 in classes and len(classes - {0, 255}) >= 10


def test_classes_are_learnable_from_local_appearance(synthetic):
    """A nearest-mean classifier on 5x5-averaged colour separates the classes: the demo's
    small nets have something real to learn, and the labels match the pixels."""

    def features(ds):
        xs, ys = [], []
        for i in range(len(ds)):
            rgb, label = ds.read_raw(i)
            smooth = np.stack([ndimage.uniform_filter(rgb[..., k].astype(float), 5) for k in range(3)], -1)
            keep = label != 255
            xs.append(smooth[keep])
            ys.append(label[keep])
        return np.concatenate(xs), np.concatenate(ys)

    x, y = features(SBDSegmentation(synthetic.sbd_root, "train"))
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    xv, yv = features(VOCSegmentation(synthetic.voc_root, "2011", "seg11valid", sbd_root=synthetic.sbd_root))
    predicted = classes[((xv[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    assert (predicted == yv).mean() > 0.9
    assert (predicted == yv)[yv > 0].mean() > 0.7


def test_rejects_sizes_that_break_the_split_arithmetic(tmp_path: Path):
    with pytest.raises(ValueError):
        write_synthetic(tmp_path, n_train=1, n_val=9)
