"""Classification metrics: topk, Accuracy, F1 and Loss."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.metrics.base import BaseMetric, register_metric, single_output

__all__ = ["TopK", "Accuracy", "F1", "Loss"]

logger = logging.getLogger(__name__)


def _class_labels(labels: Any, preds: np.ndarray | None = None) -> np.ndarray:
    """Integer class labels of shape [N]; one-hot labels (same shape as 2-D preds) become indices."""
    array = np.asarray(labels)
    if preds is not None and array.ndim == 2 and array.shape == preds.shape and array.shape[1] > 1:
        return array.argmax(axis=1)
    return array.reshape(-1)


def _predicted_classes(preds: np.ndarray, n_labels: int) -> np.ndarray:
    """Class predictions of shape [N]: scores [N, C] are argmax-ed; probabilities of one class are thresholded at 0.5."""
    if preds.size == n_labels:
        flat = preds.reshape(-1)
        if np.issubdtype(flat.dtype, np.floating) and not np.all(np.equal(np.mod(flat, 1), 0)):
            return (flat >= 0.5).astype(np.int64)
        return flat.astype(np.int64)
    if n_labels and preds.size % n_labels == 0:
        return preds.reshape(n_labels, -1).argmax(axis=1)
    raise EvaluationError(
        f"Cannot match predictions of shape {preds.shape} with {n_labels} labels: expected one score row "
        "(or one class) per label."
    )


@register_metric("topk")
class TopK(BaseMetric):
    """The fraction of samples whose label is among the ``k`` highest-scoring classes (``topk: 1`` in YAML)."""

    def __init__(self, k: int = 1) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"topk: k must be a positive integer, got {k!r}.")
        self.k = k
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, preds: Any, labels: Any) -> None:
        scores = single_output(preds)
        label_array = np.asarray(labels)
        if scores.ndim == 2 and label_array.shape == scores.shape and scores.shape[1] > 1:
            classes = label_array.argmax(axis=1)
        else:
            classes = label_array.reshape(-1)
        n = classes.shape[0]
        if n == 0:
            return
        if scores.size % n:
            raise EvaluationError(
                f"topk: predictions of shape {scores.shape} do not give one score row per label ({n} labels)."
            )
        scores = scores.reshape(n, -1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        self.correct += int(np.sum(np.any(top == classes.reshape(-1, 1).astype(np.int64), axis=1)))
        self.total += n

    def result(self) -> float:
        return self.correct / self.total if self.total else 0.0


@register_metric("Accuracy")
class Accuracy(BaseMetric):
    """The fraction of correct predictions.

    Predictions may be class scores ``[N, C]`` (argmax is taken), class indices ``[N]`` or, for
    binary problems, probabilities ``[N]`` (thresholded at 0.5). Labels are indices or one-hot rows.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, preds: Any, labels: Any) -> None:
        scores = single_output(preds)
        classes = _class_labels(labels, scores if scores.ndim == 2 else None)
        predicted = _predicted_classes(scores, classes.shape[0])
        self.correct += int(np.sum(predicted == classes))
        self.total += int(classes.shape[0])

    def result(self) -> float:
        return self.correct / self.total if self.total else 0.0


@register_metric("F1")
class F1(BaseMetric):
    """F1 score of a classification: ``binary`` (of ``pos_label``) or ``macro`` (mean over classes seen).

    Predictions are handled as by :class:`Accuracy`. The macro average is over every class that appears
    in the labels or the predictions (as scikit-learn's ``f1_score(average='macro')``).
    """

    def __init__(self, average: str = "binary", pos_label: int = 1) -> None:
        if average not in ("binary", "macro"):
            raise ConfigError(f"F1: average must be 'binary' or 'macro', got {average!r}.")
        self.average = average
        self.pos_label = int(pos_label)
        self.reset()

    def reset(self) -> None:
        self.tp: dict[int, int] = {}
        self.fp: dict[int, int] = {}
        self.fn: dict[int, int] = {}

    def update(self, preds: Any, labels: Any) -> None:
        scores = single_output(preds)
        classes = _class_labels(labels, scores if scores.ndim == 2 else None).astype(np.int64)
        predicted = _predicted_classes(scores, classes.shape[0])
        for c in np.union1d(classes, predicted).tolist():
            self.tp[c] = self.tp.get(c, 0) + int(np.sum((predicted == c) & (classes == c)))
            self.fp[c] = self.fp.get(c, 0) + int(np.sum((predicted == c) & (classes != c)))
            self.fn[c] = self.fn.get(c, 0) + int(np.sum((predicted != c) & (classes == c)))

    def _f1(self, c: int) -> float:
        tp, fp, fn = self.tp.get(c, 0), self.fp.get(c, 0), self.fn.get(c, 0)
        denominator = 2 * tp + fp + fn
        return 2 * tp / denominator if denominator else 0.0

    def result(self) -> float:
        if self.average == "binary":
            return self._f1(self.pos_label)
        seen = sorted(set(self.tp) | set(self.fp) | set(self.fn))
        return float(np.mean([self._f1(c) for c in seen])) if seen else 0.0


@register_metric("Loss")
class Loss(BaseMetric):
    """The mean of per-sample loss values the model outputs (LPOT's ``Loss``): sum(preds) / number of labels."""

    higher_is_better = False

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, preds: Any, labels: Any) -> None:
        values = single_output(preds).astype(np.float64)
        self.total += float(values.sum())
        self.count += (
            int(np.asarray(labels).shape[0]) if labels is not None and np.ndim(labels) else int(values.size)
        )

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0
