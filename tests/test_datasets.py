"""VOC / SBD loaders on tiny trees in the real formats, the seg11valid rule, error handling."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcndata import (
    MEAN_BGR,
    Sample,
    SBDSegmentation,
    VOCSegmentation,
    dataset_for_split,
    load_ids,
    sample_order,
    seg11valid_ids,
    voc_palette,
)
from porting.errors import DatasetError

DEMO_IMAGE = "demo/image.jpg"
DEMO_LABEL = "demo/label.png"
SEG11VALID = "data/pascal/seg11valid.txt"


# ---------------------------------------------------------------- tiny trees, written by hand


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def write_palette_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(voc_palette())
    image.save(path)


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = np.empty((20, 1), dtype=object)
    for c in range(20):
        cells[c, 0] = np.zeros((0, 0))
    present = np.unique(label[label > 0]).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"GTcls": {"Boundaries": cells, "Segmentation": label, "CategoriesPresent": present}})


def random_pair(seed: int, h: int = 11, w: int = 13) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (h, w), dtype=np.uint8)
    label[0, :] = 255
    return rgb, label


Pairs = dict[str, tuple[np.ndarray, np.ndarray]]


def make_voc(root: Path, year: str, pairs: Pairs, lists: dict[str, list[str]]) -> Path:
    year_root = root / f"VOC{year}"
    for image_id, (rgb, label) in pairs.items():
        write_jpeg(year_root / "JPEGImages" / f"{image_id}.jpg", rgb)
        write_palette_png(year_root / "SegmentationClass" / f"{image_id}.png", label)
    for split, ids in lists.items():
        write_list(year_root / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    return root


def make_sbd(root: Path, pairs: Pairs, lists: dict[str, list[str]]) -> Path:
    for image_id, (rgb, label) in pairs.items():
        write_jpeg(root / "img" / f"{image_id}.jpg", rgb)
        write_sbd_mat(root / "cls" / f"{image_id}.mat", label)
    for split, ids in lists.items():
        write_list(root / f"{split}.txt", ids)
    return root


@pytest.fixture
def small_voc(tmp_path: Path) -> Path:
    pairs = {f"2011_00000{k}": random_pair(k) for k in range(4)}
    ids = sorted(pairs)
    return make_voc(tmp_path / "VOCdevkit", "2011", pairs, {"train": ids[:2], "val": ids[2:], "trainval": ids})


@pytest.fixture
def small_sbd(tmp_path: Path) -> Path:
    pairs = {f"2008_00000{k}": random_pair(10 + k) for k in range(3)}
    for _, label in pairs.values():
        label[label == 255] = 0  # SBD labels have no void
    lists = {"train": ["2008_000000", "2008_000001"], "val": ["2008_000002"]}
    return make_sbd(tmp_path / "sbd" / "dataset", pairs, lists)


def palette_decode(path: Path) -> np.ndarray:
    """Labels from the PNG's colours (not its indices), through the VOC colour map."""
    colours = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    palette = np.array(voc_palette()).reshape(256, 3)
    index = {tuple(palette[i]): i for i in list(range(21)) + [255]}
    assert len(index) == 22  # the 22 VOC colours are distinct
    return np.array([index[tuple(c)] for c in colours], dtype=np.uint8).reshape(Image.open(path).size[::-1])


# ---------------------------------------------------------------- the authors' real files


def test_palette_is_the_one_in_the_authors_label_png(reference: Path):
    assert Image.open(reference / DEMO_LABEL).getpalette()[:768] == voc_palette()


