"""Rule set ``fuse-batchnorm``: fold an inference BatchNormalization into the Conv, ConvTranspose or
Gemm that feeds it.

With ``a = scale / sqrt(var + epsilon)`` per channel, ``BN(y) = a * y + (bias - a * mean)``, so the
producer's weights are scaled per output channel and its bias becomes ``a * (b - mean) + bias``.
The output channel axis differs: Conv weights are ``[M, C/g, k...]`` (axis 0); ConvTranspose weights
are ``[C, M/g, k...]`` (axis 1 within each of the ``g`` groups); Gemm's ``B`` is ``[K, N]`` or, with
``transB=1``, ``[N, K]``. The per-channel factors are computed in float64; the weights are scaled in their own dtype
(one rounding per element).
"""

from __future__ import annotations

import numpy as np

from lpot_ir.ir.pattern import (
    Builder,
    Match,
    OpPattern,
    PatternInput,
    Rule,
    RuleSet,
    const,
    forwarded_attributes,
    op,
    var,
)
from lpot_ir.passes.base import register_rule_set

__all__ = [
    "batchnorm_rules",
    "FUSE_BATCHNORM_INTO_CONV",
    "FUSE_BATCHNORM_INTO_CONV_TRANSPOSE",
    "FUSE_BATCHNORM_INTO_GEMM",
]

_FLOATS = (np.float16, np.float32, np.float64)


def _bn(producer: PatternInput) -> OpPattern:
    return op(
        "BatchNormalization", producer, const("scale"), const("bias"), const("mean"), const("var"), name="bn"
    )


