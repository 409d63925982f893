"""The accuracy-driven tuning loop: propose -> quantize -> evaluate -> measure -> record -> observe.

:func:`tune` runs it::

    FP32 baseline (evaluated once, where the candidates are; recorded in the history header, reused on resume)
    strategy = get_strategy(name)(space, context, seed=random_seed, **options)
    strategy.batch_size = executor.capacity   # how many evaluations run at once (tuning.workers)
    until the exit policy says stop:                       (lpot_ir.tuning.trials.TrialRunner)
        configs = strategy.propose_batch(free workers)   # None: the space is exhausted; []: wait for results
        for each: replayed from the history?  -> the recorded result, no evaluation
                  else quantize (here), submit the model to the executor (lpot_ir.tuning.executors)
        as evaluations finish: measure objectives (here); append to the history at once (fsync)
        strategy.observe(result)
    best = the goal-meeting trial with the best objective (ties: next objective), else the most
           accurate one with a warning; it is re-quantized, saved with its recipe, and reported.

With one worker (the default) this is one trial at a time in the tuning process. With more (local
worker processes or Ray, docs/distributed.md), the strategy proposes batches and the loop keeps the
workers busy; each history line records the worker that evaluated the trial.

Exit policy: ``timeout: 0`` stops at the first trial that meets the accuracy criterion (the first in
the order of proposal); a positive ``timeout`` (seconds, counting the time of resumed trials) and
``max_trials`` (trials recorded, resumed ones included) bound the search; an exhausted strategy ends it.
No configuration is evaluated twice (the strategy base class never re-proposes a known key, and the
loop checks again). ``eval_timeout`` bounds each evaluation.

An ``eval_func`` (or metric) that raises on a candidate, returns None, NaN or an infinity, or runs longer
than ``exit_policy.eval_timeout`` seconds marks that trial failed with the reason, and tuning goes on. If
it fails on the FP32 model, :class:`EvaluationError` explains it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.batching import feeds_from_batches
from lpot_ir.backends.onnxruntime.synthetic import synthetic_inputs
from lpot_ir.errors import ConfigError, EvaluationError, LpotError
from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.metrics.relative import relative_loss
from lpot_ir.strategies import TrialResult
from lpot_ir.tuning.checks import check_tuning_config
from lpot_ir.tuning.evaluation import Evaluator, first_line
from lpot_ir.tuning.executors import (
    EvalExecutor,
    make_executor,
    shipped_evaluation,
    ships_evaluation,
    where_evaluations_run,
)
from lpot_ir.tuning.finalize import finalize, finalize_without_tuning
from lpot_ir.tuning.history import HISTORY_FILE, HistoryHeader, TuningHistory
from lpot_ir.tuning.latency import LatencyModel, build_latency_model, cached_latency_model
from lpot_ir.tuning.objectives import ObjectiveMeter
from lpot_ir.tuning.outcome import BEST_MODEL_FILE, TuningOutcome, choose_best
from lpot_ir.tuning.proxy import DistanceReading, OutputDistance
from lpot_ir.tuning.report import prefetch_plotting
from lpot_ir.tuning.sensitivity import SensitivityMeter, TensorError
from lpot_ir.tuning.space import SpaceBuild, build_space
from lpot_ir.tuning.tensorboard import TensorBoardWriter
from lpot_ir.tuning.trials import TrialRunner

__all__ = ["TuningOutcome", "LoopContext", "tune", "run_key", "choose_best", "BEST_MODEL_FILE"]

logger = logging.getLogger(__name__)

LATENCY_FILE = "latency_model.json"
PROXY_SAMPLES = 256
"""Calibration samples (at most) the accuracy proxy compares FP32 and candidate outputs on."""
ADVICE_EVALUATIONS = 5.0
"""Proxy, sensitivity and profiling work together may take this many FP32 evaluations' time."""
PROXY_READING_SHARE = 0.1
"""One proxy reading's FP32 run may take at most this share of an FP32 evaluation (fewer feeds if longer)."""


