"""Lower Q/DQ graphs to the QOperator format (QLinearConv, QLinearMatMul, QLinearAdd, ...).

A rule set on the rewrite engine (:mod:`lpot_ir.passes.rewrite`); each rule replaces
``DQ -> op -> Q`` by the integer op that reads and writes INT8 directly. Used only when the
configuration asks for ``format: qoperator``: ``QLinearConv``/``QLinearMatMul`` and integer data
movement are standard ONNX, the others are ONNX Runtime contrib ops (domain ``com.microsoft``).

Rules (spec in arrow form):

* ``Q(Conv(DQ(x), DQ(W), DQ(B)?)) -> QLinearConv(x, W, B)`` (also through a ``Relu``/``Clip(0, ..)`` when
  the output zero point is the type's minimum, so the saturation is the activation)
* ``Q(MatMul(DQ(a), DQ(b))) -> QLinearMatMul``; ``Q(Gemm(DQ(a), DQ(b), DQ(c)?)) -> com.microsoft.QGemm``;
  without the output Q: ``MatMulIntegerToFloat`` and ``QGemm`` with a float output
* ``Q(Add|Mul(DQ(a), DQ(b))) -> com.microsoft.QLinearAdd|QLinearMul``
* ``Q(AveragePool|GlobalAveragePool|Sigmoid|LeakyRelu(DQ(x))) -> com.microsoft.QLinear*``
* ``Q(op(DQ(x, s, z), ...), s, z) -> op(x, ...)`` for data movement (MaxPool, Reshape, Transpose, ...)
* dynamic: ``Mul(Cast(MatMulInteger(DynamicQuantizeLinear(x), W)), scale) -> com.microsoft.DynamicQuantizeMatMul``;
  ``LSTM(x, DQ(W), DQ(R)) -> com.microsoft.DynamicQuantizeLSTM``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from lpot_ir.ir.pattern import Builder, Match, Pattern, Rule, RuleSet, const, forwarded_attributes, op, var
from lpot_ir.passes.base import register_rule_set, run_pipeline
from lpot_ir.passes.rewrite import RewriteReport

__all__ = ["MS_DOMAIN", "qoperator_rules", "lower_to_qoperator"]

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
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


def _emit(b: Builder, op_type: str, inputs: list[ir.Value | None], node: ir.Node | None = None,
          domain: str = "", **extra: Any) -> ir.Value:
    attrs: dict[str, Any] = forwarded_attributes(_attrs(node)) if node is not None else {}
    attrs.update(extra)
    return b.op(op_type, *inputs, domain=domain, **attrs)


# -- Conv ------------------------------------------------------------------------------------------


def _conv_rule(with_bias: bool, activation: str | None) -> Rule:
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
        return _emit(b, "QLinearConv", [m["x"], m["x_s"], m["x_z"], m["w"], m["w_s"], m["w_z"], m["y_s"], m["y_z"],
                                        *bias], m.node("conv"))

    name = f"LowerQLinearConv{'Bias' if with_bias else ''}{activation or ''}"
    spec = f"Q({activation + '(' if activation else ''}Conv(DQ(x), DQ(W){', DQ(B)' if with_bias else ''})" \
           f"{')' if activation else ''}) → QLinearConv"
    return Rule(name, _q(inner), replace, check, spec=spec)


# -- MatMul / Gemm -----------------------------------------------------------------------------------


def _matmul_rule() -> Rule:
    inner = op("MatMul", _dq("a"), _dq("b"), name="mm")

    def check(m: Match) -> str | None:
        return _sole_use(m, "mm") or _per_tensor(m, "a_s", "y_s", "b_z")

    def replace(b: Builder, m: Match) -> ir.Value:
        return _emit(b, "QLinearMatMul", [m["a"], m["a_s"], m["a_z"], m["b"], m["b_s"], m["b_z"], m["y_s"], m["y_z"]])

    return Rule("LowerQLinearMatMul", _q(inner), replace, check, spec="Q(MatMul(DQ(a), DQ(b))) → QLinearMatMul")


def _gemm_rule(with_bias: bool) -> Rule:
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
        return b.op("QGemm", m["a"], m["a_s"], m["a_z"], m["w"], m["w_s"], m["w_z"], *c, m["y_s"], m["y_z"],
                    domain=MS_DOMAIN, **attrs)

    name = f"LowerQGemm{'Bias' if with_bias else ''}"
    return Rule(name, _q(inner), replace, check, spec="Q(Gemm(DQ(a), DQ(W), DQ(C)?)) → com.microsoft.QGemm")


def _feeds_quantize(m: Match, label: str) -> str | None:
    if any(c.op_type == "QuantizeLinear" for c in m.node(label).outputs[0].consumers()):
        return "its output is quantized: the Q-rooted rule lowers it with an INT8 output"
    return None


def _gemm_float_rule(with_bias: bool) -> Rule:
    inputs = [_dq("a"), _dq("w", constant=True)] + ([_dq("c", constant=True)] if with_bias else [])
    root = op("Gemm", *inputs, name="gemm")

    def check(m: Match) -> str | None:
        if m.attr("gemm", "beta", 1.0) != 1.0:
            return "beta != 1"
        return _feeds_quantize(m, "gemm") or _per_tensor(m, "a_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        c = [m["c"]] if with_bias else []
        attrs = forwarded_attributes(_attrs(m.node("gemm"), drop=("beta",)))
        return b.op("QGemm", m["a"], m["a_s"], m["a_z"], m["w"], m["w_s"], m["w_z"], *c, domain=MS_DOMAIN, **attrs)

    return Rule(f"LowerQGemmFloatOutput{'Bias' if with_bias else ''}", Pattern(root, exclusive=False), replace, check,
                spec="Gemm(DQ(a), DQ(W), DQ(C)?) → com.microsoft.QGemm (float output)")


def _matmul_float_rule() -> Rule:
    root = op("MatMul", _dq("a"), _dq("b"), name="mm")

    def check(m: Match) -> str | None:
        return _feeds_quantize(m, "mm") or _per_tensor(m, "a_s", "a_z")

    def replace(b: Builder, m: Match) -> ir.Value:
        return b.op("MatMulIntegerToFloat", m["a"], m["b"], m["a_s"], m["b_s"], m["a_z"], m["b_z"], domain=MS_DOMAIN)

    return Rule("LowerMatMulIntegerToFloat", Pattern(root, exclusive=False), replace, check, commute=False,
                spec="MatMul(DQ(a), DQ(b)) → com.microsoft.MatMulIntegerToFloat (float output)")


# -- binary, pools, activations --------------------------------------------------------------------


def _binary_rule(op_type: str) -> Rule:
    inner = op(op_type, _dq("a"), _dq("b"), name="bin")

    def check(m: Match) -> str | None:
        return _sole_use(m, "bin") or _per_tensor(m, "a_s", "b_s", "y_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        return _emit(b, f"QLinear{op_type}", [m["a"], m["a_s"], m["a_z"], m["b"], m["b_s"], m["b_z"], m["y_s"],
                                              m["y_z"]], domain=MS_DOMAIN)

    return Rule(f"LowerQLinear{op_type}", _q(inner), replace, check, commute=False,
                spec=f"Q({op_type}(DQ(a), DQ(b))) → com.microsoft.QLinear{op_type}")


def _unary_rule(op_type: str, target: str, keep_attrs: bool = True, **extra: Any) -> Rule:
    inner = op(op_type, _dq("x"), name="un")

    def check(m: Match) -> str | None:
        return _sole_use(m, "un") or _per_tensor(m, "x_s", "y_s")

    def replace(b: Builder, m: Match) -> ir.Value:
        node = m.node("un") if keep_attrs else None
        return _emit(b, target, [m["x"], m["x_s"], m["x_z"], m["y_s"], m["y_z"]], node, domain=MS_DOMAIN, **extra)

    return Rule(f"Lower{target}", _q(inner), replace, check, spec=f"Q({op_type}(DQ(x))) → com.microsoft.{target}")


_MOVEMENT = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Resize", "Pad",
             "Expand", "DepthToSpace", "SpaceToDepth", "Tile")


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
        return _emit(b, op_type, [m["x"], *rest], node)

    return Rule(f"LowerInteger{op_type}", _q(inner), replace, check, spec=f"Q({op_type}(DQ(x, s, z)), s, z) → {op_type}")


# -- dynamic -------------------------------------------------------------------------------------------


def _dynamic_matmul_rule() -> Rule:
    dql = op("DynamicQuantizeLinear", var("x"), name="dql", outputs=3)
    mmi = op("MatMulInteger", dql.out(0), const("w"), dql.out(2), const("w_z"), name="mmi")
    cast = op("Cast", mmi, name="cast")
    scale = op("Mul", dql.out(1), const("w_s"), name="scale")
    root = op("Mul", cast, scale, name="out")

    def check(m: Match) -> str | None:
        return _sole_use(m, "mmi", "cast", "scale")

    def replace(b: Builder, m: Match) -> ir.Value:
        return b.op("DynamicQuantizeMatMul", m["x"], m["w"], m["w_s"], m["w_z"], domain=MS_DOMAIN)

    return Rule("LowerDynamicQuantizeMatMul", Pattern(root, exclusive=False), replace, check, commute=False,
                spec="Mul(Cast(MatMulInteger(DynamicQuantizeLinear(x), W)), x_s·W_s) → DynamicQuantizeMatMul")


def _dynamic_lstm_rule() -> Rule:
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
            "DynamicQuantizeLSTM",
            m["x"], b.initializer(np.ascontiguousarray(w.transpose(0, 2, 1)), "W_t"),
            b.initializer(np.ascontiguousarray(r.transpose(0, 2, 1)), "R_t"), *rest,
            per_direction("w_s", np.float32), per_direction("w_z", np.int8),
            per_direction("r_s", np.float32), per_direction("r_z", np.int8),
            domain=MS_DOMAIN, outputs=len(node.outputs), **forwarded_attributes(_attrs(node, drop=("layout",))),
        )
        return outputs if isinstance(outputs, tuple) else (outputs,)

    return Rule("LowerDynamicQuantizeLSTM", Pattern(root, exclusive=False), replace, check, commute=False,
                spec="LSTM(x, DQ(W), DQ(R)) → com.microsoft.DynamicQuantizeLSTM")


@register_rule_set("qoperator")
def qoperator_rules() -> RuleSet:
    """The Q/DQ -> QOperator rule set (registered as ``qoperator``)."""
    rules: list[Rule] = []
    for bias in (True, False):
        for act in (None, "Relu", "Clip"):
            rules.append(_conv_rule(bias, act))
        rules.append(_gemm_rule(bias))
        rules.append(_gemm_float_rule(bias))
    rules += [_matmul_rule(), _matmul_float_rule(), _binary_rule("Add"), _binary_rule("Mul")]
    rules += [
        _unary_rule("GlobalAveragePool", "QLinearGlobalAveragePool", keep_attrs=False, channels_last=0),
        _unary_rule("AveragePool", "QLinearAveragePool"),
        _unary_rule("Sigmoid", "QLinearSigmoid"),
        _unary_rule("LeakyRelu", "QLinearLeakyRelu"),
    ]
    rules += [_movement_rule(t) for t in _MOVEMENT]
    rules += [_dynamic_matmul_rule(), _dynamic_lstm_rule()]
    return RuleSet("qoperator", rules, "Q/DQ to ONNX Runtime's QOperator ops")


def lower_to_qoperator(model: ir.Model) -> RewriteReport:
    """Lower ``model``'s Q/DQ patterns to QOperator ops in place, then drop what became unused.

    The steps ``qoperator`` and ``remove-unused`` of the ``int8-qoperator`` pipeline; returns the
    rewrite report of ``qoperator``.
    """
    report = run_pipeline(model, ["qoperator", "remove-unused"])
    rewrite = report["qoperator"].rewrite
    assert rewrite is not None, "qoperator is a rule set"
    return rewrite
