"""The accuracy-driven tuning loop: propose -> quantize -> evaluate -> measure -> record -> observe.

:func:`tune` runs it::

    FP32 baseline (evaluated once, where the candidates are; recorded in the history header, reused on resume)
    strategy = get_strategy(name)(space, context, seed=random_seed, **options)
    strategy.batch_size = executor.capacity   # how many evaluations run at once (tuning.workers)
    until the exit policy says stop:
        configs = strategy.propose_batch(free workers)   # None: the space is exhausted; []: wait for results
        for each: replayed from the history?  -> the recorded result, no evaluation
                  else quantize (here), submit the model to the executor (lpot_ir.tuning.executors)
        as evaluations finish: measure objectives (here); append to the history at once (fsync)
        strategy.observe(result)
    best = the goal-meeting trial with the best objective (ties: next objective), else the most
           accurate one with a warning; it is re-quantized, saved with its recipe, and reported.

With one worker (the default) this is one trial at a time in the tuning process, as before executors
existed. With more, the strategy proposes batches (:class:`~lpot_ir.strategies.base.UntilGoal`, lists)
and the loop keeps the workers busy; each history line records the worker that evaluated the trial.

Exit policy: ``timeout: 0`` stops at the first trial that meets the accuracy criterion -- the first in
the order of proposal, so that N workers choose what one would: trials still running after it are
cancelled and those that finished after it are kept in the history but not chosen from. A positive
``timeout`` (seconds, counting the time of resumed trials) and ``max_trials`` (trials proposed, resumed
ones included) bound the search; evaluations already running are waited for. An exhausted strategy ends
it. No configuration is evaluated twice (the strategy base class never re-proposes a known key, and the
loop checks again). ``eval_timeout`` bounds each evaluation (the executor stops it; the trial fails).

An ``eval_func`` (or metric) that raises on a candidate marks that trial failed with the exception's
first line, and tuning goes on. If it raises on the FP32 model, :class:`EvaluationError` explains it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
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
from lpot_ir.strategies import TrialResult
from lpot_ir.tuning.checks import check_tuning_config
from lpot_ir.tuning.evaluation import Evaluator, first_line, relative_loss
from lpot_ir.tuning.executors import (
    EvalExecutor,
    EvalResult,
    make_executor,
    shipped_evaluation,
    ships_evaluation,
    where_evaluations_run,
)
from lpot_ir.tuning.finalize import finalize, finalize_without_tuning
from lpot_ir.tuning.history import HISTORY_FILE, HistoryHeader, TuningHistory
from lpot_ir.tuning.objectives import ObjectiveMeter
from lpot_ir.tuning.outcome import BEST_MODEL_FILE, TuningOutcome, choose_best
from lpot_ir.tuning.report import prefetch_plotting
from lpot_ir.tuning.sensitivity import AgreementProxy, SensitivityMeter, TensorError
from lpot_ir.tuning.space import SpaceBuild, build_space
from lpot_ir.tuning.tensorboard import TensorBoardWriter

__all__ = ["TuningOutcome", "LoopContext", "tune", "run_key", "choose_best", "BEST_MODEL_FILE"]

logger = logging.getLogger(__name__)

PROXY_SAMPLES = 256
"""Calibration samples (at most) the accuracy proxy compares FP32 and INT8 top-1 on."""


@dataclass
class LoopContext:
    """The :class:`~lpot_ir.strategies.StrategyContext` the loop gives strategies.

    Attributes:
        baseline_accuracy: the FP32 model's accuracy.
        criterion: the ``AccuracyCriterion`` (relative or absolute, higher_is_better).
        sensitivity: measures per-node error for a configuration (one instrumented run); a
            :class:`SensitivityMeter` also gives per-tensor errors (``tensor_sensitivity``).
        proxy: the label-free accuracy predictor (an :class:`AgreementProxy`) behind ``estimate``.
        estimate_calls: proxy runs made (not evaluations).
        trial_observers: called after each evaluated trial with ``(index, config, quantized model or None,
            result)`` (e.g. the TensorBoard writer); one that raises is logged and tuning goes on.
    """

    baseline_accuracy: float
    criterion: Any
    sensitivity: Callable[[TuningConfig], dict[str, float]] | None = None
    higher_is_better: bool = True
    sensitivity_calls: int = 0
    proxy: AgreementProxy | None = None
    estimate_calls: int = 0
    estimates: dict[str, tuple[TuningConfig, float]] = field(default_factory=dict)
    trial_observers: list[Callable[[int, TuningConfig, Any, TrialResult], None]] = field(default_factory=list)

    def estimate(self, config: TuningConfig) -> float:
        """Fraction of calibration samples whose top-1 differs from FP32's under ``config`` (NaN: no proxy)."""
        if self.proxy is None or not self.proxy.applicable:
            return math.nan
        try:
            value = self.proxy(config)
        finally:
            self.estimate_calls = self.proxy.runs
        self.estimates.setdefault(config.key(), (config, value))
        return value

    def proxy_reason(self, in_int8: Callable[[TuningConfig], bool]) -> str | None:
        """Why the proxy made a node fall back: its last estimate of a configuration with the node in INT8."""
        threshold = self.estimate_threshold
        found = [v for c, v in self.estimates.values() if in_int8(c)]
        if not found or threshold is None or found[-1] <= threshold:
            return None
        return (
            f"the accuracy proxy predicted that keeping it in INT8 lost up to {found[-1]:.2%} accuracy (top-1 changed "
            f"on {found[-1]:.2%} of calibration samples; {threshold:.2%} allowed), without an evaluation"
        )

    @property
    def estimate_threshold(self) -> float | None:
        """The largest proxy value predicted to meet the goal: the allowed absolute drop of an accuracy
        in [0, 1] (higher is better); ``None`` when the proxy does not apply."""
        if self.proxy is None or not self.proxy.applicable or not self.higher_is_better:
            return None
        base = float(self.baseline_accuracy)
        if not (0.0 < base <= 1.0):
            return None
        allowed = base - float(self.criterion.threshold(base))
        return allowed if allowed > 0 else None

    def tensor_sensitivity(self, config: TuningConfig) -> list[TensorError]:
        """Per-quantized-tensor errors with the nodes that quantize each (largest first; same run as
        :meth:`op_sensitivity`, cached)."""
        measure = getattr(self.sensitivity, "measure", None)
        if measure is None:
            return []
        try:
            return list(measure(config).tensors)
        except Exception as exc:
            logger.warning("tensor sensitivity could not be measured (%s)", first_line(exc))
            return []
        finally:
            self.sensitivity_calls = int(getattr(self.sensitivity, "calls", self.sensitivity_calls))

    def meets_goal(self, accuracy: float) -> bool:
        if accuracy is None or not math.isfinite(accuracy):
            return False
        return bool(self.criterion.is_met(self.baseline_accuracy, accuracy))

    def op_sensitivity(self, config: TuningConfig) -> dict[str, float]:
        if self.sensitivity is None:
            return {}
        self.sensitivity_calls += 1
        try:
            return self.sensitivity(config)
        except Exception as exc:  # a measurement problem must not end tuning: strategies then use model order
            logger.warning("op sensitivity could not be measured (%s); strategies fall back to model order", first_line(exc))
            return {}
        finally:
            self.sensitivity_calls = int(getattr(self.sensitivity, "calls", self.sensitivity_calls))

    def relative_loss(self, accuracy: float | None) -> float | None:
        """Accuracy lost relative to the baseline (positive = worse), sign-adjusted for the direction."""
        return relative_loss(self.baseline_accuracy, accuracy, higher_is_better=self.higher_is_better)


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
    recorded: list[TrialResult] = []
    if tuning.workspace.resume:
        header, recorded = _read_resume(Path(tuning.workspace.resume), key, details)
    with make_executor(tuning, evaluator, shipped) as executor:
        logger.info("evaluations run %s", executor.description)
        if tuning.workspace.resume:
            baseline, baseline_objectives = header.baseline_accuracy, header.baseline_objectives
            logger.info("resuming: %d finished trial(s) from %s", len(recorded), tuning.workspace.resume)
        else:
            baseline = _evaluate_baseline(executor, evaluator, fp32_proto)
            baseline_objectives = meter(fp32_proto)
            header = HistoryHeader(key, baseline, baseline_objectives, details)
        history.start(header, recorded)

        context = LoopContext(
            baseline_accuracy=baseline,
            criterion=tuning.accuracy_criterion,
            higher_is_better=bool(tuning.accuracy_criterion.higher_is_better and evaluator.higher_is_better),
        )
        context.criterion = _criterion_with_direction(tuning.accuracy_criterion, context.higher_is_better)
        if feeds:
            batch_axes = getattr(quantizer, "batch_axes", None)
            context.sensitivity = SensitivityMeter(optimized_proto, quantizer.quantize, feeds, batch_axes=batch_axes)
            if real_data:
                context.proxy = AgreementProxy(
                    optimized_proto, quantizer.quantize, feeds, max_samples=PROXY_SAMPLES, batch_axes=batch_axes
                )
        if tuning.tensorboard:
            context.trial_observers.append(
                TensorBoardWriter(workspace, optimized_proto, feeds, batch_axes=getattr(quantizer, "batch_axes", None))
            )
        strategy = strategy_cls(build.space, context, seed=tuning.random_seed, **dict(tuning.strategy.options))
        strategy.batch_size = executor.capacity
        search = _Search(
            strategy=strategy,
            executor=executor,
            quantizer=quantizer,
            meter=meter,
            context=context,
            history=history,
            exit_policy=tuning.exit_policy,
            recorded=recorded,
            start=start,
        )
        bar = _progress_bar(progress, tuning.exit_policy.max_trials)
        try:
            search.run(bar)
        finally:
            if bar is not None:
                bar.close()
    trials, stop_reason, evaluated = search.considered(), search.stop_reason, search.evaluated

    outcome = finalize(
        config=config,
        quantizer=quantizer,
        build=build,
        context=context,
        trials=trials,
        weights=weights,
        baseline_objectives=baseline_objectives,
        fp32_proto=fp32_proto,
        workspace=workspace,
        feeds=feeds,
        stop_reason=stop_reason,
        evaluated=evaluated,
        replayed=search.replayed,
        start=start,
        history_path=history.path,
        strategy_name=strategy_cls.name or tuning.strategy.name,
    )
    outcome.estimate_calls = context.estimate_calls
    if context.estimate_calls:
        logger.info("accuracy proxy: %d run(s) on calibration samples (not evaluations)", context.estimate_calls)
    return outcome


