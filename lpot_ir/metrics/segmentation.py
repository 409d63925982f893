"""Segmentation metric: mean intersection over union (LPOT's ``mIOU``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.metrics.base import BaseMetric, register_metric, single_output

__all__ = ["MeanIoU"]

logger = logging.getLogger(__name__)


@register_metric("mIOU")
class MeanIoU(BaseMetric):
    """Mean IoU over classes from a confusion matrix accumulated over every pixel.

    ``preds`` are class maps shaped like the labels, or scores with one more axis (the class axis, of size
    ``num_classes``: axis 1 as in NCHW, else the last) that are argmax-ed. Label values outside
    ``[0, num_classes)`` (such as VOC's 255 border) are ignored. Classes that never occur in the labels or
    the predictions are left out of the mean (``nanmean``), as in LPOT.
    """

    def __init__(self, num_classes: int = 21) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"mIOU: num_classes must be a positive integer, got {num_classes!r}.")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, preds: Any, labels: Any) -> None:
        scores = single_output(preds)
        truth = np.asarray(labels)
        if scores.ndim == truth.ndim + 1:
            axis = 1 if scores.ndim > 1 and scores.shape[1] == self.num_classes else -1
            scores = scores.argmax(axis=axis)
        if scores.size != truth.size:
            raise EvaluationError(
                f"mIOU: predictions of shape {single_output(preds).shape} do not match labels of shape {truth.shape}."
            )
        predicted, truth = scores.reshape(-1).astype(np.int64), truth.reshape(-1).astype(np.int64)
        keep = (truth >= 0) & (truth < self.num_classes) & (predicted >= 0) & (predicted < self.num_classes)
        codes = truth[keep] * self.num_classes + predicted[keep]
        self.confusion += np.bincount(codes, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def result(self) -> float:
        diagonal = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - diagonal
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = diagonal / union
        return float(np.nanmean(iou)) if np.any(union > 0) else 0.0
