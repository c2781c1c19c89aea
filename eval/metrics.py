"""Confusion matrix and the four FCN metrics (CVPR 2015, Sec. 4).

With n_ij the number of pixels of class i predicted as class j and t_i = sum_j n_ij:

- pixel accuracy            sum_i n_ii / sum_i t_i
- mean accuracy             mean_i n_ii / t_i
- mean IU                   mean_i n_ii / (t_i + sum_j n_ji - n_ii)
- frequency weighted IU     (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

The means skip classes whose ratio is 0/0 (NaN), as the authors' scoring code does with
`nanmean`: a class absent from the ground truth has no accuracy, and a class absent from
both the ground truth and the predictions has no IU. A class that is predicted but absent
from the ground truth has IU 0 and counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

#: The paper's four metrics, in its tables' order, as `Metrics` fields and JSON keys.
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
#: Their column headers in printed tables.
METRIC_LABELS = {"pixel_acc": "pixel acc", "mean_acc": "mean acc", "mean_iu": "mean IU", "fw_iu": "f.w. IU"}


@dataclass(frozen=True)
class Metrics:
    """The paper's metrics as fractions in [0, 1]; NaN where a ratio is 0/0."""

    pixel_acc: float
    mean_acc: float
    mean_iu: float
    fw_iu: float
    per_class_iu: tuple[float, ...]
    per_class_acc: tuple[float, ...]
    n_pixels: int

    def as_dict(self) -> dict:
        return {**asdict(self), "per_class_iu": list(self.per_class_iu), "per_class_acc": list(self.per_class_acc)}


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def metrics_from_confusion(hist: Tensor | np.ndarray, *, present_only: bool = False) -> Metrics:
    """Metrics from a (num_classes x num_classes) matrix, rows = ground truth, columns = prediction.

    `present_only`: mean accuracy and mean IU over the classes with ground-truth pixels only.
    """
    counts = hist.detach().cpu().numpy() if isinstance(hist, Tensor) else np.asarray(hist)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    counts = counts.astype(np.float64)
    correct = np.diag(counts)
    gt_total = counts.sum(axis=1)
    pred_total = counts.sum(axis=0)
    total = counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = correct / gt_total
        iu = correct / (gt_total + pred_total - correct)
        pixel_acc = correct.sum() / total if total else math.nan
    present = gt_total > 0
    averaged = present if present_only else np.ones_like(present)
    fw_iu = float((gt_total[present] * iu[present]).sum() / total) if total else math.nan
    return Metrics(
        pixel_acc=float(pixel_acc),
        mean_acc=_nanmean(acc[averaged]),
        mean_iu=_nanmean(iu[averaged]),
        fw_iu=fw_iu,
        per_class_iu=tuple(float(v) for v in iu),
        per_class_acc=tuple(float(v) for v in acc),
        n_pixels=int(total),
    )


class ConfusionMatrix:
    """Accumulates int64 pixel counts on one device, without a host sync per update.

    Pixels whose label is outside [0, num_classes) (255 in VOC) are ignored. A prediction
    outside [0, num_classes) on a scored pixel is a caller bug; it is counted apart and
    reported by `compute()`, so `update()` never has to wait for the device.
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # One extra row (ignored labels) and column (bad predictions) keep update() branch-free.
        self._bins = torch.zeros((num_classes + 1) ** 2, dtype=torch.int64, device=self.device)

    def _bin_index(self, values: Tensor) -> Tensor:
        """Map values to int32 bins 0..n, everything outside [0, n) to n (int32: fastest bincount input)."""
        n = self.num_classes
        index = values.to(self.device, torch.int32, copy=True).reshape(-1).clamp_(max=n)
        if values.is_signed():
            index.masked_fill_(index < 0, n)
        return index

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add one prediction / label pair of equal shape (any integer dtype)."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
        width = self.num_classes + 1
        cell = self._bin_index(label) * width
        cell += self._bin_index(pred)
        self._bins += torch.bincount(cell, minlength=width * width)

    @property
    def _table(self) -> Tensor:
        width = self.num_classes + 1
        return self._bins.view(width, width)

    @property
    def hist(self) -> Tensor:
        """The int64 confusion matrix on the accumulation device: rows ground truth, columns prediction."""
        n = self.num_classes
        return self._table[:n, :n]

    @property
    def n_ignored(self) -> int:
        """Pixels skipped because their label is outside [0, num_classes)."""
        return int(self._table[-1].sum())

    def compute(self, *, present_only: bool = False) -> Metrics:
        """The metrics so far (`present_only`: see `metrics_from_confusion`)."""
        bad = int(self._table[:-1, -1].sum())
        if bad:
            raise ValueError(f"{bad} scored pixels had a prediction outside [0, {self.num_classes})")
        return metrics_from_confusion(self.hist, present_only=present_only)

    def reset(self) -> None:
        self._bins.zero_()
