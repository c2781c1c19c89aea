"""Datasets by name: `--dataset KIND:ROOT` on `reproduce.stage` and `eval.table`.

A `DatasetKind` says how to open a split of a dataset folder, where its class names come
from, which splits train and validate, the input mean that goes with it and the layout
its errors show. `register_dataset` adds a kind; `parse_dataset("folder:ROOT")` gives a
`DatasetSpec` to open splits from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from porting.registry import add_unique

from .ade20k import ADE20K_LAYOUT, ADE20KSegmentation, ade20k_classes
from .errors import DatasetError
from .folder import FOLDER_LAYOUT, FolderSegmentation, folder_classes
from .image import MEAN_BGR, SegmentationFiles

#: (root, split, mean) -> the split's dataset
Opener = Callable[[Path, str, Sequence[float]], SegmentationFiles]


@dataclass(frozen=True)
class DatasetKind:
    """How to read one family of dataset folders."""

    name: str
    open: Opener
    classes: Callable[[Path], tuple[str, ...]]  # class names in index order, read from the root
    train_split: str
    val_split: str
    layout: str  # expected layout and where to get the data, for errors and --help
    mean: tuple[float, ...] = MEAN_BGR  # BGR mean inputs are centred with unless the user gives one
    #: read every label before training (`SegmentationFiles.check_labels`): labels a user made,
    #: not a published dataset's
    check_labels: bool = False


DATASETS: dict[str, DatasetKind] = {}


def register_dataset(kind: DatasetKind) -> DatasetKind:
    """Make `--dataset <kind.name>:ROOT` known; returns the kind."""
    return add_unique(DATASETS, kind.name, kind, "dataset kind")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset folder of a known kind, as `--dataset KIND:ROOT` names it."""

    kind: DatasetKind
    root: Path

    def __str__(self) -> str:
        return f"{self.kind.name}:{self.root}"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.kind.classes(self.root)

    def open(self, split: str, mean: Sequence[float] | None = None) -> SegmentationFiles:
        """The split's dataset, inputs centred with `mean` (default: the kind's)."""
        return self.kind.open(self.root, split, tuple(mean) if mean is not None else self.kind.mean)


def parse_dataset(text: str) -> DatasetSpec:
    """`"folder:ROOT"` -> DatasetSpec; a DatasetError names the known kinds otherwise."""
    name, colon, root = text.partition(":")
    kinds = ", ".join(f"{kind}:ROOT" for kind in DATASETS)
    if not colon or not root:
        raise DatasetError(f"--dataset {text!r}: expected KIND:ROOT, one of {kinds}")
    if name not in DATASETS:
        raise DatasetError(f"--dataset {text!r}: unknown kind {name!r}; known: {kinds}")
    return DatasetSpec(DATASETS[name], Path(root))


register_dataset(DatasetKind(
    "folder", lambda root, split, mean: FolderSegmentation(root, split, mean=mean), folder_classes,
    "train", "val", FOLDER_LAYOUT, check_labels=True,
))  # fmt: skip
register_dataset(DatasetKind(
    "ade20k", lambda root, split, mean: ADE20KSegmentation(root, split, mean=mean), ade20k_classes,
    "training", "validation", ADE20K_LAYOUT,
))  # fmt: skip
