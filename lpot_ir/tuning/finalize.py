"""The end of a tuning run: pick the best trial, rebuild it, explain every FP32 op, save and report.

The best model is re-quantized from its configuration (quantization is deterministic and calibration
is cached, so this is cheap and also covers trials replayed from a resumed history) and saved with its
recipe to ``<workspace>/best_model.onnx``. Every node that stays FP32 gets a reason: the capability
table's (unsupported), the annotator's (not beneficial, no range), the user's (op_wise/optype_wise),
or the strategy's ("fell back at trial N: trial M with it in INT8 lost X%").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.benchmarking import compare_latency
from lpot_ir.ir.quant import Fp32Category, Fp32Reason, TuningConfig
from lpot_ir.strategies.base import TrialResult
from lpot_ir.strategies.space import node_aliases
from lpot_ir.tuning.objectives import NOT_FASTER
from lpot_ir.tuning.outcome import BEST_MODEL_FILE, TuningOutcome, choose_best
from lpot_ir.tuning.report import (
    format_decisions,
    format_trials,
    write_decisions,
    write_plot,
    write_report,
    write_text_atomic,
)
from lpot_ir.tuning.space import SpaceBuild

if TYPE_CHECKING:  # annotations only: the loop imports this module
    from lpot_ir.tuning.loop import LoopContext

__all__ = ["finalize", "finalize_without_tuning", "explain_decisions", "measure_speedup"]

logger = logging.getLogger(__name__)

SPEEDUP_SECONDS = 10.0
"""About how long the final FP32-vs-INT8 latency comparison may take (fewer runs per round on big models)."""


def measure_speedup(fp32: onnx.ModelProto, int8: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> float | None:
    """FP32 latency / INT8 latency: interleaved rounds, one intra-op thread, median of per-round ratios."""
    if feed is None:
        return None

    try:
        comparison = compare_latency(
            {"fp32": fp32, "int8": int8}, dict(feed), rounds=15, iterations=10, warmup=10, budget_seconds=SPEEDUP_SECONDS
        )
    except Exception as exc:  # a measurement problem must not lose the tuned model
        logger.warning("could not measure the INT8 speedup: %s", exc)
        return None
    return comparison.speedup("int8")


def not_faster_message(speedup: float | None, fp32_ops: int) -> str | None:
    """What to tell the user when the chosen INT8 model is not clearly faster than FP32 (else ``None``)."""
    if speedup is None or speedup >= NOT_FASTER:
        return None
    verdict = "runs slower than" if speedup < 0.98 else "is no faster than"
    return (
        f"The chosen INT8 model {verdict} the FP32 model on this machine ({speedup:.2f}x, one thread, interleaved "
        f"rounds): for speed, keep the FP32 model. {fp32_ops} op(s) stay FP32 to meet the accuracy goal, and each "
        "FP32 island costs quantize/dequantize passes and layout changes that can outweigh what the integer kernels "
        "save. Loosening tuning.accuracy_criterion, or tuning.exit_policy.timeout > 0 (the search then keeps looking "
        "for a faster configuration), may find a faster one; the report lists why each op stays FP32."
    )


def _fp32_in(config: TuningConfig, node: Any) -> bool:
    return config.resolve(node.name, node.op_type, node_aliases(node)).fp32


def explain_decisions(
    quantized: Any,
    build: SpaceBuild,
    trials: Sequence[TrialResult],
    best: TrialResult | None,
    context: LoopContext | None,
    notes: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-node decisions of ``quantized`` (a ``QuantizedModel``), with a reason for each FP32 node.

    ``notes`` are the strategy's own reasons (node name -> why it kept the node FP32, e.g. for speed);
    otherwise a fallback is explained by the last evaluated trial that had the node in INT8. Also
    rewrites ``quantized.decisions`` so that tuning fallbacks carry their ``tuning_fallback`` reason.
    """
    space_nodes = {n.name: n for n in build.space.nodes}
    upto = [t for t in trials if best is None or t.index <= best.index]
    out: dict[str, dict[str, Any]] = {}
    for name, decision in quantized.decisions.items():
        reason: Fp32Reason | None = decision.reason
        if not decision.quantized and not decision.float_dtype.is_low_precision:
            if name in build.pinned:
                reason = build.pinned[name]
            elif name in space_nodes and _fp32_in(quantized.config, space_nodes[name]):
                reason = _fallback_reason(space_nodes[name], upto, context, (notes or {}).get(name))
            if reason is not decision.reason:
                quantized.decisions[name] = dataclasses.replace(decision, reason=reason)
        entry: dict[str, Any] = {"op_type": decision.op_type, "quantized": decision.quantized}
        entry["precision"] = decision.precision
        entry["reason"] = "" if decision.quantized or reason is None else str(reason)
        if decision.note:
            entry["note"] = decision.note
        out[name] = entry
    return out


