"""The accuracy-driven tuning loop: propose -> quantize -> evaluate -> measure -> record -> observe.

:func:`tune` runs it::

    FP32 baseline (evaluated once; recorded in the history header, reused on resume)
    strategy = get_strategy(name)(space, context, seed=random_seed, **options)
    until the exit policy says stop:
        config = strategy.propose()            # None: the space is exhausted
        replayed from the history?  -> the recorded result, no evaluation
        else quantize, evaluate, measure objectives; append to the history at once (fsync)
        strategy.observe(result)
    best = the goal-meeting trial with the best objective (ties: next objective), else the most
           accurate one with a warning; it is re-quantized, saved with its recipe, and reported.

Exit policy: ``timeout: 0`` stops at the first trial that meets the accuracy criterion; a positive
``timeout`` (seconds, counting the time of resumed trials) and ``max_trials`` (trials recorded, resumed
ones included) bound the search; an exhausted strategy ends it. No configuration is evaluated twice
(the strategy base class never re-proposes a known key, and the loop checks again).

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
        baseline, baseline_objectives = header.baseline_accuracy, header.baseline_objectives
        logger.info("resuming: %d finished trial(s) from %s", len(recorded), tuning.workspace.resume)
    else:
        baseline = _evaluate_baseline(evaluator, fp32_proto)
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

    replay = {t.config.key(): t for t in recorded}
    trials: list[TrialResult] = []
    seen: dict[str, TrialResult] = {}
    exit_policy = tuning.exit_policy
    replayed_seconds = 0.0
    evaluated = 0
    stop_reason = ""
    bar = _progress_bar(progress, exit_policy.max_trials)
    try:
        while True:
            if len(trials) >= exit_policy.max_trials:
                stop_reason = f"max_trials ({exit_policy.max_trials}) reached"
                break
            elapsed = time.perf_counter() - start + replayed_seconds
            if exit_policy.timeout > 0 and elapsed >= exit_policy.timeout:
                stop_reason = f"timeout ({exit_policy.timeout} s) reached"
                break
            proposal = strategy.propose()
            if proposal is None:
                stop_reason = "the search space is exhausted"
                break
            key_ = proposal.key()
            if key_ in seen:  # the base class prevents this; never evaluate twice regardless
                strategy.observe(dataclasses.replace(seen[key_], config=proposal))
                continue
            if key_ in replay:
                result = replay.pop(key_)
                replayed_seconds += result.seconds
            else:
                if replay and len(trials) < len(recorded):
                    logger.warning(
                        "resume: the strategy proposed a configuration the earlier run did not try at trial %d; "
                        "the resumed run diverges from it (is the strategy deterministic for its seed?)",
                        len(trials),
                    )
                result = _run_trial(len(trials), proposal, quantizer, evaluator, meter, context)
                history.append(result)
                evaluated += 1
            seen[key_] = result
            trials.append(result)
            strategy.observe(result)
            _update_bar(bar, trials, context)
            if exit_policy.timeout == 0 and result.meets_goal:
                stop_reason = f"trial {result.index} meets the accuracy criterion (timeout 0: first success)"
                break
    finally:
        if bar is not None:
            bar.close()

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
        replayed=len(trials) - evaluated,
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


def _evaluate_baseline(evaluator: Evaluator, model: onnx.ModelProto) -> float:
    try:
        return evaluator(model)
    except LpotError:
        raise
    except Exception as exc:  # the user's code may raise anything
        raise EvaluationError(
            f"The {evaluator.description} raised {first_line(exc)} on the FP32 model, before any "
            "quantization. Tuning needs the FP32 accuracy as its baseline: fix the evaluation (it receives an "
            "onnx.ModelProto; run it on the FP32 model yourself to reproduce) and start again."
        ) from exc


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


def _run_trial(
    index: int,
    config: TuningConfig,
    quantizer: Any,
    evaluator: Evaluator,
    meter: ObjectiveMeter,
    context: LoopContext,
) -> TrialResult:
    began = time.perf_counter()
    accuracy: float | None = None
    objectives: dict[str, float] = {}
    failed: str | None = None
    quantized: Any = None
    try:
        quantized = quantizer.quantize(config)
        model = quantized.model
    except Exception as exc:  # one bad configuration must not end tuning
        failed = f"quantization failed: {first_line(exc)}"
        logger.warning("trial %d: %s", index, failed, exc_info=not isinstance(exc, LpotError))
    else:
        try:
            accuracy = evaluator(model)
        except Exception as exc:  # the user's eval_func may raise anything
            failed = f"evaluation failed: {first_line(exc)}"
            logger.warning("trial %d: %s; the trial is marked failed and tuning goes on", index, failed)
        if failed is None:
            try:
                objectives = meter(model)
            except Exception as exc:
                failed = f"objective measurement failed: {first_line(exc)}"
                logger.warning("trial %d: %s", index, failed)
    meets = failed is None and accuracy is not None and context.meets_goal(accuracy)
    result = TrialResult(
        index=index,
        config=config,
        accuracy=accuracy if failed is None else None,
        objectives=objectives,
        meets_goal=meets,
        failed=failed,
        seconds=time.perf_counter() - began,
    )
    loss = context.relative_loss(result.accuracy)
    logger.info(
        "trial %d: accuracy %s (%s relative loss)%s",
        index,
        "failed" if result.accuracy is None else f"{result.accuracy:.4f}",
        "-" if loss is None else f"{loss:.2%}",
        ", meets the criterion" if meets else "",
    )
    for observer in context.trial_observers:
        try:
            observer(index, config, quantized, result)
        except Exception as exc:  # an observer (a report writer) must not end tuning
            logger.warning("trial %d: observer %s failed: %s", index, type(observer).__name__, first_line(exc))
    return result


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