def test_real_voc_image_and_label_through_the_loader(tmp_path: Path, reference: Path):
    year_root = tmp_path / "VOCdevkit" / "VOC2012"
    (year_root / "JPEGImages").mkdir(parents=True)
    (year_root / "SegmentationClass").mkdir()
    shutil.copy(reference / DEMO_IMAGE, year_root / "JPEGImages" / "demo.jpg")
    shutil.copy(reference / DEMO_LABEL, year_root / "SegmentationClass" / "demo.png")
    write_list(year_root / "ImageSets" / "Segmentation" / "val.txt", ["demo"])

    sample = VOCSegmentation(tmp_path / "VOCdevkit", year="2012", split="val")[0]

    assert isinstance(sample, Sample) and sample.id == "demo"
    assert sample.image.dtype == torch.float32 and sample.label.dtype == torch.int64
    bgr = cv2.imread(str(reference / DEMO_IMAGE)).astype(np.float64)  # OpenCV decodes to BGR natively
    mean = np.asarray(MEAN_BGR)[:, None, None]
    np.testing.assert_allclose(sample.image.numpy(), bgr.transpose(2, 0, 1) - mean, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(sample.label.numpy(), palette_decode(reference / DEMO_LABEL))
    values = set(np.unique(sample.label.numpy()).tolist())
    assert 255 in values and values - {255} <= set(range(21)) and len(values - {0, 255}) >= 1


def test_bgr_and_mean_by_hand_on_one_pixel(small_voc: Path):
    ds = VOCSegmentation(small_voc, "2011", "train")
    rgb_raw, label_raw = ds.read_raw(1)
    r, g, b = (int(v) for v in np.asarray(Image.open(ds.image_path(ds.ids[1])))[5, 7])
    assert rgb_raw[5, 7].tolist() == [r, g, b]
    image = ds[1].image
    expected = [np.float32(b - 104.00699), np.float32(g - 116.66877), np.float32(r - 122.67892)]
    assert image[:, 5, 7].tolist() == expected
    assert label_raw.dtype == np.uint8 and ds[1].label[5, 7].item() == label_raw[5, 7]


def test_reference_seg11valid_list_reads_as_an_ids_file(reference: Path):
    ids = load_ids(reference / SEG11VALID)
    assert len(ids) == 736 == len(set(ids))
    # VOC's val.txt is sorted and seg11valid keeps its order, so the list must be sorted too;
    # and every id must be a VOC2011-era image (2007..2011).
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"20(0[7-9]|1[01])_\d{6}", i) for i in ids)
    assert seg11valid_ids(None, None, ids_file=reference / SEG11VALID) == ids


# ---------------------------------------------------------------- the seg11valid rule


