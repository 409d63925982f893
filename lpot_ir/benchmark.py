"""LPOT's Benchmark API: measure a model's performance or accuracy with ONNX Runtime.

Example::

    from lpot_ir import Benchmark

    evaluator = Benchmark("conf.yaml")          # or a Config, a dict, or None for the defaults
    evaluator.model = "model.onnx"              # path, bytes, onnx.ModelProto, onnx_ir.Model, a quantized
                                                # model (its .model), or a framework model (converted)
    evaluator.b_dataloader = dataloader         # (inputs, labels) batches
    result = evaluator.fit()                    # or evaluator(), evaluator(mode="accuracy")
    print(result)                               # a table; result.to_dict() for data

Performance mode reads ``evaluation.performance`` (``warmup``, ``iteration``, ``configs.cores_per_instance``,
``configs.num_of_instance``) and returns a
:class:`~lpot_ir.backends.onnxruntime.benchmarking.PerformanceResult`; several instances each run in their
own process pinned to their own cores. Accuracy mode runs every batch (or ``evaluation.accuracy.iteration``
batches) once in this process, feeds the outputs (a list, one array per model output) and labels to the
metric (``evaluator.metric``, or ``evaluation.accuracy.metric`` of the YAML), and returns an
:class:`AccuracyResult` that also carries the latency of those batches.

Batches: each item of the dataloader is ``(inputs, labels)``; ``inputs`` is an array (one model input), a
tuple/list (one array per input, in order) or a dict by input name. A bare array or dict counts as inputs
without labels (performance mode only). Without a dataloader (none set, none in the YAML), performance
mode times synthetic input of batch size 1 (see ``lpot_ir.backends.onnxruntime.synthetic_inputs``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from lpot_ir.backends.onnxruntime.benchmarking import (
    LatencyStats,
    PerformanceResult,
    benchmark_model,
    format_table,
    plan_instances,
)
from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.config import create_dataloader, load_config
from lpot_ir.config.schema import PerformanceSection
from lpot_ir.data.transforms import create_postprocess
from lpot_ir.errors import ConfigError, DataError, EvaluationError
from lpot_ir.frontends import resolve_model, unwrap_model
from lpot_ir.metrics import create_metric
from lpot_ir.tuning.evaluation import run_metric, split_batch

__all__ = ["Benchmark", "AccuracyResult", "PerformanceResult", "BenchmarkResult", "MODES"]

logger = logging.getLogger(__name__)

MODES = ("performance", "accuracy")


@dataclass(frozen=True)
class AccuracyResult:
    """The result of an accuracy benchmark (LPOT's ``mode='accuracy'``).

    Attributes:
        accuracy: the metric's ``result()``.
        metric: the metric's name.
        batches: batches evaluated.
        samples: samples evaluated.
        batch_size: samples in the first batch.
        latency_p50_ms, latency_p90_ms, latency_p99_ms, latency_mean_ms: per-batch inference latency.
        throughput: samples per second of inference (metric time excluded).
        cores_per_instance: intra-op threads of the session.
    """

    accuracy: float
    metric: str
    batches: int
    samples: int
    batch_size: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    throughput: float
    cores_per_instance: int
    instances: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types)."""
        return {**asdict(self), "mode": "accuracy"}

    def __str__(self) -> str:
        rows = [
            (f"accuracy ({self.metric})", f"{self.accuracy:.4f}"),
            ("batches", self.batches),
            ("samples", self.samples),
            ("batch size", self.batch_size),
            ("latency p50 (ms/batch)", self.latency_p50_ms),
            ("latency p90 (ms/batch)", self.latency_p90_ms),
            ("latency p99 (ms/batch)", self.latency_p99_ms),
            ("latency mean (ms/batch)", self.latency_mean_ms),
            ("throughput (samples/s)", self.throughput),
            ("instances", self.instances),
            ("cores per instance", self.cores_per_instance),
        ]
        return format_table(("accuracy", "value"), rows)


BenchmarkResult = PerformanceResult | AccuracyResult
"""What :meth:`Benchmark.fit` returns."""


class Benchmark:
    """LPOT's ``Benchmark``: performance (latency, throughput, instances x cores) or accuracy of a model.

    Args:
        conf_fname_or_obj: a YAML path, YAML text, a dict, a :class:`lpot_ir.config.Config`, or ``None``
            for the defaults.

    Raises:
        ConfigError: the configuration does not fit the schema.
    """

    def __init__(self, conf_fname_or_obj: Any = None) -> None:
        self.conf = load_config(conf_fname_or_obj)
        self._model: Any = None
        self._converted: tuple[Any, Any] | None = None  # (framework model, its ONNX conversion)
        self.b_dataloader: Iterable[Any] | None = None
        self.metric: Any = None
        self.postprocess: Any = None

    @property
    def model(self) -> Any:
        """The model: a path, bytes, ``onnx.ModelProto``, ``onnx_ir.Model``, an object holding one in
        ``.model`` (a quantized model), or a framework model (converted by ``lpot_ir.frontends.to_onnx``)."""
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = unwrap_model(value)

    def __call__(self, mode: str = "performance") -> BenchmarkResult:
        """Same as :meth:`fit`."""
        return self.fit(mode)

    def fit(self, mode: str = "performance") -> BenchmarkResult:
        """Run the benchmark.

        Args:
            mode: ``performance`` or ``accuracy``.

        Returns:
            A :class:`PerformanceResult` or an :class:`AccuracyResult`.

        Raises:
            ConfigError: unknown mode, no model, no metric in accuracy mode, too many cores requested.
            DataError: a batch does not fit the model.
            EvaluationError: the metric raised.
            ModelLoadError, ConversionError: the model cannot be loaded or converted.
        """
        if mode not in MODES:
            raise ConfigError(f"Benchmark mode must be one of {', '.join(MODES)}, got {mode!r}.")
        if self._model is None:
            raise ConfigError(
                "Benchmark has no model: set evaluator.model = <path, bytes, onnx.ModelProto, onnx_ir.Model or a "
                "framework model> before calling fit()."
            )
        if mode == "performance":
            return self._performance()
        return self._accuracy()

    # -- data and model ------------------------------------------------------------------------------

    def _dataloader(self, mode: str) -> Iterable[Any] | None:
        if self.b_dataloader is not None:
            return self.b_dataloader
        evaluation = self.conf.evaluation
        section = getattr(evaluation, mode, None)
        if section is not None and section.dataloader is not None:
            framework = self.conf.model.framework
            return create_dataloader(section.dataloader, framework=str(framework) if framework is not None else None)
        return None

    def _onnx_model(self, example_inputs: Any) -> Any:
        model = self._model
        if self._converted is not None and self._converted[0] is model:
            return self._converted[1]
        framework = self.conf.model.framework
        converted = resolve_model(
            model,
            framework=getattr(framework, "value", framework) if framework is not None else None,
            example_inputs=example_inputs,
            inputs=list(self.conf.model.inputs) or None,
            outputs=list(self.conf.model.outputs) or None,
            params=self.conf.model.params,
        )
        self._converted = (model, converted.model)
        return converted.model

    # -- modes ---------------------------------------------------------------------------------------

    def _performance(self) -> PerformanceResult:
        section = self.conf.evaluation.performance
        if section is None:
            section = PerformanceSection()
        configs = section.configs
        loader = self._dataloader("performance")
        batches: list[Any] | None = None
        if loader is not None:
            limit = section.warmup + section.iteration if section.iteration > 0 else None
            batches = []
            for index, item in enumerate(loader):
                if limit is not None and index >= limit:
                    break
                batches.append(split_batch(item, index, need_labels=False)[0])
            if not batches:
                raise DataError("The benchmark dataloader yielded no batches; give it at least one.")
        model = self._onnx_model(batches[0] if batches else None)
        cores = configs.intra_num_of_threads or configs.cores_per_instance
        return benchmark_model(
            model,
            batches,
            warmup=section.warmup,
            iterations=section.iteration,
            cores_per_instance=cores,
            num_instances=configs.num_of_instance,
        )

    def _make_metric(self) -> tuple[Any, str]:
        metric = self.metric
        accuracy = self.conf.evaluation.accuracy
        if metric is None and accuracy is not None and accuracy.metric:
            metric = create_metric(accuracy.metric)
            return metric, next(iter(accuracy.metric))
        if metric is None:
            raise ConfigError(
                "Accuracy mode needs a metric: set evaluator.metric = <object with update(preds, labels), reset() "
                "and result()>, or give evaluation.accuracy.metric in the YAML (e.g. {topk: 1})."
            )
        if hasattr(metric, "create") and not hasattr(metric, "update"):  # lpot_ir.common.Metric
            name = getattr(metric, "name", type(metric).__name__)
            return metric.create(), name
        missing = [m for m in ("update", "reset", "result") if not callable(getattr(metric, m, None))]
        if missing:
            raise ConfigError(
                f"evaluator.metric ({type(metric).__name__}) has no {', '.join(missing)} method; a metric needs "
                "update(preds, labels), reset() and result()."
            )
        return metric, getattr(metric, "name", None) or type(metric).__name__

    def _postprocess(self) -> Any:
        if self.postprocess is not None:
            return self.postprocess
        accuracy = self.conf.evaluation.accuracy
        if accuracy is not None and accuracy.postprocess is not None and accuracy.postprocess.transform:
            return create_postprocess(accuracy.postprocess.transform)
        return None

    def _accuracy(self) -> AccuracyResult:
        accuracy = self.conf.evaluation.accuracy
        loader = self._dataloader("accuracy")
        if loader is None:
            raise ConfigError(
                "Accuracy mode needs data: set evaluator.b_dataloader to an iterable of (inputs, labels) batches, "
                "or give evaluation.accuracy.dataloader in the YAML."
            )
        metric, metric_name = self._make_metric()
        postprocess = self._postprocess()
        configs = accuracy.configs if accuracy is not None else None
        cores = None
        if configs is not None and configs.num_of_instance > 1:
            logger.info("accuracy mode runs one instance; num_of_instance=%d applies to performance mode",
                        configs.num_of_instance)
        if configs is not None:
            cores = configs.intra_num_of_threads or configs.cores_per_instance
            if cores is not None:
                plan_instances(1, cores)  # the same core check as performance mode
        iterator = iter(loader)
        try:
            first = next(iterator)
        except StopIteration:
            raise DataError("The accuracy dataloader yielded no batches; give it at least one.") from None
        first_inputs, _ = split_batch(first, 0)
        session = make_session(self._onnx_model(first_inputs), intra_op_threads=cores, inter_op_threads=1)
        try:
            metric.reset()
        except Exception as exc:  # a user's metric may raise anything
            raise EvaluationError(f"The metric's reset() raised {type(exc).__name__}: {exc}") from None
        run = run_metric(
            session, itertools.chain([first], iterator), metric, postprocess=postprocess,
            iteration=accuracy.iteration if accuracy is not None else -1, name=metric_name,
        )
        value, seconds, samples, batch_size = run.value, run.seconds, run.samples, run.batch_size
        stats = LatencyStats.from_seconds(seconds)
        total = float(sum(seconds))
        return AccuracyResult(
            accuracy=value,
            metric=metric_name,
            batches=len(seconds),
            samples=samples,
            batch_size=batch_size,
            latency_p50_ms=stats.p50_ms,
            latency_p90_ms=stats.p90_ms,
            latency_p99_ms=stats.p99_ms,
            latency_mean_ms=stats.mean_ms,
            throughput=samples / total if total > 0 else float("inf"),
            cores_per_instance=cores or session.get_session_options().intra_op_num_threads or len(plan_instances(1)[0]),
        )
