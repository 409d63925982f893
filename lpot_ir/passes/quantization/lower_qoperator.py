"""Lower Q/DQ graphs to the QOperator format (QLinearConv, QLinearMatMul, QLinearAdd, ...).

The rule set ``qoperator`` on the rewrite engine (:mod:`lpot_ir.passes.rewrite`); each rule replaces
``DQ -> op -> Q`` by the integer op that reads and writes INT8 directly. It is generated from the
capability table (:data:`~lpot_ir.backends.onnxruntime.capabilities.CAPABILITIES`): an entry's
``qoperator``, ``float_output``, ``dynamic`` and ``dynamic_qoperator`` kernels name the ops the rules emit,
and its category picks the rule's shape; nothing here lists op types. Step of the ``int8-qoperator`` and
``int8-dynamic-qoperator`` pipelines. ``QLinearConv``/``QLinearMatMul`` and integer data movement are
standard ONNX, the others are ONNX Runtime contrib ops (domain ``com.microsoft``).

Rules (each name is ``Lower`` + the kernel it emits; ``tests/quantization/test_quant_qoperator.py`` checks
that this list is the rule set):

* ``LowerQLinearConv``, ``LowerQLinearConvBias``: ``Q(Conv(DQ(x), DQ(W), DQ(B)?)) → QLinearConv``;
  ``LowerQLinearConvRelu``, ``LowerQLinearConvClip``, ``LowerQLinearConvBiasRelu``, ``LowerQLinearConvBiasClip``:
  the same through a ``Relu``/``Clip(0, ..)`` when the output zero point is the type's minimum, so the
  saturation is the activation
* ``LowerQLinearMatMul``: ``Q(MatMul(DQ(a), DQ(b))) → QLinearMatMul``; ``LowerMatMulIntegerToFloat``:
  ``MatMul(DQ(a), DQ(b)) → com.microsoft.MatMulIntegerToFloat`` when nothing quantizes the output
* ``LowerQGemm``, ``LowerQGemmBias``: ``Q(Gemm(DQ(a), DQ(W), DQ(C)?)) → com.microsoft.QGemm``;
  ``LowerQGemmFloatOutput``, ``LowerQGemmFloatOutputBias``: the same with a float output
* ``LowerQLinearAdd``, ``LowerQLinearMul``: ``Q(Add|Mul(DQ(a), DQ(b))) → com.microsoft.QLinearAdd|QLinearMul``
* ``LowerQLinearAveragePool``, ``LowerQLinearGlobalAveragePool``, ``LowerQLinearSigmoid``,
  ``LowerQLinearLeakyRelu``: ``Q(op(DQ(x))) → com.microsoft.QLinear<op>``
* ``LowerIntegerMaxPool``, ``LowerIntegerReshape``, ``LowerIntegerTranspose``, ``LowerIntegerSqueeze``,
  ``LowerIntegerUnsqueeze``, ``LowerIntegerFlatten``, ``LowerIntegerSlice``, ``LowerIntegerResize``,
  ``LowerIntegerPad``, ``LowerIntegerExpand``, ``LowerIntegerDepthToSpace``, ``LowerIntegerSpaceToDepth``,
  ``LowerIntegerTile``: ``Q(op(DQ(x, s, z), ...), s, z) → op(x, ...)`` for data movement
* dynamic: ``LowerDynamicQuantizeMatMul``:
  ``Mul(Cast(MatMulInteger(DynamicQuantizeLinear(x), W)), scale) → com.microsoft.DynamicQuantizeMatMul``;
  ``LowerDynamicQuantizeLSTM``: ``LSTM(x, DQ(W), DQ(R)) → com.microsoft.DynamicQuantizeLSTM``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import (
    CAPABILITIES,
    MS_DOMAIN,
    Kernel,
    OpCapability,
    OpCategory,
)
from lpot_ir.ir.pattern import Builder, Match, Pattern, Rule, RuleSet, const, forwarded_attributes, op, var
from lpot_ir.passes.base import register_rule_set, run_pipeline
from lpot_ir.passes.rewrite import RewriteReport

__all__ = ["MS_DOMAIN", "qoperator_rules", "lower_to_qoperator"]

logger = logging.getLogger(__name__)

_QMIN = {np.dtype(np.uint8): 0, np.dtype(np.int8): -128}


def _dq(prefix: str, constant: bool = False) -> Any:
    data = const(prefix) if constant else var(prefix)
    return op("DequantizeLinear", data, const(f"{prefix}_s"), const(f"{prefix}_z"), name=f"dq_{prefix}")


def _q(inner: Any) -> Pattern:
    return Pattern(op("QuantizeLinear", inner, const("y_s"), const("y_z"), name="q"), exclusive=False)


def _sole_use(match: Match, *labels: str) -> str | None:
    """The intermediate float nodes must feed only the next node of the match (else they would be computed twice)."""
    for label in labels:
        node = match.node(label)
        out = node.outputs[0]
        if len(out.uses()) != 1 or out.is_graph_output():
            return f"{node.op_type} '{node.name}' has other users"
    return None


def _const(match: Match, name: str) -> np.ndarray:
    """``match.const(name)`` where the pattern (a ``const``) or the rule's check guarantees a constant."""
    array = match.const(name)
    assert array is not None, f"{name} is a constant by the pattern or the rule's check"
    return array


