"""How accuracy is measured and compared, for tuning, ``Benchmark`` and the reports.

* :class:`Evaluator`: a user's ``eval_func``, or a dataloader + metric (+ postprocess). LPOT and Intel
  Neural Compressor hand an ONNX model's ``eval_func`` an ``onnx.ModelProto``; so does lpot-ir, so existing
  evaluation functions work unchanged.
* :func:`run_metric`: THE evaluation loop over a dataloader (used by :class:`Evaluator` and by
  ``Benchmark``'s accuracy mode): each batch runs in ONNX Runtime, its outputs (a list, one array per
  model output) and labels go through the postprocess, then into the metric. ``iteration`` N > 0 stops
  after N batches; 0 or -1 evaluates every batch.

The accuracy loss relative to the FP32 baseline is :func:`lpot_ir.metrics.relative.relative_loss` (one
definition for the loop, the strategies, the outcome, the reports and the demo).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.session import input_specs, make_feed, make_session, run_feed
from lpot_ir.common import Metric
from lpot_ir.errors import ConfigError, DataError, EvaluationError, first_line
from lpot_ir.ir.model import PROTOBUF_LIMIT, has_external_tensors, portable_proto, save_model, weight_bytes
from lpot_ir.metrics import create_metric

__all__ = ["Evaluator", "MetricRun", "first_line", "model_for_user", "run_metric", "split_batch"]

logger = logging.getLogger(__name__)


class Evaluator:
    """Measures a model's accuracy one way: ``eval_func`` or ``dataloader`` + ``metric``.

    Args:
        eval_func: ``f(onnx.ModelProto) -> float`` (for a model over 2 GB: ``f(path) -> float``, see
            :func:`model_for_user`).
        dataloader: evaluation batches of ``(inputs, labels)``.
        metric: a built-in metric instance (``update/reset/result``), a ``common.Metric`` wrapper, or a
            YAML metric spec such as ``{"topk": 1}``.
        postprocess: ``(preds, labels) -> (preds, labels)`` applied per batch.
        iteration: batches to evaluate (N > 0: the first N; 0 or -1: all).
        intra_op_threads: ONNX Runtime intra-op threads for the evaluation session.

    Raises:
        ConfigError: neither ``eval_func`` nor ``dataloader`` and ``metric`` are given.
    """

    def __init__(
        self,
        eval_func: Callable[[Any], Any] | None = None,
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
            EvaluationError: the result is None, not a number, NaN or infinite (a time limit is the
                executor's: ``tuning.exit_policy.eval_timeout``, lpot_ir/tuning/executors.py).
        """
        return _as_number(self._measure(model), self.description)

    def _measure(self, model: onnx.ModelProto) -> Any:
        if self.eval_func is None:
            return self._run_metric(model)
        with model_for_user(model) as given:
            return self.eval_func(given)

    def _run_metric(self, model: onnx.ModelProto) -> float:
        # __init__ guarantees both when there is no eval_func (the only case that gets here)
        assert self.metric is not None and self.dataloader is not None
        session = make_session(model, intra_op_threads=self.intra_op_threads)
        name = getattr(self.metric, "name", type(self.metric).__name__)
        run = run_metric(
            session, self.dataloader, self.metric.create(), postprocess=self.postprocess, iteration=self.iteration,
            name=name,
        )
        return run.value


@dataclass(frozen=True)
class MetricRun:
    """One pass of :func:`run_metric`.

    Attributes:
        value: the metric's result.
        batches: batches evaluated.
        samples: samples evaluated (first axis of the first input).
        batch_size: samples in the first batch.
        seconds: ONNX Runtime time of each batch (the metric's own time excluded).
    """

    value: float
    batches: int
    samples: int
    batch_size: int
    seconds: tuple[float, ...]


