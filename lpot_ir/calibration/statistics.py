"""Running statistics of one tensor over calibration batches, in bounded memory.

:class:`TensorStatistics` keeps, per tensor, the running minimum and maximum and (when a histogram
algorithm is requested) a histogram of the signed values. Each batch's array is folded in and can be
dropped at once: memory does not grow with the number of samples.

The histogram has ``2 * bins_per_side`` bins of equal width over ``[-R, R)``, where ``R`` is a power of
two strictly larger than every magnitude seen so far. When a batch holds a larger magnitude, ``R`` is
doubled (as often as needed) and the existing counts are re-binned by merging neighbouring bins: because
both ``R`` and ``bins_per_side`` are powers of two, every old bin falls inside exactly one new bin, so
widening is exact (no count is split or moved across a boundary).

Histogram work per batch is bounded: a tensor with more than ``HISTOGRAM_VALUES_PER_SAMPLE`` values per
sample contributes a strided subsample of its values (the offset rotates from batch to batch), so the
cost of kl/percentile/mse stays a small fraction of inference on large feature maps. The minimum,
maximum and the histogram's bound always come from every value.

A histogram of the signed values (not of ``|x|``) keeps each side of zero: percentile and mse choose
``lo`` and ``hi`` separately, kl folds the two sides into a magnitude histogram when the data is signed
(see :mod:`lpot_ir.calibration.algorithms`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_BINS_PER_SIDE",
    "HISTOGRAM_VALUES_PER_SAMPLE",
    "ChannelStatistics",
    "TensorStatistics",
    "Histogram",
]

logger = logging.getLogger(__name__)

DEFAULT_BINS_PER_SIDE = 2048
HISTOGRAM_VALUES_PER_SAMPLE = 1 << 16
"""Histogram at most this many values per sample of a tensor (strided subsample beyond it)."""


def _power_of_two_above(magnitude: float) -> float:
    """The smallest power of two strictly greater than ``magnitude`` (> 0)."""
    exponent = math.floor(math.log2(magnitude)) + 1
    bound = math.ldexp(1.0, exponent)
    while bound <= magnitude:  # guards log2 rounding at exact powers of two
        bound *= 2.0
    return bound


class Histogram:
    """Counts of signed values in ``2 * bins_per_side`` equal bins over ``[-bound, bound)``.

    Attributes:
        bins_per_side: number of bins on each side of zero (a power of two).
        bound: the half-width ``R`` of the range (a power of two), or 0.0 before the first non-zero value.
        counts: int64 counts; bin ``i`` covers ``[-R + i*w, -R + (i+1)*w)`` with ``w = R / bins_per_side``.
    """

    def __init__(self, bins_per_side: int = DEFAULT_BINS_PER_SIDE) -> None:
        if bins_per_side < 2 or bins_per_side & (bins_per_side - 1):
            raise ValueError(f"bins_per_side must be a power of two >= 2, got {bins_per_side}")
        self.bins_per_side = bins_per_side
        self.bound = 0.0
        self.counts = np.zeros(2 * bins_per_side, dtype=np.int64)
        self._pending_zeros = 0  # zeros seen before any non-zero value fixed the bound

    @property
    def bin_width(self) -> float:
        return self.bound / self.bins_per_side

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self._pending_zeros

    def edges(self) -> np.ndarray:
        """The ``2 * bins_per_side + 1`` bin edges (float64)."""
        n = self.bins_per_side
        return (np.arange(-n, n + 1, dtype=np.float64)) * self.bin_width

    def widen_to(self, magnitude: float) -> None:
        """Grow ``bound`` (by powers of two) until it is strictly above ``magnitude``; re-bin exactly."""
        if magnitude < self.bound:
            return
        new_bound = _power_of_two_above(magnitude)
        n = self.bins_per_side
        if self.bound == 0.0:
            self.bound = new_bound
            self.counts[n] += self._pending_zeros
            self._pending_zeros = 0
            return
        factor = int(round(new_bound / self.bound))  # a power of two >= 2
        old = self.counts
        if factor >= 2 * n:
            merged = np.zeros_like(old)
            merged[n - 1] = old[:n].sum()
            merged[n] = old[n:].sum()
        else:
            # old bin i starts at -R + i*w; in the new grid it falls in bin n - n/f + floor(i/f)
            target = (n - n // factor) + np.arange(2 * n) // factor
            merged = np.bincount(target, weights=old, minlength=2 * n).astype(np.int64)
        self.counts = merged
        self.bound = new_bound

    def add(self, values: np.ndarray, magnitude: float) -> None:
        """Count ``values`` (finite, 1-D float32/float64) whose largest magnitude is ``magnitude``."""
        if values.size == 0:
            return
        if magnitude == 0.0 and self.bound == 0.0:
            self._pending_zeros += int(values.size)
            return
        self.widen_to(magnitude)
        n = self.bins_per_side
        # bound and n are powers of two, so the scale is exact; the shift by n can round a value just
        # below the top edge up to 2n, which is folded into the last bin
        scale = n / self.bound
        if values.dtype != np.float64 and scale > 2.0**100:  # tiny values: the scale overflows float32
            values = values.astype(np.float64)
        scaled = np.multiply(values, values.dtype.type(scale))
        np.add(scaled, values.dtype.type(n), out=scaled)
        counts = np.bincount(scaled.astype(np.intp), minlength=2 * n)
        if counts.size > 2 * n:
            counts[2 * n - 1] += counts[2 * n :].sum()
            counts = counts[: 2 * n]
        self.counts += counts

    def to_dict(self) -> dict[str, Any]:
        nonzero = np.flatnonzero(self.counts)
        return {
            "bins_per_side": self.bins_per_side,
            "bound": self.bound,
            "pending_zeros": self._pending_zeros,
            "index": nonzero.tolist(),
            "count": self.counts[nonzero].tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        hist = cls(int(data["bins_per_side"]))
        hist.bound = float(data["bound"])
        hist._pending_zeros = int(data.get("pending_zeros", 0))
        hist.counts[np.asarray(data["index"], dtype=np.intp)] = np.asarray(data["count"], dtype=np.int64)
        return hist


class ChannelStatistics:
    """Running per-channel minimum and maximum of one tensor along one axis (bounded memory).

    Used by accuracy-recovery rewrites that scale channels (SmoothQuant reads the per-channel abs-max of
    a MatMul input; cross-layer equalization reads whether a channel ever reached a Clip bound).

    Args:
        name: the tensor's name (for messages).
        axis: the channel axis (negative counts from the end, e.g. -1 for the last axis).

    Attributes:
        lo: per-channel minimum (float64), ``None`` before the first value.
        hi: per-channel maximum (float64), ``None`` before the first value.
    """

    def __init__(self, name: str, axis: int) -> None:
        self.name = name
        self.axis = int(axis)
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def update(self, array: np.ndarray) -> None:
        """Fold one batch in; NaN and infinite values are left out (a channel with none keeps no range).

        Raises:
            ValueError: the array has no such axis, or its channel count changed since the first batch.
        """
        values = np.asarray(array)
        if values.size == 0:
            return
        if not -values.ndim <= self.axis < values.ndim:
            raise ValueError(
                f"tensor {self.name!r} has rank {values.ndim}; it has no channel axis {self.axis}"
            )
        moved = np.moveaxis(values, self.axis, 0).reshape(values.shape[self.axis], -1)
        if moved.dtype not in (np.float32, np.float64):
            moved = moved.astype(np.float32)
        finite = np.isfinite(moved)
        lo = np.where(finite, moved, np.inf).min(axis=1).astype(np.float64)
        hi = np.where(finite, moved, -np.inf).max(axis=1).astype(np.float64)
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
            return
        if lo.shape != self.lo.shape:
            raise ValueError(
                f"tensor {self.name!r} has {lo.shape[0]} channels on axis {self.axis} in this batch and "
                f"{self.lo.shape[0]} in the first one"
            )
        np.minimum(self.lo, lo, out=self.lo)
        np.maximum(self.hi, hi, out=self.hi)

    def after_relu(self, name: str) -> ChannelStatistics:
        """The exact per-channel statistics of ``Relu(x)`` given those of ``x``."""
        out = ChannelStatistics(name, self.axis)
        if self.lo is not None and self.hi is not None:
            out.lo, out.hi = np.maximum(self.lo, 0.0), np.maximum(self.hi, 0.0)
        return out


class TensorStatistics:
    """Running min, max, element count and (optionally) a :class:`Histogram` of one tensor.

    Args:
        name: the tensor's name (for log messages).
        histogram: keep a histogram (needed by kl, percentile and mse).
        bins_per_side: histogram resolution on each side of zero.
        channel_axis: also keep per-channel min/max along this axis (:attr:`channels`); ``None``: do not.
    """

    def __init__(
        self,
        name: str,
        *,
        histogram: bool = False,
        bins_per_side: int = DEFAULT_BINS_PER_SIDE,
        channel_axis: int | None = None,
    ):
        self.name = name
        self.channels = ChannelStatistics(name, channel_axis) if channel_axis is not None else None
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0
        self.histogram = Histogram(bins_per_side) if histogram else None
        self._batches = 0

    def update(self, array: np.ndarray, samples: int | None = None) -> None:
        """Fold one batch's values into the statistics (the array is not kept).

        Args:
            array: the tensor's values for one batch.
            samples: how many samples the batch holds; when given, the histogram counts at most
                ``HISTOGRAM_VALUES_PER_SAMPLE * samples`` of the values (an evenly strided subsample).
        """
        values = np.asarray(array)
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float32)
        if self.channels is not None:
            self.channels.update(values)
        values = values.reshape(-1)
        if values.size == 0:
            return
        lo = float(values.min())
        hi = float(values.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = np.isfinite(values)
            bad = int(values.size - np.count_nonzero(finite))
            if self.nonfinite == 0:
                logger.warning("Tensor %r holds NaN or infinite values; they are left out of its range.", self.name)
            self.nonfinite += bad
            values = values[finite]
            if values.size == 0:
                return
            lo = float(values.min())
            hi = float(values.max())
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += int(values.size)
        if self.histogram is not None:
            if samples is not None and values.size > HISTOGRAM_VALUES_PER_SAMPLE * max(samples, 1):
                step = -(-values.size // (HISTOGRAM_VALUES_PER_SAMPLE * max(samples, 1)))
                values = values[self._batches % step :: step]
            self.histogram.add(values, max(-lo, hi))
        self._batches += 1

    def after_relu(self, name: str) -> TensorStatistics:
        """The exact statistics of ``Relu(x)`` given those of ``x``: negatives become zeros.

        This saves exposing and scanning a Relu output when its input is calibrated anyway.
        """
        out = TensorStatistics(name)
        out.count, out.nonfinite = self.count, self.nonfinite
        if self.channels is not None:
            out.channels = self.channels.after_relu(name)
        if self.count:
            out.min, out.max = max(self.min, 0.0), max(self.max, 0.0)
        if self.histogram is not None:
            hist = Histogram(self.histogram.bins_per_side)
            n = hist.bins_per_side
            hist.bound = self.histogram.bound
            hist.counts = self.histogram.counts.copy()
            negatives = int(hist.counts[:n].sum())
            hist.counts[:n] = 0
            if hist.bound == 0.0:
                hist._pending_zeros = self.histogram._pending_zeros + negatives
            else:
                hist.counts[n] += negatives
            out.histogram = hist
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "count": self.count,
            "nonfinite": self.nonfinite,
            "histogram": self.histogram.to_dict() if self.histogram is not None else None,
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> TensorStatistics:
        stats = cls(name)
        if data.get("count"):
            stats.min = float(data["min"])
            stats.max = float(data["max"])
        stats.count = int(data.get("count", 0))
        stats.nonfinite = int(data.get("nonfinite", 0))
        if data.get("histogram") is not None:
            stats.histogram = Histogram.from_dict(data["histogram"])
        return stats
