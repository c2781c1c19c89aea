"""Which images a run uses and in what order: the seg11valid split and the training order.

seg11valid is "the non-intersecting set of 736 images" of VOC2011 segmentation val
(CVPR 2015, footnote 7). The rule that fits every public check is VOC2011 seg val minus
SBD train, in val.txt order; "minus SBD train and val" is ruled out because 394 of the
736 are in SBD val. We derive the list from the user's own files with that rule and
check the count; `ids_file` (the CLIs' `--ids FILE`) overrides it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from prototxt.voc import SEG11VALID_COUNT

from .downloads import VOC_ROOT_FLAGS
from .errors import DatasetError
from .image import load_ids

VOC2011_SEGVAL_COUNT = 1111


def voc_segmentation_list(voc_root: str | Path, year: str, split: str) -> Path:
    return Path(voc_root) / f"VOC{year}" / "ImageSets" / "Segmentation" / f"{split}.txt"


def sbd_list(sbd_root: str | Path, split: str) -> Path:
    return Path(sbd_root) / f"{split}.txt"


def seg11valid_ids(
    voc_root: str | Path | None, sbd_root: str | Path | None, ids_file: str | Path | None = None
) -> list[str]:
    """VOC2011 seg val minus SBD train, order kept; or the ids of `ids_file` when given."""
    if ids_file is not None:
        return load_ids(ids_file)
    if voc_root is None or sbd_root is None:
        missing = [flag for flag, root in (("--voc-root", voc_root), ("--sbd-root", sbd_root)) if root is None]
        raise DatasetError(
            "seg11valid is VOC2011 seg val minus SBD train: it needs "
            + " and ".join(f"{flag} ({VOC_ROOT_FLAGS[flag]})" for flag in missing)
            + ", or its id list given with --ids FILE"
        )
    val_path = voc_segmentation_list(voc_root, "2011", "val")
    train_path = sbd_list(sbd_root, "train")
    val = load_ids(val_path)
    sbd_train = set(load_ids(train_path))
    ids = [image_id for image_id in val if image_id not in sbd_train]
    if len(val) == VOC2011_SEGVAL_COUNT and len(ids) != SEG11VALID_COUNT:
        raise DatasetError(
            f"seg11valid: {val_path} has the {VOC2011_SEGVAL_COUNT} ids of the real VOC2011 seg val, but removing "
            f"the {len(sbd_train)} ids of {train_path} leaves {len(ids)} images, not the paper's "
            f"{SEG11VALID_COUNT} (rule: VOC2011 seg val minus SBD train, val.txt order). Check that the SBD "
            "train.txt is the original one from benchmark.tgz, or pass the list explicitly with --ids FILE"
        )
    if not ids:
        raise DatasetError(f"seg11valid: every id of {val_path} is in {train_path}; nothing is left to validate on")
    return ids


def sample_order(n: int, seed: int) -> Iterator[int]:
    """Endless training indices into an id list of length n, drawn with replacement.

    The authors' training layer (SBDDSegDataLayer) calls random.seed(seed), then
    random.randint(0, n - 1) for the first image and again after every step, so images
    repeat and some are unseen within an "epoch". Under their Python 2, randint(0, n - 1)
    is int(random() * n), and Python 3 seeds the Mersenne Twister from an int exactly as
    Python 2 does, so this yields the same index sequence as their runs (given the same
    id list order). Their validation layers read the list in order (no shuffling).
    """
    if n <= 0:
        raise ValueError(f"sample_order needs at least one item, got n={n}")
    rng = random.Random(seed)
    while True:
        yield int(rng.random() * n)