def _criterion_with_direction(criterion: Any, higher_is_better: bool) -> Any:
    if bool(criterion.higher_is_better) == higher_is_better:
        return criterion
    return dataclasses.replace(criterion, higher_is_better=higher_is_better)


def _evaluate_baseline(executor: EvalExecutor, evaluator: Evaluator, model: onnx.ModelProto) -> float:
    """The FP32 accuracy, evaluated where the candidates will be (so both see the same environment)."""
    result = executor.evaluate(-1, model)
    if result.error is None and result.accuracy is not None:
        return float(result.accuracy)
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


@dataclass
class _Running:
    """A trial whose evaluation was submitted: what the loop needs when its result comes."""

    position: int
    config: TuningConfig
    quantized: Any
    began: float
    quantize_seconds: float


@dataclass
class _Search:
    """The propose / evaluate / observe loop over an executor (see the module docstring)."""

    strategy: Any
    executor: EvalExecutor
    quantizer: Any
    meter: ObjectiveMeter
    context: LoopContext
    history: TuningHistory
    exit_policy: Any
    recorded: list[TrialResult]
    start: float
    slots: list[TrialResult | None] = field(default_factory=list)
    running: dict[int, _Running] = field(default_factory=dict)
    seen: dict[str, TrialResult] = field(default_factory=dict)
    stop_reason: str = ""
    first_success: int | None = None
    evaluated: int = 0
    replayed: int = 0
    replayed_seconds: float = 0.0
    bar: Any = None
    replay: dict[str, TrialResult] = field(default_factory=dict)

    def run(self, bar: Any) -> None:
        """Propose, evaluate and observe until the exit policy or the strategy ends the search."""
        self.bar = bar
        self.replay = {t.config.key(): t for t in self.recorded}
        while True:
            if not self.stop_reason:
                self._propose()
            if not self.running:
                if self.stop_reason:
                    return
                continue  # results arrived while proposing (replayed, failed quantization): propose again
            self._finish(self._wait())

    # -- proposing -------------------------------------------------------------------------------

    def _stop(self, why: str) -> None:
        if not self.stop_reason:
            self.stop_reason = why

    def _propose(self) -> None:
        policy = self.exit_policy
        while not self.stop_reason and len(self.running) < self.executor.capacity:
            if len(self.slots) >= policy.max_trials:
                self._stop(f"max_trials ({policy.max_trials}) reached")
                return
            elapsed = time.perf_counter() - self.start + self.replayed_seconds
            if policy.timeout > 0 and elapsed >= policy.timeout:
                self._stop(f"timeout ({policy.timeout} s) reached")
                return
            room = min(self.executor.capacity - len(self.running), policy.max_trials - len(self.slots))
            batch = self.strategy.propose_batch(room)
            if batch is None:
                self._stop("the search space is exhausted")
                return
            if not batch:
                if not self.running:  # nothing to wait for: a strategy bug, never loop forever
                    self._stop("the strategy waits for results but none are pending")
                return
            for proposal in batch:
                self._start(proposal)
                if self.stop_reason:
                    return

    def _start(self, proposal: TuningConfig) -> None:
        key = proposal.key()
        if key in self.seen:  # the base class prevents this; never evaluate twice regardless
            self.strategy.observe(dataclasses.replace(self.seen[key], config=proposal))
            return
        position = len(self.slots)
        self.slots.append(None)
        if key in self.replay:
            result = self.replay.pop(key)
            self.replayed += 1
            self.replayed_seconds += result.seconds / self.executor.capacity
            self._record(position, result, append=False)
            return
        if self.replay and position < len(self.recorded):
            logger.warning(
                "resume: the strategy proposed a configuration the earlier run did not try at trial %d; "
                "the resumed run diverges from it (is the strategy deterministic for its seed?)",
                position,
            )
        began = time.perf_counter()
        try:
            quantized = self.quantizer.quantize(proposal)
        except Exception as exc:  # one bad configuration must not end tuning
            failed = f"quantization failed: {first_line(exc)}"
            logger.warning("trial %d: %s", position, failed, exc_info=not isinstance(exc, LpotError))
            result = TrialResult(position, proposal, None, {}, False, failed, time.perf_counter() - began)
            self._record(position, self._observed(position, proposal, None, result), append=True)
            return
        quantize_seconds = time.perf_counter() - began
        self.running[position] = _Running(position, proposal, quantized, began, quantize_seconds)
        self.executor.submit(position, quantized.model)

    # -- results ---------------------------------------------------------------------------------

    def _wait(self) -> tuple[_Running, EvalResult]:
        while True:
            done = self.executor.wait()
            job = self.running.pop(done.index, None)
            if job is not None:
                return job, done

    def _finish(self, item: tuple[_Running, EvalResult]) -> None:
        job, done = item
        measured = time.perf_counter()
        accuracy: float | None = None
        objectives: dict[str, float] = {}
        failed: str | None = None
        if done.error is not None or done.accuracy is None:
            failed = done.error if done.timed_out else f"evaluation failed: {done.error}"
            logger.warning("trial %d: %s; the trial is marked failed and tuning goes on", job.position, failed)
        else:
            accuracy = float(done.accuracy)
            try:
                objectives = self.meter(job.quantized.model)
            except Exception as exc:
                failed = f"objective measurement failed: {first_line(exc)}"
                logger.warning("trial %d: %s", job.position, failed)
        self.evaluated += 1
        meets = failed is None and accuracy is not None and self.context.meets_goal(accuracy)
        seconds = job.quantize_seconds + done.seconds + (time.perf_counter() - measured)
        result = TrialResult(
            index=job.position,
            config=job.config,
            accuracy=accuracy if failed is None else None,
            objectives=objectives,
            meets_goal=meets,
            failed=failed,
            seconds=seconds,
            worker=done.worker,
        )
        self._record(job.position, self._observed(job.position, job.config, job.quantized, result), append=True)

    def _observed(self, position: int, config: TuningConfig, quantized: Any, result: TrialResult) -> TrialResult:
        """Log the trial and tell the observers (TensorBoard...)."""
        loss = self.context.relative_loss(result.accuracy)
        logger.info(
            "trial %d: accuracy %s (%s relative loss)%s%s",
            position,
            "failed" if result.accuracy is None else f"{result.accuracy:.4f}",
            "-" if loss is None else f"{loss:.2%}",
            ", meets the criterion" if result.meets_goal else "",
            f" [{result.worker}]" if result.worker and self.executor.capacity > 1 else "",
        )
        for observer in self.context.trial_observers:
            try:
                observer(position, config, quantized, result)
            except Exception as exc:  # an observer (a report writer) must not end tuning
                logger.warning("trial %d: observer %s failed: %s", position, type(observer).__name__, first_line(exc))
        return result

    def _record(self, position: int, result: TrialResult, *, append: bool) -> None:
        if append:
            self.history.append(result)
        self.slots[position] = result
        self.seen[result.config.key()] = result
        self.strategy.observe(result)
        _update_bar(self.bar, [t for t in self.slots if t is not None], self.context)
        if self.exit_policy.timeout == 0 and result.meets_goal:
            if self.first_success is None or position < self.first_success:
                self.first_success = position
                self.stop_reason = f"trial {result.index} meets the accuracy criterion (timeout 0: first success)"
            for later in [p for p in self.running if p > position]:  # one worker would never have run them
                self._cancel(later, "a trial proposed before it met the accuracy criterion")
        for key in list(self.strategy.superseded):
            for p, job in list(self.running.items()):
                if job.config.key() == key:
                    self._cancel(p, "an alternative before it met the accuracy criterion")

    def _cancel(self, position: int, why: str) -> None:
        job = self.running.pop(position)
        self.executor.cancel(position)
        self.strategy.withdraw(job.config)
        logger.info("trial %d: cancelled (%s)", position, why)

    def considered(self) -> list[TrialResult]:
        """The trials the best model is chosen from, in proposal order: every finished one, except those
        that one worker would not have run (after the first success with timeout 0, or superseded)."""
        out = []
        superseded = self.strategy.superseded
        for position, trial in enumerate(self.slots):
            if trial is None:
                continue
            if self.first_success is not None and position > self.first_success:
                continue
            if trial.config.key() in superseded:
                continue
            out.append(trial)
        left_out = sum(t is not None for t in self.slots) - len(out)
        if left_out:
            logger.info(
                "%d trial(s) that finished after the decisive one (speculative with several workers) are in the "
                "history but not chosen from", left_out,
            )  # fmt: skip
        return out


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
