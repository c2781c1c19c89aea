"""What a trained net needs besides its weights to be used: class names and input mean.

A Caffe caffemodel carries neither, so they travel beside it: inside a converted
checkpoint (keys `classes` and `mean`) or in a JSON sidecar `<caffemodel stem>.json`
next to a caffemodel (`reproduce.stage` writes `final.json` beside `final.caffemodel`).
`CaffeNet.metadata` holds what its loader found; nothing here knows any dataset. Which
names and mean a net gets when its files say nothing is the data package's decision
(`fcndata.net_defaults`), reached through `defaults_for` by its module name, so that
porting stays importable without it (see ARCHITECTURE.md, "Net metadata").
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from porting.atomic import atomic_path
from porting.errors import FcnError, FormatError
from porting.textfile import read_text

if TYPE_CHECKING:
    from porting.net import CaffeNet

#: The module:function that decides the defaults (class names, mean) for a class count.
DEFAULTS_PROVIDER = "fcndata.classes:net_defaults"
SIDECAR_SUFFIX = ".json"
#: the blob whose channels are the classes, in every one-headed FCN
SCORE_BLOB = "score"


#: the fields of NetMetadata as plain data (`to_dict` keys), which checkpoints store beside the weights
FIELDS = ("classes", "mean", "width", "features")


@dataclass(frozen=True)
class NetMetadata:
    """Class names in index order and the per-channel mean subtracted from the input (BGR order).

    Either may be None (unknown). Input order and scale are Caffe's: BGR, 0..255, mean subtracted.
    `width` is the backbone width multiplier a generated net was built with (`reproduce.stage`
    records it, so the next stage builds the same net); None: unknown or not generated.
    `features` names what the input holds when it is not a colour image (e.g. "HHA": the
    geocentric depth encoding, its channels as stored, no channel swap); None: a colour image.
    """

    classes: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    width: float | None = None
    features: str | None = None

    def to_dict(self) -> dict:
        """Plain data (lists, floats) for a checkpoint or a JSON sidecar; unknown fields left out."""
        data: dict = {}
        if self.classes is not None:
            data["classes"] = list(self.classes)
        if self.mean is not None:
            data["mean"] = [float(v) for v in self.mean]
        if self.width is not None:
            data["width"] = float(self.width)
        if self.features is not None:
            data["features"] = self.features
        return data

    @classmethod
    def from_dict(cls, data: object, source: str) -> NetMetadata:
        """Validate plain data read back from `source`; a FormatError names what is wrong."""
        if not isinstance(data, dict):
            raise FormatError(f"{source}: net metadata must be a mapping with 'classes' and/or 'mean'")
        classes, mean = data.get("classes"), data.get("mean")
        if classes is not None and (
            not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) and c for c in classes)
        ):
            raise FormatError(f"{source}: 'classes' must be a list of non-empty strings")
        if mean is not None and (
            not isinstance(mean, (list, tuple))
            or not mean
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean)
        ):
            raise FormatError(f"{source}: 'mean' must be a non-empty list of numbers (one per input channel)")
        width = data.get("width")
        if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0):
            raise FormatError(f"{source}: 'width' must be a positive number (the backbone width multiplier)")
        features = data.get("features")
        if features is not None and (not isinstance(features, str) or not features):
            raise FormatError(f"{source}: 'features' must be a non-empty string (what the input holds, e.g. HHA)")
        return cls(
            tuple(classes) if classes is not None else None,
            tuple(float(v) for v in mean) if mean is not None else None,
            float(width) if width is not None else None,
            features,
        )

    def merged(self, override: NetMetadata) -> NetMetadata:
        """This metadata with every field that `override` knows replaced."""
        return NetMetadata(
            override.classes if override.classes is not None else self.classes,
            override.mean if override.mean is not None else self.mean,
            override.width if override.width is not None else self.width,
            override.features if override.features is not None else self.features,
        )


def sidecar_path(caffemodel: str | os.PathLike) -> Path:
    """Where the metadata of a caffemodel lives: same folder and stem, `.json`."""
    return Path(caffemodel).with_suffix(SIDECAR_SUFFIX)


def read_sidecar(caffemodel: str | os.PathLike) -> NetMetadata | None:
    """The sidecar's metadata, or None when the caffemodel has none."""
    path = sidecar_path(caffemodel)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: unreadable net metadata ({exc})") from None
    return NetMetadata.from_dict(data, str(path))


def write_sidecar(caffemodel: str | os.PathLike, metadata: NetMetadata) -> Path:
    """Write the sidecar of `caffemodel` atomically; returns its path."""
    path = sidecar_path(caffemodel)
    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(metadata.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def read_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """A class list file: one name per line in index order (blank lines at the end ignored).

    Raises:
        FormatError: the file is missing, unreadable, empty, has a blank line inside or repeats a name.
    """
    path = Path(path)
    lines = read_text(path, "class list", FormatError, "expected one class name per line, in index order").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise FormatError(f"{path}: class list is empty (expected one class name per line, in index order)")
    for number, name in enumerate(names, start=1):
        if not name:
            raise FormatError(f"{path}:{number}: blank line inside the class list (class {number - 1} has no name)")
        if names.index(name) != number - 1:
            raise FormatError(f"{path}:{number}: class name {name!r} repeats line {names.index(name) + 1}")
    return tuple(names)


def parse_mean(text: str) -> tuple[float, ...]:
    """`"104.0,116.7,122.7"` -> (104.0, 116.7, 122.7): a per-channel mean in BGR order."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated numbers B,G,R, got {text!r}") from None
    return values


def defaults_for(num_classes: int) -> NetMetadata:
    """The metadata a net of `num_classes` outputs gets when its files carry none.

    Decided by the data package (`DEFAULTS_PROVIDER`), imported here on first use only.
    """
    module_name, _, function = DEFAULTS_PROVIDER.partition(":")
    provider = getattr(importlib.import_module(module_name), function)
    return provider(num_classes)


def label_blob(net: CaffeNet) -> str | None:
    """The output whose channels are the net's classes: `score`, else the first `score_*` output
    (a multi-task net's first head, e.g. SIFT Flow's `score_sem`); None for a net without one."""
    outputs = list(net.outputs)
    if SCORE_BLOB in outputs:
        return SCORE_BLOB
    return next((name for name in outputs if name.startswith(f"{SCORE_BLOB}_")), None)


def num_classes(net: CaffeNet) -> int | None:
    """Channels of the net's label blob (`label_blob`), or None for a net without one."""
    blob = label_blob(net)
    shape = net.inferred_shapes.get(blob) if blob is not None else None
    return shape[1] if shape is not None and len(shape) > 1 else None


def complete_metadata(net: CaffeNet, override: NetMetadata = NetMetadata()) -> NetMetadata:
    """Set and return `net.metadata`: the defaults for its class count, what it carries, then `override`.

    Raises:
        FcnError: the class names are not one per channel of `score`.
    """
    classes = num_classes(net)
    base = defaults_for(classes) if classes is not None else NetMetadata()
    net.metadata = base.merged(net.metadata).merged(override)
    names = net.metadata.classes
    if names is not None and classes is not None and len(names) != classes:
        raise FcnError(f"{len(names)} class names given but the net's '{label_blob(net)}' blob has {classes} classes")
    return net.metadata
