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
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, OpCategory
from lpot_ir.ir.quant import QuantSpec
from lpot_ir.passes.quantization.qparams import (
    QParams,
    qrange,
    quantize_array,
    range_qparams,
    weight_ranges,
)
from lpot_ir.passes.quantization.recovery.record import RecoveryRecord

__all__ = [
    "ZETA",
    "GAMMA",
    "clip_ratios",
    "clipped_weight",
    "AdaRoundResult",
    "adaround_matrix",
    "adaround_work",
    "ClipOverride",
]

logger = logging.getLogger(__name__)

ZETA = 1.1
GAMMA = -0.1
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


class ClipOverride:
    """The weight hook of :class:`~lpot_ir.passes.quantization.insert_qdq.InsertQDQPass` for MSE clipping.

    Computes (or, when replaying a recipe, reads) each compute node's clip ratios and records the ones
    that differ from plain min/max in ``record.clip_ratios``.

    Args:
        record: where the ratios are written, or read from when ``replay`` is set.
        replay: use the ratios in ``record`` instead of searching.
        cache: (weight name, spec, axis, shape) -> ratios, shared across configurations of one model.
    """

    def __init__(self, record: RecoveryRecord, *, replay: bool = False, cache: dict[tuple[object, ...], np.ndarray] | None = None) -> None:
        self.record = record
        self.replay = replay
        self.cache = cache if cache is not None else {}

    def __call__(
        self, node: ir.Node, index: int, data: np.ndarray, spec: QuantSpec, axis: int | None
    ) -> tuple[QParams, np.ndarray] | None:
        cap = CAPABILITIES.get(node.op_type)
        if cap is None or cap.category is not OpCategory.COMPUTE or index not in cap.weight_inputs:
            return None
        name = node.name or ""
        if self.replay:
            ratios = self.record.clip_ratios.get(name)
            if ratios is None:
                return None
        else:
            value = node.inputs[index]
            key = (value.name if value is not None else "", spec, axis, data.shape)
            ratios = self.cache.get(key)
            if ratios is None:
                ratios = clip_ratios(data, spec, axis)
                self.cache[key] = ratios
            if np.all(ratios == 1.0):
                return None
            self.record.clip_ratios[name] = ratios
        return clipped_weight(data, spec, axis, ratios)