@dataclass
class LoopContext:
    """The :class:`~lpot_ir.strategies.StrategyContext` the loop gives strategies.

    Everything here but the goal test is *advice*: proxy readings, sensitivity measurements and the
    latency model cost time but no evaluation. Together they get a budget of ``advice_budget`` units,
    fixed when the run starts (:func:`plan_advice`: :data:`ADVICE_EVALUATIONS` FP32 evaluations' worth,
    one unit being one proxy reading) and stored in the history, so a resumed run decides the same way.
    Once it is spent, ``distance`` answers only from its cache, the sensitivity and latency methods
    return nothing, and strategies go on with evaluations alone.

    Attributes:
        baseline_accuracy: the FP32 model's accuracy.
        criterion: the ``AccuracyCriterion`` (relative or absolute, higher_is_better).
        sensitivity: measures per-node error for a configuration (one instrumented run); a
            :class:`SensitivityMeter` also gives per-tensor errors (``tensor_sensitivity``).
        proxy: the label-free output distance (:class:`~lpot_ir.tuning.proxy.OutputDistance`) behind
            ``distance``.
        latency_builder: ``config -> LatencyModel`` (profiles FP32 and ``config``'s INT8 model).
        baseline_latency: the FP32 model's measured latency (the ``performance`` objective), if measured.
        advice_budget: units the advice may use in all (``inf``: no limit).
        sensitivity_units: what one sensitivity measurement costs, in units.
        latency_units: what building the latency model costs, in units.
        advice_used: units used so far.
        advice_seconds: wall seconds the advice took (for the report).
        trial_observers: called after each evaluated trial with ``(index, config, quantized model or None,
            result)`` (e.g. the TensorBoard writer); one that raises is logged and tuning goes on.
    """

    baseline_accuracy: float
    criterion: Any
    sensitivity: Callable[[TuningConfig], dict[str, float]] | None = None
    higher_is_better: bool = True
    sensitivity_calls: int = 0
    proxy: OutputDistance | None = None
    latency_builder: Callable[[TuningConfig], LatencyModel] | None = None
    baseline_latency: float | None = None
    advice_budget: float = math.inf
    sensitivity_units: float = 1.0
    latency_units: float = 1.0
    advice_used: float = 0.0
    advice_seconds: float = 0.0
    trial_observers: list[Callable[[int, TuningConfig, Any, TrialResult], None]] = field(default_factory=list)

    # -- the budget ------------------------------------------------------------------------------

    def advice_left(self) -> float:
        """Units of advice left (never negative)."""
        return max(0.0, self.advice_budget - self.advice_used)

    def _charged(self, units: float, work: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        self.advice_used += units
        try:
            return work()
        finally:
            self.advice_seconds += time.perf_counter() - began

    # -- the goal ----------------------------------------------------------------------------------

    def meets_goal(self, accuracy: float) -> bool:
        if accuracy is None or not math.isfinite(accuracy):
            return False
        return bool(self.criterion.is_met(self.baseline_accuracy, accuracy))

    @property
    def allowed_loss(self) -> float | None:
        """The relative accuracy loss the criterion allows (an absolute criterion is divided by the baseline)."""
        base = float(self.baseline_accuracy)
        threshold = float(self.criterion.threshold(base))
        if base == 0 or not math.isfinite(threshold):
            return None
        return abs(base - threshold) / abs(base)

    def relative_loss(self, accuracy: float | None) -> float | None:
        """Accuracy lost relative to the baseline (positive = worse), sign-adjusted for the direction."""
        return relative_loss(self.baseline_accuracy, accuracy, higher_is_better=self.higher_is_better)

    # -- advice --------------------------------------------------------------------------------------

    def distance(self, config: TuningConfig) -> DistanceReading | None:
        """How far ``config``'s outputs are from FP32's on calibration feeds (``None``: no proxy or budget)."""
        if self.proxy is None:
            return None
        known = self.proxy.cached(config)
        if known is not None:
            return known
        if self.advice_left() <= 0:
            return None
        proxy = self.proxy
        return self._charged(1.0, lambda: proxy(config))

    def tensor_sensitivity(self, config: TuningConfig) -> list[TensorError]:
        """Per-quantized-tensor errors with the nodes that quantize each (largest first; same run as
        :meth:`op_sensitivity`, cached)."""
        measure = getattr(self.sensitivity, "measure", None)
        if measure is None or self.advice_left() <= 0:
            return []
        try:
            return list(self._charged(self._sensitivity_cost(config), lambda: measure(config)).tensors)
        except Exception as exc:
            logger.warning("tensor sensitivity could not be measured (%s)", first_line(exc))
            return []
        finally:
            self.sensitivity_calls = int(getattr(self.sensitivity, "calls", self.sensitivity_calls))

    def op_sensitivity(self, config: TuningConfig) -> dict[str, float]:
        sensitivity = self.sensitivity
        if sensitivity is None or self.advice_left() <= 0:
            return {}
        self.sensitivity_calls += 1
        try:
            return self._charged(self._sensitivity_cost(config), lambda: sensitivity(config))
        except Exception as exc:  # a measurement problem must not end tuning: strategies then use model order
            logger.warning("op sensitivity could not be measured (%s); strategies fall back to model order", first_line(exc))
            return {}
        finally:
            self.sensitivity_calls = int(getattr(sensitivity, "calls", self.sensitivity_calls))

    def latency_model(self, config: TuningConfig) -> LatencyModel | None:
        """The latency model, from profiles of FP32 and of ``config`` quantized (``None``: not available)."""
        builder = self.latency_builder
        if builder is None or self.advice_left() <= 0:
            return None
        return self._charged(self.latency_units, lambda: builder(config))

    def _sensitivity_cost(self, config: TuningConfig) -> float:
        cached = getattr(self.sensitivity, "is_cached", None)
        return 0.0 if cached is not None and cached(config) else self.sensitivity_units


def run_key(build: SpaceBuild, config: Any, fp32_digest: str, evaluator: Evaluator | None) -> tuple[str, dict[str, Any]]:
    """Content key of a run: what decides which trials happen and how they are judged."""
    tuning = config.tuning
    space = build.space
    details = {
        "fp32_model_digest": fp32_digest,
        "base": space.base.to_dict(),
        "model_wise": [c.to_dict() for c in space.model_wise],
        "sampling_sizes": list(space.sampling_sizes),
        "nodes": [n.name for n in space.nodes],
        "strategy": tuning.strategy.name,
        "strategy_options": tuning.strategy.options,
        "random_seed": tuning.random_seed,
        "accuracy_criterion": dataclasses.asdict(tuning.accuracy_criterion),
        "objectives": [[str(n.value if hasattr(n, "value") else n), w] for n, w in tuning.objectives],
        "evaluation": evaluator.description if evaluator is not None else "none",
    }
    text = json.dumps(details, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], details


def _objective_weights(config: Any) -> list[tuple[str, float]]:
    return [(n.value if hasattr(n, "value") else str(n), float(w)) for n, w in config.tuning.objectives]


def _first_feed(
    quantizer: Any, evaluator: Evaluator | None, model: onnx.ModelProto, *, limit: int = 64, synthetic: bool = True
) -> list[dict[str, np.ndarray]]:
    """Input batches for sensitivity and objectives: calibration data, else evaluation data, else synthetic."""
    for source in (getattr(quantizer, "calib_dataloader", None), getattr(evaluator, "dataloader", None)):
        if source is not None and iter(source) is not source:  # a one-shot iterator must be left alone
            feeds = feeds_from_batches(source, model, limit=limit, batch_axes=getattr(quantizer, "batch_axes", None))
            if feeds:
                return feeds
    if not synthetic:
        return []
    try:
        return [synthetic_inputs(model, batch_size=1, seed=0)]
    except LpotError as exc:
        logger.warning("no input data for latency and sensitivity measurements (%s)", exc)
        return []


def tune(
    config: Any,
    quantizer: Any,
    evaluator: Evaluator | None,
    *,
    original_model: onnx.ModelProto | None = None,
    progress: bool = True,
    eval_model: Callable[[onnx.ModelProto], Any] | None = None,
) -> TuningOutcome:
    """Run accuracy-driven tuning.

    Args:
        config: the :class:`~lpot_ir.config.Config`.
        quantizer: a ``ModelQuantizer`` for the model (with its calibration data).
        evaluator: measures accuracy; ``None`` (or ``exit_policy.performance_only``) quantizes the
            default configuration without accuracy tuning.
        original_model: the FP32 model as the user gave it (baseline accuracy and speedup); default
            the quantizer's optimized FP32 model.
        progress: show a progress bar over trials.

    Returns:
        The :class:`TuningOutcome`; its ``model`` is never ``None``.

    Raises:
        EvaluationError: evaluating the FP32 model raised.
        ConfigError: a bad strategy name/option, op_wise key, or a resume history from another run.
    """
    start = time.perf_counter()
    tuning = config.tuning
    strategy_cls = check_tuning_config(config)  # configuration errors before any model runs
    accuracy_tuning = evaluator is not None and not tuning.exit_policy.performance_only
    shipped = None
    if accuracy_tuning and ships_evaluation(tuning):  # an evaluation workers cannot receive: say so before any work
        shipped = shipped_evaluation(evaluator, where_evaluations_run(tuning))
    prefetch_plotting()
    workspace = Path(tuning.workspace.path)
    workspace.mkdir(parents=True, exist_ok=True)
    fp32_proto = original_model if original_model is not None else to_proto(quantizer.fp32_model)
    optimized_proto = to_proto(quantizer.fp32_model)
    build = build_space(config, quantizer.nodes, quantizer.fp32_model)
    weights = _objective_weights(config)
    feeds = _first_feed(quantizer, evaluator, optimized_proto, limit=PROXY_SAMPLES, synthetic=False)
    real_data = bool(feeds)  # the accuracy proxy needs real inputs, never synthetic ones
    feeds = feeds or _first_feed(quantizer, evaluator, optimized_proto)
    meter = ObjectiveMeter([n for n, _ in weights], feeds[0] if feeds else None)

    if evaluator is None or tuning.exit_policy.performance_only:
        return finalize_without_tuning(config, quantizer, build, meter, fp32_proto, workspace, feeds, start)

    key, details = run_key(build, config, quantizer.fp32_digest, evaluator)
    history = TuningHistory(workspace / HISTORY_FILE)
    with make_executor(tuning, evaluator, shipped) as executor:
        logger.info("evaluations run %s", executor.description)
        runner, context, strategy, baseline_objectives = _search(
            config, strategy_cls, quantizer, evaluator, executor, build, key, details, history, meter, feeds,
            real_data, optimized_proto, fp32_proto, workspace, start, progress,
        )  # fmt: skip
    outcome = finalize(
        config=config,
        quantizer=quantizer,
        build=build,
        context=context,
        trials=runner.considered(),
        weights=weights,
        baseline_objectives=baseline_objectives,
        fp32_proto=fp32_proto,
        workspace=workspace,
        feeds=feeds,
        stop_reason=runner.stop_reason,
        evaluated=runner.evaluated,
        replayed=runner.replayed,
        start=start,
        history_path=history.path,
        strategy_name=strategy_cls.name or tuning.strategy.name,
        strategy_notes=dict(strategy.notes),
    )
    outcome.proxy_readings = context.proxy.runs if context.proxy is not None else 0
    outcome.advice_seconds = context.advice_seconds
    if outcome.proxy_readings:
        logger.info(
            "accuracy proxy: %d reading(s) on calibration feeds (not evaluations); advice took %.1f s",
            outcome.proxy_readings, context.advice_seconds,
        )  # fmt: skip
    return outcome


def _search(
    config: Any,
    strategy_cls: Any,
    quantizer: Any,
    evaluator: Evaluator,
    executor: EvalExecutor,
    build: SpaceBuild,
    key: str,
    details: dict[str, Any],
    history: TuningHistory,
    meter: ObjectiveMeter,
    feeds: list[dict[str, np.ndarray]],
    real_data: bool,
    optimized_proto: onnx.ModelProto,
    fp32_proto: onnx.ModelProto,
    workspace: Path,
    start: float,
    progress: bool,
) -> tuple[TrialRunner, LoopContext, Any, dict[str, float]]:
    """The baseline, the context and the strategy, then the trials (:class:`TrialRunner`) on ``executor``."""
    tuning = config.tuning
    recorded: list[TrialResult] = []
    eval_seconds = math.nan
    if tuning.workspace.resume:
        header, recorded = _read_resume(Path(tuning.workspace.resume), key, details)
        baseline, baseline_objectives = header.baseline_accuracy, header.baseline_objectives
        logger.info("resuming: %d finished trial(s) from %s", len(recorded), tuning.workspace.resume)
    else:
        baseline, eval_seconds = _evaluate_baseline(executor, evaluator, fp32_proto)
        baseline_objectives = meter(fp32_proto)
        header = HistoryHeader(key, baseline, baseline_objectives, details)

    quantize = QuantizeCache(lambda config: quantizer.quantize(config, reuse_recovery=True))
    context = LoopContext(
        baseline_accuracy=baseline,
        criterion=tuning.accuracy_criterion,
        higher_is_better=bool(tuning.accuracy_criterion.higher_is_better and evaluator.higher_is_better),
        baseline_latency=baseline_objectives.get("performance"),
    )
    context.criterion = _criterion_with_direction(tuning.accuracy_criterion, context.higher_is_better)
    if feeds:
        if real_data:
            context.proxy = _make_proxy(optimized_proto, quantize, feeds)
        groups = build.space.fallback_groups

        def latency_builder(c: TuningConfig) -> LatencyModel:
            return cached_latency_model(
                workspace / LATENCY_FILE,
                f"{key}:{c.key()}",
                lambda: build_latency_model(optimized_proto, quantize(c).model, groups, feeds[0]),
            )

        context.latency_builder = latency_builder
    plan = header.advice or plan_advice(eval_seconds, context.proxy, quantize, build.space.model_wise_configs()[0])
    _apply_plan(context, plan)
    if feeds:  # the sensitivity measurement chooses its samples among the proxy's feeds: same cost scale
        context.sensitivity = SensitivityMeter(
            optimized_proto,
            quantize,
            context.proxy.feeds if context.proxy else feeds,
            batch_axes=getattr(quantizer, "batch_axes", None),
        )
    header = dataclasses.replace(header, advice=dict(plan))
    history.start(header, recorded)
    if tuning.tensorboard:
        context.trial_observers.append(
            TensorBoardWriter(workspace, optimized_proto, feeds, batch_axes=getattr(quantizer, "batch_axes", None))
        )
    strategy = strategy_cls(build.space, context, seed=tuning.random_seed, **dict(tuning.strategy.options))
    strategy.batch_size = executor.capacity
    bar = _progress_bar(progress, tuning.exit_policy.max_trials)
    runner = TrialRunner(
        strategy=strategy,
        executor=executor,
        quantize=quantize,
        meter=meter,
        context=context,
        history=history,
        exit_policy=tuning.exit_policy,
        recorded=recorded,
        start=start,
        progress=None if bar is None else (lambda trials: _update_bar(bar, trials, context)),
    )
    try:
        runner.run()
    finally:
        if bar is not None:
            bar.close()
    return runner, context, strategy, baseline_objectives


class QuantizeCache:
    """``quantizer.quantize`` with the last few results kept by configuration key.

    The strategy's proxy reading, the sensitivity measurement and the trial itself often quantize the
    same configuration one after the other; quantization is deterministic, so it is done once.
    """

    def __init__(self, quantize: Callable[[TuningConfig], Any], size: int = 4) -> None:
        self._quantize = quantize
        self._size = size
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def __call__(self, config: TuningConfig) -> Any:
        key = config.key()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        return self.fresh(config)

    def fresh(self, config: TuningConfig) -> Any:
        """Quantize ``config`` even if a result is cached (to time it), and cache the result."""
        key = config.key()
        result = self._quantize(config)
        self._cache[key] = result
        self._cache.move_to_end(key)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return result


def _make_proxy(model: onnx.ModelProto, quantize: Callable[[TuningConfig], Any], feeds: list[dict[str, np.ndarray]]) -> OutputDistance | None:
    try:
        proxy = OutputDistance(model, quantize, feeds)
    except Exception as exc:  # the proxy is advice: without it, tuning goes on with evaluations
        logger.warning("the accuracy proxy is not available (%s); tuning uses evaluations only", first_line(exc))
        return None
    logger.info("accuracy proxy: output '%s' compared as %s", proxy.output_name, proxy.kind)
    return proxy


def plan_advice(
    eval_seconds: float, proxy: OutputDistance | None, quantize: QuantizeCache, config: TuningConfig
) -> dict[str, float]:
    """Fix the advice budget in units of one proxy reading, from what things cost on this model.

    One FP32 evaluation took ``eval_seconds``. The proxy keeps as many feeds as one FP32 run can go
    through in :data:`PROXY_READING_SHARE` of that; a reading costs that run plus one quantization
    (timed here, after the calibration it needs); a sensitivity measurement about one quantization
    and three such runs; the latency model one quantization and two short profiled runs. The budget is
    :data:`ADVICE_EVALUATIONS` evaluations' worth. Without a measured evaluation time (nothing to
    relate to) the budget is unlimited.
    """
    if not math.isfinite(eval_seconds) or eval_seconds <= 0:
        return {"units": math.inf, "sensitivity_units": 1.0, "latency_units": 1.0}
    run = 0.0
    if proxy is not None:
        proxy.limit_feeds(PROXY_READING_SHARE * eval_seconds)
        run = proxy.reference_seconds
    try:
        quantize(config)  # calibration happens here, once
        began = time.perf_counter()
        quantize.fresh(config)
        quantize_seconds = max(time.perf_counter() - began, 1e-3)
    except Exception:  # the first trial will report what is wrong
        quantize_seconds = eval_seconds * PROXY_READING_SHARE
    reading = max(run + quantize_seconds, 1e-3)
    plan = {
        "units": ADVICE_EVALUATIONS * eval_seconds / reading,
        "sensitivity_units": (quantize_seconds + 3 * run) / reading,
        "latency_units": (quantize_seconds + 2 * run) / reading,
        "eval_seconds": eval_seconds,
    }
    if proxy is not None:
        plan["proxy_feeds"] = float(len(proxy.feeds))
    logger.info(
        "advice budget: %.0f proxy reading(s) worth (evaluation %.2f s, reading ~%.2f s)", plan["units"], eval_seconds, reading
    )
    return plan


def _apply_plan(context: LoopContext, plan: Mapping[str, float]) -> None:
    context.advice_budget = float(plan.get("units", math.inf))
    context.sensitivity_units = float(plan.get("sensitivity_units", 1.0))
    context.latency_units = float(plan.get("latency_units", 1.0))
    if context.proxy is not None and "proxy_feeds" in plan:
        context.proxy.keep_feeds(int(plan["proxy_feeds"]))


def _criterion_with_direction(criterion: Any, higher_is_better: bool) -> Any:
    if bool(criterion.higher_is_better) == higher_is_better:
        return criterion
    return dataclasses.replace(criterion, higher_is_better=higher_is_better)


def _evaluate_baseline(executor: EvalExecutor, evaluator: Evaluator, model: onnx.ModelProto) -> tuple[float, float]:
    """The FP32 accuracy and the seconds its evaluation took, evaluated where the candidates will be (so
    both see the same environment)."""
    result = executor.evaluate(-1, model)
    if result.error is None and result.accuracy is not None:
        return float(result.accuracy), result.seconds
    if isinstance(result.exception, LpotError):
        raise result.exception
    what = (
        f"did not finish within tuning.exit_policy.eval_timeout ({result.error})"
        if result.timed_out
        else f"raised {result.error}"
    )
    raise EvaluationError(
        f"The {evaluator.description} {what} on the FP32 model, before any quantization. Tuning needs the FP32 "
        "accuracy as its baseline: fix the evaluation (it receives an onnx.ModelProto; run it on the FP32 model "
        "yourself to reproduce) and start again."
    ) from result.exception


def _read_resume(path: Path, key: str, details: Mapping[str, Any]) -> tuple[HistoryHeader, list[TrialResult]]:
    file = path / HISTORY_FILE if path.is_dir() else path
    header, trials = TuningHistory(file).read()
    if header.run_key != key:
        differs = sorted(k for k in details if header.details.get(k) != json.loads(json.dumps(details[k], default=str)))
        raise ConfigError(
            f"Cannot resume from '{file}': it records a different tuning run (differs in: "
            f"{', '.join(differs) or 'unknown fields'}). Resume with the same model, configuration and evaluation, "
            "or remove tuning.workspace.resume to start a new run."
        )
    return header, trials


def _progress_bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="tuning", unit="trial", leave=True, dynamic_ncols=True)


def _update_bar(bar: Any, trials: list[TrialResult], context: LoopContext) -> None:
    if bar is None:
        return
    bar.update(1)
    done = [t for t in trials if t.accuracy is not None]
    if not done:
        bar.set_postfix_str("no successful trial yet")
        return
    sign = 1.0 if context.higher_is_better else -1.0
    best = max(done, key=lambda t: (t.meets_goal, sign * (t.accuracy or 0.0)))
    loss = context.relative_loss(best.accuracy)
    bar.set_postfix_str(
        f"best trial {best.index}: acc {best.accuracy:.4f} (loss {loss:.2%}){' goal met' if best.meets_goal else ''}"
    )

