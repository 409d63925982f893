"""Better weight rounding: MSE-optimal per-channel clipping, and AdaRound (learned up/down rounding).

**MSE clipping** (``RecoveryConfig.weight_rounding = mse``). Min/max weight scales spend the integer grid
on the few largest weights of a channel; clipping them a little makes the grid finer for all the others.
For every output channel, :func:`clip_ratios` picks the ratio ``r`` of the channel's min/max range that
minimizes ``||w - DQ(Q_r(w))||^2`` over a grid (0.50..1.00 in steps of 0.05, then the neighbours of the
best in steps of 0.01). Ratio 1 (plain min/max) is on the grid, so the weight error never grows. It
needs no data and costs about 20 quantize/dequantize passes over the weights (~0.5 s for 5M weights).

**AdaRound** (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization";
``weight_rounding = adaround``). Rounding each weight to nearest is optimal for the weight, not for the
layer's output. AdaRound learns, per weight, whether to round down or up, minimizing the layer's output
error on calibration inputs::

    min_V  ||W X_fp - W~(V) X_q||^2 / E_0  +  lambda * mean(1 - |2 h(V) - 1|^beta)
    W~(V) = s * (floor(W / s) + h(V)),   h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)

with ``zeta = 1.1``, ``gamma = -0.1`` (the rectified sigmoid), ``X_q`` the layer's input in the quantized
model (earlier layers already rounded: see :mod:`~lpot_ir.passes.quantization.recovery.layerwise`),
``X_fp`` its input in the FP32 model, and ``E_0`` the error of nearest rounding (so ``lambda`` does not
depend on the layer's scale). ``V`` starts where ``h(V)`` equals the fractional part (the soft weight is
the FP32 weight); the first 20% of the steps have no regularizer, then ``beta`` anneals from 20 to 2,
pushing every ``h`` to 0 or 1. Plain numpy (im2col for Conv): Adam on mini-batches of output positions.
A layer keeps nearest rounding when the learned rounding does not lower its output error on the
calibration positions. The scale is the one the weight already has (min/max or MSE-clipped); weights
at the ends of the integer range, or clipped by it, keep their value.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, OpCategory, op_types
from lpot_ir.ir.quant import Approach, QuantSpec, RecoveryOptions, WeightRounding
from lpot_ir.passes.base import register_pass
from lpot_ir.passes.quantization.context import (
    QUANTIZED_WEIGHT_KEY,
    QuantizationContext,
    QuantizationPass,
    QuantizedWeight,
    QuantPassResult,
)
from lpot_ir.passes.quantization.qparams import (
    QParams,
    qrange,
    quantize_array,
    quantize_bias,
    range_qparams,
    weight_qparams,
    weight_ranges,
)
from lpot_ir.passes.quantization.recovery.layerwise import (
    LayerwiseWalk,
    Target,
    broadcast_channel,
    constant,
    dq_params,
    find_targets,
    first_samples,
    single_threaded_blas,
)
from lpot_ir.passes.quantization.recovery.record import decode_array, encode_array, pack_mask, unpack_mask
from lpot_ir.passes.quantization.recovery.report import set_constant

__all__ = [
    "ZETA",
    "GAMMA",
    "REFERENCE_FLOPS",
    "clip_ratios",
    "clipped_weight",
    "AdaRoundResult",
    "adaround_matrix",
    "adaround_work",
    "moved_integers",
    "WeightRoundingReport",
    "WeightRoundingPass",
]

_COMPUTE = op_types(OpCategory.COMPUTE)

logger = logging.getLogger(__name__)

ZETA = 1.1
GAMMA = -0.1
REFERENCE_FLOPS = 20e9
"""Floating-point operations per second of the reference core that converts AdaRound's budgets (seconds)
into a fixed amount of work, so results do not depend on the machine's speed or load. Measured on the
development machine (one AVX-512 core, numpy with OpenBLAS): float32 matrix products of AdaRound's sizes
run at 20-40 GFLOP/s there, so a budget of N seconds takes about N seconds or less on one such core."""
_COARSE = np.round(np.arange(1.0, 0.499, -0.05), 2).astype(np.float32)
_FINE = np.array([-0.04, -0.03, -0.02, -0.01, 0.01, 0.02, 0.03, 0.04], dtype=np.float32)


def _channel_rows(weight: np.ndarray, axis: int | None) -> np.ndarray:
    data = np.asarray(weight, dtype=np.float32)
    if axis is None:
        return data.reshape(1, -1)
    return np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)


def clipped_weight(
    weight: np.ndarray, spec: QuantSpec, axis: int | None, ratios: np.ndarray
) -> tuple[QParams, np.ndarray]:
    """Quantization parameters and integers of ``weight`` with its min/max range(s) scaled by ``ratios``.

    ``ratios`` has one value per channel along ``axis`` (shape ``(C,)``), or shape ``()`` per tensor.
    Values outside the clipped range saturate at the ends of the spec's integer range.
    """
    rmin, rmax, axis = weight_ranges(weight, spec, axis)
    r = np.asarray(ratios, dtype=np.float32).reshape(np.shape(rmin))
    params = range_qparams(rmin.astype(np.float32) * r, rmax.astype(np.float32) * r, spec, axis)
    qmin, qmax = qrange(spec.dtype, spec.scheme, spec.reduce_range)
    return params, quantize_array(weight, params, qmin, qmax)


def _row_errors(rows: np.ndarray, rmin: np.ndarray, rmax: np.ndarray, ratios: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Squared quantization error of each row (channel) for per-row clip ratios."""
    params = range_qparams(rmin * ratios, rmax * ratios, spec, 0 if rmin.ndim else None)
    qmin, qmax = qrange(spec.dtype, spec.scheme, spec.reduce_range)
    scale = params.scale.reshape(-1, 1).astype(np.float32)
    zp = params.zero_point.reshape(-1, 1).astype(np.float32)
    q = np.clip(np.round(rows / scale) + zp, qmin, qmax)
    diff = rows - (q - zp) * scale
    return np.einsum("ij,ij->i", diff, diff, dtype=np.float64)


