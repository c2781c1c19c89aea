"""Class names: the PASCAL VOC list, numbered fallbacks, and the defaults a net gets without metadata."""

from __future__ import annotations

from collections.abc import Sequence

from porting.metadata import NetMetadata
from porting.registry import add_unique
from prototxt import nets
from prototxt.voc import CLASS_NAMES

from .image import MEAN_BGR

#: PASCAL VOC segmentation classes in label order (0 = background), as VOCdevkit names them.
VOC_CLASSES = CLASS_NAMES


def numbered_classes(num_classes: int) -> tuple[str, ...]:
    """Names for a net whose classes nobody named: "class 0", "class 1", ..."""
    return tuple(f"class {index}" for index in range(num_classes))


def net_defaults(num_classes: int) -> NetMetadata:
    """What a net whose files carry no metadata is taken to be.

    A 21-class net is taken for a PASCAL VOC net (the authors' released models): VOC
    names. Any other count gets numbered names. The mean is the ILSVRC VGG16 one that
    every published FCN backbone was trained with.
    """
    classes = VOC_CLASSES if num_classes == len(VOC_CLASSES) else numbered_classes(num_classes)
    return NetMetadata(classes, MEAN_BGR)


def synonyms(name: str) -> set[str]:
    """The comparable forms of a class name: "car, auto, automobile" -> {"car", "auto", "automobile"}."""
    return {part.strip().lower().replace(" ", "") for part in name.split(",") if part.strip()}


def match_classes(source: Sequence[str], target: Sequence[str]) -> dict[int, int]:
    """target index -> source index for every target class that names a source class.

    Names match ignoring case and spaces, and a comma-separated name matches through any of
    its synonyms (ADE20K's "airplane, aeroplane, plane" matches VOC's "aeroplane"). Each
    source class is used once, by the first target class that names it.
    """
    taken: set[int] = set()
    matches: dict[int, int] = {}
    source_forms = [synonyms(name) for name in source]
    for target_index, name in enumerate(target):
        forms = synonyms(name)
        for source_index, candidates in enumerate(source_forms):
            if source_index not in taken and forms & candidates:
                matches[target_index] = source_index
                taken.add(source_index)
                break
    return matches


#: Class list and mean of each task a published model was trained for, by key (`porting.models` entries
#: name theirs; `net_task` gives the key of each of the authors' nets); a dataset module adds its own with
#: `register_task`.
TASKS: dict[str, NetMetadata] = {"voc": NetMetadata(VOC_CLASSES, MEAN_BGR)}


def register_task(key: str, metadata: NetMetadata) -> None:
    """Name a task's class list and mean for the model registry."""
    add_unique(TASKS, key, metadata, "task")


def task_metadata(key: str) -> NetMetadata:
    """The class names and mean of a task (`TASKS`)."""
    try:
        return TASKS[key]
    except KeyError:
        raise KeyError(f"unknown task {key!r}; known: {', '.join(TASKS)}") from None


def net_task(net: str) -> str:
    """The task (`TASKS` key) one of the authors' nets (`prototxt.nets.NETS`) was trained for.

    Args:
        net: the authors' directory name, e.g. "nyud-fcn32s-hha".

    Returns:
        Its family's name ("voc", "pascalcontext", "nyud", "siftflow"); for a NYUDv2 net
        whose first input is HHA, "nyud-hha" (the mean is that of a net's first input).
    """
    family = nets.info(net).family.name
    return "nyud-hha" if family == "nyud" and nets.nyud_tops(net)[0] == "hha" else family
