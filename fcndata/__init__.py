"""Datasets in their real on-disk formats (VOC, SBD, PASCAL-Context, NYUDv2, SIFT Flow, ADE20K, a folder of
one's own), the seg11valid split, datasets by name, class names, the synthetic sets.

The VOC facts (class names, mean, ignore label, seg11valid size) are defined in
`prototxt.voc`, which the generated nets need too, and re-exported here.
"""

from __future__ import annotations

from pathlib import Path

from prototxt.voc import CLASS_NAMES, IGNORE_LABEL, MEAN_BGR, NUM_CLASSES, SEG11VALID_COUNT

from .classes import VOC_CLASSES, match_classes, net_defaults, numbered_classes
from .downloads import VOC_ROOT_FLAGS
from .errors import DatasetError
from .image import Sample, load_ids, voc_palette
from .nyud import NYUDSegmentation
from .pascalcontext import PASCALContextSegmentation
from .registry import DATASETS, DatasetKind, DatasetSpec, parse_dataset, register_dataset
from .sbd import SBDSegmentation
from .siftflow import SIFTFlowSegmentation
from .splits import sample_order, seg11valid_ids
from .tops import Blobs, blobs_of, net_feed
from .voc import VOCSegmentation

EVAL_SPLITS = ("voc2011seg11valid", "voc2011val", "voc2012val", "sbdval", "sbdtrain")


def dataset_for_split(
    split: str,
    voc_root: str | Path | None,
    sbd_root: str | Path | None,
    ids_file: str | Path | None = None,
) -> VOCSegmentation | SBDSegmentation:
    """The dataset behind an eval split name; `ids_file` replaces the split's id list."""
    ids = load_ids(ids_file) if ids_file is not None else None
    if split == "voc2011seg11valid":
        return VOCSegmentation(_need(voc_root, "--voc-root", split), "2011", "seg11valid", ids=ids, sbd_root=sbd_root)
    if split in ("voc2011val", "voc2012val"):
        return VOCSegmentation(_need(voc_root, "--voc-root", split), split[3:7], "val", ids=ids)
    if split in ("sbdval", "sbdtrain"):
        return SBDSegmentation(_need(sbd_root, "--sbd-root", split), split[3:], ids=ids)
    raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")


def _need(root: str | Path | None, flag: str, split: str) -> str | Path:
    if root is None:
        raise DatasetError(f"split {split!r} needs {flag}, {VOC_ROOT_FLAGS[flag]}")
    return root


__all__ = [
    "DATASETS",
    "DatasetKind",
    "DatasetSpec",
    "parse_dataset",
    "register_dataset",
    "CLASS_NAMES",
    "EVAL_SPLITS",
    "Blobs",
    "NYUDSegmentation",
    "PASCALContextSegmentation",
    "SIFTFlowSegmentation",
    "blobs_of",
    "net_feed",
    "DatasetError",
    "IGNORE_LABEL",
    "MEAN_BGR",
    "NUM_CLASSES",
    "SBDSegmentation",
    "SEG11VALID_COUNT",
    "Sample",
    "VOCSegmentation",
    "VOC_CLASSES",
    "dataset_for_split",
    "load_ids",
    "match_classes",
    "net_defaults",
    "numbered_classes",
    "sample_order",
    "seg11valid_ids",
    "voc_palette",
]