def clip_ratios(weight: np.ndarray, spec: QuantSpec, axis: int | None) -> np.ndarray:
    """Per-channel (or per-tensor) clip ratios minimizing the weight's squared quantization error.

    Returns float32 ratios in [0.46, 1.0], shape ``(C,)`` per channel or ``()`` per tensor. Ratio 1.0
    is plain min/max quantization; a channel keeps it unless a smaller ratio lowers the error.
    """
    rmin, rmax, axis = weight_ranges(weight, spec, axis)
    rows = _channel_rows(weight, axis)
    rmin32 = np.asarray(rmin, dtype=np.float32).reshape(-1)
    rmax32 = np.asarray(rmax, dtype=np.float32).reshape(-1)
    channels = rows.shape[0]
    best = np.ones(channels, dtype=np.float32)
    best_err = _row_errors(rows, rmin32, rmax32, best, spec)
    for ratio in _COARSE[1:]:
        candidate = np.full(channels, ratio, dtype=np.float32)
        err = _row_errors(rows, rmin32, rmax32, candidate, spec)
        better = err < best_err
        best = np.where(better, candidate, best)
        best_err = np.where(better, err, best_err)
    centre = best.copy()
    for step in _FINE:
        candidate = np.round(centre + step, 2).astype(np.float32)
        valid = (candidate > 0) & (candidate <= 1.0)
        err = _row_errors(rows, rmin32, rmax32, np.where(valid, candidate, 1.0).astype(np.float32), spec)
        better = valid & (err < best_err)
        best = np.where(better, candidate, best)
        best_err = np.where(better, err, best_err)
    return best.reshape(np.shape(rmin)).astype(np.float32)


# -- AdaRound -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdaRoundResult:
    """The outcome of AdaRound on one layer.

    Attributes:
        integers: the chosen integers (matrix layout, zero point included), or ``None`` if nearest was kept.
        error_nearest: output error (mean over positions of the squared error summed over channels) of the
            given rounding on the calibration positions.
        error_learned: the same for the learned rounding.
        iterations: Adam steps run.
    """

    integers: np.ndarray | None
    error_nearest: float
    error_learned: float
    iterations: int


def adaround_work(weights: int, batch: int, channels_per_group: int = 2) -> float:
    """Floating-point operations (and their equivalent in memory traffic) of one AdaRound step on a layer
    with ``weights`` weights: two matrix products of ``2 * batch`` flops per weight, ~60 elementwise
    operations per weight; depthwise layers (one channel per group) spend most of a step gathering rows and
    running tiny products, measured at about six times their flops."""
    work = float(weights) * (4.0 * batch + 60.0)
    return 6.0 * work if channels_per_group == 1 else work


