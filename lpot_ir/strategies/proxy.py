"""What a strategy knows of the label-free accuracy proxy: one reading, and its calibration on this run.

The tuning loop's :mod:`lpot_ir.tuning.proxy` measures how far a candidate's outputs are from FP32's
(:class:`DistanceReading`). A distance is not an accuracy: :class:`ProxyCalibration` turns distances
into predicted accuracy losses only from pairs measured on this run (every evaluated candidate adds
``(distance, relative loss)``; FP32 is ``(0, 0)``). Pure data: nothing here runs a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DistanceReading", "ProxyCalibration"]


@dataclass(frozen=True)
class DistanceReading:
    """One candidate's distance from FP32 on the proxy's feeds.

    Attributes:
        distance: the output-kind distance (0 = identical to FP32).
        top1_flips: for class scores, the fraction of samples/positions whose top-1 changed; else NaN.
        seconds: the time the reading took (quantization + run).
    """

    distance: float
    top1_flips: float
    seconds: float


class ProxyCalibration:
    """Predicted accuracy loss from proxy distance, fitted only to this run's evaluated candidates.

    Points are ``(distance, relative loss)`` with loss >= 0 (an INT8 model more accurate than FP32 counts
    as no loss). ``(0, 0)`` is FP32 itself. :meth:`predict` interpolates linearly between the points after
    making the losses non-decreasing in distance (pool-adjacent-violators), and extrapolates beyond the
    farthest point along the steepest line from the origin through any point (the cautious direction).
    """

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def add(self, distance: float, loss: float) -> None:
        """Record an evaluated candidate (non-finite values are ignored)."""
        if math.isfinite(distance) and math.isfinite(loss) and distance >= 0:
            self.points.append((float(distance), max(0.0, float(loss))))

    @property
    def calibrated(self) -> bool:
        """At least one evaluated candidate with a positive distance."""
        return any(d > 0 for d, _ in self.points)

    def _fit(self) -> list[tuple[float, float]]:
        pts = sorted([(0.0, 0.0), *self.points])
        blocks: list[list[float]] = []  # [sum of d, sum of loss, count]
        for d, loss in pts:
            blocks.append([d, loss, 1.0])
            while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
                last = blocks.pop()
                blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1], blocks[-1][2] + last[2]]
        return [(b[0] / b[2], b[1] / b[2]) for b in blocks]

    def predict(self, distance: float) -> float | None:
        """The predicted relative loss at ``distance`` (``None`` until calibrated)."""
        if not self.calibrated or not math.isfinite(distance):
            return None
        fit = self._fit()
        if distance <= fit[0][0]:
            return fit[0][1]
        for (d0, l0), (d1, l1) in zip(fit, fit[1:], strict=False):
            if distance <= d1:
                return l0 if d1 == d0 else l0 + (l1 - l0) * (distance - d0) / (d1 - d0)
        slope = max(loss / d for d, loss in self.points if d > 0)
        return max(fit[-1][1], slope * distance)

    def threshold(self, loss: float) -> float | None:
        """The largest distance whose predicted loss is at most ``loss`` (``None`` until calibrated)."""
        if not self.calibrated:
            return None
        fit = self._fit()
        best = 0.0
        for (d0, l0), (d1, l1) in zip(fit, fit[1:], strict=False):
            if l1 <= loss:
                best = d1
                continue
            if l0 <= loss < l1:
                best = d0 + (d1 - d0) * (loss - l0) / (l1 - l0)
            return best
        slope = max(loss_ / d for d, loss_ in self.points if d > 0)
        last_d, last_l = fit[-1]
        if slope <= 0:
            return math.inf
        return max(last_d, loss / slope) if last_l <= loss else best

    def contradicted(self, allowed: float) -> bool:
        """True if a closer candidate missed the goal while a farther one met it (ordering not reliable)."""
        failed = [d for d, loss in self.points if loss > allowed]
        passed = [d for d, loss in self.points if loss <= allowed]
        return bool(failed and passed and min(failed) < max(passed))
