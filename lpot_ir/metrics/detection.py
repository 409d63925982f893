"""Detection metrics: mean average precision (``mAP``, ``VOCmAP``, and ``COCOmAP`` through pycocotools).

``update(preds, labels)`` takes one batch:

* ``preds``: ``(boxes [B, N, 4], scores [B, N], classes [B, N])``, or with ``num_detections [B]`` first
  (the TensorFlow detection API's output order): only the first ``num_detections[i]`` boxes of image
  ``i`` count.
* ``labels``: ``(gt_boxes [B, M, 4], gt_classes [B, M])`` where classes < 0 mark padding, or a list of
  one ``(gt_boxes [M, 4], gt_classes [M])`` pair per image (the DataLoader gives this when images have
  different numbers of boxes), or LPOT's detection labels: one ``(boxes, names, classes, image id)``
  per image (what the COCO datasets give), or LPOT's batched ``(boxes, names, classes, image ids)``.
  When ``classes`` is empty the ``names`` are mapped to ids with ``anno_path`` (a YAML ``name: id``
  file) or the COCO categories.

Boxes are four corners ``(y1, x1, y2, x2)`` or ``(x1, y1, x2, y2)`` (the same order for predictions
and ground truth); IoU is computed on continuous coordinates (no "+1" pixel). A detection is a true
positive when its best-overlapping ground-truth box of the same class has IoU >= the threshold and was
not matched by a higher-scoring detection (VOC's rule). AP is the area under the precision envelope
(``map_points: 0``, VOC 2010+), or sampled at 11 or 101 recall points. mAP is the mean over classes
with at least one ground-truth box; with ``iou_thrs: '0.5:0.05:0.95'`` it is also averaged over the
ten thresholds (COCO style).
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np
import yaml

from lpot_ir.data.coco import COCO_CATEGORIES
from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.metrics.base import BaseMetric, register_metric

__all__ = ["MeanAveragePrecision", "VOCMeanAveragePrecision", "COCOMeanAveragePrecision", "average_precision", "box_iou"]

logger = logging.getLogger(__name__)


def box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU matrix [len(boxes), len(others)] of corner-format boxes."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, map_points: int = 0) -> float:
    """AP from a precision/recall curve (detections sorted by decreasing score).

    Args:
        recall: cumulative recall after each detection.
        precision: cumulative precision after each detection.
        map_points: 0 for the area under the monotone precision envelope (VOC 2010+), or 11 / 101
            for the mean of the envelope sampled at that many evenly spaced recall levels.
    """
    if map_points in (11, 101):
        levels = np.linspace(0.0, 1.0, map_points)
        values = [float(np.max(precision[recall >= r])) if np.any(recall >= r) else 0.0 for r in levels]
        return float(np.mean(values))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _thresholds(iou_thrs: float | str) -> list[float]:
    if isinstance(iou_thrs, str):
        if iou_thrs.strip() == "0.5:0.05:0.95":
            return [round(0.5 + 0.05 * i, 2) for i in range(10)]
        raise ConfigError(f"mAP: iou_thrs must be a number in (0, 1] or '0.5:0.05:0.95', got {iou_thrs!r}.")
    if isinstance(iou_thrs, bool) or not isinstance(iou_thrs, (int, float)) or not 0 < iou_thrs <= 1:
        raise ConfigError(f"mAP: iou_thrs must be a number in (0, 1] or '0.5:0.05:0.95', got {iou_thrs!r}.")
    return [float(iou_thrs)]


@register_metric("mAP")
class MeanAveragePrecision(BaseMetric):
    """VOC-style mean average precision (see the module docstring for the input format).

    Args:
        iou_thrs: IoU threshold for a true positive, or ``'0.5:0.05:0.95'``.
        map_points: 0 (area under the envelope), 11 or 101 (sampled recall points).
    """

    def __init__(self, iou_thrs: float | str = 0.5, map_points: int = 0, anno_path: str | None = None) -> None:
        self.thresholds = _thresholds(iou_thrs)
        if map_points not in (0, 11, 101):
            raise ConfigError(f"mAP: map_points must be 0, 11 or 101, got {map_points!r}.")
        self.map_points = map_points
        self.name_to_id = _name_map(anno_path)
        self.reset()

    def reset(self) -> None:
        # one entry per image: (boxes, scores, classes, gt_boxes, gt_classes)
        self.images: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def _per_image_labels(self, labels: Any, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if (
            isinstance(labels, (list, tuple))
            and len(labels) == 2
            and isinstance(labels[0], np.ndarray)
            and labels[0].ndim == 3
        ):
            boxes, classes = np.asarray(labels[0]), np.asarray(labels[1])
            return [(boxes[i], classes[i]) for i in range(boxes.shape[0])]
        if isinstance(labels, (list, tuple)) and len(labels) == batch and all(_is_image_label(x) for x in labels):
            return [self._image_label(item) for item in labels]
        if isinstance(labels, (list, tuple)) and len(labels) == 4 and all(len(part) == batch for part in labels[:3]):
            return [self._image_label((labels[0][i], labels[1][i], labels[2][i], None)) for i in range(batch)]
        raise EvaluationError(
            "mAP: labels must be (gt_boxes [B, M, 4], gt_classes [B, M]), one (gt_boxes, gt_classes) pair per image, "
            "or LPOT's detection labels (boxes, names, classes, image id) per image."
        )

    def _image_label(self, item: Any) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.asarray(item[0], dtype=np.float64).reshape(-1, 4)
        if len(item) == 2:
            return boxes, np.asarray(item[1])
        names, classes = np.asarray(item[1]).reshape(-1), np.asarray(item[2]).reshape(-1)
        if classes.size == 0 and names.size:
            unknown = sorted({_text(n) for n in names} - set(self.name_to_id))
            if unknown:
                raise EvaluationError(
                    f"mAP: class names {unknown[:5]} are not in the label map; give anno_path, a YAML file of "
                    "'name: id' lines, or labels with class ids."
                )
            classes = np.asarray([self.name_to_id[_text(n)] for n in names], dtype=np.int64)
        return boxes, classes

    def update(self, preds: Any, labels: Any) -> None:
        if not isinstance(preds, (list, tuple)) or len(preds) not in (3, 4):
            raise EvaluationError(
                "mAP: predictions must be (boxes, scores, classes) or (num_detections, boxes, scores, classes)."
            )
        counts = np.asarray(preds[0]).reshape(-1).astype(np.int64) if len(preds) == 4 else None
        boxes, scores, classes = (np.asarray(p) for p in preds[-3:])
        batch = boxes.shape[0]
        if (
            boxes.ndim != 3
            or boxes.shape[-1] != 4
            or scores.shape != boxes.shape[:2]
            or classes.shape != boxes.shape[:2]
        ):
            raise EvaluationError(
                f"mAP: expected boxes [B, N, 4], scores [B, N] and classes [B, N], got {boxes.shape}, "
                f"{scores.shape} and {classes.shape}."
            )
        for i, (gt_boxes, gt_classes) in enumerate(self._per_image_labels(labels, batch)):
            n = int(counts[i]) if counts is not None else boxes.shape[1]
            gt_boxes = gt_boxes.reshape(-1, 4)
            gt_classes = gt_classes.reshape(-1)
            keep = gt_classes >= 0
            self.images.append(
                (
                    boxes[i, :n],
                    scores[i, :n],
                    classes[i, :n].astype(np.int64),
                    gt_boxes[keep],
                    gt_classes[keep].astype(np.int64),
                )
            )

    def _class_ap(self, cls: int, threshold: float) -> float:
        detections: list[tuple[float, int, int]] = []  # (score, image, detection index)
        n_gt = 0
        for image_index, (_, scores, classes, _, gt_classes) in enumerate(self.images):
            n_gt += int(np.sum(gt_classes == cls))
            for j in np.nonzero(classes == cls)[0]:
                detections.append((float(scores[j]), image_index, int(j)))
        detections.sort(key=lambda t: -t[0])
        matched: dict[int, set[int]] = {}
        tp = np.zeros(len(detections))
        for k, (_, image_index, d) in enumerate(detections):
            boxes, _, _, gt_boxes, gt_classes = self.images[image_index]
            candidates = np.nonzero(gt_classes == cls)[0]
            if candidates.size == 0:
                continue
            ious = box_iou(boxes[d : d + 1], gt_boxes[candidates])[0]
            best = int(np.argmax(ious))
            if ious[best] >= threshold and int(candidates[best]) not in matched.setdefault(
                image_index, set()
            ):
                matched[image_index].add(int(candidates[best]))
                tp[k] = 1
        cum_tp = np.cumsum(tp)
        recall = cum_tp / n_gt
        precision = cum_tp / np.arange(1, len(detections) + 1)
        return average_precision(recall, precision, self.map_points)

    def result(self) -> float:
        classes = sorted({int(c) for image in self.images for c in image[4].tolist()})
        if not classes:
            return 0.0
        per_threshold = [np.mean([self._class_ap(c, t) for c in classes]) for t in self.thresholds]
        return float(np.mean(per_threshold))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _is_image_label(item: Any) -> bool:
    """One image's label: ``(boxes [M, 4], classes [M])`` or ``(boxes, names, classes, image id)``."""
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 4):
        return False
    boxes = np.asarray(item[0])
    return (boxes.size == 0 or (boxes.ndim == 2 and boxes.shape[1] == 4)) and np.ndim(item[1]) <= 1


