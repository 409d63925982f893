"""Range algorithms: turn a tensor's :class:`TensorStatistics` into a :class:`TensorRange`.

Every range contains zero (``lo <= 0 <= hi``) so that 0.0 is exactly representable once quantized.

* **minmax**: the running minimum and maximum.
* **percentile**: ``lo`` and ``hi`` are the ``100 - p`` and ``p`` percentiles of the values (default
  ``p = 99.999``), read from the histogram with linear interpolation inside a bin; each side is chosen
  separately, so asymmetric data keeps an asymmetric range.
* **kl** (entropy calibration, after TensorRT): the magnitude threshold ``T`` that minimizes the KL
  divergence between the distribution clipped at ``T`` and its quantized version. Signed data is folded
  into a histogram of ``|x|`` and quantized with 128 magnitude levels (int8, or uint8 on a symmetric
  range, spends one bit on the sign); non-negative data (ReLU outputs) keeps all 256 uint8 levels for
  the magnitude. The range is ``[max(-T, min), min(T, max)]`` (``[0, min(T, max)]`` for non-negative data).
* **mse**: the ``[lo, hi]`` that minimizes the expected squared error of quantizing the histogram's values
  on the 8-bit asymmetric grid (255 steps of ``(hi - lo) / 255``, zero point rounded so 0 is exact),
  counting both rounding and clipping error. ``hi`` and ``lo`` are searched in turn (coordinate descent
  over ``MSE_CANDIDATES`` fractions of the min/max range each).

Weights use minmax, computed directly from the initializer (:func:`weight_range`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lpot_ir.calibration.statistics import Histogram, TensorStatistics
from lpot_ir.ir.quant import CalibAlgorithm, TensorRange

__all__ = [
    "DEFAULT_PERCENTILE",
    "KL_LEVELS_SIGNED",
    "KL_LEVELS_UNSIGNED",
    "MSE_CANDIDATES",
    "HISTOGRAM_ALGORITHMS",
    "compute_range",
    "minmax_range",
    "percentile_range",
    "kl_range",
    "mse_range",
    "weight_range",
]

DEFAULT_PERCENTILE = 99.999
KL_LEVELS_SIGNED = 128
KL_LEVELS_UNSIGNED = 256
KL_MAX_CANDIDATES = 128
MSE_CANDIDATES = 128
_QMAX = 255  # steps of the 8-bit grid

HISTOGRAM_ALGORITHMS = frozenset({CalibAlgorithm.KL, CalibAlgorithm.PERCENTILE, CalibAlgorithm.MSE})
"""Algorithms that need a histogram (minmax needs only the running min/max)."""


def _with_zero(lo: float, hi: float) -> TensorRange:
    # "+ 0.0" turns a -0.0 (e.g. the max of Neg(Relu(x))) into 0.0
    return TensorRange(min(float(lo), 0.0) + 0.0, max(float(hi), 0.0) + 0.0)


def minmax_range(stats: TensorStatistics) -> TensorRange:
    """The observed ``[min, max]``, widened to contain 0."""
    if stats.count == 0:
        return TensorRange(0.0, 0.0)
    return _with_zero(stats.min, stats.max)


def _require_histogram(stats: TensorStatistics, algorithm: CalibAlgorithm) -> Histogram | None:
    """The histogram, or None when the tensor has no non-zero value (its range is then [0, 0] or minmax)."""
    if stats.histogram is None:
        raise ValueError(f"{algorithm.value} needs a histogram for tensor {stats.name!r}; collect with histogram=True")
    if stats.count == 0 or stats.histogram.bound == 0.0:
        return None
    return stats.histogram


def _quantile(hist: Histogram, fraction: float) -> float:
    """The value below which ``fraction`` of the counted values lie (linear inside a bin)."""
    counts = hist.counts
    cdf = np.cumsum(counts)
    total = int(cdf[-1])
    target = fraction * total
    k = int(np.searchsorted(cdf, target, side="left"))
    k = min(k, counts.size - 1)
    below = float(cdf[k - 1]) if k > 0 else 0.0
    inside = float(counts[k])
    frac = (target - below) / inside if inside > 0 else 1.0
    return -hist.bound + (k + min(max(frac, 0.0), 1.0)) * hist.bin_width


def percentile_range(stats: TensorStatistics, percentile: float = DEFAULT_PERCENTILE) -> TensorRange:
    """``[P(100 - p), P(p)]`` of the values, clamped to the observed min/max, widened to contain 0."""
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    hist = _require_histogram(stats, CalibAlgorithm.PERCENTILE)
    if hist is None:
        return minmax_range(stats)
    fraction = percentile / 100.0
    hi = min(_quantile(hist, fraction), stats.max)
    lo = max(_quantile(hist, 1.0 - fraction), stats.min)
    return _with_zero(lo, hi)


def _kl_kept_bins(magnitudes: np.ndarray, levels: int) -> int:
    """How many leading bins of a magnitude histogram to keep: the cut minimizing KL(P || Q)."""
    nonzero = np.flatnonzero(magnitudes)
    used = int(nonzero[-1]) + 1
    if used <= levels:
        return used
    hist = magnitudes[:used].astype(np.float64)
    suffix = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # suffix[i] = sum(hist[i:])
    count = min(KL_MAX_CANDIDATES, used - levels + 1)
    candidates = np.unique(np.linspace(levels, used, num=count).round().astype(np.intp))
    best_kept, best_divergence = used, np.inf
    for kept in candidates:
        sliced = hist[:kept]
        reference = sliced.copy()
        reference[-1] += suffix[kept]  # values above the threshold are clipped into the last bin
        present = reference > 0
        # 0 is exact on every grid: the first bin is its own level (a spike of zeros, as after a ReLU,
        # must not be smeared over its neighbours); the other bins share the remaining levels
        group = np.concatenate([[0], 1 + (np.arange(kept - 1) * (levels - 1)) // (kept - 1)])
        group_sum = np.bincount(group, weights=sliced, minlength=levels)
        group_present = np.bincount(group, weights=present, minlength=levels)
        candidate = np.where(present, group_sum[group] / np.maximum(group_present[group], 1.0), 0.0)
        p = reference[present] / reference.sum()
        q_total = candidate.sum()
        q = candidate[present] / q_total if q_total > 0 else np.zeros_like(p)
        q = np.maximum(q, 1e-12)
        divergence = float(np.sum(p * np.log(p / q)))
        if divergence < best_divergence:
            best_kept, best_divergence = int(kept), divergence
    return best_kept


def kl_range(stats: TensorStatistics) -> TensorRange:
    """Entropy calibration: clip where the quantized distribution loses the least information."""
    hist = _require_histogram(stats, CalibAlgorithm.KL)
    if hist is None:
        return minmax_range(stats)
    n = hist.bins_per_side
    if stats.min >= 0.0:
        magnitudes, levels = hist.counts[n:], KL_LEVELS_UNSIGNED
    else:
        magnitudes, levels = hist.counts[n:] + hist.counts[:n][::-1], KL_LEVELS_SIGNED
    threshold = _kl_kept_bins(magnitudes, levels) * hist.bin_width
    return _with_zero(max(-threshold, stats.min), min(threshold, stats.max))


def _grid_errors(centers: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Expected squared error of quantizing the histogram on the 8-bit grid of each ``[lo, hi]`` pair."""
    scale = (hi - lo) / _QMAX
    scale = np.where(scale > 0, scale, np.finfo(np.float64).tiny)[:, None]
    zero_point = np.round(-lo[:, None] / scale)
    q = np.clip(np.round(centers[None, :] / scale) + zero_point, 0, _QMAX)
    error = (q - zero_point) * scale - centers[None, :]
    return (error * error) @ counts