def run_metric(
    session: Any,
    batches: Iterable[Any],
    metric: Any,
    *,
    postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    iteration: int = -1,
    name: str = "metric",
) -> MetricRun:
    """Evaluate ``metric`` over ``batches`` of ``(inputs, labels)`` with an ONNX Runtime ``session``.

    Args:
        session: an ``onnxruntime.InferenceSession`` of the model.
        batches: ``(inputs, labels)`` pairs; inputs as :func:`~lpot_ir.backends.onnxruntime.make_feed` takes them.
        metric: a reset metric with ``update(preds, labels)`` and ``result()``.
        postprocess: ``(preds, labels) -> (preds, labels)`` per batch.
        iteration: N > 0 evaluates the first N batches; 0 or -1 every batch.
        name: the metric's name in error messages.

    Raises:
        DataError: a batch is not an ``(inputs, labels)`` pair or does not fit the model.
        EvaluationError: the postprocess or the metric raised, or the result is not a number.
    """
    specs = input_specs(session)
    seconds: list[float] = []
    samples = batch_size = 0
    for index, item in enumerate(batches):
        if 0 < iteration <= index:
            break
        inputs, labels = split_batch(item, index)
        feed = make_feed(specs, inputs)
        start = time.perf_counter()
        preds: Any = run_feed(session, feed, where=f"evaluation batch {index}")
        seconds.append(time.perf_counter() - start)
        first = next(iter(feed.values()))
        count = int(first.shape[0]) if first.ndim else 1
        batch_size = batch_size or count
        samples += count
        try:
            if postprocess is not None:
                preds, labels = postprocess(preds, labels)
            metric.update(preds, labels)
        except Exception as exc:  # a user's postprocess or metric may raise anything
            raise EvaluationError(
                f"The metric {name} raised {type(exc).__name__} in update() on batch {index}: {exc}. "
                "It receives the model's outputs as a list (one array per output) and the batch's labels."
            ) from exc
    if not seconds:
        raise DataError("The evaluation dataloader yielded no batches; give it at least one (inputs, labels) pair.")
    try:
        result = metric.result()
    except Exception as exc:  # a user's metric may raise anything
        raise EvaluationError(f"The metric {name} raised {type(exc).__name__} in result(): {exc}") from exc
    return MetricRun(_as_number(result, f"metric {name}"), len(seconds), samples, batch_size, tuple(seconds))


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
        return _BuiltinMetric(create_metric(metric))
    if isinstance(metric, str):
        return _BuiltinMetric(create_metric({metric: None}))
    missing = [m for m in ("update", "reset", "result") if not callable(getattr(metric, m, None))]
    if missing:
        raise ConfigError(
            f"The metric {type(metric).__name__} has no {', '.join(missing)} method. Give a built-in metric name "
            "(e.g. 'topk' or {'topk': 1}), common.Metric(MyMetricClass), or an object with update/reset/result."
        )
    if isinstance(metric, type):
        return Metric(metric)
    return _BuiltinMetric(metric)


def split_batch(item: Any, index: int, *, need_labels: bool = True) -> tuple[Any, Any]:
    """``(inputs, labels)`` of one evaluation dataloader item (``labels`` is ``None`` for a bare item when
    ``need_labels`` is False).

    Raises:
        DataError: the item is not an ``(inputs, labels)`` pair (and labels are needed).
    """
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1]
        raise DataError(
            f"Dataloader item {index} is a {type(item).__name__} of {len(item)} values, not an (inputs, labels) "
            "pair; inputs is an array, a tuple of arrays (one per model input) or a dict by input name."
        )
    if need_labels:
        raise DataError(
            f"Dataloader item {index} is a bare {type(item).__name__}, but evaluating a metric needs (inputs, labels) "
            "pairs to feed it. Make the dataloader yield (inputs, labels); lpot_ir.common.DataLoader over (input, "
            "label) samples does."
        )
    return item, None


def _as_number(value: Any, where: str) -> float:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if value is None:
        raise EvaluationError(
            f"The {where} returned None, not a number (a missing return statement?). It must return the "
            "model's accuracy as one float."
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise EvaluationError(
            f"The {where} returned {type(value).__name__} {value!r:.60}, not a number. It must return the "
            "model's accuracy as one float."
        )
    number = float(value)
    if not math.isfinite(number):
        raise EvaluationError(
            f"The {where} returned {number}; it must return the model's accuracy as a finite number (a NaN or "
            "an infinity usually means the model's outputs overflowed or the metric divided by zero)."
        )
    return number


@contextlib.contextmanager
def model_for_user(model: onnx.ModelProto) -> Iterator[onnx.ModelProto | str]:
    """``model`` as the user's ``eval_func`` receives it: a self-contained ``onnx.ModelProto``.

    Inside lpot-ir, weights of a large model stay in their external data files, referred to by absolute
    paths that ONNX Runtime refuses; they are read into the proto here. A model whose weights exceed
    protobuf's 2 GB limit cannot be one proto: it is saved with external data in a temporary folder
    (removed afterwards) and the ``eval_func`` receives the path of its ``.onnx`` file, which
    ``onnxruntime.InferenceSession(path)`` loads (docs/usage.md, "Models over 2 GB").
    """
    if not has_external_tensors(model):
        yield model
    elif weight_bytes(model) < PROTOBUF_LIMIT:
        yield portable_proto(model)
    else:
        with tempfile.TemporaryDirectory(prefix="lpot_ir_candidate_") as folder:
            yield str(save_model(model, Path(folder) / "model.onnx", external_data=True))
