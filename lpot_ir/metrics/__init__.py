"""Built-in metrics (LPOT's names: topk, Accuracy, Loss, MAE, MSE, RMSE, F1, mAP) and the registry."""

from __future__ import annotations

from lpot_ir.metrics.base import METRICS, BaseMetric, create_metric, register_metric, single_output
from lpot_ir.metrics.classification import F1, Accuracy, Loss, TopK
from lpot_ir.metrics.detection import MeanAveragePrecision, average_precision, box_iou
from lpot_ir.metrics.regression import MAE, MSE, RMSE

__all__ = [
    "METRICS",
    "MAE",
    "MSE",
    "RMSE",
    "F1",
    "Accuracy",
    "BaseMetric",
    "Loss",
    "MeanAveragePrecision",
    "TopK",
    "average_precision",
    "box_iou",
    "create_metric",
    "register_metric",
    "single_output",
]