def test_seg11valid_is_val_minus_sbd_train_in_val_order(tmp_path: Path):
    voc = tmp_path / "VOCdevkit"
    val = ["2011_000009", "2007_000005", "2008_000001", "2010_000003", "2009_000002"]
    write_list(voc / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt", val)
    sbd = tmp_path / "dataset"
    write_list(sbd / "train.txt", ["2008_000001", "2010_000003", "2011_999999"])
    write_list(sbd / "val.txt", ["2007_000005"])  # SBD val is NOT subtracted
    assert seg11valid_ids(voc, sbd) == ["2011_000009", "2007_000005", "2009_000002"]


def _real_sized_lists(tmp_path: Path, seg11valid: Path, drop_from_train: int) -> tuple[Path, Path, list[str]]:
    """VOC2011 val = reference seg11valid + 375 other ids (1,111), SBD train = those 375 + unrelated ids."""
    valid = load_ids(seg11valid)
    others = [f"2010_{k:06d}" for k in range(900000, 900000 + 1111 - len(valid))]
    val = sorted(valid + others)
    voc = tmp_path / "VOCdevkit"
    write_list(voc / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt", val)
    sbd = tmp_path / "dataset"
    write_list(sbd / "train.txt", others[drop_from_train:] + [f"2008_{k:06d}" for k in range(800000, 800100)])
    return voc, sbd, valid


def test_seg11valid_on_real_sized_lists_gives_736(tmp_path: Path, reference: Path):
    voc, sbd, valid = _real_sized_lists(tmp_path, reference / SEG11VALID, drop_from_train=0)
    assert seg11valid_ids(voc, sbd) == valid


def test_seg11valid_count_mismatch_is_explained(tmp_path: Path, reference: Path):
    voc, sbd, _ = _real_sized_lists(tmp_path, reference / SEG11VALID, drop_from_train=2)
    with pytest.raises(DatasetError) as err:
        seg11valid_ids(voc, sbd)
    message = str(err.value)
    for part in ("1111", "738", "736", "minus SBD train", "--ids FILE", "train.txt"):
        assert part in message


def test_seg11valid_dataset_with_ids_needs_no_sbd(small_voc: Path, tmp_path: Path):
    ids_file = tmp_path / "ids.txt"
    write_list(ids_file, ["2011_000003", "2011_000002"])
    ds = dataset_for_split("voc2011seg11valid", small_voc, None, ids_file=ids_file)
    assert ds.ids == ["2011_000003", "2011_000002"]
    with pytest.raises(DatasetError, match="SBD"):
        VOCSegmentation(small_voc, "2011", "seg11valid")


# ---------------------------------------------------------------- SBD


def test_sbd_reads_real_matlab_structs(small_sbd: Path):
    ds = SBDSegmentation(small_sbd, "train")
    assert ds.ids == ["2008_000000", "2008_000001"]
    for index, image_id in enumerate(ds.ids):
        authors_way = scipy.io.loadmat(small_sbd / "cls" / f"{image_id}.mat")["GTcls"][0]["Segmentation"][0]
        sample = ds[index]
        np.testing.assert_array_equal(sample.label.numpy(), authors_way)
        assert sample.image.shape == (3, *authors_way.shape)


def test_dataset_for_split_names(small_voc: Path, small_sbd: Path):
    assert dataset_for_split("sbdval", None, small_sbd).ids == ["2008_000002"]
    assert len(dataset_for_split("sbdtrain", None, small_sbd)) == 2
    with pytest.raises(DatasetError, match="voc2012val"):
        dataset_for_split("voc2013val", small_voc, small_sbd)
    with pytest.raises(DatasetError, match="VOC2012"):
        dataset_for_split("voc2012val", small_voc, small_sbd)


# ---------------------------------------------------------------- errors


def test_missing_roots_name_the_path_layout_and_source(tmp_path: Path):
    with pytest.raises(DatasetError) as err:
        VOCSegmentation(tmp_path / "nowhere", "2011", "val")
    assert str(tmp_path / "nowhere") in str(err.value)
    assert "host.robots.ox.ac.uk" in str(err.value) and "SegmentationClass" in str(err.value)
    with pytest.raises(DatasetError) as err:
        SBDSegmentation(tmp_path / "nowhere", "train")
    assert "benchmark.tgz" in str(err.value) and "cls/<id>.mat" in str(err.value)


def test_year_folder_given_as_root_gets_a_hint(small_voc: Path):
    with pytest.raises(DatasetError, match="parent"):
        VOCSegmentation(small_voc / "VOC2011", "2011", "val")


def test_missing_list_file(small_voc: Path):
    val_list = small_voc / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt"
    val_list.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(val_list))):
        VOCSegmentation(small_voc, "2011", "val")


def test_missing_image_fails_at_construction(small_voc: Path):
    missing = small_voc / "VOC2011" / "JPEGImages" / "2011_000002.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        VOCSegmentation(small_voc, "2011", "val")


@pytest.mark.parametrize("victim", ["JPEGImages/2011_000003.jpg", "SegmentationClass/2011_000003.png"])
def test_corrupt_voc_files_name_the_path(small_voc: Path, victim: str):
    path = small_voc / "VOC2011" / victim
    path.write_bytes(path.read_bytes()[:60])
    ds = VOCSegmentation(small_voc, "2011", "val")
    ds[0]
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        ds[1]


def test_corrupt_mat_names_the_path(small_sbd: Path):
    path = small_sbd / "cls" / "2008_000001.mat"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        SBDSegmentation(small_sbd, "train")[1]
    scipy.io.savemat(path, {"GTinst": {"Segmentation": np.zeros((11, 13), np.uint8)}})
    with pytest.raises(DatasetError, match="GTcls"):
        SBDSegmentation(small_sbd, "train")[1]


