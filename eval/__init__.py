"""Scoring: confusion matrix and the paper's four metrics, published numbers, `python -m eval.table`."""

from .infer import score
from .metrics import ConfusionMatrix, Metrics, metrics_from_confusion

__all__ = ["ConfusionMatrix", "Metrics", "metrics_from_confusion", "score"]
