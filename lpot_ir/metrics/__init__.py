"""Built-in metrics under LPOT's names (topk, Accuracy, Loss, MAE, MSE, RMSE, F1, mAP, COCOmAP, VOCmAP,
BLEU, SquadF1, GLUE, mIOU; plus SquadEM) and the registry. docs/catalogue.md lists them all."""

from __future__ import annotations

from lpot_ir.metrics.base import METRICS, BaseMetric, create_metric, register_metric, single_output
from lpot_ir.metrics.classification import F1, Accuracy, Loss, TopK
from lpot_ir.metrics.detection import (
    COCOMeanAveragePrecision,
    MeanAveragePrecision,
    VOCMeanAveragePrecision,
    average_precision,
    box_iou,
)
from lpot_ir.metrics.nlp import BLEU, GLUE, SquadEM, SquadF1
from lpot_ir.metrics.regression import MAE, MSE, RMSE
from lpot_ir.metrics.segmentation import MeanIoU

__all__ = [
    "BLEU",
    "GLUE",
    "METRICS",
    "MAE",
    "MSE",
    "RMSE",
    "F1",
    "Accuracy",
    "BaseMetric",
    "COCOMeanAveragePrecision",
    "Loss",
    "MeanAveragePrecision",
    "MeanIoU",
    "SquadEM",
    "SquadF1",
    "TopK",
    "VOCMeanAveragePrecision",
    "average_precision",
    "box_iou",
    "create_metric",
    "register_metric",
    "single_output",
]