def test_out_of_range_label_names_the_file(small_voc: Path, small_sbd: Path):
    rgb, label = random_pair(3)
    label[4, 4] = 21
    png = small_voc / "VOC2011" / "SegmentationClass" / "2011_000003.png"
    write_palette_png(png, label)
    with pytest.raises(DatasetError, match=re.escape(str(png)) + ".*21"):
        VOCSegmentation(small_voc, "2011", "val")[1]
    label[4, 4] = 254
    mat = small_sbd / "cls" / "2008_000000.mat"
    write_sbd_mat(mat, label)
    with pytest.raises(DatasetError, match=re.escape(str(mat)) + ".*254"):
        SBDSegmentation(small_sbd, "train")[0]
    label[4, 4] = 5
    write_palette_png(png, label)
    with pytest.raises(DatasetError, match="0..4"):
        VOCSegmentation(small_voc, "2011", "val", num_classes=5)[1]


def test_colour_converted_label_png_is_rejected(small_voc: Path):
    png = small_voc / "VOC2011" / "SegmentationClass" / "2011_000002.png"
    Image.open(png).convert("RGB").save(png)
    with pytest.raises(DatasetError, match="mode 'RGB'"):
        VOCSegmentation(small_voc, "2011", "val")[0]


def test_size_mismatch(small_voc: Path):
    _, label = random_pair(2, h=12, w=13)
    png = small_voc / "VOC2011" / "SegmentationClass" / "2011_000002.png"
    write_palette_png(png, label)
    with pytest.raises(DatasetError, match="differs from image"):
        VOCSegmentation(small_voc, "2011", "val")[0]


def test_skip_leaves_out_and_counts_bad_files(small_voc: Path):
    root = small_voc / "VOC2011"
    (root / "JPEGImages" / "2011_000000.jpg").unlink()
    corrupt = root / "SegmentationClass" / "2011_000001.png"
    corrupt.write_bytes(b"not a png")
    _, bad = random_pair(3)
    bad[0, 0] = 40
    write_palette_png(root / "SegmentationClass" / "2011_000003.png", bad)

    ds = VOCSegmentation(small_voc, "2011", "trainval", on_error="skip")

    assert ds.ids == ["2011_000002"] and len(ds) == 1
    assert [path for path, _ in ds.skipped] == [
        str(root / "JPEGImages" / "2011_000000.jpg"),
        str(corrupt),
        str(root / "SegmentationClass" / "2011_000003.png"),
    ]
    assert "40" in ds.skipped[2][1]
    with pytest.raises(DatasetError, match="2011_000000.jpg"):
        VOCSegmentation(small_voc, "2011", "trainval")


def test_id_list_format_errors(tmp_path: Path):
    path = tmp_path / "ids.txt"
    path.write_text("2008_000001\n\n2008_000002 1\n")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3")):
        load_ids(path)
    path.write_text("a\nb\na\n")
    with pytest.raises(DatasetError, match="repeats line 1"):
        load_ids(path)


# ---------------------------------------------------------------- training order


def test_sample_order_is_python2_randint_stream():
    """The authors' layer: random.seed(seed); idx = random.randint(0, n-1) each step (Python 2).

    Python 2's randint(0, n-1) is int(random() * n); its int seeding is MT19937
    init_by_array([seed]), which numpy's RandomState does for a list seed, and
    random_sample() builds doubles the same way, so numpy is an independent reference.
    """
    n, seed = 8498, 1337
    reference = np.floor(np.random.RandomState([seed]).random_sample(2000) * n)
    ours = list(itertools.islice(sample_order(n, seed), 2000))
    assert ours == reference.astype(int).tolist()
    assert min(ours) >= 0 and max(ours) < n and len(set(ours)) < len(ours)  # drawn with replacement


def test_samples_collate_into_batches(small_sbd: Path):
    ds = SBDSegmentation(small_sbd, "train")
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch.image.shape == (2, 3, 11, 13) and batch.label.shape == (2, 11, 13)
    assert list(batch.id) == ["2008_000000", "2008_000001"]
