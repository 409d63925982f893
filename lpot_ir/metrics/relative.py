"""Relative accuracy loss: the one definition tuning, strategies, reports, Benchmark and the demo share."""

from __future__ import annotations

import math

__all__ = ["relative_loss"]


def relative_loss(baseline: float | None, accuracy: float | None, *, higher_is_better: bool = True) -> float | None:
    """Accuracy lost relative to ``baseline`` (positive = worse), for either metric direction.

    ``(baseline - accuracy) / |baseline|`` when higher is better, ``(accuracy - baseline) / |baseline|`` for a
    loss-like metric; the absolute difference when the baseline is 0; ``None`` when either is missing or
    not finite.
    """
    if baseline is None or accuracy is None or not (math.isfinite(baseline) and math.isfinite(accuracy)):
        return None
    loss = (baseline - accuracy) if higher_is_better else (accuracy - baseline)
    return loss / abs(baseline) if baseline else loss
