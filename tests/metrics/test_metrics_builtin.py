"""Each built-in metric on hand-computed cases, the registry, and common.Metric."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpot_ir import common
from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.metrics import (
    F1,
    MAE,
    METRICS,
    MSE,
    RMSE,
    Accuracy,
    Loss,
    MeanAveragePrecision,
    TopK,
    average_precision,
    box_iou,
    create_metric,
)

LOGITS = np.array(
    [
        [0.1, 0.7, 0.2],  # top1 = 1, top2 = {1, 2}
        [0.5, 0.3, 0.2],  # top1 = 0, top2 = {0, 1}
        [0.2, 0.3, 0.5],  # top1 = 2, top2 = {2, 1}
        [0.6, 0.1, 0.3],  # top1 = 0, top2 = {0, 2}
    ],
    dtype=np.float32,
)
LABELS = np.array([1, 1, 0, 2])


def test_topk() -> None:
    top1, top2 = TopK(1), TopK(k=2)
    for metric in (top1, top2):
        metric.update([LOGITS[:2]], LABELS[:2])  # a list holding one output, as ONNX Runtime returns
        metric.update(LOGITS[2:], LABELS[2:].reshape(-1, 1))
    assert top1.result() == pytest.approx(1 / 4)
    assert top2.result() == pytest.approx(3 / 4)
    one_hot = np.eye(3)[LABELS]
    top1.reset()
    top1.update(LOGITS, one_hot)
    assert top1.result() == pytest.approx(1 / 4)
    with pytest.raises(ConfigError, match="positive integer"):
        TopK(0)


def test_accuracy_on_scores_indices_and_probabilities() -> None:
    metric = Accuracy()
    metric.update(LOGITS, LABELS)
    assert metric.result() == pytest.approx(0.25)
    metric.update(np.array([1, 1]), np.array([1, 0]))  # class indices
    assert metric.result() == pytest.approx(2 / 6)
    metric.reset()
    metric.update(np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 0]))  # binary probabilities
    assert metric.result() == pytest.approx(0.75)
    with pytest.raises(EvaluationError, match="Cannot match predictions"):
        metric.update(np.zeros((3, 5)), np.array([1, 2]))


def test_f1_binary_and_macro_match_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    scores = rng.normal(size=(40, 3)) + np.eye(3)[labels] * 0.8
    macro = F1(average="macro")
    macro.update(scores[:25], labels[:25])
    macro.update(scores[25:], labels[25:])
    assert macro.result() == pytest.approx(f1_score(labels, scores.argmax(1), average="macro"))
    binary_labels = (labels == 1).astype(int)
    probabilities = 1 / (1 + np.exp(-(scores[:, 1] - scores[:, 0])))
    binary = F1()
    binary.update(probabilities, binary_labels)
    assert binary.result() == pytest.approx(f1_score(binary_labels, (probabilities >= 0.5).astype(int)))
    hand = F1()
    hand.update(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))  # tp 1, fp 1, fn 1 -> 2/(2+1+1)
    assert hand.result() == pytest.approx(0.5)


def test_loss_and_regression_errors() -> None:
    loss = Loss()
    loss.update(np.array([0.5, 1.5]), np.array([0, 1]))
    loss.update(np.array([2.0]), np.array([1]))
    assert loss.result() == pytest.approx(4.0 / 3)
    preds = np.array([[1.0, 2.0], [3.0, 5.0]])
    labels = np.array([[1.0, 0.0], [4.0, 5.0]])  # errors 0, 2, -1, 0
    results = {}
    for cls in (MAE, MSE, RMSE):
        metric = cls()
        metric.update(preds[:1], labels[:1])
        metric.update([preds[1:]], labels[1:])
        results[cls.__name__] = metric.result()
    assert results == pytest.approx({"MAE": 3 / 4, "MSE": 5 / 4, "RMSE": math.sqrt(5 / 4)})
    with pytest.raises(EvaluationError, match="same number of elements"):
        MSE().update(np.zeros(3), np.zeros(2))


def test_higher_is_better_flags() -> None:
    assert TopK.higher_is_better and Accuracy.higher_is_better and F1.higher_is_better
    assert MeanAveragePrecision.higher_is_better
    assert not Loss.higher_is_better and not MAE.higher_is_better and not MSE.higher_is_better
    assert not RMSE.higher_is_better


# The hand-computed detection case (boxes are y1, x1, y2, x2):
# image 0: ground truth A (class 1) [0,0,10,10], C (class 2) [20,20,30,30]
# image 1: ground truth B (class 1) [0,0,10,10]
# detections, by score: d1 img0 cls1 0.9 IoU(A)=0.8 -> TP; d2 img0 cls1 0.8 IoU(A)=0.6 but A taken -> FP;
# d3 img1 cls1 0.7 IoU(B)=0.3 -> FP; d4 img1 cls1 0.6 IoU(B)=0.9 -> TP; d5 img0 cls2 0.5 IoU(C)=1 -> TP.
# class 1: precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1 -> AP = 1/2*1 + 1/2*1/2 = 0.75
#          11-point: recall levels 0..0.5 (6 levels) at precision 1, 0.6..1.0 (5 levels) at 0.5 -> 8.5/11
# class 2: AP 1.  mAP = 0.875 (all points), (8.5/11 + 1) / 2 (11 points).
DET_BOXES = np.array(
    [
        [[0, 0, 10, 8], [0, 0, 10, 6], [20, 20, 30, 30]],
        [[0, 0, 10, 3], [0, 0, 10, 9], [0, 0, 10, 10]],  # the last one is padding beyond num_detections
    ],
    dtype=np.float32,
)
DET_SCORES = np.array([[0.9, 0.8, 0.5], [0.7, 0.6, 0.95]], dtype=np.float32)
DET_CLASSES = np.array([[1, 1, 2], [1, 1, 1]])
NUM_DETECTIONS = np.array([3, 2])
GT_BOXES = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 10], [0, 0, 0, 0]]], dtype=np.float32)
GT_CLASSES = np.array([[1, 2], [1, -1]])  # -1 is padding


def test_map_on_the_hand_computed_case() -> None:
    metric = create_metric({"mAP": {"iou_thrs": 0.5}})
    metric.update((NUM_DETECTIONS, DET_BOXES, DET_SCORES, DET_CLASSES), (GT_BOXES, GT_CLASSES))
    assert metric.result() == pytest.approx(0.875)
    eleven = MeanAveragePrecision(map_points=11)
    per_image_labels = [(GT_BOXES[0], GT_CLASSES[0]), (GT_BOXES[1][:1], GT_CLASSES[1][:1])]
    for i in range(2):  # one image per batch, ground truth as a per-image list
        n = NUM_DETECTIONS[i]
        eleven.update(
            (DET_BOXES[i : i + 1, :n], DET_SCORES[i : i + 1, :n], DET_CLASSES[i : i + 1, :n]),
            [per_image_labels[i]],
        )
    assert eleven.result() == pytest.approx((8.5 / 11 + 1) / 2)
    strict = MeanAveragePrecision(iou_thrs=0.85)  # d1 (0.8) is now a false positive: class 1 is FP,FP,FP,TP
    strict.update((NUM_DETECTIONS, DET_BOXES, DET_SCORES, DET_CLASSES), (GT_BOXES, GT_CLASSES))
    assert strict.result() == pytest.approx(
        (0.5 * 0.25 + 0.0) / 2 + 0.5
    )  # class 1: recall 1/2 at precision 1/4
    counted_padding = MeanAveragePrecision()
    counted_padding.update((DET_BOXES, DET_SCORES, DET_CLASSES), (GT_BOXES, GT_CLASSES))
    assert counted_padding.result() != pytest.approx(0.875)  # without num_detections the 0.95 box counts


def test_map_helpers_and_errors() -> None:
    np.testing.assert_allclose(
        box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [5, 5, 6, 6]])), [[1 / 7, 0.0]]
    )
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    assert average_precision(np.array([0.5]), np.array([1.0]), map_points=101) == pytest.approx(51 / 101)
    coco = MeanAveragePrecision(iou_thrs="0.5:0.05:0.95")
    assert len(coco.thresholds) == 10 and coco.thresholds[-1] == 0.95
    with pytest.raises(ConfigError, match="map_points"):
        MeanAveragePrecision(map_points=7)
    with pytest.raises(EvaluationError, match="boxes, scores, classes"):
        MeanAveragePrecision().update(np.zeros((1, 3, 4)), (GT_BOXES, GT_CLASSES))
    assert MeanAveragePrecision().result() == 0.0


def test_registry_uses_lpot_names() -> None:
    assert {"topk", "Accuracy", "Loss", "MAE", "MSE", "RMSE", "F1", "mAP"} <= set(METRICS)
    metric = create_metric({"topk": 5})
    assert isinstance(metric, TopK) and metric.k == 5
    assert isinstance(create_metric({"Accuracy": None}), Accuracy)
    assert create_metric({"F1": {"average": "macro"}}).average == "macro"
    assert create_metric({"MSE": {"compare_label": False}}).compare_label is False
    with pytest.raises(ConfigError, match="Did you mean 'RMSE'"):
        create_metric({"RMSD": {}})
    with pytest.raises(ConfigError, match="has no parameter 'iou'.*'iou_thrs'"):
        create_metric({"mAP": {"iou": 0.5}})


def test_common_metric_wraps_a_user_class() -> None:
    class MeanAbsoluteDifference:
        higher_is_better = False

        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale
            self.reset()

        def update(self, preds: np.ndarray, labels: np.ndarray) -> None:
            self.values.extend(np.abs(np.asarray(preds) - labels).reshape(-1) * self.scale)

        def reset(self) -> None:
            self.values: list[float] = []

        def result(self) -> float:
            return float(np.mean(self.values))

    wrapped = common.Metric(MeanAbsoluteDifference, name="mad", scale=2.0)
    assert wrapped.name == "mad" and not wrapped.higher_is_better
    instance = wrapped.create()
    instance.update(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    assert instance.result() == pytest.approx(4.0)
    assert wrapped.create() is not instance
    assert common.Metric(Accuracy).name == "Accuracy" and common.Metric(Accuracy).higher_is_better

    class NoResult:
        def update(self, preds: object, labels: object) -> None: ...

        def reset(self) -> None: ...

    with pytest.raises(EvaluationError, match="no result method"):
        common.Metric(NoResult)
    with pytest.raises(EvaluationError, match="raised TypeError"):
        common.Metric(MeanAbsoluteDifference, shift=1).create()
