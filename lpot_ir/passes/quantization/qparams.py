"""Scale / zero-point arithmetic, bit-compatible with ONNX Runtime's quantizer.

The conventions (the same as ``onnxruntime.quantization.quant_utils``):

* integer ranges: uint8 [0, 255], int8 [-128, 127]; symmetric int8 [-127, 127]; ``reduce_range`` uses
  7 bits: uint8 [0, 127], int8 [-64, 64];
* the real range is widened to contain 0; symmetric ranges become [-absmax, absmax];
* ``scale = (rmax - rmin) / (qmax - qmin)`` computed in float64, stored as float32; a scale below the
  smallest normal float32 becomes 1 with zero point 0;
* zero point: symmetric -> ``round((qmin + qmax) / 2)`` (0 for int8, 128 for uint8), asymmetric ->
  ``round(qmin - rmin / scale)``; rounding is half to even everywhere (``numpy.round``);
* quantizing: ``clip(round(x_f32 / scale_f32) + zp, qmin, qmax)`` (what QuantizeLinear computes);
* bias: int32, scale = activation scale x weight scale (float32 product), zero point 0,
  ``round(bias_f64 / scale_f64)`` clipped to int32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpot_ir.ir.quant import DType, Granularity, QuantSpec, Scheme

__all__ = [
    "QParams",
    "qrange",
    "numpy_dtype",
    "compute_qparams",
    "weight_qparams",
    "weight_ranges",
    "range_qparams",
    "quantize_array",
    "quantize_bias",
]

_RANGES = {DType.UINT8: (0, 255), DType.INT8: (-128, 127)}
_SYMMETRIC = {DType.INT8: (-127, 127)}
_REDUCED = {DType.UINT8: (0, 127), DType.INT8: (-64, 64)}


@dataclass(frozen=True, eq=False)
class QParams:
    """Scale and zero point of one quantized tensor (arrays: shape ``()`` per tensor, ``(C,)`` per channel).

    Attributes:
        scale: float32 scale(s).
        zero_point: zero point(s) in the quantized dtype.
        dtype: the quantized element type.
        axis: the channel axis for per-channel parameters, else ``None``.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: DType
    axis: int | None = None

    def key(self) -> tuple[object, ...]:
        """A hashable identity: equal keys quantize identically."""
        return (self.dtype, self.axis, self.scale.tobytes(), self.zero_point.tobytes(), self.scale.shape)


def numpy_dtype(dtype: DType) -> type[np.integer]:
    """The numpy element type of a quantized dtype."""
    return np.uint8 if dtype is DType.UINT8 else np.int8


def qrange(dtype: DType, scheme: Scheme, reduce_range: bool = False) -> tuple[int, int]:
    """The integer range [qmin, qmax] for a dtype, scheme and ``reduce_range`` (ORT's convention)."""
    if reduce_range:
        return _REDUCED[dtype]
    if scheme is Scheme.SYM and dtype in _SYMMETRIC:
        return _SYMMETRIC[dtype]
    return _RANGES[dtype]


def _scale_zero_point(
    rmin: np.ndarray, rmax: np.ndarray, qmin: int, qmax: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    rmin = np.minimum(rmin.astype(np.float32), np.float32(0))
    rmax = np.maximum(rmax.astype(np.float32), np.float32(0))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / (float(qmax) - float(qmin))
    tiny = scale64 < np.finfo(np.float32).tiny
    safe = np.where(tiny, 1.0, scale64)
    if symmetric:
        zp = np.full(scale64.shape, np.round((qmin + qmax) / 2.0), dtype=np.float64)
    else:
        zp = np.round(qmin - rmin.astype(np.float64) / safe)
    zp = np.where(tiny, 0.0, zp)
    scale = np.where(tiny, 1.0, scale64).astype(np.float32)
    return scale, zp


def compute_qparams(lo: float, hi: float, spec: QuantSpec) -> QParams:
    """Per-tensor scale and zero point for the real range [lo, hi] under ``spec``."""
    qmin, qmax = qrange(spec.dtype, spec.scheme, spec.reduce_range)
    scale, zp = _scale_zero_point(
        np.asarray(lo, dtype=np.float32), np.asarray(hi, dtype=np.float32), qmin, qmax, spec.scheme is Scheme.SYM
    )
    return QParams(scale.reshape(()), zp.astype(numpy_dtype(spec.dtype)).reshape(()), spec.dtype)


def weight_ranges(weight: np.ndarray, spec: QuantSpec, axis: int | None) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(min, max, axis) of a weight: per channel along ``axis`` (shape ``(C,)``) or per tensor (shape ``()``)."""
    data = np.asarray(weight, dtype=np.float32)
    if spec.granularity is Granularity.PER_CHANNEL and axis is not None and data.ndim > 0:
        axis = axis % data.ndim
        moved = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
        if moved.shape[1] == 0:
            zeros = np.zeros(moved.shape[0], dtype=np.float32)
            return zeros, zeros, axis
        return moved.min(axis=1), moved.max(axis=1), axis
    if data.size:
        return np.asarray(data.min()), np.asarray(data.max()), None
    zero = np.asarray(0.0, dtype=np.float32)
    return zero, zero, None


def range_qparams(rmin: np.ndarray, rmax: np.ndarray, spec: QuantSpec, axis: int | None) -> QParams:
    """Scale(s) and zero point(s) for the real range(s) [rmin, rmax] (per channel when ``axis`` is set)."""
    qmin, qmax = qrange(spec.dtype, spec.scheme, spec.reduce_range)
    scale, zp = _scale_zero_point(np.asarray(rmin), np.asarray(rmax), qmin, qmax, spec.scheme is Scheme.SYM)
    if axis is not None:
        return QParams(scale, zp.astype(numpy_dtype(spec.dtype)), spec.dtype, axis)
    return QParams(scale.reshape(()), zp.astype(numpy_dtype(spec.dtype)).reshape(()), spec.dtype)


def weight_qparams(weight: np.ndarray, spec: QuantSpec, axis: int | None) -> QParams:
    """Scale(s) and zero point(s) of a constant weight (min/max of the data, per channel along ``axis``)."""
    rmin, rmax, axis = weight_ranges(weight, spec, axis)
    return range_qparams(rmin, rmax, spec, axis)


def quantize_array(data: np.ndarray, params: QParams, qmin: int | None = None, qmax: int | None = None) -> np.ndarray:
    """Quantize ``data`` exactly as QuantizeLinear does (round half to even, saturate).

    ``qmin``/``qmax`` narrow the saturation range (symmetric int8 weights use [-127, 127]).
    """
    lo, hi = _RANGES[params.dtype]
    lo = lo if qmin is None else max(lo, qmin)
    hi = hi if qmax is None else min(hi, qmax)
    data = np.asarray(data, dtype=np.float32)
    scale, zp = params.scale, params.zero_point.astype(np.float32)
    if params.axis is not None and scale.ndim == 1:
        shape = [1] * data.ndim
        shape[params.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    q = np.clip(np.round(data / scale) + zp, lo, hi)  # not in place: a 0-d input makes a NumPy scalar
    return np.asarray(q).astype(numpy_dtype(params.dtype))


def quantize_bias(bias: np.ndarray, act_scale: np.ndarray, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (int32 bias, float32 bias scale) with scale = activation scale x weight scale."""
    scale = (np.asarray(act_scale, dtype=np.float32) * np.asarray(weight_scale, dtype=np.float32)).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
    q = np.round(np.asarray(bias, dtype=np.float64) / scale.astype(np.float64))
    info = np.iinfo(np.int32)
    q = np.clip(q, info.min, info.max).astype(np.int32)
    return q, scale