def _bn_factors(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (a, shift) with BN(y) = a * y + shift, in float64."""
    eps = float(m.attr("bn", "epsilon", 1e-5))
    scale, bias, mean, variance = (np.asarray(m.const(k), dtype=np.float64) for k in ("scale", "bias", "mean", "var"))
    a = scale / np.sqrt(variance + eps)
    return a, bias - a * mean


def _check_bn(m: Match, weight: str, channels: int | None) -> str | None:
    if int(m.attr("bn", "training_mode", 0) or 0):
        return "BatchNormalization is in training mode"
    if int(m.attr("bn", "spatial", 1) if "spatial" in m.node("bn").attributes else 1) != 1:
        return "BatchNormalization has spatial=0 (per-element statistics, opset < 9)"
    params = [m.const(k) for k in ("scale", "bias", "mean", "var")]
    shapes = {tuple(np.shape(p)) for p in params}  # type: ignore[arg-type]
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        return f"BatchNormalization parameters are not vectors of one length: {sorted(shapes)}"
    w = m.const(weight)
    assert w is not None
    if w.dtype.type not in _FLOATS:
        return f"weight dtype {w.dtype} is not a float type"
    (c,) = next(iter(shapes))
    if channels is not None and channels != c:
        return f"the producer has {channels} output channels, BatchNormalization has {c}"
    return None


def _bias_shape_ok(m: Match, name: str, channels: int) -> str | None:
    bias = m.const(name)
    if bias is not None and tuple(bias.shape) != (channels,):
        return f"bias shape {tuple(bias.shape)} is not ({channels},)"
    return None


# ---- Conv ------------------------------------------------------------------------------------------


def _check_conv(m: Match) -> str | None:
    w = m.const("W")
    assert w is not None
    return _check_bn(m, "W", int(w.shape[0])) or _bias_shape_ok(m, "B", int(w.shape[0]))


def _fuse_conv(b: Builder, m: Match):  # noqa: ANN202
    conv = m.node("conv")
    w = m.const("W")
    assert w is not None
    a, shift = _bn_factors(m)
    bias = m.const("B")
    old_bias = np.zeros(w.shape[0]) if bias is None else bias.astype(np.float64)
    new_w = w * a.astype(w.dtype).reshape((-1,) + (1,) * (w.ndim - 1))
    new_b = (a * old_bias + shift).astype(w.dtype)
    return [
        b.op(
            "Conv", m["x"], b.initializer(new_w, "W"), b.initializer(new_b, "B"),
            name=conv.name, **forwarded_attributes(conv.attributes),
        )
    ]


FUSE_BATCHNORM_INTO_CONV = Rule(
    "FuseBatchNormIntoConv",
    _bn(op("Conv", var("x"), const("W"), const("B", optional=True), name="conv")),  # type: ignore[arg-type]
    _fuse_conv,
    check=_check_conv,
    spec="Conv(x, W, B) → BatchNormalization → Conv(x, W', B')",
)


# ---- ConvTranspose ---------------------------------------------------------------------------------


def _conv_transpose_channels(m: Match) -> int:
    w = m.const("W")
    assert w is not None
    return int(w.shape[1]) * int(m.attr("conv", "group", 1) or 1)


def _check_conv_transpose(m: Match) -> str | None:
    w = m.const("W")
    assert w is not None
    group = int(m.attr("conv", "group", 1) or 1)
    if w.shape[0] % group:
        return f"weight input channels {w.shape[0]} are not divisible by group={group}"
    channels = _conv_transpose_channels(m)
    return _check_bn(m, "W", channels) or _bias_shape_ok(m, "B", channels)


def _fuse_conv_transpose(b: Builder, m: Match):  # noqa: ANN202
    conv = m.node("conv")
    w = m.const("W")
    assert w is not None
    group = int(m.attr("conv", "group", 1) or 1)
    a, shift = _bn_factors(m)
    channels = _conv_transpose_channels(m)
    bias = m.const("B")
    old_bias = np.zeros(channels) if bias is None else bias.astype(np.float64)
    kernel = w.shape[2:]
    grouped = w.reshape((group, w.shape[0] // group, w.shape[1]) + tuple(kernel))
    factors = a.astype(w.dtype).reshape((group, 1, w.shape[1]) + (1,) * len(kernel))
    new_w = (grouped * factors).reshape(w.shape)
    new_b = (a * old_bias + shift).astype(w.dtype)
    return [
        b.op(
            "ConvTranspose", m["x"], b.initializer(new_w, "W"), b.initializer(new_b, "B"),
            name=conv.name, **forwarded_attributes(conv.attributes),
        )
    ]


FUSE_BATCHNORM_INTO_CONV_TRANSPOSE = Rule(
    "FuseBatchNormIntoConvTranspose",
    _bn(op("ConvTranspose", var("x"), const("W"), const("B", optional=True), name="conv")),  # type: ignore[arg-type]
    _fuse_conv_transpose,
    check=_check_conv_transpose,
    spec="ConvTranspose(x, W, B) → BatchNormalization → ConvTranspose(x, W', B')",
)


# ---- Gemm ------------------------------------------------------------------------------------------


def _gemm_channels(m: Match) -> int | None:
    w = m.const("W")
    assert w is not None
    if w.ndim != 2:
        return None
    return int(w.shape[0] if m.attr("gemm", "transB", 0) else w.shape[1])


def _check_gemm(m: Match) -> str | None:
    channels = _gemm_channels(m)
    if channels is None:
        return "Gemm's B is not a matrix"
    reason = _check_bn(m, "W", channels)
    if reason:
        return reason
    c = m.const("C")
    if c is not None:
        try:
            np.broadcast_shapes(c.shape, (channels,))
        except ValueError:
            return f"Gemm's C of shape {c.shape} does not broadcast with ({channels},)"
    return None


def _fuse_gemm(b: Builder, m: Match):  # noqa: ANN202
    gemm = m.node("gemm")
    w = m.const("W")
    assert w is not None
    a, shift = _bn_factors(m)
    trans_b = int(m.attr("gemm", "transB", 0) or 0)
    factors = a[:, None] if trans_b else a[None, :]
    new_w = w * factors.astype(w.dtype)
    c = m.const("C")
    beta = float(m.attr("gemm", "beta", 1.0))
    new_c = shift if c is None else a * (beta * c.astype(np.float64)) + shift
    attributes = {k: v for k, v in gemm.attributes.items() if k != "beta"}
    return [
        b.op(
            "Gemm", m["A"], b.initializer(new_w, "B"), b.initializer(new_c.astype(w.dtype), "C"),
            name=gemm.name, **forwarded_attributes(attributes),
        )
    ]


FUSE_BATCHNORM_INTO_GEMM = Rule(
    "FuseBatchNormIntoGemm",
    _bn(op("Gemm", var("A"), const("W"), const("C", optional=True), name="gemm")),  # type: ignore[arg-type]
    _fuse_gemm,
    check=_check_gemm,
    spec="Gemm(A, B, C) → BatchNormalization → Gemm(A, B', C')",
)


@register_rule_set("fuse-batchnorm")
def batchnorm_rules() -> RuleSet:
    """BatchNormalization folded into Conv, ConvTranspose and Gemm."""
    return RuleSet(
        "fuse-batchnorm",
        [FUSE_BATCHNORM_INTO_CONV, FUSE_BATCHNORM_INTO_CONV_TRANSPOSE, FUSE_BATCHNORM_INTO_GEMM],
        "Fold inference BatchNormalization into the preceding Conv, ConvTranspose or Gemm",
    )