def _output_error(deq: np.ndarray, rows: np.ndarray, target: np.ndarray) -> float:
    diff = np.matmul(rows, deq.transpose(0, 2, 1)) - target
    return float(np.einsum("gpc,gpc->", diff, diff, dtype=np.float64)) / max(rows.shape[1], 1)


def adaround_matrix(
    weight: np.ndarray,
    integers: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    rows: np.ndarray,
    target: np.ndarray,
    *,
    iterations: int,
    batch: int,
    regularization: float,
    learning_rate: float,
    rng: np.random.Generator,
) -> AdaRoundResult:
    """Learn the rounding of one layer's weights (matrix layout ``[groups, channels, K]``).

    Args:
        weight: FP32 weights ``[g, C, K]``.
        integers: their current integers (nearest or MSE-clipped), zero point included, same shape.
        scale: per-channel scales broadcastable to the weights (``[g, C, 1]`` or ``[1, 1, 1]``).
        zero_point: zero points, same shape as ``scale``.
        qmin: the integer range's lower end.
        qmax: the integer range's upper end.
        rows: the layer's inputs in the quantized model, one row per output position, ``[g, P, K]``.
        target: the FP32 layer's output without bias at the same positions, ``[g, P, C]``.
        iterations: Adam steps.
        batch: positions per step.
        regularization: lambda, relative to the nearest-rounding error.
        learning_rate: Adam's step size.
        rng: picks each step's positions.
    """
    weight = weight.astype(np.float32)
    scale = scale.astype(np.float32)
    zp = zero_point.astype(np.float32)
    current = integers.astype(np.float32)
    deq_current = (current - zp) * scale
    error_nearest = _output_error(deq_current, rows, target)
    if error_nearest <= 0.0 or iterations < 1:
        return AdaRoundResult(None, error_nearest, error_nearest, 0)

    u = weight / scale
    base = np.floor(u)
    rest = (u - base).astype(np.float32)
    learnable = (base + zp >= qmin) & (base + zp + 1 <= qmax)
    # the soft weight is offset + scale_learn * h: clipped / saturated weights keep their value (scale_learn 0)
    offset = np.where(learnable, base * scale, deq_current).astype(np.float32)
    scale_learn = np.where(learnable, scale, 0.0).astype(np.float32)
    p = np.clip((rest - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1.0 - p)).astype(np.float32)

    total = rows.shape[1]
    batch = min(batch, total)
    by_position = np.ascontiguousarray(rows.transpose(1, 0, 2))  # [P, g, K]: a step's gather copies whole blocks
    target_by_position = np.ascontiguousarray(target.transpose(1, 0, 2))

    width = np.float32(ZETA - GAMMA)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    coefficient = np.float32(2.0 * regularization / max(int(learnable.sum()), 1))
    grad_scale = np.float32(2.0 / (error_nearest * batch))
    warm = int(0.2 * iterations)
    sig, h, deq, tmp, aux = (np.empty_like(v) for _ in range(5))
    m = np.zeros_like(v)
    s2 = np.zeros_like(v)
    for step in range(iterations):
        np.negative(v, out=sig)
        np.exp(sig, out=sig)
        sig += 1.0
        np.reciprocal(sig, out=sig)  # sigmoid(v)
        np.multiply(sig, width, out=h)
        h += GAMMA
        np.clip(h, 0.0, 1.0, out=h)  # the rectified sigmoid
        np.multiply(scale_learn, h, out=deq)
        deq += offset
        pick = rng.choice(total, size=batch, replace=False) if batch < total else slice(None)
        inputs = by_position[pick].transpose(1, 0, 2)  # [g, B, K]
        diff = np.matmul(inputs, deq.transpose(0, 2, 1))  # [g, B, C]
        diff -= target_by_position[pick].transpose(1, 0, 2)
        grad = np.matmul(diff.transpose(0, 2, 1), inputs)  # d loss / d weight, [g, C, K]
        grad *= grad_scale
        grad *= scale_learn  # d loss / d h
        if step >= warm:  # regularizer 1 - |2h - 1|^beta, beta annealed from 20 to 2
            beta = 20.0 + (2.0 - 20.0) * (step - warm) / max(iterations - warm - 1, 1)
            np.multiply(h, 2.0, out=tmp)
            tmp -= 1.0
            np.abs(tmp, out=aux)
            np.power(aux, np.float32(beta - 2.0), out=aux)
            aux *= tmp  # sign(c) |c|^(beta - 1)
            aux *= coefficient * np.float32(beta)
            grad -= aux
        np.subtract(h, 0.5, out=aux)
        np.abs(aux, out=aux)
        np.subtract(1.0, sig, out=tmp)
        tmp *= sig
        tmp *= width  # d h / d v inside (0, 1) ...
        tmp *= aux < 0.5  # ... and 0 where h is clipped
        grad *= tmp
        m *= beta1
        m += (1 - beta1) * grad
        s2 *= beta2
        np.multiply(grad, grad, out=grad)
        s2 += (1 - beta2) * grad
        step_size = learning_rate * np.sqrt(1 - beta2 ** (step + 1)) / (1 - beta1 ** (step + 1))
        np.sqrt(s2, out=tmp)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= np.float32(step_size)
        v -= tmp

    up = v >= 0.0  # h(V) >= 0.5
    learned = np.where(learnable, np.clip(base + zp + up, qmin, qmax), current)
    error_learned = _output_error((learned - zp) * scale, rows, target)
    if error_learned >= error_nearest:
        return AdaRoundResult(None, error_nearest, error_learned, iterations)
    return AdaRoundResult(learned.astype(integers.dtype), error_nearest, error_learned, iterations)


