"""The data of the authors' other families: which folders each reads and how one split opens.

PASCAL-Context reads VOC2010 (`--voc-root`) and the Context annotations
(`--pascalcontext-root`); NYUDv2 the authors' nyud folder (`--nyud-root`); SIFT Flow its
release folder (`--siftflow-root`). The VOC nets (FCN-VGG16, FCN-AlexNet) read SBD and
VOC2011. Training (`reproduce.stage`) and scoring (`eval.table`) both open the data here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .downloads import FAMILY_DATA
from .errors import DatasetError
from .nyud import NYUDSegmentation
from .pascalcontext import PASCALContextSegmentation
from .siftflow import SIFTFlowSegmentation

#: the root folders each family reads, as keys of the CLIs' `--<key with dashes>` flags
ROOTS: dict[str, tuple[str, ...]] = {
    "voc": ("sbd_root", "voc_root"),
    "pascalcontext": ("voc_root", "pascalcontext_root"),
    "nyud": ("nyud_root",),
    "siftflow": ("siftflow_root",),
}
#: every root key, once (the fields of `reproduce.stage.StageOptions` and the flags of eval.table)
ROOT_KEYS = tuple(dict.fromkeys(key for keys in ROOTS.values() for key in keys))

FamilyDataset = PASCALContextSegmentation | NYUDSegmentation | SIFTFlowSegmentation


def check_roots(family: str, roots: Mapping[str, str | Path | None], reader: str) -> None:
    """Raise a DatasetError naming the flag when a folder `family` reads is not given or not a folder.

    Args:
        family: a key of `ROOTS`.
        roots: root key -> folder (None: not given).
        reader: the net or split that needs the data, for the message.

    Raises:
        DatasetError: a missing flag or a path that is not a folder.
    """
    for key in ROOTS[family]:
        root = roots.get(key)
        flag = "--" + key.replace("_", "-")
        if root is None:
            raise DatasetError(f"{flag} is missing: {reader} reads {FAMILY_DATA[family]}")
        if not Path(root).is_dir():
            raise DatasetError(f"{flag} {root}: not a folder; {reader} reads {FAMILY_DATA[family]}")


def open_split(
    family: str,
    split: str,
    roots: Mapping[str, str | Path | None],
    *,
    reader: str,
    tops: Sequence[str] | None = None,
    ids: list[str] | None = None,
) -> FamilyDataset:
    """One split of a non-VOC family's dataset, as its authors' data layer prepares it.

    Args:
        family: "pascalcontext", "nyud" or "siftflow".
        split: the family's split name (e.g. "train", "val", "trainval", "test").
        roots: root key -> folder, as `ROOTS` names them.
        reader: the net or split that needs the data, for error messages.
        tops: for NYUDv2, the blobs the net reads (e.g. ["color", "label"]).
        ids: image ids replacing the split's list.

    Returns:
        The dataset.

    Raises:
        DatasetError: a folder missing (`check_roots`) or not in the expected layout.
    """
    check_roots(family, roots, reader)
    given = {key: Path(root) for key, root in roots.items() if root is not None}
    if family == "pascalcontext":
        return PASCALContextSegmentation(given["voc_root"], given["pascalcontext_root"], split, ids=ids)
    if family == "nyud":
        if tops is None:
            raise ValueError("NYUDv2 needs the tops the net reads")
        return NYUDSegmentation(given["nyud_root"], split, tops=list(tops), ids=ids)
    if family == "siftflow":
        return SIFTFlowSegmentation(given["siftflow_root"], split, ids=ids)
    raise ValueError(f"{family}: not one of the other families (the VOC splits open through dataset_for_split)")