def _fallback_reason(
    node: Any, trials: Sequence[TrialResult], context: LoopContext | None, note: str | None = None
) -> Fp32Reason:
    first = next((t for t in trials if _fp32_in(t.config, node)), None)
    if first is None:
        return Fp32Reason(Fp32Category.TUNING_FALLBACK, note or "the tuning strategy kept it in FP32")
    before = [t for t in trials if t.index < first.index and t.accuracy is not None and not _fp32_in(t.config, node)]
    if note or not before or context is None:
        return Fp32Reason(Fp32Category.TUNING_FALLBACK, f"FP32 from trial {first.index}" + (f": {note}" if note else ""))
    previous = before[-1]
    loss = context.relative_loss(previous.accuracy)
    return Fp32Reason(
        Fp32Category.TUNING_FALLBACK,
        f"fell back at trial {first.index}: trial {previous.index} with it in INT8 lost {loss:.2%} accuracy",
    )


def _fp32_counts(trials: Sequence[TrialResult], build: SpaceBuild) -> dict[int, int]:
    return {t.index: len(build.space.fp32_nodes(t.config)) + len(build.pinned) for t in trials}


def finalize(
    *,
    config: Any,
    quantizer: Any,
    build: SpaceBuild,
    context: LoopContext,
    trials: list[TrialResult],
    weights: list[tuple[str, float]],
    baseline_objectives: dict[str, float],
    fp32_proto: onnx.ModelProto,
    workspace: Path,
    feeds: list[dict[str, np.ndarray]],
    stop_reason: str,
    evaluated: int,
    replayed: int,
    start: float,
    history_path: Path,
    strategy_name: str,
    strategy_notes: Mapping[str, str] | None = None,
) -> TuningOutcome:
    """Choose, rebuild, explain, save and report the best model (see the module docstring)."""
    best, met = choose_best(trials, weights, baseline_objectives, context.higher_is_better)
    warning: str | None = None
    criterion = context.criterion
    allowed = (
        f"relative loss <= {criterion.relative:.2%}" if criterion.relative is not None else f"absolute loss <= {criterion.absolute}"
    )
    if best is None:
        config_ = build.space.model_wise_configs()[0]
        warning = (
            f"No trial produced a usable model ({len(trials)} trial(s), all failed; {stop_reason}). Returning the "
            "default quantization without accuracy guarantee. Check the failures in the report."
        )
    else:
        config_ = best.config
        if not met:
            loss = context.relative_loss(best.accuracy)
            warning = (
                f"No configuration met the accuracy criterion ({allowed}) in {len(trials)} trial(s) ({stop_reason}). "
                f"Returning the most accurate one, trial {best.index}, with a relative loss of {loss:.2%}. Loosen "
                "tuning.accuracy_criterion, raise exit_policy.max_trials or timeout, or try another strategy."
            )
    if warning:
        logger.warning(warning)
    quantized = quantizer.quantize(config_)
    decisions = explain_decisions(quantized, build, trials, best, context, strategy_notes)
    files: dict[str, Path] = {"history": history_path}
    files["model"] = quantized.save(workspace / BEST_MODEL_FILE)
    files["recipe"] = files["model"].with_name(f"{files['model'].stem}.recipe.json")
    speedup = measure_speedup(fp32_proto, quantized.model, feeds[0] if feeds else None)
    slow = not_faster_message(speedup, len(quantized.fp32_nodes))
    if slow:
        logger.warning(slow)
        warning = f"{warning} {slow}" if warning else slow
    wall = time.perf_counter() - start
    outcome = TuningOutcome(
        model=quantized,
        best=best,
        trials=trials,
        baseline_accuracy=context.baseline_accuracy,
        baseline_objectives=baseline_objectives,
        met_goal=met,
        stop_reason=stop_reason,
        evaluated=evaluated,
        replayed=replayed,
        wall_seconds=wall,
        workspace=workspace,
        files=files,
        decisions=decisions,
        speedup=speedup,
        warning=warning,
        sensitivity_calls=context.sensitivity_calls,
        higher_is_better=context.higher_is_better,
    )
    threshold = criterion.threshold(context.baseline_accuracy)
    summary: list[tuple[str, Any]] = [
        ("model", config.model.name),
        ("strategy", f"{strategy_name} (random_seed {config.tuning.random_seed})"),
        ("FP32 accuracy", f"{context.baseline_accuracy:.4f}"),
        ("accuracy criterion", f"{allowed} (threshold {threshold:.4f})"),
        ("objectives", ", ".join(f"{n} x {w:g}" for n, w in weights)),
        ("trials", f"{len(trials)} ({evaluated} evaluated now, {replayed} resumed from the history)"),
        ("stopped because", stop_reason),
        ("best trial", "-" if best is None else f"{best.index} (config key {best.config.key()})"),
        ("best accuracy", "-" if best is None or best.accuracy is None else f"{best.accuracy:.4f}"),
        ("relative loss", "-" if outcome.relative_loss is None else f"{outcome.relative_loss:.2%}"),
        ("meets the criterion", "yes" if met else "NO"),
        ("INT8 speedup vs FP32", "-" if speedup is None else f"{speedup:.2f}x (1 thread, interleaved rounds)"
         + ("" if outcome.faster_than_fp32 in (None, True) else ": NOT faster than FP32")),
        ("advice (proxy, sensitivity, profiles)", f"{context.advice_seconds:.1f} s, "
         f"{context.proxy.runs if context.proxy is not None else 0} proxy reading(s)"),
        ("sensitivity measurements", context.sensitivity_calls),
        ("wall time", f"{wall:.1f} s"),
        ("best model", files["model"]),
    ]
    if warning:
        summary.append(("WARNING", warning))
    fp32_counts = _fp32_counts(trials, build)
    best_index = best.index if best is not None else None
    files["report"] = write_report(
        workspace / "report.txt",
        summary,
        format_trials(trials, context.baseline_accuracy, fp32_counts, best_index, context.higher_is_better),
        format_decisions(decisions),
    )
    plot = write_plot(workspace / "tuning.png", trials, context.baseline_accuracy, threshold, best_index)
    if plot is not None:
        files["plot"] = plot
    files["decisions"] = write_decisions(workspace / "decisions.json", decisions)
    files["summary"] = write_text_atomic(workspace / "summary.json", json.dumps(_summary_json(outcome), indent=1) + "\n")
    logger.info("tuning finished: %s; report in %s", stop_reason, files["report"])
    return outcome


