"""Write quantized models so ONNX Runtime does not fuse them into kernels slower than the unfused ops.

ONNX Runtime's optimizer (level ``all``) fuses some patterns into contrib ops whose CPU kernel is slower
than the standard ops they replace; :data:`~lpot_ir.backends.onnxruntime.capabilities.SLOW_ORT_FUSIONS`
lists them with the measurement. This rule set rewrites each such pattern into an equivalent form the
fusion does not match. It is the last step (``avoid-slow-ort-fusions``) of every quantization pipeline.

Rules (spec in arrow form):

* ``LayerNormalization(Add(a, b)) → LayerNormalization(Sum(a, b))`` — avoids ``SkipLayerNormalization``.
  ORT fuses a residual ``Add`` into the following ``LayerNormalization`` whenever both Add inputs have the
  same static 3-D shape, which lpot-ir's shape-inferred models always state (ORT's own quantizer keeps
  the fusion off some layers only because its models lose the shape through ``Reshape``). A two-input
  ``Sum`` computes the same sum with the same kernel speed as ``Add`` and is not matched. Only an Add of
  two non-constant tensors whose only reader is the LayerNormalization is rewritten (anything else is
  not fused by ORT either).

More rules work around ONNX Runtime behaviour rather than a slow kernel, and run always:

* ``Conv(DequantizeLinear(q, s, zp), w) → Conv(DequantizeLinear(q, [s]*C, [zp]*C, axis=1), w)`` (and
  ``ConvTranspose``, ``Gemm``), where ``w`` is a float32 initializer: a node kept in **FP32** that reads an
  activation quantized for its INT8 neighbours. ORT's ``WeightBiasQuantization`` (graph optimization
  level 1 and up) quantizes the float weight of a Conv/ConvTranspose/Gemm whose input comes from a
  per-tensor ``DequantizeLinear`` and whose output goes on into a ``QuantizeLinear`` (ORT 1.32: also
  through a Clip/Relu it folds into the Q) to INT8 **per tensor** (and its bias to int32), so the
  session silently runs an "FP32" fallback in INT8, per-tensor: on EfficientNet-Lite2 reverting one
  depthwise Conv this way raised the logits' relative error from 0.10 to 0.30. The same dequantization
  written per channel (the one scale repeated) is exactly the same numbers and is not matched.

* ``Pad(x, pads, value, axes) → Pad(x, full_pads, value)`` — ORT 1.32's layout transformer (level ``all``,
  triggered by ``QLinearConv``) permutes the ``axes`` input of an opset-18 ``Pad`` with a ``Gather`` that
  indexes out of range, so the session fails at run time ("indices element out of data bounds"). Spelling
  the pads out for every axis (zeros elsewhere) is the same computation without ``axes``. Applied when
  ``axes`` and ``pads`` are constants and the rank of ``x`` is known.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import SLOW_ORT_FUSIONS, constant_value
from lpot_ir.ir.pattern import Builder, Match, Pattern, Rule, RuleSet, forwarded_attributes, op, var
from lpot_ir.passes.base import register_rule_set
from lpot_ir.passes.rewrite import RewriteReport, apply_rules

__all__ = ["avoid_slow_ort_fusions", "slow_fusion_rules"]

logger = logging.getLogger(__name__)


def _skip_layer_norm_rule() -> Rule:
    add = op("Add", var("a"), var("b"), name="add")
    root = op("LayerNormalization", add, var("scale"), var("bias", optional=True), name="ln", outputs=1)

    def check(m: Match) -> str | None:
        if constant_value(m["a"]) is not None or constant_value(m["b"]) is not None:
            return "one Add input is a constant (a bias, not a residual): ORT does not fuse it"
        return None

    def replace(b: Builder, m: Match) -> ir.Value:
        add_node, ln = m.node("add"), m.node("ln")
        total = b.op("Sum", m["a"], m["b"], name=add_node.name)
        attrs = forwarded_attributes(ln.attributes)
        return b.op("LayerNormalization", total, m["scale"], m["bias"], name=ln.name, **attrs)

    return Rule(
        "KeepResidualAddOutOfSkipLayerNorm",
        Pattern(root),  # exclusive: the Add feeds only the LayerNormalization (what ORT's fusion requires too)
        replace,
        check,
        commute=False,
        spec="LayerNormalization(Add(a, b)) → LayerNormalization(Sum(a, b))",
    )


def _pad_axes_rule() -> Rule:
    root = op("Pad", var("x"), var("pads"), var("value", optional=True), var("axes"), name="pad")

    def check(m: Match) -> str | None:
        x = m["x"]
        if x is None or x.shape is None or constant_value(m["pads"]) is None or constant_value(m["axes"]) is None:
            return "rank, pads or axes unknown"
        return None

    def replace(b: Builder, m: Match) -> ir.Value:
        x = m["x"]
        assert x is not None and x.shape is not None, "the check saw x's rank"
        rank = len(x.shape)
        pads = np.asarray(constant_value(m["pads"])).reshape(-1).astype(np.int64)
        axes = [int(a) % rank for a in np.asarray(constant_value(m["axes"])).reshape(-1)]
        full = np.zeros(2 * rank, dtype=np.int64)
        for k, axis in enumerate(axes):
            full[axis], full[rank + axis] = pads[k], pads[len(axes) + k]
        node = m.node("pad")
        attrs = forwarded_attributes(node.attributes)
        return b.op("Pad", m["x"], b.initializer(full, "pads"), m["value"], name=node.name, **attrs)

    return Rule("SpellOutPadAxes", Pattern(root, exclusive=False), replace, check, commute=False,
                spec="Pad(x, pads, value, axes) → Pad(x, full_pads, value)")


def _input_channels(node: ir.Node, weight: np.ndarray) -> tuple[int, int] | None:
    """(axis, length) of the channel axis of ``node``'s data input, from its weight's shape."""
    if weight.ndim < 2:
        return None
    attrs = node.attributes
    if node.op_type == "Conv":
        group = attrs["group"].as_int() if "group" in attrs else 1
        return 1, int(weight.shape[1]) * group
    if node.op_type == "ConvTranspose":
        return 1, int(weight.shape[0])
    trans_a = attrs["transA"].as_int() if "transA" in attrs else 0
    trans_b = attrs["transB"].as_int() if "transB" in attrs else 0
    inner = int(weight.shape[1] if trans_b else weight.shape[0])
    return (0 if trans_a else 1), inner


def _fp32_weights_rule(op_type: str) -> Rule:
    dq = op("DequantizeLinear", var("q"), var("scale"), var("zero_point"), name="dq")
    root = op(op_type, dq, var("w"), var("b", optional=True), name="node")

    def check(m: Match) -> str | None:
        w = m["w"]
        weight = constant_value(w) if w is not None else None
        scale = constant_value(m["scale"])
        zero_point = constant_value(m["zero_point"])
        if w is None or weight is None or np.asarray(weight).dtype != np.float32 or w.producer() is not None:
            return "the weight is not a float32 initializer (quantized, or computed): ORT leaves it alone"
        if scale is None or zero_point is None or np.asarray(scale).size != 1:
            return "the input is dequantized per channel or with computed parameters: ORT leaves the weight alone"
        if _input_channels(m.node("node"), np.asarray(weight)) is None:
            return "the weight's shape does not give the input's channel count"
        return None

    def replace(b: Builder, m: Match) -> ir.Value:
        node = m.node("node")
        axis, channels = _input_channels(node, np.asarray(constant_value(m["w"])))  # type: ignore[misc]
        scale = np.full(channels, np.asarray(constant_value(m["scale"])).reshape(-1)[0], dtype=np.float32)
        zero_point_array = np.asarray(constant_value(m["zero_point"]))
        zero_point = np.full(channels, zero_point_array.reshape(-1)[0], dtype=zero_point_array.dtype)
        data = b.op(
            "DequantizeLinear", m["q"], b.initializer(scale, "scale_per_channel"),
            b.initializer(zero_point, "zero_point_per_channel"), axis=axis, name=f"{node.name}/input_dq",
        )
        data.type = ir.TensorType(ir.DataType.FLOAT)  # what the per-tensor DQ's output was: typed and shaped
        data.shape = m["q"].shape if m["q"] is not None else None
        attrs = forwarded_attributes(node.attributes)
        inputs = [data, m["w"]] + ([m["b"]] if m["b"] is not None else [])
        return b.op(op_type, *inputs, name=node.name, **attrs)

    return Rule(
        f"KeepFp32WeightsOf{op_type}",
        Pattern(root, exclusive=False),  # the per-tensor DQ stays for the INT8 readers of the same value
        replace,
        check,
        commute=False,
        spec=f"{op_type}(DQ(q, s, zp), w_fp32) → {op_type}(DQ(q, [s]*C, [zp]*C, axis), w_fp32)",
    )


_RULES = {"SkipLayerNormalization": _skip_layer_norm_rule}
_ORT_BUG_WORKAROUNDS = (
    _pad_axes_rule,
    lambda: _fp32_weights_rule("Conv"),
    lambda: _fp32_weights_rule("ConvTranspose"),
    lambda: _fp32_weights_rule("Gemm"),
)


@register_rule_set("avoid-slow-ort-fusions")
def slow_fusion_rules() -> RuleSet:
    """The rules for the fusions listed in :data:`SLOW_ORT_FUSIONS`, and the ORT bug workarounds."""
    return RuleSet(
        "avoid-slow-ort-fusions",
        [make() for fused, make in _RULES.items() if fused in SLOW_ORT_FUSIONS]
        + [make() for make in _ORT_BUG_WORKAROUNDS],
        "equivalent forms that ONNX Runtime does not fuse into slower kernels",
    )


def avoid_slow_ort_fusions(model: ir.Model) -> RewriteReport:
    """Rewrite ``model`` in place with :func:`slow_fusion_rules` (the step ``avoid-slow-ort-fusions``)."""
    return apply_rules(model, slow_fusion_rules())
