"""What a stage trains and validates on: PASCAL VOC + SBD (the papers') or a dataset by name.

`StageData` gathers the training and validation sets, the class names, the input mean
and the data-layer settings the stage writes into its train/val prototxt files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcndata import MEAN_BGR, NUM_CLASSES, SBDSegmentation, VOCSegmentation, net_defaults, seg11valid_ids
from fcndata.downloads import RECIPE_DATA
from fcndata.image import SegmentationFiles
from fcndata.registry import parse_dataset
from porting.errors import FcnError

#: the Python data layer (module.Layer) a dataset-by-name stage writes; the project supplies the data itself
DATASET_DATA_LAYER = "fcndata.SegDataLayer"

VOC_DATA_HELP = f"{RECIPE_DATA}; or name another dataset with --dataset folder:ROOT or ade20k:ROOT"


@dataclass(frozen=True)
class StageData:
    """Training and validation sets of one stage, with what the net files say about them."""

    train: SegmentationFiles
    validation: SegmentationFiles | None
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    params: dict[str, dict[str, Any]]  # split ("train", "val") -> the data layer's param_str dict
    data_layer: str | None  # module.Layer of the Python data layers; None: the authors' VOC layers


def _first(dataset: SegmentationFiles, count: int | None) -> SegmentationFiles:
    if count is not None:
        dataset.ids = dataset.ids[:count]
    return dataset


def dataset_data(
    spec_text: str,
    *,
    classes: int | None,
    mean: Sequence[float] | None,
    seed: int,
    evaluating: bool,
    eval_images: int | None,
) -> StageData:
    """A `--dataset KIND:ROOT` stage: its train split for training, its validation split for scoring."""
    spec = parse_dataset(spec_text)
    names = spec.classes
    if classes is not None and classes != len(names):
        raise FcnError(f"--classes {classes} differs from the {len(names)} classes of {spec}")
    mean = tuple(mean) if mean is not None else spec.kind.mean
    train = spec.open(spec.kind.train_split, mean)
    validation = _first(spec.open(spec.kind.val_split, mean), eval_images) if evaluating else None
    if spec.kind.check_labels:
        for split, dataset in ((spec.kind.train_split, train), (spec.kind.val_split, validation)):
            if dataset is not None:
                dataset.check_labels(f"checking the {split} labels of {spec}")
    params = {
        "train": {"dataset": str(spec), "split": spec.kind.train_split, "seed": seed, "mean": mean},
        "val": {"dataset": str(spec), "split": spec.kind.val_split, "seed": seed, "mean": mean},
    }
    return StageData(train, validation, names, mean, params, DATASET_DATA_LAYER)


def check_voc_roots(voc_root: Path | None, sbd_root: Path | None, evaluating: bool) -> None:
    """The roots the VOC/SBD default needs are given (VOC's only when `evaluating`), or say where to get them."""
    if sbd_root is None and voc_root is None:
        raise FcnError(
            f"no dataset given: {VOC_DATA_HELP}. To try the whole pipeline without downloads, run "
            "`python -m reproduce.demo --out DIR` (built-in synthetic data)"
        )
    if sbd_root is None:
        raise FcnError(f"--sbd-root is missing: {VOC_DATA_HELP}")
    if evaluating and voc_root is None:
        raise FcnError(f"--voc-root is missing (or pass --eval-every 0 to train without validation): {VOC_DATA_HELP}")


def voc_data(
    voc_root: Path | None,
    sbd_root: Path | None,
    *,
    classes: int | None,
    mean: Sequence[float] | None,
    seed: int,
    evaluating: bool,
    eval_images: int | None,
    ids: Path | None,
) -> StageData:
    """The papers' data: SBD train for training, VOC2011 seg11valid (or `ids`) for scoring."""
    check_voc_roots(voc_root, sbd_root, evaluating)
    num_classes = classes if classes is not None else NUM_CLASSES
    mean = tuple(mean) if mean is not None else MEAN_BGR
    assert sbd_root is not None  # check_voc_roots raised otherwise
    train = SBDSegmentation(sbd_root, "train", num_classes=num_classes, mean=mean)
    validation = None
    if evaluating:
        assert voc_root is not None  # check_voc_roots raised otherwise
        val_ids = seg11valid_ids(voc_root, sbd_root, ids)
        validation = VOCSegmentation(
            voc_root,
            "2011",
            "seg11valid",
            ids=val_ids[:eval_images] if eval_images else val_ids,
            sbd_root=sbd_root,
            num_classes=num_classes,
            mean=mean,
        )
    params = {
        "train": {"sbdd_dir": str(sbd_root), "seed": seed, "split": "train", "mean": mean},
        "val": {"voc_dir": str(Path(voc_root or "") / "VOC2011"), "seed": seed, "split": "seg11valid", "mean": mean},
    }
    return StageData(train, validation, net_defaults(num_classes).classes or (), mean, params, None)
