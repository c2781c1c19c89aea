"""Starting a stage from a trained FCN with another class list (`reproduce.stage --from-net`).

Every layer whose name and shape fit is copied, as Caffe's CopyTrainedLayersFrom does.
Unless the target names the source's classes in the source's order, the class-scoring
layers (Convolutions with one output per class: `score_fr`, `score_pool4`, ...) are
rebuilt row by row, also for the same number of classes in another order: a class whose
name matches a source class (`fcndata.match_classes`) keeps that class's filter and bias,
the others start at zero, as new score layers do in the paper. The upsampling
Deconvolutions are then not copied (their weights mix classes); they start bilinear, as in
every stage.
These are our choices: the paper fine-tunes only to the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcndata import match_classes, net_defaults
from porting.errors import FcnError
from porting.metadata import read_class_names, read_sidecar
from porting.net import CaffeNet
from porting.surgery import select_rows


@dataclass
class ClassTransfer:
    """What `adapt_classes` did, for the stage log."""

    source_classes: tuple[str, ...]
    kept: dict[str, str] = field(default_factory=dict)  # target class -> source class it inherits
    resized: list[str] = field(default_factory=list)  # score layers rebuilt row by row
    dropped: list[str] = field(default_factory=list)  # upsamplings left to start bilinear

    def lines(self) -> list[str]:
        kept = ", ".join(f"{t}<-{s}" if t != s else t for t, s in self.kept.items()) or "none"
        out = [f"classes kept from the source net ({len(self.kept)}): {kept}"]
        if self.resized:
            out.append(f"score layers rebuilt for the new classes, row by row: {', '.join(self.resized)}")
        if self.dropped:
            out.append(f"upsamplings of the source's classes, started bilinear: {', '.join(self.dropped)}")
        return out


def source_class_names(
    caffemodel: Path, blobs: dict[str, list[np.ndarray]], classes_file: Path | None, score_layer: str
) -> tuple[str, ...]:
    """The source net's class names: `classes_file`, else its sidecar, else the defaults for its width."""
    if classes_file is not None:
        return read_class_names(classes_file)
    metadata = read_sidecar(caffemodel)
    if metadata is not None and metadata.classes is not None:
        return metadata.classes
    if score_layer not in blobs:
        raise FcnError(f"{caffemodel}: no '{score_layer}' layer; is it an FCN? (pass --from-classes FILE if it is)")
    return net_defaults(len(blobs[score_layer][0])).classes or ()


def class_layers(net: CaffeNet, num_classes: int) -> tuple[list[str], list[str]]:
    """(Convolutions, Deconvolutions) of `net` with one output per class."""
    convs: list[str] = []
    deconvs: list[str] = []
    for layer in net.net_param.layer:
        if layer.type in ("Convolution", "Deconvolution") and layer.convolution_param.num_output == num_classes:
            (convs if layer.type == "Convolution" else deconvs).append(layer.name)
    return convs, deconvs


def adapt_classes(
    blobs: dict[str, list[np.ndarray]], net: CaffeNet, source: Sequence[str], target: Sequence[str]
) -> tuple[dict[str, list[np.ndarray]], ClassTransfer]:
    """`blobs` of a net trained on `source` classes made to fit `net`, trained on `target` classes."""
    transfer = ClassTransfer(tuple(source))
    matches = match_classes(source, target)
    transfer.kept = {target[t]: source[s] for t, s in matches.items()}
    rows = [matches.get(index) for index in range(len(target))]
    if rows == list(range(len(source))):
        return blobs, transfer  # the same classes in the same order: every layer fits as it is
    convs, deconvs = class_layers(net, len(target))
    adapted = dict(blobs)
    for name in convs:
        if name in blobs and len(blobs[name]) and len(blobs[name][0]) == len(source):
            adapted[name] = select_rows(blobs[name], rows)
            transfer.resized.append(name)
    for name in deconvs:
        if name in adapted:
            del adapted[name]
            transfer.dropped.append(name)
    return adapted, transfer