def _name_map(anno_path: str | None) -> dict[str, int]:
    if anno_path is None:
        return {name: cid for cid, name in COCO_CATEGORIES.items()}
    try:
        with open(anno_path, encoding="utf-8") as handle:
            mapping = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"mAP: cannot read the label map anno_path '{anno_path}': {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise ConfigError(f"mAP: the label map '{anno_path}' must be a YAML mapping of class name to integer id.")
    return {str(k): int(v) for k, v in mapping.items()}


@register_metric("VOCmAP")
class VOCMeanAveragePrecision(MeanAveragePrecision):
    """PASCAL VOC mAP (LPOT's ``VOCmAP``): IoU 0.5, area under the precision envelope. LPOT fixes both,
    so ``iou_thrs`` and ``map_points`` given here are ignored, as there."""

    def __init__(self, anno_path: str | None = None, iou_thrs: Any = None, map_points: Any = None) -> None:
        super().__init__(0.5, 0, anno_path)


@register_metric("COCOmAP")
class COCOMeanAveragePrecision(MeanAveragePrecision):
    """COCO mAP (LPOT's ``COCOmAP``): AP averaged over IoU 0.50:0.05:0.95 with 101 recall points, at most
    100 detections per image, computed by pycocotools' ``COCOeval`` (``pip install pycocotools``).
    LPOT fixes the thresholds, so ``iou_thrs`` and ``map_points`` given here are ignored, as there."""

    def __init__(self, anno_path: str | None = None, iou_thrs: Any = None, map_points: Any = None) -> None:
        super().__init__("0.5:0.05:0.95", 101, anno_path)

    def result(self) -> float:
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError:
            raise EvaluationError("COCOmAP needs pycocotools, which is not installed: pip install pycocotools") from None

        def xywh(boxes: np.ndarray) -> np.ndarray:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)

        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        detections: list[dict[str, Any]] = []
        for image_id, (boxes, scores, classes, gt_boxes, gt_classes) in enumerate(self.images, 1):
            images.append({"id": image_id})
            for box, cls in zip(xywh(gt_boxes), gt_classes.tolist(), strict=True):
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls), "bbox": box.tolist(),
                     "area": float(box[2] * box[3]), "iscrowd": 0}
                )
            for box, score, cls in zip(xywh(boxes), scores.tolist(), classes.tolist(), strict=True):
                detections.append({"image_id": image_id, "category_id": int(cls), "bbox": box.tolist(), "score": float(score)})
        if not annotations:
            return 0.0
        categories = sorted({a["category_id"] for a in annotations} | {d["category_id"] for d in detections})
        with contextlib.redirect_stdout(io.StringIO()):
            truth = COCO()
            truth.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in categories]}
            truth.createIndex()
            found = truth.loadRes(detections) if detections else None
            if found is None:
                return 0.0
            evaluation = COCOeval(truth, found, iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return max(float(evaluation.stats[0]), 0.0)
