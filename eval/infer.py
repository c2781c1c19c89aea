"""Whole-image inference and scoring, the way the authors score their nets.

One image at a time (sizes differ), no resizing or padding beyond what the net itself
does, prediction = argmax over the channels of the `score` blob (first maximum on ties,
as numpy's argmax in the authors' code). Counts accumulate on the net's device.

A net with several inputs (NYUDv2's color + depth or color + HHA) gets an example's input
tops in order; a net with several heads (SIFT Flow's `score_sem` and `score_geo`) has each
head scored against its own label top (`Head`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from fcndata import NUM_CLASSES, blobs_of
from porting.errors import FormatError
from porting.metadata import SCORE_BLOB
from porting.progress import progress_bar
from prototxt import nets

from .metrics import ConfusionMatrix
from .visualize import save_label_png, save_panel

#: what `score` says of a head whose means leave out the classes absent from the ground truth
PRESENT_CLASSES = (
    "mean acc and mean IU over the classes present in the ground truth (the papers' convention; "
    "mean_iu_all_classes counts an absent class predicted somewhere as IU 0, as the authors' released scoring)"
)


@dataclass(frozen=True)
class Head:
    """One scored output: the net's score blob, the label top it is scored against, its
    classes, and whether classes absent from the ground truth leave the means (`present_only`)."""

    blob: str = SCORE_BLOB
    label: str = "label"
    num_classes: int = NUM_CLASSES
    present_only: bool = False


class SegmentationDataset(Protocol):
    ids: list[str]

    def __len__(self) -> int: ...
    def __getitem__(self, index: int): ...  # Sample(image, label, id)
    def read_raw(self, index: int) -> tuple: ...  # (uint8 HxWx3 RGB, uint8 HxW label)


def family_heads(family: str, num_classes: int = NUM_CLASSES) -> tuple[Head, ...]:
    """What scoring compares for a family's nets (`prototxt.nets.FAMILIES`): SIFT Flow's two heads,
    the semantic one averaged over the classes present in the test labels as the papers score
    it; else `score` against `label` (`num_classes` for VOC)."""
    if family == "siftflow":
        semantic, geometric = nets.SIFTFLOW_HEADS
        return (
            Head(f"score{semantic.suffix}", semantic.label, semantic.num_classes, present_only=True),
            Head(f"score{geometric.suffix}", geometric.label, geometric.num_classes),
        )
    classes = {"pascalcontext": nets.PASCALCONTEXT_CLASSES, "nyud": nets.NYUD_CLASSES}.get(family, num_classes)
    return (Head(num_classes=classes),)


def net_device(net: nn.Module) -> torch.device:
    """The device of the net's first parameter or buffer; CPU for a net with neither."""
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return torch.device("cpu")


def score(
    net: nn.Module,
    dataset: SegmentationDataset,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    num_classes: int = NUM_CLASSES,
    heads: Sequence[Head] | None = None,
    prediction_dir: str | Path | None = None,
    panels: bool = False,
    name: str = "scoring",
) -> dict:
    """Score `net` on every image of `dataset`, whole images one at a time, as the authors' `score.py`.

    Args:
        net: a segmentation net whose score blobs are N x classes x H x W at the input size.
        dataset: samples whose tops are the net's inputs and the heads' labels (`fcndata.VOCSegmentation`,
            `SBDSegmentation`: image, label, id).
        device: where to run (the net is moved there); None: where the net's parameters are.
        progress: show a progress line.
        num_classes: classes counted by the default head (labels >= it, e.g. 255, are ignored).
        heads: the score blobs to evaluate (default: `score` against `label`, `num_classes` classes);
            the example's tops that no head reads as a label are the net's inputs, in order.
        prediction_dir: if given, write `<id>.png` predictions there in the VOC palette (of the first head).
        panels: with `prediction_dir`, also write `panels/<id>.png` (image | ground truth | prediction).
        name: labels the progress line.

    Returns:
        The `eval.table --json` entry for one net: pixel_acc, mean_acc, mean_iu, fw_iu,
        per_class_iu, per_class_acc (fractions, NaN where a class is absent, see eval.metrics)
        and n_images; with several heads, one such entry per head blob. A `present_only` head
        adds `mean_iu_all_classes` and the convention used.

    Raises:
        FormatError: a prediction is not its label's size (the net must crop to its input).
        DatasetError: an image or label of `dataset` is missing or invalid.
    """
    heads = tuple(heads or (Head(num_classes=num_classes),))
    if device is not None:
        net = net.to(device)
    device = net_device(net)
    net.eval()
    out_dir = Path(prediction_dir) if prediction_dir is not None else None
    if out_dir is not None:
        (out_dir / "panels" if panels else out_dir).mkdir(parents=True, exist_ok=True)
    confusions = [ConfusionMatrix(head.num_classes, device) for head in heads]
    label_tops = {head.label for head in heads}
    with torch.inference_mode():
        for index in progress_bar(range(len(dataset)), desc=name, unit="img", enabled=progress):
            sample = dataset[index]
            tops = blobs_of(sample)
            missing = sorted(label_tops - tops.keys())
            if missing:
                raise FormatError(
                    f"image {sample.id!r}: the dataset gives no {missing[0]!r} labels (tops: {', '.join(tops)})"
                )
            inputs = [value.to(device)[None] for top, value in tops.items() if top not in label_tops]
            outputs = net(*inputs)
            for head_index, (head, confusion) in enumerate(zip(heads, confusions)):
                pred = _argmax(outputs, head)
                label = tops[head.label]
                if pred.shape != label.shape:
                    raise FormatError(
                        f"image {sample.id!r}: the '{head.blob}' blob is {tuple(pred.shape)} (HxW) but the label is "
                        f"{tuple(label.shape)}; the net must crop its output to the input size"
                    )
                confusion.update(pred, label.to(device))
                if out_dir is not None and head_index == 0:
                    _save(dataset, index, sample.id, pred, out_dir, panels)
    entries = {head.blob: _entry(confusion, head, len(dataset)) for head, confusion in zip(heads, confusions)}
    return entries[heads[0].blob] if len(heads) == 1 else entries


def _argmax(outputs: dict[str, Tensor], head: Head) -> Tensor:
    if head.blob not in outputs:
        raise FormatError(f"the net has no '{head.blob}' output blob (outputs: {', '.join(outputs)})")
    scores = outputs[head.blob]
    if scores.dim() != 4 or scores.shape[1] != head.num_classes:
        raise FormatError(
            f"the '{head.blob}' blob has shape {tuple(scores.shape)}; expected N x {head.num_classes} (classes) x H x W"
        )
    return scores[0].argmax(0)


def _entry(confusion: ConfusionMatrix, head: Head, n_images: int) -> dict:
    result = confusion.compute(present_only=head.present_only).as_dict()
    del result["n_pixels"]
    if head.present_only:
        result["mean_iu_all_classes"] = confusion.compute().mean_iu
        result["convention"] = PRESENT_CLASSES
    return {**result, "n_images": n_images}


def _save(dataset: SegmentationDataset, index: int, image_id: str, pred: Tensor, out_dir: Path, panels: bool) -> None:
    prediction = pred.cpu().numpy()  # class ids as they are: past 255 they go to a 16-bit PNG
    save_label_png(prediction, out_dir / f"{image_id}.png")
    if panels:
        rgb, label = dataset.read_raw(index)
        save_panel(rgb, label, prediction, out_dir / "panels" / f"{image_id}.png")
