"""Regression metrics: MAE, MSE and RMSE, element-wise between predictions and labels."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from lpot_ir.errors import EvaluationError
from lpot_ir.metrics.base import BaseMetric, register_metric, single_output

__all__ = ["MAE", "MSE", "RMSE"]

logger = logging.getLogger(__name__)


class _ElementwiseError(BaseMetric):
    """Element-wise error between predictions and labels.

    Args:
        compare_label: LPOT's flag. True: compare with the dataset's labels. False: the evaluation loop
            passes the FP32 model's outputs as ``labels`` (how far quantization moves the outputs).
    """

    higher_is_better = False
    name = "error"

    def __init__(self, compare_label: bool = True) -> None:
        self.compare_label = bool(compare_label)
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def _error(self, diff: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update(self, preds: Any, labels: Any) -> None:
        predicted = single_output(preds).astype(np.float64)
        expected = np.asarray(labels, dtype=np.float64)
        if predicted.size != expected.size:
            raise EvaluationError(
                f"{self.name}: predictions of shape {predicted.shape} and labels of shape {expected.shape} "
                "do not have the same number of elements."
            )
        diff = predicted.reshape(-1) - expected.reshape(-1)
        self.total += float(self._error(diff).sum())
        self.count += int(diff.size)

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


@register_metric("MAE")
class MAE(_ElementwiseError):
    """Mean absolute error."""

    name = "MAE"

    def _error(self, diff: np.ndarray) -> np.ndarray:
        return np.abs(diff)


@register_metric("MSE")
class MSE(_ElementwiseError):
    """Mean squared error."""

    name = "MSE"

    def _error(self, diff: np.ndarray) -> np.ndarray:
        return diff * diff


@register_metric("RMSE")
class RMSE(MSE):
    """Root mean squared error."""

    name = "RMSE"

    def result(self) -> float:
        return math.sqrt(super().result())
