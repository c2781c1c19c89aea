"""Whole-image inference and scoring, the way the authors score their nets.

One image at a time (sizes differ), no resizing or padding beyond what the net itself
does, prediction = argmax over the channels of the `score` blob (first maximum on ties,
as numpy's argmax in the authors' code). Counts accumulate on the net's device.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Protocol, TextIO

import torch
from torch import Tensor, nn

from porting.errors import FormatError

from .metrics import ConfusionMatrix
from .visualize import save_label_png, save_panel

SCORE_BLOB = "score"


class SegmentationDataset(Protocol):
    ids: list[str]

    def __len__(self) -> int: ...
    def __getitem__(self, index: int): ...  # Sample(image, label, id)
    def read_raw(self, index: int) -> tuple: ...  # (uint8 HxWx3 RGB, uint8 HxW label)


class Progress:
    """One self-overwriting stderr line: done/total, a bar and images per second."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, min_interval: float = 0.2) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self.start = time.perf_counter()
        self._last_draw = -float("inf")

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        rate = done / max(now - self.start, 1e-9)
        filled = int(30 * done / max(self.total, 1))
        bar = "#" * filled + "-" * (30 - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {rate:.1f} img/s")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def net_device(net: nn.Module) -> torch.device:
    """The device of the net's first parameter or buffer; CPU for a net with neither."""
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return torch.device("cpu")


def predict(net: nn.Module, image: Tensor, num_classes: int = 21) -> Tensor:
    """(3, H, W) BGR mean-subtracted image -> (H', W') int64 argmax of the `score` blob."""
    outputs = net(image.unsqueeze(0))
    if SCORE_BLOB not in outputs:
        raise FormatError(f"the net has no '{SCORE_BLOB}' output blob (outputs: {', '.join(outputs)})")
    scores = outputs[SCORE_BLOB]
    if scores.dim() != 4 or scores.shape[1] != num_classes:
        raise FormatError(
            f"the '{SCORE_BLOB}' blob has shape {tuple(scores.shape)}; expected N x {num_classes} (classes) x H x W"
        )
    return scores[0].argmax(0)


def score(
    net: nn.Module,
    dataset: SegmentationDataset,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    num_classes: int = 21,
    prediction_dir: str | Path | None = None,
    panels: bool = False,
    name: str = "scoring",
) -> dict:
    """Score `net` on every image of `dataset`; the `eval.table --json` entry for one net.

    Returns pixel_acc, mean_acc, mean_iu, fw_iu, per_class_iu, per_class_acc (fractions,
    NaN where a class is absent, see eval.metrics) and n_images. With `prediction_dir`,
    writes `<id>.png` predictions in the VOC palette, and with `panels` also
    `panels/<id>.png` (image | ground truth | prediction). `name` labels the progress line.
    """
    if device is not None:
        net = net.to(device)
    device = net_device(net)
    net.eval()
    out_dir = Path(prediction_dir) if prediction_dir is not None else None
    if out_dir is not None:
        (out_dir / "panels" if panels else out_dir).mkdir(parents=True, exist_ok=True)
    confusion = ConfusionMatrix(num_classes, device)
    bar = Progress(len(dataset), name) if progress else None
    with torch.inference_mode():
        for index in range(len(dataset)):
            sample = dataset[index]
            pred = predict(net, sample.image.to(device), num_classes)
            if pred.shape != sample.label.shape:
                raise FormatError(
                    f"image {sample.id!r}: the '{SCORE_BLOB}' blob is {tuple(pred.shape)} (HxW) but the label is "
                    f"{tuple(sample.label.shape)}; the net must crop its output to the input size"
                )
            confusion.update(pred, sample.label.to(device))
            if out_dir is not None:
                _save(dataset, index, sample.id, pred, out_dir, panels)
            if bar is not None:
                bar.update(index + 1)
    result = confusion.compute().as_dict()
    del result["n_pixels"]
    return {**result, "n_images": len(dataset)}


def _save(dataset: SegmentationDataset, index: int, image_id: str, pred: Tensor, out_dir: Path, panels: bool) -> None:
    prediction = pred.to("cpu", torch.uint8).numpy()
    save_label_png(prediction, out_dir / f"{image_id}.png")
    if panels:
        rgb, label = dataset.read_raw(index)
        save_panel(rgb, label, prediction, out_dir / "panels" / f"{image_id}.png")