def _summary_json(outcome: TuningOutcome) -> dict[str, Any]:
    best = outcome.best
    return {
        "baseline_accuracy": outcome.baseline_accuracy,
        "best_trial": None if best is None else best.index,
        "best_accuracy": None if best is None else best.accuracy,
        "best_config_key": None if best is None else best.config.key(),
        "relative_loss": outcome.relative_loss,
        "met_goal": outcome.met_goal,
        "trials": len(outcome.trials),
        "evaluated": outcome.evaluated,
        "replayed": outcome.replayed,
        "stop_reason": outcome.stop_reason,
        "speedup": outcome.speedup,
        "faster_than_fp32": outcome.faster_than_fp32,
        "wall_seconds": outcome.wall_seconds,
        "warning": outcome.warning,
        "files": {k: str(v) for k, v in outcome.files.items()},
    }


def finalize_without_tuning(
    config: Any,
    quantizer: Any,
    build: SpaceBuild,
    meter: Any,
    fp32_proto: onnx.ModelProto,
    workspace: Path,
    feeds: list[dict[str, np.ndarray]],
    start: float,
) -> TuningOutcome:
    """Quantize the fastest model-wise configuration once, without accuracy evaluation (LPOT's behaviour
    without an evaluation function, and ``exit_policy.performance_only``)."""
    why = (
        "exit_policy.performance_only is set"
        if config.tuning.exit_policy.performance_only
        else "no eval_func and no evaluation dataloader + metric were given"
    )
    logger.warning("quantizing without accuracy tuning: %s; the model's accuracy is not checked", why)
    config_ = build.space.model_wise_configs()[0]
    began = time.perf_counter()
    quantized = quantizer.quantize(config_)
    objectives = meter(quantized.model)
    trial = TrialResult(0, config_, None, objectives, False, None, time.perf_counter() - began)
    decisions = explain_decisions(quantized, build, [trial], trial, None)
    files = {"model": quantized.save(workspace / BEST_MODEL_FILE)}
    speedup = measure_speedup(fp32_proto, quantized.model, feeds[0] if feeds else None)
    wall = time.perf_counter() - start
    summary = [
        ("model", config.model.name),
        ("accuracy tuning", f"none: {why}"),
        ("configuration", config_.key()),
        ("INT8 speedup vs FP32", "-" if speedup is None else f"{speedup:.2f}x"),
        ("wall time", f"{wall:.1f} s"),
        ("best model", files["model"]),
    ]
    files["report"] = write_report(
        workspace / "report.txt", summary, format_trials([trial], None, {}, 0), format_decisions(decisions)
    )
    files["decisions"] = write_decisions(workspace / "decisions.json", decisions)
    return TuningOutcome(
        model=quantized, best=trial, trials=[trial], baseline_accuracy=None, baseline_objectives={},
        met_goal=False, stop_reason=f"no accuracy tuning ({why})", evaluated=1, replayed=0, wall_seconds=wall,
        workspace=workspace, files=files, decisions=decisions, speedup=speedup,
    )
