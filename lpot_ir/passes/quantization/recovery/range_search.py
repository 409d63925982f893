"""Per-tensor range search: each activation gets the calibration algorithm (and scheme) that errs least.

One global algorithm is a compromise: min/max suits a tensor without outliers, percentile or MSE one
with a long tail, KL a peaked one. Calibration already computed all four ranges for every tensor from
one instrumented run (:mod:`lpot_ir.calibration`); range search adds **one** FP32 run over a few
calibration samples (``RecoveryOptions.samples``) and picks, per quantized activation, the candidate with
the smallest estimated error.

**The error.** What matters is the error a tensor's quantization causes at its consumers' outputs. For
a consumer ``y = W x`` (Conv, Gemm, MatMul with a constant weight) and a quantization error ``e`` on
``x``, ``E||W e||^2 ~= sum_k ||W[:, k]||^2 E[e_k^2]`` when the errors of different input channels are
uncorrelated (rounding errors are, to first order; clipping errors much less so, which is what the
per-channel split catches). So each input channel's squared quantization error, measured on the
samples, is weighted by the squared norm of the consumer's weights that read that channel (normalized to
mean 1 per consumer, summed over consumers). A channel with large outliers but small outgoing weights
can then be clipped; one whose outgoing weights are large cannot. Consumers without weights (Add,
Concat, pooling...) weigh every channel equally; data-movement consumers (MaxPool, Relu, Pad, Resize)
are looked through to the consumers after them. This is the diagonal approximation of the consumer
output error: it needs no extra model run per candidate, only numpy over sampled values.

**The scheme.** For a given range, the asymmetric grid is at least as fine as the symmetric one (which
covers ``[-max|.|, max|.|]``), so switching asym -> sym never lowers the error; the search therefore
only considers switching a tensor configured ``sym`` to ``asym`` (a one-sided tensor gains a factor of
about 2 in resolution). A different algorithm or scheme replaces the configured one only when it lowers
the estimated error by more than ``RecoveryOptions.range_search_margin``.

The choices go into the recipe: the ranges as the recipe's ``ranges`` (``insert-qdq`` reads them from
``value.meta[RANGE_KEY]``), the changed schemes and the chosen algorithms in the step's record.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import constant_value
from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import (
    ANNOTATION_KEY,
    RANGE_KEY,
    Approach,
    CalibAlgorithm,
    QuantAnnotation,
    QuantSpec,
    Scheme,
    TensorRange,
)
from lpot_ir.passes.base import register_pass
from lpot_ir.passes.quantization.context import QuantizationPass, QuantPassResult
from lpot_ir.passes.quantization.qparams import QParams, compute_qparams, numpy_dtype
from lpot_ir.passes.quantization.recovery.layerwise import first_samples

__all__ = ["RangeSearchResult", "RangeSearchPass", "searched_tensors", "search_ranges", "apply_schemes"]

logger = logging.getLogger(__name__)

VALUES_PER_BATCH = 1 << 14
"""Sampled values per tensor and batch (strided over positions, every channel kept)."""

_LOOK_THROUGH = frozenset({"MaxPool", "Relu", "Clip", "Pad", "Resize", "Identity"})
_ALGORITHM_ORDER = (CalibAlgorithm.MINMAX, CalibAlgorithm.PERCENTILE, CalibAlgorithm.MSE, CalibAlgorithm.KL)


@dataclass
class RangeSearchResult:
    """What range search chose.

    Attributes:
        ranges: activation -> the chosen range.
        schemes: activation -> the chosen scheme, where it differs from the configured one.
        algorithms: activation -> the chosen algorithm.
        errors: activation -> (estimated error of the configured choice, of the chosen one).
        seconds: wall time (the FP32 run included).
    """

    ranges: dict[str, TensorRange] = field(default_factory=dict)
    schemes: dict[str, Scheme] = field(default_factory=dict)
    algorithms: dict[str, CalibAlgorithm] = field(default_factory=dict)
    errors: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0



def searched_tensors(model: ir.Model) -> dict[str, tuple[ir.Value, QuantSpec]]:
    """Activations whose range comes from calibration, with the spec Q/DQ insertion will use for them.

    The first spec in graph order wins (inputs before outputs within a node), as in Q/DQ insertion.
    """
    found: dict[str, tuple[ir.Value, QuantSpec]] = {}
    for node in model.graph:
        annotation = node.meta.get(ANNOTATION_KEY)
        if not isinstance(annotation, QuantAnnotation) or annotation.dynamic:
            continue
        entries = [(node.inputs[i] if i < len(node.inputs) else None, s) for i, s in annotation.inputs]
        entries += [(node.outputs[i] if i < len(node.outputs) else None, s) for i, s in annotation.outputs]
        for value, spec in entries:
            if value is None or not value.name or not isinstance(spec, QuantSpec):
                continue
            if constant_value(value) is not None or value.name in found:
                continue
            found[value.name] = (value, spec)
    return found


def _consumer_weights(value: ir.Value, depth: int = 0) -> list[tuple[int, np.ndarray]]:
    """(channel axis, per-input-channel squared weight norm, mean 1) for each weighted consumer of ``value``."""
    weights: list[tuple[int, np.ndarray]] = []
    for use in value.uses():
        node = use.node
        if node.op_type in _LOOK_THROUGH and use.idx == 0 and depth < 3:
            for out in node.outputs[:1]:
                weights.extend(_consumer_weights(out, depth + 1))
            continue
        if use.idx != 0 or len(node.inputs) < 2:
            continue
        tensor = constant_value(node.inputs[1])
        if tensor is None:
            continue
        w = tensor.numpy().astype(np.float64)
        norms: np.ndarray | None = None
        axis = -1
        if node.op_type == "Conv" and w.ndim >= 3:
            groups = node.attributes.get_int("group", 1)
            per_group = w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)
            norms = np.square(per_group).sum(axis=(1, 3)).reshape(-1)  # [groups * C_in/groups]
            axis = 1
        elif node.op_type == "MatMul" and w.ndim == 2:
            norms = np.square(w).sum(axis=1)
        elif node.op_type == "Gemm" and w.ndim == 2 and not node.attributes.get_int("transA", 0):
            norms = np.square(w).sum(axis=0 if node.attributes.get_int("transB", 0) else 1)
        if norms is None or not np.any(norms > 0):
            continue
        weights.append((axis, norms / norms.mean()))
    return weights


def _candidates(
    spec: QuantSpec, ranges: Mapping[CalibAlgorithm, TensorRange]
) -> list[tuple[CalibAlgorithm, Scheme, TensorRange, QParams]]:
    schemes = [spec.scheme] + ([Scheme.ASYM] if spec.scheme is Scheme.SYM else [])
    order = [spec.algorithm, *(a for a in _ALGORITHM_ORDER if a is not spec.algorithm)]
    out: list[tuple[CalibAlgorithm, Scheme, TensorRange, QParams]] = []
    seen: set[tuple[object, ...]] = set()
    for scheme in schemes:
        for algorithm in order:
            rng = ranges.get(algorithm)
            if rng is None or not (np.isfinite(rng.lo) and np.isfinite(rng.hi)):
                continue
            params = compute_qparams(rng.lo, rng.hi, dataclasses.replace(spec, scheme=scheme))
            key = params.key()
            if key in seen:
                continue
            seen.add(key)
            out.append((algorithm, scheme, rng, params))
    return out


def _sample(array: np.ndarray, axis: int | None) -> np.ndarray:
    """A strided sample of ``array`` as ``[rows, channels]`` (channels along ``axis``) or ``[values, 1]``."""
    data = np.asarray(array, dtype=np.float32)
    if axis is not None and data.ndim >= 2 and -data.ndim <= axis < data.ndim:
        rows = np.moveaxis(data, axis, -1).reshape(-1, data.shape[axis])
    else:
        rows = data.reshape(-1, 1)
    keep = max(1, VALUES_PER_BATCH // rows.shape[1])
    if rows.shape[0] > keep:
        rows = rows[:: int(np.ceil(rows.shape[0] / keep))]
    return rows


def _qdq_error(rows: np.ndarray, params: QParams) -> np.ndarray:
    """Per-column squared error of quantize -> dequantize (QuantizeLinear saturates to the type's range)."""
    info = np.iinfo(numpy_dtype(params.dtype))
    scale = np.float32(params.scale)
    zp = np.float32(params.zero_point)
    q = np.clip(np.round(rows / scale) + zp, info.min, info.max)
    diff = rows - (q - zp) * scale
    return np.einsum("ij,ij->j", diff, diff, dtype=np.float64)


def _instrumented(model: ir.Model, names: Sequence[str]) -> onnx.ModelProto:
    """``model`` with exactly ``names`` as its graph outputs."""
    proto = to_proto(model)
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    return proto


def search_ranges(
    model: ir.Model,
    candidates: Callable[[str], Mapping[CalibAlgorithm, TensorRange]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    margin: float = 0.02,
    threads: int | None = None,
) -> RangeSearchResult:
    """Choose each calibrated activation's range and scheme by its estimated error (one FP32 run).

    Args:
        model: the annotated FP32 model (before Q/DQ insertion).
        candidates: activation name -> its range under each calibration algorithm.
        feeds: calibration batches ``{input name: array}``.
        margin: keep the configured choice unless another lowers the error by more than this fraction.
        threads: ONNX Runtime intra-op threads.
    """
    started = time.perf_counter()
    result = RangeSearchResult()
    tensors = searched_tensors(model)
    plans: dict[str, tuple[QuantSpec, list[tuple[CalibAlgorithm, Scheme, TensorRange, QParams]], int | None, np.ndarray | None]] = {}
    for name, (value, spec) in tensors.items():
        options = _candidates(spec, candidates(name))
        if len(options) < 2:
            continue
        consumers = _consumer_weights(value)
        axis = consumers[0][0] if consumers else None
        weights: np.ndarray | None = None
        for consumer_axis, norms in consumers:  # consumers reading the same channels add up
            if consumer_axis == axis and norms.shape == consumers[0][1].shape:
                weights = norms if weights is None else weights + norms
        plans[name] = (spec, options, axis, weights)
    if not plans:
        return result
    graph_inputs = {v.name for v in model.graph.inputs}
    run_names = [n for n in plans if n not in graph_inputs]
    session = make_session(_instrumented(model, run_names), intra_op_threads=threads) if run_names else None
    totals = {name: np.zeros(len(plans[name][1]), dtype=np.float64) for name in plans}
    for feed in feeds:
        arrays = dict(zip(run_names, session.run(run_names, dict(feed)), strict=True)) if session is not None else {}
        for name, (_spec, options, axis, weights) in plans.items():
            array = feed[name] if name in graph_inputs else arrays[name]
            rows = _sample(array, axis if weights is not None else None)
            if weights is not None and rows.shape[1] != weights.shape[0]:
                rows, use = _sample(array, None), None
            else:
                use = weights
            for i, (_a, _s, _r, params) in enumerate(options):
                err = _qdq_error(rows, params)
                totals[name][i] += float(err @ use) if use is not None else float(err.sum())
    for name, (spec, options, _axis, _weights) in plans.items():
        errors = totals[name]
        configured = next(
            (i for i, (a, s, _r, _p) in enumerate(options) if a is spec.algorithm and s is spec.scheme), None
        )
        best = int(np.argmin(errors))
        if configured is not None and not errors[best] < (1.0 - margin) * errors[configured]:
            best = configured
        algorithm, scheme, rng, _params = options[best]
        result.ranges[name] = rng
        result.algorithms[name] = algorithm
        if scheme is not spec.scheme:
            result.schemes[name] = scheme
        before = float(errors[configured]) if configured is not None else float("nan")
        result.errors[name] = (before, float(errors[best]))
    result.seconds = time.perf_counter() - started
    changed = sum(1 for n in result.ranges if result.algorithms[n] is not plans[n][0].algorithm or n in result.schemes)
    logger.info("Range search: %d of %d activation(s) changed, in %.1f s.", changed, len(result.ranges), result.seconds)
    return result


def apply_schemes(model: ir.Model, schemes: Mapping[str, Scheme]) -> int:
    """Rewrite the annotations of ``model`` so each activation in ``schemes`` uses that scheme; return edits."""
    if not schemes:
        return 0
    edits = 0
    for node in model.graph:
        annotation = node.meta.get(ANNOTATION_KEY)
        if not isinstance(annotation, QuantAnnotation):
            continue

        def edit(entries: tuple, values: Sequence[ir.Value | None]) -> tuple:
            nonlocal edits
            out = []
            for index, spec in entries:
                value = values[index] if index < len(values) else None
                new = schemes.get(value.name or "") if value is not None else None
                if new is not None and isinstance(spec, QuantSpec) and spec.scheme is not new:
                    spec = dataclasses.replace(spec, scheme=new)
                    edits += 1
                out.append((index, spec))
            return tuple(out)

        node.meta[ANNOTATION_KEY] = dataclasses.replace(
            annotation, inputs=edit(annotation.inputs, node.inputs), outputs=edit(annotation.outputs, node.outputs)
        )
    return edits


@register_pass("range-search")
class RangeSearchPass(QuantizationPass):
    """``RecoveryConfig.range_search``: choose each activation's range and scheme (between annotation and
    Q/DQ insertion). The chosen range goes into ``value.meta[RANGE_KEY]`` (read by ``insert-qdq``, and
    recorded with the recipe's ranges); changed schemes are edited into the annotations and recorded."""

    def call(self, model: ir.Model) -> QuantPassResult:
        if not self.context.recovery.range_search or self.context.config.approach is Approach.DYNAMIC:
            return QuantPassResult(model, False)
        replay = self.context.recorded(self.name)
        if replay is not None:  # the recipe's ranges are the chosen ones: only the schemes are applied
            edits = apply_schemes(model, {k: Scheme(v) for k, v in dict(replay.get("schemes", {})).items()})
            return QuantPassResult(model, edits > 0, changes=edits, record=dict(replay))
        range_of = self.context.range_of

        def candidates(name: str) -> dict[CalibAlgorithm, TensorRange]:
            found = {algorithm: range_of(name, algorithm) for algorithm in CalibAlgorithm}
            return {algorithm: rng for algorithm, rng in found.items() if rng is not None}

        options = self.context.recovery_options
        feeds = first_samples(self.context.calibration_feeds(), options.samples)
        result = search_ranges(model, candidates, feeds, margin=options.range_search_margin, threads=options.threads)
        edits = apply_schemes(model, result.schemes)
        values = {name: value for name, (value, _spec) in searched_tensors(model).items()}
        for name, rng in result.ranges.items():
            values[name].meta[RANGE_KEY] = rng
        record: dict[str, Any] = {}
        if result.schemes:
            record["schemes"] = {k: v.value for k, v in sorted(result.schemes.items())}
        if result.algorithms:
            record["algorithms"] = {k: v.value for k, v in sorted(result.algorithms.items())}
        return QuantPassResult(model, bool(result.ranges), changes=edits + len(result.ranges), record=record, report=result)
