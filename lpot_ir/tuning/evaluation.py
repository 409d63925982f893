"""How the tuning loop measures accuracy: a user's ``eval_func``, or a dataloader + metric (+ postprocess).

LPOT and Intel Neural Compressor hand an ONNX model's ``eval_func`` an ``onnx.ModelProto``; so does
lpot-ir, so existing evaluation functions work unchanged. Without an ``eval_func``, the model runs in
ONNX Runtime over the evaluation dataloader; each batch's outputs (a list, one array per model output)
and labels go through the postprocess, then into the metric.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx

from lpot_ir.errors import ConfigError, EvaluationError

__all__ = ["Evaluator", "first_line"]

logger = logging.getLogger(__name__)


def first_line(exc: BaseException) -> str:
    """``ExcType: first line of the message`` (what a failed trial records)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class Evaluator:
    """Measures a model's accuracy one way: ``eval_func`` or ``dataloader`` + ``metric``.

    Args:
        eval_func: ``f(onnx.ModelProto) -> float``.
        dataloader: evaluation batches of ``(inputs, labels)``.
        metric: a built-in metric instance (``update/reset/result``), a ``common.Metric`` wrapper, or a
            YAML metric spec such as ``{"topk": 1}``.
        postprocess: ``(preds, labels) -> (preds, labels)`` applied per batch.
        iteration: batches to evaluate (-1 = all).
        intra_op_threads: ONNX Runtime intra-op threads for the evaluation session.

    Raises:
        ConfigError: neither ``eval_func`` nor ``dataloader`` and ``metric`` are given.
    """

    def __init__(
        self,
        eval_func: Callable[[onnx.ModelProto], Any] | None = None,
        dataloader: Iterable[Any] | None = None,
        metric: Any = None,
        postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        *,
        iteration: int = -1,
        intra_op_threads: int | None = None,
    ) -> None:
        if eval_func is None and (dataloader is None or metric is None):
            missing = "a metric" if dataloader is not None else "an evaluation dataloader"
            raise ConfigError(
                f"Accuracy-driven tuning needs an eval_func, or an evaluation dataloader and a metric; {missing} "
                "is missing. Set quantizer.eval_func, or quantizer.eval_dataloader and quantizer.metric (or "
                "evaluation.accuracy.dataloader and .metric in the YAML)."
            )
        if eval_func is not None and not callable(eval_func):
            raise ConfigError(f"eval_func must be callable (model -> accuracy), got {type(eval_func).__name__}.")
        self.eval_func = eval_func
        self.dataloader = dataloader
        self.metric = _as_metric_factory(metric) if eval_func is None else None
        self.postprocess = postprocess
        self.iteration = int(iteration)
        self.intra_op_threads = intra_op_threads

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction (an ``eval_func``'s is given by the accuracy criterion: True here)."""
        if self.metric is None:
            return True
        return bool(getattr(self.metric, "higher_is_better", True))

    @property
    def description(self) -> str:
        """What measures accuracy, for reports and the run key."""
        if self.eval_func is not None:
            func = self.eval_func
            return f"eval_func {getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(func).__name__)}"
        return f"metric {getattr(self.metric, 'name', type(self.metric).__name__)} over the evaluation dataloader"

    def __call__(self, model: onnx.ModelProto) -> float:
        """The accuracy of ``model``.

        Raises:
            Exception: whatever the user's ``eval_func`` or metric raises (the loop records it).
            EvaluationError: the result is not a finite number.
        """
        value = self.eval_func(model) if self.eval_func is not None else self._run_metric(model)
        return _as_number(value, self.description)

    def _run_metric(self, model: onnx.ModelProto) -> Any:
        from lpot_ir.backends.onnxruntime.session import input_specs, make_feed, make_session, run_feed

        # __init__ guarantees both when there is no eval_func (the only case that gets here)
        assert self.metric is not None and self.dataloader is not None
        session = make_session(model, intra_op_threads=self.intra_op_threads)
        specs = input_specs(session)
        metric = self.metric.create()
        for index, batch in enumerate(self.dataloader):
            if 0 <= self.iteration <= index:
                break
            inputs, labels = _split_batch(batch, index)
            preds = run_feed(session, make_feed(specs, inputs), where=f"evaluation batch {index}")
            if self.postprocess is not None:
                preds, labels = self.postprocess(preds, labels)
            metric.update(preds, labels)
        return metric.result()


class _BuiltinMetric:
    """Adapts a metric instance or YAML spec to ``create()`` (a fresh, reset metric per evaluation)."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self.name = type(metric).__name__
        self.higher_is_better = bool(getattr(metric, "higher_is_better", True))

    def create(self) -> Any:
        self._metric.reset()
        return self._metric


def _as_metric_factory(metric: Any) -> Any:
    if metric is None:
        return None
    if hasattr(metric, "create") and hasattr(metric, "metric_cls"):  # common.Metric
        return metric
    if isinstance(metric, dict):
        from lpot_ir.metrics import create_metric

        return _BuiltinMetric(create_metric(metric))
    if isinstance(metric, str):
        from lpot_ir.metrics import create_metric

        return _BuiltinMetric(create_metric({metric: None}))
    missing = [m for m in ("update", "reset", "result") if not callable(getattr(metric, m, None))]
    if missing:
        raise ConfigError(
            f"The metric {type(metric).__name__} has no {', '.join(missing)} method. Give a built-in metric name "
            "(e.g. 'topk' or {'topk': 1}), common.Metric(MyMetricClass), or an object with update/reset/result."
        )
    if isinstance(metric, type):
        from lpot_ir.common import Metric

        return Metric(metric)
    return _BuiltinMetric(metric)


def _split_batch(batch: Any, index: int) -> tuple[Any, Any]:
    if isinstance(batch, tuple) and len(batch) == 2:
        return batch
    raise EvaluationError(
        f"Evaluation batch {index} is a {type(batch).__name__}, not an (inputs, labels) pair. An evaluation "
        "dataloader must yield (inputs, labels); lpot_ir.common.DataLoader over (input, label) samples does."
    )


def _as_number(value: Any, where: str) -> float:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise EvaluationError(
            f"The {where} returned {type(value).__name__} {value!r:.60}, not a number. It must return the "
            "model's accuracy as one float."
        )
    number = float(value)
    if math.isnan(number):
        raise EvaluationError(f"The {where} returned NaN; it must return the model's accuracy as a finite number.")
    return number