# -- the pass ---------------------------------------------------------------------------------------

_CLIP_CACHE_TAG = "mse-clip-ratios"
"""Key tag of the clip ratios kept in ``context.weight_cache``: (source, spec, axis, tag) -> (params, ratios)."""


def _fp32_arrays(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _clip_weights(
    model: ir.Model, context: QuantizationContext, replay: Mapping[str, Any] | None
) -> tuple[dict[str, np.ndarray], int]:
    """Re-quantize each quantized Conv/Gemm/MatMul weight with MSE clip ratios; re-derive its int32 biases.

    Returns the ratios that differ from 1 (keyed by the weight's DequantizeLinear) and how many weights changed.
    """
    assert context.fp32_model is not None
    fp32 = _fp32_arrays(context.fp32_model)
    fp_nodes = {n.name: n for n in context.fp32_model.graph.node}
    chosen: dict[str, np.ndarray] = {}
    changed = 0
    for dq in list(model.graph):
        info = dq.meta.get(QUANTIZED_WEIGHT_KEY)
        if not isinstance(info, QuantizedWeight) or info.source not in fp32:
            continue
        consumers = [use.node for use in dq.outputs[0].uses()]
        if not consumers or any(c.op_type not in _COMPUTE for c in consumers):
            continue
        key = dq.name or ""
        weight = numpy_helper.to_array(fp32[info.source]).astype(np.float32)
        if replay is not None:
            if key not in replay:
                continue
            ratios = decode_array(replay[key])
        else:
            cache_key = (info.source, info.spec, info.axis, _CLIP_CACHE_TAG)
            cached = context.weight_cache.get(cache_key)
            ratios = cached[1] if cached is not None else clip_ratios(weight, info.spec, info.axis)
            if cached is None:
                context.weight_cache[cache_key] = (weight_qparams(weight, info.spec, info.axis), ratios)
            if np.all(ratios == 1.0):
                continue
        params, integers = clipped_weight(weight, info.spec, info.axis, ratios)
        q_value, scale_value, zp_value = dq.inputs[0], dq.inputs[1], dq.inputs[2]
        assert q_value is not None and scale_value is not None and zp_value is not None
        set_constant(q_value, integers)
        set_constant(scale_value, params.scale)
        set_constant(zp_value, params.zero_point)
        for node in consumers:
            _requantize_bias(node, fp_nodes.get(node.name or ""), fp32, params.scale)
        chosen[key] = ratios
        changed += 1
    return chosen, changed


def _requantize_bias(
    node: ir.Node, fp_node: onnx.NodeProto | None, fp32: Mapping[str, onnx.TensorProto], weight_scale: np.ndarray
) -> None:
    """Quantize ``node``'s int32 bias again for a new weight scale (scale = activation x weight)."""
    cap = CAPABILITIES.get(node.op_type)
    index = cap.bias_input if cap is not None else None
    bias = node.inputs[index] if index is not None and len(node.inputs) > index else None
    if index is None or bias is None or fp_node is None or len(fp_node.input) <= index:
        return
    dq = bias.producer()
    act = node.inputs[0].producer() if node.inputs[0] is not None else None
    if dq is None or act is None or dq.op_type != "DequantizeLinear" or fp_node.input[index] not in fp32:
        return
    act_scale = constant(act.inputs[1])
    q_value, scale_value = dq.inputs[0], dq.inputs[1]
    if act_scale is None or q_value is None or scale_value is None:
        return
    qbias, scale = quantize_bias(numpy_helper.to_array(fp32[fp_node.input[index]]), act_scale, weight_scale)
    set_constant(q_value, qbias)
    set_constant(scale_value, scale)


def _plan_iterations(targets: Sequence[Target], options: RecoveryOptions) -> dict[str, int]:
    """Adam steps per layer within the per-layer and total work budgets (deterministic: no clock)."""
    per_step = {
        t.name: adaround_work(t.weight_fp32.size, options.adaround_batch, t.layer.out_channels // t.layer.groups)
        for t in targets
        if t.exclusive
    }
    plan = {
        name: min(options.adaround_iterations, int(options.adaround_layer_seconds * REFERENCE_FLOPS / work))
        for name, work in per_step.items()
    }
    total = sum(plan[name] * per_step[name] for name in plan)
    budget = options.adaround_seconds * REFERENCE_FLOPS
    if total > budget > 0:
        factor = budget / total
        plan = {name: int(math.floor(steps * factor)) for name, steps in plan.items()}
    return {name: steps for name, steps in plan.items() if steps >= options.adaround_min_iterations}


def _sample_rows(
    target: Target, x_q: list[np.ndarray], x_fp: list[np.ndarray], limit: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Input rows in the quantized model and FP32 outputs (no bias) at up to ``limit`` sampled positions."""
    layer = target.layer
    quota = max(1, math.ceil(limit / max(len(x_q), 1)))
    weight_t = layer.weight_matrix(target.weight_fp32).transpose(0, 2, 1)
    inputs, outputs = [], []
    for xq, xf in zip(x_q, x_fp, strict=True):
        count = layer.num_positions(xq.shape)
        pick = np.arange(count) if count <= quota else np.sort(rng.choice(count, size=quota, replace=False))
        inputs.append(layer.rows(xq, pick))
        outputs.append(np.matmul(layer.rows(xf, pick), weight_t))
    return np.concatenate(inputs, axis=1), np.concatenate(outputs, axis=1)


def _adaround_target(
    target: Target, x_q: list[np.ndarray], x_fp: list[np.ndarray], steps: int, options: RecoveryOptions,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, AdaRoundResult | None, str]:
    """(the new integers or None, the result, why it was skipped)."""
    layer = target.layer
    k = target.weight_fp32.size // layer.out_channels
    rows, outputs = _sample_rows(target, x_q, x_fp, min(options.adaround_positions, max(512, 32 * k)), rng)
    if rows.shape[1] < 3 * k:  # too few equations per unknown of a channel: it would fit the samples
        return None, None, f"{rows.shape[1]} output positions for {k} inputs per channel (too few samples)"
    current = target.weight_integers()
    scale, zp, _axis = dq_params(target.weight_dq)
    qmin, qmax = target.weight_qrange()
    result = adaround_matrix(
        layer.weight_matrix(target.weight_fp32),
        layer.weight_matrix(current),
        layer.channel_vector(scale),
        layer.channel_vector(zp),
        qmin,
        qmax,
        rows,
        outputs,
        iterations=steps,
        batch=options.adaround_batch,
        regularization=options.adaround_regularization,
        learning_rate=options.adaround_learning_rate,
        rng=rng,
    )
    if result.integers is None:
        return None, result, "the learned rounding did not lower the output error"
    return layer.weight_from_matrix(result.integers).astype(current.dtype), result, ""


def moved_integers(target: Target, mask: np.ndarray) -> np.ndarray:
    """The target's integers with the masked ones moved one step towards the other neighbour of ``w / s``."""
    current = target.weight_integers()
    scale, zp, axis = dq_params(target.weight_dq)
    rank = current.ndim
    base = np.floor(target.weight_fp32 / broadcast_channel(scale, axis, rank)) + broadcast_channel(
        zp.astype(np.float32), axis, rank
    )
    cur = current.astype(np.float32)
    moved = np.where(cur == base, cur + 1, cur - 1)
    return np.where(mask.reshape(current.shape), moved, cur).astype(current.dtype)


@dataclass
class WeightRoundingReport:
    """What ``weight-rounding`` did.

    Attributes:
        clipped: weights (their DequantizeLinear) re-quantized with MSE clip ratios.
        adarounded: node -> (output error with the previous rounding, with the learned one) on the calibration positions.
        skipped: node -> why AdaRound left it alone.
        seconds: wall time.
        segments: ONNX Runtime sessions run.
    """

    clipped: list[str] = field(default_factory=list)
    adarounded: dict[str, tuple[float, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    segments: int = 0


@register_pass("weight-rounding")
class WeightRoundingPass(QuantizationPass):
    """``RecoveryConfig.weight_rounding``: MSE clipping (``mse``), then AdaRound (``adaround``), after Q/DQ insertion.

    Records the clip ratios (per weight DequantizeLinear) and AdaRound's moved weights (a bit mask per
    node); replaying a recipe applies them without data.
    """

    def call(self, model: ir.Model) -> QuantPassResult:
        mode = self.context.recovery.weight_rounding
        if mode is WeightRounding.NEAREST or self.context.config.approach is Approach.DYNAMIC:
            return QuantPassResult(model, False)
        started = time.perf_counter()
        replay = self.context.recorded(self.name)
        report = WeightRoundingReport()
        ratios, changes = _clip_weights(model, self.context, replay.get("clip_ratios", {}) if replay is not None else None)
        report.clipped = sorted(ratios)
        record: dict[str, Any] = {}
        if ratios:
            record["clip_ratios"] = {k: encode_array(v) for k, v in sorted(ratios.items())}
        if mode is WeightRounding.ADAROUND:
            assert self.context.fp32_model is not None
            fp32 = ir.serde.deserialize_model(self.context.fp32_model)
            targets, report.skipped = find_targets(model, fp32)
            if replay is not None:
                recorded = replay.get("roundings", {})
                applied = {t.name: recorded[t.name] for t in targets if t.name in recorded}
                for target in targets:
                    if target.name in applied:
                        set_constant(target.weight_value, moved_integers(target, unpack_mask(applied[target.name])))
                changes += len(applied)
                if applied:
                    record["roundings"] = dict(sorted(applied.items()))
            else:
                masks = self._adaround(model, targets, report)
                changes += len(masks)
                if masks:
                    record["roundings"] = {k: pack_mask(v) for k, v in sorted(masks.items())}
        report.seconds = time.perf_counter() - started
        return QuantPassResult(model, changes > 0, changes=changes, record=record, report=report)

    def _adaround(self, model: ir.Model, targets: list[Target], report: WeightRoundingReport) -> dict[str, np.ndarray]:
        options = self.context.recovery_options
        plan = _plan_iterations(targets, options)
        for target in targets:
            if not target.exclusive:
                report.skipped[target.name] = "the quantized weight is shared with another node"
            elif target.name not in plan:
                report.skipped[target.name] = "no work budget left for this layer"
        chosen = [t for t in targets if t.name in plan]
        if not chosen:
            return {}
        assert self.context.fp32_model is not None
        feeds = first_samples(self.context.calibration_feeds(), options.samples)
        walk = LayerwiseWalk(model, self.context.fp32_model, feeds, options.threads, chosen)
        rng = np.random.default_rng(options.seed)
        masks: dict[str, np.ndarray] = {}
        with single_threaded_blas():
            for target in chosen:
                x_q, x_fp = walk.inputs(target)
                new, result, why = _adaround_target(target, x_q, x_fp, plan[target.name], options, rng)
                if new is None:
                    report.skipped[target.name] = why
                    continue
                assert result is not None
                masks[target.name] = new != target.weight_integers()
                walk.write(target.weight_value, new)
                report.adarounded[target.name] = (result.error_nearest, result.error_learned)
        report.segments = walk.segments
        logger.info("AdaRound: %d of %d layer(s) rounded (%d segments).", len(masks), len(targets), walk.segments)
        return masks
