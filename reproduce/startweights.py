"""A stage's starting weights, taken as the authors' solve.py takes them: `solver.net.copy_from`.

Caffe's `Net::CopyTrainedLayersFrom` copies every layer the net and the file share and
aborts when one of their blobs differs in shape; layers only the file has are ignored and
layers only the net has keep their initial values (the zero score layers of a new stage).
`copy_trained` does that for a stage that starts from a trained net. A stage that starts
from an ILSVRC classifier casts it first, as the authors' `surgery.transplant` did to make
`vgg16-fcn.caffemodel` (fc6/fc7 reshaped into convolutions; `porting.surgery.transplant`),
and `cast_from_classifier` then holds it to the same rule: every shared blob must fit.

A stage also builds the net its starting weights were trained as: `inherit` takes the
width and class count from their sidecar (`final.json`, `porting.metadata`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from porting.errors import FcnError, ShapeMismatchError
from porting.metadata import NetMetadata, read_sidecar, sidecar_path
from porting.net import CaffeNet
from porting.surgery import TransplantReport, transplant
from prototxt.vgg16 import width_text

if TYPE_CHECKING:
    from reproduce.stage import StageOptions


def mismatch(
    source: Path | str,
    layer: str,
    index: int,
    found: Sequence[int],
    expected: Sequence[int],
    width: float,
    num_classes: int | None = None,
) -> FcnError:
    """The error for a blob of the starting weights that does not fit the net: the layer, both
    shapes, and the width (or class count) the file was made for where its shapes tell."""
    found, expected = tuple(found), tuple(expected)
    message = (
        f"{source}: layer '{layer}' blob {index} has shape {found}, the net's has {expected}; "
        "Caffe's copy_from refuses such a file"
    )
    if found and expected and len(found) == len(expected) and found[0] != expected[0]:
        if num_classes is not None and expected[0] == num_classes:
            message += f" (the file has {found[0]} classes there, the net {num_classes}: check --classes)"
        else:
            file_width = float(Fraction(found[0], expected[0]) * Fraction(width).limit_denominator(4096))
            message += (
                f" (the file looks like --width {width_text(file_width)}, the net is --width {width_text(width)}: "
                "pass the width the file was trained at)"
            )
    return FcnError(message)


def copy_trained(
    net: CaffeNet,
    blobs: Mapping[str, list[np.ndarray]],
    source: Path,
    width: float,
    num_classes: int | None = None,
) -> TransplantReport:
    """Copy a trained net's blobs into `net` as Caffe's copy_from does (exact shapes, legacy 4-D dims allowed).

    Args:
        net: the stage's training net.
        blobs: layer name -> blobs of the starting weights.
        source: their file, named in errors.
        width: the net's width multiplier, for the error's hint.
        num_classes: the net's class count, for the error's hint.

    Returns:
        What was copied, ignored (layers the net lacks) and left at its initial values.

    Raises:
        FcnError: a blob of a shared layer differs in shape (`mismatch`) or count.
    """
    try:
        loaded = net.load_blobs({name: list(arrays) for name, arrays in blobs.items() if len(arrays)}, str(source))
    except ShapeMismatchError as error:
        raise mismatch(source, error.layer, error.blob_index, error.found, error.expected, width, num_classes) from None
    return TransplantReport(
        copied=loaded.loaded,
        skipped=[f"{name} (not in the net)" for name in loaded.ignored],
        untouched=loaded.missing,
    )


def check_fits(
    net: CaffeNet,
    blobs: Mapping[str, Sequence[np.ndarray]],
    source: Path,
    width: float,
) -> None:
    """Raise `mismatch` unless every blob of a layer `net` shares with `blobs` can take its values
    (the same number of elements: a cast classifier's fc6/fc7 change only their shape).

    Args:
        net: the stage's training net.
        blobs: layer name -> blobs of the starting weights.
        source: their file, named in errors.
        width: the net's width multiplier, for the error's hint.
    """
    current = net.blobs_numpy()
    for name, arrays in blobs.items():
        targets = current.get(name)
        if not targets:
            continue
        if len(arrays) != len(targets):
            raise FcnError(f"{source}: layer '{name}' has {len(arrays)} blob(s), the net's has {len(targets)}")
        for index, (array, target) in enumerate(zip(arrays, targets)):
            if np.size(array) != target.size:
                raise mismatch(source, name, index, np.shape(array), target.shape, width)


def cast_from_classifier(
    net: CaffeNet, blobs: Mapping[str, list[np.ndarray]], source: Path, width: float
) -> TransplantReport:
    """Cast an ILSVRC classifier into `net` (`porting.surgery.transplant`), every shared blob copied.

    Raises:
        FcnError: a blob of a shared layer cannot take the classifier's values (`check_fits`).
    """
    check_fits(net, blobs, source, width)
    return transplant(net, blobs)


def inherit(options: StageOptions, weights: Sequence[Path]) -> StageOptions:
    """`options` with the width (and, for the VOC nets without --from-net, the class count) the
    starting weights were trained with, from their sidecars; 1 where none says a width.

    Raises:
        FcnError: --width or --classes was given and differs from what a sidecar says.
    """
    width, classes = options.width, options.classes
    for path in weights:
        metadata = read_sidecar(path) or NetMetadata()
        if metadata.width is not None:
            if width is not None and width != metadata.width:
                raise FcnError(
                    f"--width {width_text(width)} differs from the width {width_text(metadata.width)} that {path} "
                    f"was trained at (said by {sidecar_path(path)}); a stage continues the net it starts from: "
                    "leave --width out"
                )
            width = metadata.width
        if path == weights[0] and metadata.classes is not None and options.from_net is None:
            count = len(metadata.classes)
            if classes is not None and classes != count:
                raise FcnError(
                    f"--classes {classes} differs from the {count} classes {path} was trained on (said by "
                    f"{sidecar_path(path)}); leave --classes out, or start from it with --from-net to change the classes"
                )
            if options.dataset is None:
                classes = count
    return dataclasses.replace(options, width=1.0 if width is None else width, classes=classes)


def check_classes(weights: Path, trained: Sequence[str] | None, classes: Sequence[str]) -> None:
    """The stage's classes are those its starting net was trained on (`trained`, None: unknown).

    Raises:
        FcnError: they differ; naming the first difference and pointing at --from-net.
    """
    if trained is None or tuple(trained) == tuple(classes):
        return
    if len(trained) != len(classes):
        difference = f"{len(trained)} classes there, {len(classes)} here"
    else:
        index = next(i for i, (a, b) in enumerate(zip(trained, classes)) if a != b)
        difference = f"class {index} is {trained[index]!r} there, {classes[index]!r} here"
    raise FcnError(
        f"{weights} was trained on other classes than this stage's data ({difference}; said by "
        f"{sidecar_path(weights)}); start from it with --from-net to map the classes by name"
    )