def mse_range(stats: TensorStatistics) -> TensorRange:
    """The ``[lo, hi]`` minimizing the expected squared 8-bit quantization error of the values."""
    hist = _require_histogram(stats, CalibAlgorithm.MSE)
    if hist is None:
        return minmax_range(stats)
    present = np.flatnonzero(hist.counts)
    centers = -hist.bound + (present + 0.5) * hist.bin_width
    centers = np.clip(centers, stats.min, stats.max)
    counts = hist.counts[present].astype(np.float64)
    lo, hi = min(stats.min, 0.0), max(stats.max, 0.0)
    fractions = np.arange(1, MSE_CANDIDATES + 1, dtype=np.float64) / MSE_CANDIDATES
    for side in ("hi", "lo", "hi"):
        if side == "hi" and hi > 0.0:
            his = stats.max * fractions
            errors = _grid_errors(centers, counts, np.full_like(his, lo), his)
            hi = float(his[int(np.argmin(errors))])
        elif side == "lo" and lo < 0.0:
            los = stats.min * fractions
            errors = _grid_errors(centers, counts, los, np.full_like(los, hi))
            lo = float(los[int(np.argmin(errors))])
    return _with_zero(lo, hi)


_ALGORITHMS: dict[CalibAlgorithm, Callable[..., TensorRange]] = {
    CalibAlgorithm.MINMAX: minmax_range,
    CalibAlgorithm.PERCENTILE: percentile_range,
    CalibAlgorithm.KL: kl_range,
    CalibAlgorithm.MSE: mse_range,
}


def compute_range(
    stats: TensorStatistics, algorithm: CalibAlgorithm, *, percentile: float = DEFAULT_PERCENTILE
) -> TensorRange:
    """Dispatch to the range function of ``algorithm``."""
    algorithm = CalibAlgorithm(algorithm)
    if algorithm is CalibAlgorithm.PERCENTILE:
        return percentile_range(stats, percentile)
    return _ALGORITHMS[algorithm](stats)


def weight_range(array: np.ndarray) -> TensorRange:
    """The minmax range of a weight (initializer) array, widened to contain 0; [0, 0] if empty."""
    values = np.asarray(array)
    if values.size == 0:
        return TensorRange(0.0, 0.0)
    finite = values[np.isfinite(values)] if not np.all(np.isfinite(values)) else values
    if finite.size == 0:
        return TensorRange(0.0, 0.0)
    return _with_zero(float(finite.min()), float(finite.max()))
