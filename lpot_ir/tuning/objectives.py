"""The tuning objectives and how candidates that meet the accuracy goal are ranked.

* ``performance``: the candidate's median latency (seconds per batch) on one fixed batch of real
  input, one intra-op thread, a few warmup runs then ``iterations`` timed runs.
* ``modelsize``: the serialized model's size in bytes.
* ``footprint``: the growth of the process's resident memory while an ONNX Runtime session for the
  candidate is created and run once (bytes; ``psutil``). It is a measurement of the real allocator, so
  it is approximate: memory freed by earlier trials may be reused.

Every objective is "smaller is better". With several objectives, a candidate's score is the weighted
sum of its values relative to the FP32 model's (``sum(w_i * v_i / fp32_i)``), so different units
combine. Scores within :data:`TIE_TOLERANCE` of each other tie; ties are broken by the first objective,
then the next (each again within the tolerance), then by not using bf16/fp16 (a mixed-precision candidate
must win on the measured objectives to be preferred: on a backend that runs 16-bit ops through float32, it
ties on latency and would otherwise win on accuracy noise), then by higher accuracy, then by the earlier trial.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.benchmarking import time_feeds
from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.ir.model import external_data_bytes
from lpot_ir.strategies.base import TrialResult

__all__ = [
    "OBJECTIVES",
    "TIE_TOLERANCE",
    "NOT_FASTER",
    "ObjectiveMeter",
    "measure_latency",
    "measure_footprint",
    "model_size",
    "weighted_score",
    "ranking_key",
]

logger = logging.getLogger(__name__)

OBJECTIVES = ("performance", "modelsize", "footprint")
"""The objective names (``tuning.objective`` values)."""

NOT_FASTER = 1.05
"""Below this measured speedup an INT8 model is reported as no faster than FP32 (latency noise is a few %)."""

TIE_TOLERANCE = 0.02
"""Relative difference under which two scores (or objective values) count as equal: latency noise."""


def model_size(model: onnx.ModelProto | bytes) -> float:
    """Serialized size in bytes (weights in external data files included)."""
    if isinstance(model, (bytes, bytearray)):
        return float(len(model))
    return float(model.ByteSize() + external_data_bytes(model))


def measure_latency(
    model: onnx.ModelProto | bytes, feed: Mapping[str, np.ndarray], *, warmup: int = 3, iterations: int = 20, seconds: float | None = 2.0
) -> float:
    """Median seconds per run of ``model`` on ``feed`` (one intra-op thread).

    With ``seconds``, fewer timed runs (at least 3) when ``iterations`` would take longer than that.
    """

    session = make_session(model, intra_op_threads=1, inter_op_threads=1)
    first, _ = time_feeds(session, [dict(feed)], warmup=max(0, warmup - 1), iterations=1)
    if seconds is not None and float(first[0]) * iterations > seconds:
        iterations = max(3, int(seconds / max(float(first[0]), 1e-9)))
    timed, _ = time_feeds(session, [dict(feed)], warmup=0, iterations=iterations)
    return float(np.median(timed))


def _release_freed_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_footprint(model: onnx.ModelProto | bytes, feed: Mapping[str, np.ndarray]) -> float:
    """Resident-memory growth (bytes) while a session for ``model`` is created and run once."""
    import psutil


    process = psutil.Process()
    _release_freed_memory()
    before = process.memory_info().rss
    session = make_session(model, intra_op_threads=1, inter_op_threads=1)
    session.run(None, dict(feed))
    after = process.memory_info().rss
    del session
    _release_freed_memory()
    return float(max(after - before, 0))


@dataclass
class ObjectiveMeter:
    """Measures the configured objectives of one candidate.

    Args:
        names: the objectives to measure (from ``tuning.objective``).
        feed: the fixed input batch (``{input name: array}``) latency and footprint are measured on.
        warmup: untimed runs before timing.
        iterations: timed runs (the median is kept).
    """

    names: Sequence[str]
    feed: Mapping[str, np.ndarray] | None
    warmup: int = 3
    iterations: int = 20

    def __call__(self, model: onnx.ModelProto) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.names:
            if name == "modelsize":
                out[name] = model_size(model)
            elif self.feed is None:
                continue  # nothing to run it on (no calibration or evaluation batch)
            elif name == "performance":
                out[name] = measure_latency(model, self.feed, warmup=self.warmup, iterations=self.iterations)
            elif name == "footprint":
                out[name] = measure_footprint(model, self.feed)
        return out


def weighted_score(
    objectives: Mapping[str, float], weights: Sequence[tuple[str, float]], baseline: Mapping[str, float]
) -> float:
    """``sum(w * value / baseline value)`` over the weighted objectives (smaller is better; inf if missing)."""
    score = 0.0
    for name, weight in weights:
        value = objectives.get(name)
        if value is None or not math.isfinite(value):
            return math.inf
        reference = baseline.get(name) or 1.0
        score += weight * value / reference
    return score


def _band(value: float, reference: float) -> int:
    """Quantize ``value`` into bands of ``TIE_TOLERANCE x reference`` so near-equal values tie."""
    if not math.isfinite(value):
        return 2**62
    scale = TIE_TOLERANCE * (abs(reference) or 1.0)
    return int(math.floor(value / scale + 0.5))


def ranking_key(
    result: TrialResult,
    weights: Sequence[tuple[str, float]],
    baseline: Mapping[str, float],
    *,
    higher_is_better: bool = True,
) -> tuple[Any, ...]:
    """Sort key of a goal-meeting trial: smaller is better.

    ``(score band, first objective band, next objective band, ..., uses bf16/fp16, -accuracy, index)``.
    """
    score = weighted_score(result.objectives, weights, baseline)
    key: list[Any] = [_band(score, 1.0)]
    for name, _weight in weights:
        key.append(_band(result.objectives.get(name, math.inf), baseline.get(name) or 1.0))
    key.append(int(result.config.uses_low_precision_float))
    accuracy = result.accuracy if result.accuracy is not None else -math.inf
    key.append(-accuracy if higher_is_better else accuracy)
    key.append(result.index)
    return tuple(key)
