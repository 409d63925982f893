"""The label-free accuracy proxy: how far a candidate's outputs are from FP32's, and what that predicts.

A tuning trial costs one ``eval_func`` call. Before spending one, the default strategy wants to know
which candidates are worth it. :class:`OutputDistance` runs a candidate over a few calibration feeds
(no labels) and measures how far its main output is from the FP32 model's, with a distance that fits
what the output is (:class:`OutputKind`):

* ``classification`` (``[N, C]`` class scores) and ``sequence`` (class scores per position, e.g. a CTC
  recognizer's ``[N, T, C]``): the total-variation distance between the FP32 and INT8 class
  distributions (softmax of the scores unless they already are probabilities), averaged over samples
  or positions. It is continuous, and a top-1 flip needs a large one. The top-1 flip rate is kept too,
  for the report.
* ``embedding`` (vectors along the last axis, e.g. a sentence encoder's ``[N, T, D]``): 1 - cosine
  similarity, averaged over vectors.
* ``dense`` (maps, probabilities, regressions, anything else that is float): the normalized squared
  error ``mse / var(reference)``.
* ``labels`` (integer outputs): the fraction of elements that differ.

A distance is not an accuracy. :class:`~lpot_ir.strategies.proxy.ProxyCalibration` (pure data, in the
strategies layer that uses it) turns distances into predicted accuracy
losses only from pairs *measured on this run*: every evaluated candidate adds ``(distance, relative
loss)``, FP32 is ``(0, 0)``, and the prediction interpolates monotonically between those points. Until
one INT8 candidate has been evaluated, the proxy predicts nothing and can only order candidates; when
the evaluated points contradict the ordering (a closer candidate lost more, across the goal), it is
not trusted for skipping. Proxies advise; ``eval_func`` decides.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.strategies.proxy import DistanceReading

__all__ = [
    "OutputKind",
    "infer_output_kind",
    "output_distance",
    "OutputDistance",
]

logger = logging.getLogger(__name__)

_SCORE_NAME = re.compile(r"(logit|score|class|cls|prob|pred)", re.IGNORECASE)
_HEAD_OPS = ("Gemm", "MatMul", "Add")


class OutputKind(str, enum.Enum):
    """What a model output is, which decides how two versions of it are compared."""

    CLASSIFICATION = "classification"
    SEQUENCE = "sequence"
    EMBEDDING = "embedding"
    DENSE = "dense"
    LABELS = "labels"

    def __str__(self) -> str:
        return self.value


def _is_simplex(reference: np.ndarray) -> bool:
    """Non-negative values that sum to 1 along the last axis (probabilities)."""
    if reference.ndim < 2 or reference.shape[-1] < 2 or reference.size == 0:
        return False
    if float(reference.min()) < -1e-6:
        return False
    sums = reference.sum(axis=-1)
    return bool(np.allclose(sums, 1.0, atol=1e-3))


def infer_output_kind(name: str, producer_op: str | None, reference: np.ndarray) -> OutputKind:
    """The :class:`OutputKind` of one output, from its name, the op that produces it and an FP32 value.

    Rules, first match wins: integer dtype -> ``labels``; rank < 2 -> ``dense``; produced by
    Softmax/LogSoftmax, or probabilities along the last axis, or a name like ``logits``/``scores``/
    ``prob`` -> ``classification`` (rank 2) or ``sequence`` (rank 3+); rank 2 from a Gemm/MatMul/Add head
    -> ``classification``; rank 3 with a last axis of at least 8 -> ``embedding``; anything else
    (images, maps, regressions) -> ``dense``.
    """
    ref = np.asarray(reference)
    if np.issubdtype(ref.dtype, np.integer) or ref.dtype == np.bool_:
        return OutputKind.LABELS
    if ref.ndim < 2 or ref.shape[-1] < 2:
        return OutputKind.DENSE
    scores = producer_op in ("Softmax", "LogSoftmax") or _is_simplex(ref) or bool(_SCORE_NAME.search(name or ""))
    if scores:
        return OutputKind.CLASSIFICATION if ref.ndim == 2 else OutputKind.SEQUENCE
    if ref.ndim == 2 and producer_op in _HEAD_OPS:
        return OutputKind.CLASSIFICATION
    if ref.ndim == 3 and ref.shape[-1] >= 8:
        return OutputKind.EMBEDDING
    return OutputKind.DENSE


def _probabilities(scores: np.ndarray, already: bool) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if already:
        return x
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def output_distance(kind: OutputKind, actual: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """``(distance, top-1 flip rate or NaN)`` between a candidate's output and FP32's (0 = identical).

    See the module docstring for each kind's distance. Shapes that differ count as the largest distance.
    """
    a = np.asarray(actual)
    r = np.asarray(reference)
    if a.shape != r.shape:
        return 1.0, math.nan
    if r.size == 0:
        return 0.0, math.nan
    if kind is OutputKind.LABELS:
        return float(np.mean(a != r)), math.nan
    a64 = a.astype(np.float64)
    r64 = r.astype(np.float64)
    if not np.all(np.isfinite(a64)):
        return 1.0, math.nan
    if kind in (OutputKind.CLASSIFICATION, OutputKind.SEQUENCE):
        simplex = _is_simplex(r64)
        p = _probabilities(r64, simplex)
        q = _probabilities(a64, simplex)
        tv = 0.5 * np.abs(p - q).sum(axis=-1)
        flips = np.argmax(a64, axis=-1) != np.argmax(r64, axis=-1)
        return float(tv.mean()), float(flips.mean())
    if kind is OutputKind.EMBEDDING:
        dot = (a64 * r64).sum(axis=-1)
        norms = np.linalg.norm(a64, axis=-1) * np.linalg.norm(r64, axis=-1)
        cosine = np.where(norms > 0, dot / np.maximum(norms, 1e-30), np.where(dot == 0, 1.0, 0.0))
        return float(np.mean(1.0 - cosine)), math.nan
    var = float(r64.var())
    mse = float(np.mean((a64 - r64) ** 2))
    if var <= 0:
        return (0.0 if mse == 0 else 1.0), math.nan
    return mse / var, math.nan


class OutputDistance:
    """Measures :class:`DistanceReading` of candidates against FP32 on calibration feeds (no labels).

    Args:
        fp32_model: the FP32 model the candidates come from (same inputs and outputs).
        quantize: ``config -> QuantizedModel`` (or an ``onnx.ModelProto``).
        feeds: complete model feeds (``{input name: array}``), used as they are: never re-batched, so a
            model with a fixed batch size or non-batched inputs runs exactly as in calibration.
        output: the output to compare (name or index); default the first output.
        kind: force the :class:`OutputKind` (default: :func:`infer_output_kind`).
        max_feeds: use at most this many feeds.

    Attributes:
        kind: the kind used.
        output_name: the output compared.
        reference_seconds: time of one FP32 run over the feeds (what a reading costs, roughly).
        runs: candidate readings made (cache misses).
        seconds: total time of those readings.
    """

    def __init__(
        self,
        fp32_model: onnx.ModelProto,
        quantize: Callable[[TuningConfig], Any],
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        output: str | int | None = None,
        kind: OutputKind | str | None = None,
        max_feeds: int | None = None,
    ) -> None:
        self.quantize = quantize
        self.feeds = [dict(f) for f in (feeds if max_feeds is None else feeds[: max(1, int(max_feeds))])]
        names = [o.name for o in fp32_model.graph.output]
        if not names or not self.feeds:
            raise ValueError("the accuracy proxy needs a model with outputs and at least one feed")
        if output is None:
            index = 0
        elif isinstance(output, int):
            index = output
        else:
            if output not in names:
                raise ValueError(f"the model has no output {output!r}; outputs: {names}")
            index = names.index(output)
        self.output_index = index
        self.output_name = names[index]
        session = make_session(fp32_model, intra_op_threads=1)
        began = time.perf_counter()
        self._reference = [session.run([self.output_name], f)[0] for f in self.feeds]
        self.reference_seconds = time.perf_counter() - began
        producer = next((n.op_type for n in fp32_model.graph.node if self.output_name in n.output), None)
        self.kind = OutputKind(kind) if kind is not None else infer_output_kind(
            self.output_name, producer, self._reference[0]
        )
        self._cache: dict[str, DistanceReading] = {}
        self.runs = 0
        self.seconds = 0.0

    def limit_feeds(self, seconds: float) -> None:
        """Keep only as many feeds as one FP32 run can go through in ``seconds`` (at least one)."""
        if self.reference_seconds <= seconds or len(self.feeds) <= 1:
            return
        total = len(self.feeds)
        keep = max(1, int(total * seconds / self.reference_seconds))
        self.feeds, self._reference = self.feeds[:keep], self._reference[:keep]
        self.reference_seconds *= keep / total
        self._cache.clear()
        logger.info("accuracy proxy: using %d feed(s) to stay within %.2f s per reading", keep, seconds)

    def keep_feeds(self, count: int) -> None:
        """Keep the first ``count`` feeds (a plan fixed earlier, e.g. by a resumed run's history)."""
        total = len(self.feeds)
        keep = max(1, min(total, int(count)))
        if keep < total:
            self.feeds, self._reference = self.feeds[:keep], self._reference[:keep]
            self.reference_seconds *= keep / total
            self._cache.clear()

    def cached(self, config: TuningConfig) -> DistanceReading | None:
        """The reading of ``config`` if it was measured already."""
        return self._cache.get(config.key())

    def __call__(self, config: TuningConfig) -> DistanceReading:
        key = config.key()
        known = self._cache.get(key)
        if known is not None:
            return known
        began = time.perf_counter()
        result = self.quantize(config)
        model = result if isinstance(result, onnx.ModelProto) else result.model
        session = make_session(model, intra_op_threads=1)
        distances: list[float] = []
        flips: list[float] = []
        weights: list[float] = []
        for feed, reference in zip(self.feeds, self._reference, strict=True):
            actual = session.run([self.output_name], feed)[0]
            d, f = output_distance(self.kind, actual, reference)
            distances.append(d)
            flips.append(f)
            weights.append(float(max(1, np.asarray(reference).size)))
        w = np.asarray(weights)
        distance = float(np.average(distances, weights=w))
        flip = float(np.average(flips, weights=w)) if all(math.isfinite(f) for f in flips) else math.nan
        reading = DistanceReading(distance, flip, time.perf_counter() - began)
        self.runs += 1
        self.seconds += reading.seconds
        self._cache[key] = reading
        return reading
