"""Softmax, SoftmaxWithLoss and Accuracy, with Caffe's label and normalization rules."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from porting.layers.base import CaffeLayer, Shape, canonical_axis
from porting.proto import caffe_pb2

N = caffe_pb2.LossParameter
LOG_FLT_MIN = math.log(float(torch.finfo(torch.float32).tiny))


class Softmax(CaffeLayer):
    """Caffe Softmax along `softmax_param.axis`."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(1)
        self.axis = canonical_axis(self, param.softmax_param.axis, len(bottom_shapes[0]))

    def forward(self, x: Tensor) -> list[Tensor]:
        return [F.softmax(x, dim=self.axis)]


def _labels(layer: CaffeLayer, scores: Tensor, label: Tensor, axis: int) -> Tensor:
    """Labels as (outer, inner) integers, checked against the scores' outer x inner count."""
    outer = math.prod(scores.shape[:axis])
    inner = math.prod(scores.shape[axis + 1 :])
    if label.numel() != outer * inner:
        raise layer.bad_input(
            f"label count {label.numel()} (shape {tuple(label.shape)}) must equal outer x inner = "
            f"{outer} x {inner} of scores {tuple(scores.shape)}"
        )
    return label.reshape(outer, inner).long()


class SoftmaxWithLoss(CaffeLayer):
    """Caffe SoftmaxWithLoss: -sum log p(label) over non-ignored positions / normalizer.

    normalization FULL (outer x inner), VALID (non-ignored count; the default), BATCH_SIZE
    (outer), NONE (1); the legacy `normalize` bool counts only where `normalization` is
    not set (caffe.proto: "ignored if normalization is specified"): true -> VALID,
    false -> BATCH_SIZE. The normalizer is at least 1. log p is clamped at log(FLT_MIN) in
    the loss value only; the gradient is Caffe's unclamped `p - onehot`. `loss_weight`
    (default 1) scales this loss in the net's total.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(2)
        if self.num_tops != 1:
            # Caffe's SoftmaxWithLoss copies its own definition, loss_weight entries included, into
            # the inner Softmax it sets up; with two tops one of the two fails the check "loss_weight
            # must be unspecified or specified once per top blob", whatever loss_weight says
            raise self.error(
                f"has one top (the loss), found {self.num_tops}: Caffe cannot set up a SoftmaxWithLoss "
                "with a second (probabilities) top; add a Softmax layer for them"
            )
        self.axis = canonical_axis(self, param.softmax_param.axis, len(bottom_shapes[0]))
        lp = param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        if lp.HasField("normalize") and not lp.HasField("normalization"):
            self.normalization = N.VALID if lp.normalize else N.BATCH_SIZE
        else:
            self.normalization = lp.normalization

    def _normalizer(self, labels: Tensor, valid: Tensor) -> Tensor | float:
        outer, inner = labels.shape
        if self.normalization == N.FULL:
            return float(max(1, outer * inner))
        if self.normalization == N.VALID:
            return valid.sum().clamp_min(1).to(torch.float32)
        if self.normalization == N.BATCH_SIZE:
            return float(max(1, outer))
        return 1.0

    def forward(self, scores: Tensor, label: Tensor) -> list[Tensor]:
        if label.dim() == 0 or label.shape[0] != scores.shape[0]:
            raise self.bad_input(
                f"label shape {tuple(label.shape)} and scores shape {tuple(scores.shape)} differ in their first "
                "dimension (Caffe's loss layers require the same)"
            )
        labels = _labels(self, scores, label, self.axis)
        outer, inner = labels.shape
        exact = F.log_softmax(scores, dim=self.axis)
        # the clamped value with the unclamped gradient (exact - exact.detach() is 0 in value: nothing cancels)
        log_prob = exact.clamp_min(LOG_FLT_MIN).detach() + (exact - exact.detach())
        log_prob = log_prob.reshape(outer, scores.shape[self.axis], inner)
        valid = (
            labels != self.ignore_label if self.ignore_label is not None else torch.ones_like(labels, dtype=torch.bool)
        )
        picked = log_prob.gather(1, torch.where(valid, labels, 0).unsqueeze(1)).squeeze(1)
        loss = -(picked * valid).sum() / self._normalizer(labels, valid)
        return [loss]


class Accuracy(CaffeLayer):
    """Caffe Accuracy: a position counts when fewer than `top_k` classes score >= the true class
    minus itself; ignored labels count in neither numerator nor denominator (0 when none left)."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: list[Shape], phase: str) -> None:
        super().__init__(param, bottom_shapes, phase)
        self.expect_bottoms(2)
        if self.num_tops != 1:
            raise self.error("per-class accuracy (a second top) is not supported")
        p = param.accuracy_param
        self.axis = canonical_axis(self, p.axis, len(bottom_shapes[0]))
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def forward(self, scores: Tensor, label: Tensor) -> list[Tensor]:
        labels = _labels(self, scores, label, self.axis)
        outer, inner = labels.shape
        flat = scores.reshape(outer, scores.shape[self.axis], inner)
        valid = (
            labels != self.ignore_label if self.ignore_label is not None else torch.ones_like(labels, dtype=torch.bool)
        )
        true_score = flat.gather(1, torch.where(valid, labels, 0).unsqueeze(1))
        better = (flat >= true_score).sum(dim=1) - 1
        hits = ((better < self.top_k) & valid).sum()
        return [(hits / valid.sum().clamp_min(1)).to(scores.dtype)]
