"""What a tuning run produces (:class:`TuningOutcome`) and how its best trial is chosen (:func:`choose_best`).

Shared by the loop (:mod:`lpot_ir.tuning.loop`) and its last step (:mod:`lpot_ir.tuning.finalize`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpot_ir.metrics.relative import relative_loss
from lpot_ir.strategies import TrialResult
from lpot_ir.tuning.objectives import NOT_FASTER, ranking_key

__all__ = ["BEST_MODEL_FILE", "TuningOutcome", "choose_best"]

BEST_MODEL_FILE = "best_model.onnx"


@dataclass
class TuningOutcome:
    """What one tuning run produced.

    Attributes:
        model: the best quantized model (a ``QuantizedModel``), never ``None``.
        best: the trial it came from (``None`` when no trial produced a usable model).
        trials: every trial in order (resumed ones included).
        baseline_accuracy: FP32 accuracy (``None`` without accuracy evaluation).
        baseline_objectives: FP32 objective values.
        met_goal: whether ``best`` meets the accuracy criterion.
        stop_reason: why the search stopped.
        evaluated: trials evaluated by this process.
        replayed: trials taken from a resumed history.
        wall_seconds: wall time of this process's tuning (baseline included).
        workspace: the workspace folder.
        files: name -> path of what was written (model, recipe, history, report, plot, decisions).
        decisions: node -> {"quantized", "op_type", "reason"} of the best model.
        speedup: FP32 latency / INT8 latency of the best model (interleaved, 1 thread), if measured.
        warning: the warning given when no trial met the criterion.
        higher_is_better: the accuracy's direction (False for a loss-like metric).
        proxy_readings: label-free proxy readings made (not evaluations).
        advice_seconds: wall seconds spent on advice (proxy, sensitivity, latency profiles).
    """

    model: Any
    best: TrialResult | None
    trials: list[TrialResult]
    baseline_accuracy: float | None
    baseline_objectives: dict[str, float]
    met_goal: bool
    stop_reason: str
    evaluated: int
    replayed: int
    wall_seconds: float
    workspace: Path
    files: dict[str, Path] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    speedup: float | None = None
    warning: str | None = None
    sensitivity_calls: int = 0
    higher_is_better: bool = True
    proxy_readings: int = 0
    advice_seconds: float = 0.0

    @property
    def faster_than_fp32(self) -> bool | None:
        """Whether the INT8 model is clearly faster than FP32 (``None``: not measured)."""
        if self.speedup is None:
            return None
        return self.speedup >= NOT_FASTER

    @property
    def relative_loss(self) -> float | None:
        """The best trial's accuracy loss relative to the baseline (positive = worse, either direction)."""
        if self.best is None or not self.baseline_accuracy:
            return None
        return relative_loss(self.baseline_accuracy, self.best.accuracy, higher_is_better=self.higher_is_better)


def choose_best(
    trials: list[TrialResult],
    weights: list[tuple[str, float]],
    baseline_objectives: Mapping[str, float],
    higher_is_better: bool,
) -> tuple[TrialResult | None, bool]:
    """The best trial and whether it meets the goal (see the module docstring)."""
    meeting = [t for t in trials if t.meets_goal and t.failed is None]
    if meeting:
        return min(meeting, key=lambda t: ranking_key(t, weights, baseline_objectives, higher_is_better=higher_is_better)), True
    usable = [t for t in trials if t.failed is None and t.accuracy is not None]
    if not usable:
        return None, False
    sign = 1.0 if higher_is_better else -1.0
    return max(usable, key=lambda t: (sign * float(t.accuracy), -t.index)), False  # type: ignore[arg-type]