def _per_tensor(match: Match, *names: str) -> str | None:
    for name in names:
        array = match.const(name)
        if array is None or array.size != 1:
            return f"{name} is not per tensor"
    return None


def _attrs(node: ir.Node, drop: tuple[str, ...] = ()) -> dict[str, ir.Attr]:
    return {name: attr for name, attr in node.attributes.items() if name not in drop}


def _emit(b: Builder, kernel: Kernel, inputs: list[ir.Value | None], node: ir.Node | None = None) -> ir.Value:
    """The kernel's node: the source node's attributes (unless the kernel drops them) and the kernel's own."""
    keep = node is not None and kernel.keep_attributes
    attrs: dict[str, Any] = forwarded_attributes(_attrs(node)) if keep else {}  # type: ignore[arg-type]
    attrs.update(kernel.attributes)
    return b.op(kernel.op_type, *inputs, domain=kernel.domain, **attrs)


def _full(kernel: Kernel) -> str:
    """``com.microsoft.QGemm`` / ``QLinearConv``: the kernel as rule specs write it."""
    return f"{kernel.domain}.{kernel.op_type}" if kernel.domain else kernel.op_type


# -- Conv ------------------------------------------------------------------------------------------


def _conv_rule(kernel: Kernel, with_bias: bool, activation: str | None) -> Rule:
    inputs = [_dq("x"), _dq("w", constant=True)]
    if with_bias:
        inputs.append(_dq("b", constant=True))
    inner = op("Conv", *inputs, name="conv")
    chain = ["conv"]
    if activation == "Relu":
        inner = op("Relu", inner, name="act")
        chain.append("act")
    elif activation == "Clip":
        inner = op("Clip", inner, const("clip_lo"), var("clip_hi", optional=True), name="act")
        chain.append("act")

    def check(m: Match) -> str | None:
        if activation is not None:
            zp = m.const("y_z")
            if zp is None or zp.size != 1 or int(zp.reshape(-1)[0]) != _QMIN.get(zp.dtype, 1):
                return "the output zero point is not the type's minimum, so Q does not saturate at 0"
            if activation == "Clip":
                lo = m.const("clip_lo")
                if lo is None or float(lo.reshape(-1)[0]) != 0.0:
                    return "Clip's lower bound is not 0"
        w = m.const("w")
        if w is None or w.dtype != np.int8 and w.dtype != np.uint8:
            return "weight is not an 8-bit constant"
        return _sole_use(m, *chain) or _per_tensor(m, "x_s", "y_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        bias = [m["b"]] if with_bias else []
        return _emit(b, kernel, [m["x"], m["x_s"], m["x_z"], m["w"], m["w_s"], m["w_z"], m["y_s"], m["y_z"], *bias],
                     m.node("conv"))

    name = f"Lower{kernel.op_type}{'Bias' if with_bias else ''}{activation or ''}"
    spec = f"Q({activation + '(' if activation else ''}Conv(DQ(x), DQ(W){', DQ(B)' if with_bias else ''})" \
           f"{')' if activation else ''}) → {kernel.op_type}"
    return Rule(name, _q(inner), replace, check, spec=spec)


# -- MatMul / Gemm -----------------------------------------------------------------------------------


def _matmul_rule(kernel: Kernel) -> Rule:
    inner = op("MatMul", _dq("a"), _dq("b"), name="mm")

    def check(m: Match) -> str | None:
        return _sole_use(m, "mm") or _per_tensor(m, "a_s", "y_s", "b_z")

    def replace(b: Builder, m: Match) -> ir.Value:
        return _emit(b, kernel, [m["a"], m["a_s"], m["a_z"], m["b"], m["b_s"], m["b_z"], m["y_s"], m["y_z"]])

    return Rule(f"Lower{kernel.op_type}", _q(inner), replace, check, spec=f"Q(MatMul(DQ(a), DQ(b))) → {kernel.op_type}")


def _gemm_rule(kernel: Kernel, with_bias: bool) -> Rule:
    inputs = [_dq("a"), _dq("w", constant=True)] + ([_dq("c", constant=True)] if with_bias else [])
    inner = op("Gemm", *inputs, name="gemm")

    def check(m: Match) -> str | None:
        if m.attr("gemm", "beta", 1.0) != 1.0:
            return "beta != 1"
        return _sole_use(m, "gemm") or _per_tensor(m, "a_s", "y_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        c = [m["c"]] if with_bias else [None]
        node = m.node("gemm")
        attrs = forwarded_attributes(_attrs(node, drop=("beta",)))
        return b.op(kernel.op_type, m["a"], m["a_s"], m["a_z"], m["w"], m["w_s"], m["w_z"], *c, m["y_s"], m["y_z"],
                    domain=kernel.domain, **attrs)

    name = f"Lower{kernel.op_type}{'Bias' if with_bias else ''}"
    return Rule(name, _q(inner), replace, check, spec=f"Q(Gemm(DQ(a), DQ(W), DQ(C)?)) → {_full(kernel)}")


def _feeds_quantize(m: Match, label: str) -> str | None:
    if any(c.op_type == "QuantizeLinear" for c in m.node(label).outputs[0].consumers()):
        return "its output is quantized: the Q-rooted rule lowers it with an INT8 output"
    return None


def _gemm_float_rule(kernel: Kernel, with_bias: bool) -> Rule:
    inputs = [_dq("a"), _dq("w", constant=True)] + ([_dq("c", constant=True)] if with_bias else [])
    root = op("Gemm", *inputs, name="gemm")

    def check(m: Match) -> str | None:
        if m.attr("gemm", "beta", 1.0) != 1.0:
            return "beta != 1"
        return _feeds_quantize(m, "gemm") or _per_tensor(m, "a_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        c = [m["c"]] if with_bias else []
        attrs = forwarded_attributes(_attrs(m.node("gemm"), drop=("beta",)))
        return b.op(kernel.op_type, m["a"], m["a_s"], m["a_z"], m["w"], m["w_s"], m["w_z"], *c, domain=kernel.domain,
                    **attrs)

    return Rule(f"Lower{kernel.op_type}FloatOutput{'Bias' if with_bias else ''}", Pattern(root, exclusive=False),
                replace, check, spec=f"Gemm(DQ(a), DQ(W), DQ(C)?) → {_full(kernel)} (float output)")


def _matmul_float_rule(kernel: Kernel) -> Rule:
    root = op("MatMul", _dq("a"), _dq("b"), name="mm")

    def check(m: Match) -> str | None:
        return _feeds_quantize(m, "mm") or _per_tensor(m, "a_s", "a_z")

    def replace(b: Builder, m: Match) -> ir.Value:
        return b.op(kernel.op_type, m["a"], m["b"], m["a_s"], m["b_s"], m["a_z"], m["b_z"], domain=kernel.domain)

    return Rule(f"Lower{kernel.op_type}", Pattern(root, exclusive=False), replace, check, commute=False,
                spec=f"MatMul(DQ(a), DQ(b)) → {_full(kernel)} (float output)")


# -- binary, pools, activations --------------------------------------------------------------------


def _binary_rule(op_type: str, kernel: Kernel) -> Rule:
    inner = op(op_type, _dq("a"), _dq("b"), name="bin")

    def check(m: Match) -> str | None:
        return _sole_use(m, "bin") or _per_tensor(m, "a_s", "b_s", "y_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        return _emit(b, kernel, [m["a"], m["a_s"], m["a_z"], m["b"], m["b_s"], m["b_z"], m["y_s"], m["y_z"]])

    return Rule(f"Lower{kernel.op_type}", _q(inner), replace, check, commute=False,
                spec=f"Q({op_type}(DQ(a), DQ(b))) → {_full(kernel)}")


def _unary_rule(op_type: str, kernel: Kernel) -> Rule:
    inner = op(op_type, _dq("x"), name="un")

    def check(m: Match) -> str | None:
        return _sole_use(m, "un") or _per_tensor(m, "x_s", "y_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        return _emit(b, kernel, [m["x"], m["x_s"], m["x_z"], m["y_s"], m["y_z"]], m.node("un"))

    return Rule(f"Lower{kernel.op_type}", _q(inner), replace, check, spec=f"Q({op_type}(DQ(x))) → {_full(kernel)}")


def _pads_constant(m: Match) -> bool:
    return m.node("mv").op_type == "Pad" and m.attr("mv", "mode", "constant") in ("constant", b"constant")


def _quantized_pad_value(m: Match) -> np.ndarray:
    """Pad's float ``constant_value`` quantized with the input's scale and zero point (an integer Pad
    fills with 0, which is not the zero point of an asymmetric tensor)."""
    zero_point = _const(m, "x_z").reshape(())
    given = m.const("i2") if m["i2"] is not None else None
    value = 0.0 if given is None or given.size == 0 else float(given.reshape(-1)[0])
    info = np.iinfo(zero_point.dtype)
    scale = float(_const(m, "x_s").reshape(-1)[0])
    quantized = np.round(np.float32(value) / np.float32(scale)) + int(zero_point)
    # one element, 1-D: Builder.initializer stores a 0-d array as shape [1] (np.ascontiguousarray),
    # and a declared scalar would then disagree with its data; Pad takes either form
    return np.asarray(np.clip(quantized, info.min, info.max), dtype=zero_point.dtype).reshape(1)


def _movement_rule(op_type: str) -> Rule:
    extras = [var(f"i{k}", optional=True) for k in range(1, 5)]
    inner = op(op_type, _dq("x"), *extras, name="mv", outputs=1)

    def check(m: Match) -> str | None:
        for a, b in (("x_s", "y_s"), ("x_z", "y_z")):
            left, right = m.const(a), m.const(b)
            if left is None or right is None or left.tobytes() != right.tobytes():
                return "input and output quantization differ"
        if _pads_constant(m) and m["i2"] is not None and m.const("i2") is None:
            return "Pad's constant_value is not a constant"
        return _sole_use(m, "mv")

    def replace(b: Builder, m: Match) -> ir.Value:
        node = m.node("mv")
        rest = [m[f"i{k}"] for k in range(1, len(node.inputs))]
        if _pads_constant(m):  # the float pad value (0 unless given) in the integer domain
            rest += [None] * (2 - len(rest))
            rest[1] = b.initializer(_quantized_pad_value(m), "pad_value")
        return _emit(b, Kernel(op_type), [m["x"], *rest], node)

    return Rule(f"LowerInteger{op_type}", _q(inner), replace, check,
                spec=f"Q({op_type}(DQ(x, s, z)), s, z) → {op_type}")


# -- dynamic -------------------------------------------------------------------------------------------


def _dynamic_matmul_rule(integer_op: str, kernel: Kernel) -> Rule:
    dql = op("DynamicQuantizeLinear", var("x"), name="dql", outputs=3)
    mmi = op(integer_op, dql.out(0), const("w"), dql.out(2), const("w_z"), name="mmi")
    cast = op("Cast", mmi, name="cast")
    scale = op("Mul", dql.out(1), const("w_s"), name="scale")
    root = op("Mul", cast, scale, name="out")

    def check(m: Match) -> str | None:
        return _sole_use(m, "mmi", "cast", "scale")

    def replace(b: Builder, m: Match) -> ir.Value:
        return b.op(kernel.op_type, m["x"], m["w"], m["w_s"], m["w_z"], domain=kernel.domain)

    return Rule(f"Lower{kernel.op_type}", Pattern(root, exclusive=False), replace, check, commute=False,
                spec=f"Mul(Cast({integer_op}(DynamicQuantizeLinear(x), W)), x_s·W_s) → {_full(kernel)}")


def _dynamic_lstm_rule(kernel: Kernel) -> Rule:
    inputs = [var("x"), _dq("w", constant=True), _dq("r", constant=True)]
    inputs += [var(f"i{k}", optional=True) for k in range(3, 8)]
    root = op("LSTM", *inputs, name="lstm")

    def check(m: Match) -> str | None:
        w, r = m.const("w"), m.const("r")
        if w is None or r is None or w.dtype != np.int8 or r.dtype != np.int8:
            return "LSTM weights are not int8"
        if m.attr("lstm", "layout", 0) != 0:
            return "layout=1 is not supported by DynamicQuantizeLSTM"
        return _per_tensor(m, "w_s", "r_s", "w_z", "r_z")

    def replace(b: Builder, m: Match) -> Any:
        node = m.node("lstm")
        w, r = _const(m, "w"), _const(m, "r")
        directions = w.shape[0]

        def per_direction(name: str, dtype: Any) -> ir.Value:
            return b.initializer(np.full((directions,), _const(m, name).reshape(-1)[0], dtype=dtype), name)

        rest = [m[f"i{k}"] for k in range(3, 8)]
        outputs = b.op(
            kernel.op_type,
            m["x"], b.initializer(np.ascontiguousarray(w.transpose(0, 2, 1)), "W_t"),
            b.initializer(np.ascontiguousarray(r.transpose(0, 2, 1)), "R_t"), *rest,
            per_direction("w_s", np.float32), per_direction("w_z", np.int8),
            per_direction("r_s", np.float32), per_direction("r_z", np.int8),
            domain=kernel.domain, outputs=len(node.outputs), **forwarded_attributes(_attrs(node, drop=("layout",))),
        )
        return outputs if isinstance(outputs, tuple) else (outputs,)

    return Rule(f"Lower{kernel.op_type}", Pattern(root, exclusive=False), replace, check, commute=False,
                spec=f"LSTM(x, DQ(W), DQ(R)) → {_full(kernel)}")


def _rules_for(cap: OpCapability) -> list[Rule]:
    """The lowering rules of one capability-table entry (the kernels come from the entry)."""
    k, category, op_type = cap.qoperator, cap.category, cap.op_type
    rules: list[Rule] = []
    if category is OpCategory.COMPUTE:
        if op_type == "Conv" and k is not None:
            rules += [_conv_rule(k, bias, act) for bias in (True, False) for act in (None, "Relu", "Clip")]
        elif op_type == "MatMul" and k is not None:
            rules.append(_matmul_rule(k))
        elif op_type == "Gemm" and k is not None:
            rules += [_gemm_rule(k, bias) for bias in (True, False)]
        if op_type == "MatMul" and cap.float_output is not None:
            rules.append(_matmul_float_rule(cap.float_output))
        elif op_type == "Gemm" and cap.float_output is not None:
            rules += [_gemm_float_rule(cap.float_output, bias) for bias in (True, False)]
        if cap.dynamic is not None and cap.dynamic_qoperator is not None:
            rules.append(_dynamic_matmul_rule(cap.dynamic.op_type, cap.dynamic_qoperator))
    elif category is OpCategory.BINARY and k is not None:
        rules.append(_binary_rule(op_type, k))
    elif category in (OpCategory.POOL, OpCategory.ACTIVATION) and k is not None:
        rules.append(_unary_rule(op_type, k))
    elif category is OpCategory.DATA_MOVEMENT and k is not None:
        rules.append(_movement_rule(op_type))
    elif category is OpCategory.RECURRENT and op_type == "LSTM" and cap.dynamic_qoperator is not None:
        rules.append(_dynamic_lstm_rule(cap.dynamic_qoperator))
    return rules


@register_rule_set("qoperator")
def qoperator_rules() -> RuleSet:
    """The Q/DQ -> QOperator rule set (registered as ``qoperator``), generated from the capability table."""
    rules: dict[str, Rule] = {}
    for cap in CAPABILITIES.values():
        for rule in _rules_for(cap):
            rules.setdefault(rule.name, rule)  # Gemm and MatMul share the dynamic MatMul rule
    return RuleSet("qoperator", list(rules.values()), "Q/DQ to ONNX Runtime's QOperator ops")


def lower_to_qoperator(model: ir.Model) -> RewriteReport:
    """Lower ``model``'s Q/DQ patterns to QOperator ops in place, then drop what became unused.

    The steps ``qoperator`` and ``remove-unused`` of the ``int8-qoperator`` pipeline; returns the
    rewrite report of ``qoperator``.
    """
    report = run_pipeline(model, ["qoperator", "remove-unused"])
    rewrite = report["qoperator"].rewrite
    assert rewrite is not None, "qoperator is a rule set"
    return rewrite
