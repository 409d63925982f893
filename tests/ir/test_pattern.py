"""The pattern DSL: matching, variables, constants, attributes, commuted variants, decline reasons."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.ir import load_model
from lpot_ir.ir.pattern import (
    Decline,
    Match,
    Pattern,
    Rule,
    RuleSet,
    as_decline,
    const,
    constant_array,
    op,
    var,
)


def _model(nodes, inputs, outputs, inits=()) -> ir.Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return load_model(proto, check=False)


def _vi(name: str, shape=(2, 3)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _node(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in model.graph if n.name == name)


def _conv_bn_model(weight_is_input: bool = False, extra_use: bool = False) -> ir.Model:
    inits = [numpy_helper.from_array(np.ones(3, np.float32), n) for n in ("s", "b", "m", "v")]
    inputs = [_vi("x", (1, 3, 4, 4))]
    if weight_is_input:
        inputs.append(_vi("W", (3, 3, 1, 1)))
    else:
        inits.append(numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "W"))
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn"),
    ]
    outputs = [_vi("y", (1, 3, 4, 4))]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
        outputs.append(_vi("r", (1, 3, 4, 4)))
    return _model(nodes, inputs, outputs, inits)


CONV_BN = Pattern(
    op(
        "BatchNormalization",
        op("Conv", var("x"), const("W"), const("B", optional=True), name="conv"),
        const("scale"), const("bias"), const("mean"), const("var"),
        name="bn",
    )
)


def test_match_binds_values_constants_and_labels() -> None:
    model = _conv_bn_model()
    match = CONV_BN.match(_node(model, "bn"))
    assert isinstance(match, Match)
    assert match["x"].name == "x" and match["B"] is None and "B" not in match
    assert match.const("W").shape == (3, 3, 1, 1)
    assert match.node("conv").name == "conv" and match.root.name == "bn"
    assert [n.name for n in match.nodes] == ["conv", "bn"]
    assert match.attr("bn", "epsilon") == pytest.approx(1e-5)  # schema default when absent
    assert match.attr("conv", "group") == 1


@pytest.mark.parametrize(
    ("kwargs", "node", "reason"),
    [
        ({}, "conv", "Conv 'conv' is not BatchNormalization"),
        ({"weight_is_input": True}, "bn", "input 1 of Conv 'conv' must be constant (W) but is graph input 'W'"),
        ({"extra_use": True}, "bn", "output 'c' of Conv 'conv' is also used by Relu 'relu' outside the pattern"),
    ],
)
def test_decline_reasons_say_where(kwargs: dict, node: str, reason: str) -> None:
    result = CONV_BN.match(_node(_conv_bn_model(**kwargs), node))
    assert isinstance(result, Decline) and not result
    assert result.reason == reason


def test_op_mismatch_names_the_input_position() -> None:
    model = _model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Add", ["r", "x"], ["y"], name="add")],
        [_vi("x")], [_vi("y")],
    )
    result = Pattern(op("Add", op("Sigmoid", var("a")), var("b"))).match(_node(model, "add"))
    assert result.reason == "input 0 of Add 'add' comes from Relu 'relu', pattern expects Sigmoid"


def test_same_variable_must_bind_the_same_value() -> None:
    model = _model(
        [helper.make_node("Mul", ["x", "x"], ["s"], name="square"), helper.make_node("Mul", ["x", "s"], ["y"], name="m")],
        [_vi("x")], [_vi("y")],
    )
    square = Pattern(op("Mul", var("a"), var("a")))
    assert isinstance(square.match(_node(model, "square")), Match)
    declined = square.match(_node(model, "m"))
    assert declined.reason == "variable a binds 'x' and 's' (input 1 of Mul 'm')"


def test_attribute_constraints_literal_and_predicate() -> None:
    model = _model(
        [helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[1, 0])], [_vi("x")], [_vi("y", (3, 2))]
    )
    node = _node(model, "t")
    assert isinstance(Pattern(op("Transpose", var("x"), attrs={"perm": [1, 0]})).match(node), Match)
    assert isinstance(Pattern(op("Transpose", var("x"), attrs={"perm": lambda p: len(p) == 2})).match(node), Match)
    declined = Pattern(op("Transpose", var("x"), attrs={"perm": (0, 1)})).match(node)
    assert declined.reason == "attribute perm=(1, 0) of Transpose 't' is not (0, 1)"


def test_constant_node_outputs_count_as_constants() -> None:
    model = _model(
        [
            helper.make_node("Constant", [], ["k"], name="k", value_ints=[2, 3]),
            helper.make_node("Reshape", ["x", "k"], ["y"], name="r"),
        ],
        [_vi("x")], [_vi("y")],
    )
    match = Pattern(op("Reshape", var("x"), const("shape"))).match(_node(model, "r"))
    assert isinstance(match, Match)
    assert match.const("shape").tolist() == [2, 3]
    assert constant_array(model.graph.inputs[0]) is None


def test_commuted_variants_are_generated_once_each() -> None:
    assert len(Pattern(op("Add", op("MatMul", var("a"), var("b")), const("c"))).variants()) == 2
    assert len(Pattern(op("Add", var("x"), var("x"))).variants()) == 1  # swapping changes nothing
    assert len(Pattern(op("Mul", op("Add", var("a"), var("b")), var("c"))).variants()) == 4
    assert len(Pattern(op("Sum", var("a"), var("b"), var("c"))).variants()) == 1  # only 2-input Sum commutes
    assert len(Pattern(op("Sub", op("Relu", var("a")), var("b"))).variants()) == 1
    variants = Pattern(op("Mul", op("Add", var("a"), var("b"), name="add"), var("c"))).variants()
    assert all(v.labels[v.nodes[0]] == "add" for v in variants)  # labels follow the nodes


def test_rule_matches_the_swapped_form_without_writing_it() -> None:
    model = _model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Add", ["x", "r"], ["y"], name="add")],
        [_vi("x")], [_vi("y")],
    )
    rule = Rule("AddRelu", op("Add", op("Relu", var("a")), var("b")), lambda b, m: [m["b"]])
    assert len(rule.variants) == 2
    match = rule.try_match(_node(model, "add"))
    assert isinstance(match, Match) and match["b"].name == "x"
    no_commute = Rule("AddReluStrict", op("Add", op("Relu", var("a")), var("b")), lambda b, m: [m["b"]], commute=False)
    assert isinstance(no_commute.try_match(_node(model, "add")), Decline)


def test_check_results_and_declines() -> None:
    assert as_decline(None) is None and as_decline(True) is None
    assert as_decline(False).reason == "the check returned False"
    assert as_decline("too small").reason == "too small"
    assert as_decline(Decline("x")).reason == "x"
    with pytest.raises(TypeError):
        as_decline(3)
    model = _conv_bn_model()
    rule = Rule("R", CONV_BN, lambda b, m: None, check=lambda m: "weights are ones")
    assert rule.try_match(_node(model, "bn")).reason == "check declined: weights are ones"


def test_rule_set_order_is_benefit_then_name() -> None:
    def noop(b, m):
        return [m["x"]]

    small_b = Rule("B", op("Relu", var("x")), noop)
    small_a = Rule("A", op("Relu", var("x")), noop)
    big = Rule("Z", op("Relu", op("Relu", var("x"))), noop)
    boosted = Rule("Y", op("Relu", var("x")), noop, benefit=10)
    rules = RuleSet("s", [small_b, big, small_a, boosted])
    assert [r.name for r in rules] == ["Y", "Z", "A", "B"]
    with pytest.raises(ValueError, match="duplicate"):
        RuleSet("s", [small_a, small_a])


def test_builder_initializer_keeps_a_scalar_0d() -> None:
    """A 0-d constant made by a replacement stays 0-d (the full checker rejects a rank mismatch)."""
    from lpot_ir.ir.model import to_proto
    from lpot_ir.passes import apply_rules

    def scale_by_two(b, m):  # noqa: ANN001, ANN202 - replacement signature
        return [b.op("Mul", m["x"], b.initializer(np.array(2.0, np.float32), "two"))]

    rule = Rule("AddSelfToMulTwo", op("Add", var("x"), var("x")), scale_by_two, spec="Add(x, x) → Mul(x, 2)")
    model = _model([helper.make_node("Add", ["x", "x"], ["y"], name="add")], [_vi("x")], [_vi("y")])
    assert apply_rules(model, RuleSet("t", [rule])).total == 1
    two = next(v for v in model.graph.initializers.values())
    assert two.shape == ir.Shape([]) and two.const_value.numpy().shape == ()
    onnx.checker.check_model(to_proto(model), full_check=True)
