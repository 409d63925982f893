"""Cleanup rule sets and passes: each on a tiny model, checked against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from passes_testutil import RNG, assert_close, build, check, histogram, rewrite_and_compare, run, tensor, vi

from lpot_ir.passes import apply_rules, get_pass
from lpot_ir.passes.cleanup import (
    ConstantFoldingPass,
    DeduplicateInitializersPass,
    RemoveUnusedPass,
    TopologicalSortPass,
    noop_chain_rules,
    remove_identity_rules,
)

X = RNG.standard_normal((2, 3, 4)).astype(np.float32)


def _x(shape: list[int] | None = None, elem: int = TensorProto.FLOAT) -> list:
    return [vi("x", elem, shape or [2, 3, 4])]


# ---- remove-identity -----------------------------------------------------------------------------


def test_remove_identity_and_inference_dropout() -> None:
    nodes = [
        helper.make_node("Identity", ["x"], ["a"], name="id0"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Dropout", ["b", "ratio"], ["c"], name="drop"),
        helper.make_node("Identity", ["c"], ["y"], name="id1"),
    ]
    model = build(nodes, _x(), [vi("y")], [tensor("ratio", np.array(0.3, np.float32))])
    rewrite_and_compare(
        model, remove_identity_rules(), {"x": X},
        counts={"RemoveIdentity": 2, "RemoveDropout": 1}, ops={"Relu": 1},
    )
    assert [o.name for o in model.graph.outputs] == ["y"]  # the graph output keeps its name


def test_dropout_kept_when_mask_used_or_training() -> None:
    nodes = [
        helper.make_node("Dropout", ["x"], ["a", "mask"], name="drop_mask"),
        helper.make_node("Dropout", ["a", "ratio", "train"], ["y"], name="drop_train"),
    ]
    inits = [tensor("ratio", np.array(0.5, np.float32)), tensor("train", np.array(True))]
    model = build(nodes, _x(), [vi("y"), vi("mask", TensorProto.BOOL)], inits)
    report = apply_rules(model, remove_identity_rules(), trace=True)
    assert report.total == 0
    assert "the mask output 'mask' is used" in report.explain("drop_mask", "RemoveDropout")
    assert "training_mode is true" in report.explain("drop_train", "RemoveDropout")


def test_identity_between_graph_input_and_output_is_kept() -> None:
    model = build([helper.make_node("Identity", ["x"], ["y"], name="id")], _x(), [vi("y")])
    report = apply_rules(model, remove_identity_rules(), trace=True)
    assert report.total == 0
    assert "would change the model's interface" in report.explain("id", "RemoveIdentity")
    check(model)


# ---- remove-noop-chains --------------------------------------------------------------------------


def test_same_type_cast_and_lossless_cast_chain() -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["a"], name="same", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["a"], ["b"], name="widen", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["b"], ["c"], name="narrow", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["x"], ["d"], name="up", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["d"], ["e"], name="down", to=TensorProto.FLOAT),
        helper.make_node("Relu", ["e"], ["y"], name="relu"),
    ]
    model = build(nodes, _x(), [vi("c", TensorProto.FLOAT16), vi("y")])
    rewrite_and_compare(
        model, noop_chain_rules(), {"x": X * 1000},
        counts={"RemoveSameTypeCast": 1, "FoldLosslessCastChain": 2}, ops={"Cast": 1, "Relu": 1},
    )
    cast = next(n for n in model.graph if n.op_type == "Cast")
    assert cast.name == "narrow" and cast.inputs[0].name == "x"


def test_cast_chain_between_graph_input_and_output_is_kept() -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["d"], name="up", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["d"], ["e"], name="down", to=TensorProto.FLOAT),
    ]
    model = build(nodes, _x(), [vi("e")])
    report = apply_rules(model, noop_chain_rules(), trace=True)
    assert report.total == 0
    assert "is a graph output and its replacement 'x' is a graph input" in report.explain(
        "down", "FoldLosslessCastChain"
    )


def test_lossy_cast_chain_is_kept() -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["a"], name="to_int", to=TensorProto.INT32),
        helper.make_node("Cast", ["a"], ["y"], name="to_float", to=TensorProto.FLOAT),
    ]
    model = build(nodes, _x(), [vi("y")])
    report = apply_rules(model, noop_chain_rules(), trace=True)
    assert report.total == 0
    assert "FLOAT → INT32 may lose information" in report.explain("to_float", "FoldLosslessCastChain")


def test_integer_cast_chain_through_wider_type() -> None:
    x = RNG.integers(-128, 127, (2, 5)).astype(np.int8)
    nodes = [
        helper.make_node("Cast", ["x"], ["a"], name="to_i32", to=TensorProto.INT32),
        helper.make_node("Cast", ["a"], ["b"], name="to_f", to=TensorProto.FLOAT),
        helper.make_node("Relu", ["b"], ["y"], name="relu"),
    ]
    model = build(nodes, [vi("x", TensorProto.INT8, [2, 5])], [vi("y")])
    rewrite_and_compare(
        model, noop_chain_rules(), {"x": x}, counts={"FoldLosslessCastChain": 1}, ops={"Cast": 1, "Relu": 1}
    )


def test_noop_reshape_and_reshape_chain() -> None:
    nodes = [
        helper.make_node("Reshape", ["x", "same"], ["a"], name="noop"),  # [0, -1, 4] on [2, 3, 4]
        helper.make_node("Reshape", ["a", "flat"], ["b"], name="flat"),
        helper.make_node("Reshape", ["b", "back"], ["c"], name="back"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    inits = [
        tensor("same", np.array([0, -1, 4], np.int64)),
        tensor("flat", np.array([6, 4], np.int64)),
        tensor("back", np.array([3, 8], np.int64)),
    ]
    model = build(nodes, _x(), [vi("y")], inits)
    rewrite_and_compare(
        model, noop_chain_rules(), {"x": X},
        counts={"RemoveNoopReshape": 1, "FoldReshapeChain": 1}, ops={"Reshape": 1, "Relu": 1},
    )
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    assert reshape.name == "back" and reshape.inputs[0].name == "x"


def test_reshape_chain_with_zero_is_kept() -> None:
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["a"], name="r1"),
        helper.make_node("Reshape", ["a", "s2"], ["y"], name="r2"),
    ]
    inits = [tensor("s1", np.array([6, 4], np.int64)), tensor("s2", np.array([0, 2, 2], np.int64))]
    model = build(nodes, _x(), [vi("y")], inits)
    report = apply_rules(model, noop_chain_rules(), trace=True)
    assert report.total == 0
    assert "has a 0" in report.explain("r2", "FoldReshapeChain")


def test_transpose_identity_and_chains() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], name="ident", perm=[0, 1, 2]),
        helper.make_node("Transpose", ["a"], ["b"], name="t1", perm=[2, 0, 1]),
        helper.make_node("Transpose", ["b"], ["c"], name="t2", perm=[1, 2, 0]),  # undoes t1
        helper.make_node("Transpose", ["c"], ["d"], name="t3", perm=[1, 0, 2]),
        helper.make_node("Transpose", ["d"], ["e"], name="t4", perm=[0, 2, 1]),  # composes with t3
        helper.make_node("Relu", ["e"], ["y"], name="relu"),
    ]
    model = build(nodes, _x(), [vi("y")])
    rewrite_and_compare(
        model, noop_chain_rules(), {"x": X},
        counts={"RemoveIdentityTranspose": 1, "FoldTransposeChain": 2}, ops={"Transpose": 1, "Relu": 1},
    )
    transpose = next(n for n in model.graph if n.op_type == "Transpose")
    assert list(transpose.attributes["perm"].as_ints()) == [1, 2, 0]


# ---- constant-folding ----------------------------------------------------------------------------


def test_constant_folding_old_exporter_weights() -> None:
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25])
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["W"], name="weights", value=fill),
        helper.make_node("Constant", [], ["axes"], name="axes", value_ints=[0]),
        helper.make_node("Constant", [], ["n"], name="n", value=tensor("t", np.array(-1, np.int64))),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
        helper.make_node("Shape", ["x"], ["xs"], name="shape", start=0, end=1),
        helper.make_node("Concat", ["xs", "n1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "W"], ["y"], name="matmul"),
    ]
    model = build(nodes, _x(), [vi("y")], [tensor("wshape", np.array([12, 5], np.int64))])
    before = run(model, {"x": X})
    result = ConstantFoldingPass()(model)
    assert result.changes == 6 and result.modified
    assert histogram(model) == {"Reshape": 1, "MatMul": 1}
    w = model.graph.initializers["W"].const_value.numpy()
    assert w.shape == (12, 5) and np.all(w == np.float32(0.25))
    assert model.graph.initializers["target"].const_value.numpy().tolist() == [2, -1]
    check(model)
    assert_close(before, run(model, {"x": X}))


def test_constant_folding_respects_size_limit_and_randomness() -> None:
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["big"], ["b"], name="big"),
        helper.make_node("RandomUniformLike", ["x"], ["r"], name="rand"),
        helper.make_node("ConstantOfShape", ["small"], ["s"], name="small", value=fill),
        helper.make_node("Add", ["x", "s"], ["a"], name="add"),
        helper.make_node("Sum", ["a", "r"], ["y"], name="sum"),
        helper.make_node("ReduceSum", ["b"], ["z"], name="reduce", keepdims=0),
    ]
    inits = [tensor("big", np.array([1000, 1000], np.int64)), tensor("small", np.array([4], np.int64))]
    model = build(nodes, _x(), [vi("y"), vi("z")], inits)
    result = ConstantFoldingPass(size_limit=10_000)(model)
    assert result.changes == 1  # only the small ConstantOfShape
    assert histogram(model) == {"ConstantOfShape": 1, "RandomUniformLike": 1, "Add": 1, "Sum": 1, "ReduceSum": 1}
    check(model)


def test_constant_folding_inside_if_branches_leaves_the_if() -> None:
    def branch(name: str, op_type: str) -> object:
        nodes = [
            helper.make_node("Constant", [], [f"{name}_k"], name=f"{name}_k", value_floats=[2.0, 3.0, 4.0, 5.0]),
            helper.make_node("Mul", [f"{name}_k", "w"], [f"{name}_kw"], name=f"{name}_kw"),  # w: outer initializer
            helper.make_node(op_type, ["x", f"{name}_kw"], [f"{name}_out"], name=f"{name}_op"),
        ]
        return helper.make_graph(nodes, name, [], [vi(f"{name}_out", shape=[2, 3, 4])])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("then", "Add"),
                         else_branch=branch("else", "Sub")),
    ]
    inits = [tensor("zero", np.array(0.0, np.float32)), tensor("w", RNG.standard_normal(4).astype(np.float32))]
    model = build(nodes, _x(), [vi("y")], inits)
    feeds = [{"x": np.abs(X)}, {"x": -np.abs(X)}]
    before = [run(model, f) for f in feeds]
    assert ConstantFoldingPass()(model).changes == 4  # two Constants lifted, two Muls folded, per branch
    assert histogram(model) == {"ReduceSum": 1, "Greater": 1, "If": 1, "Add": 1, "Sub": 1}
    then_graph = next(n for n in model.graph if n.op_type == "If").attributes["then_branch"].as_graph()
    assert "then_kw" in then_graph.initializers
    check(model)
    for f, expected in zip(feeds, before, strict=True):
        assert_close(expected, run(model, f))


def test_if_with_constant_condition_is_inlined() -> None:
    def branch(name: str, nodes: list, out: str) -> object:
        return helper.make_graph(nodes, name, [], [vi(out, shape=[2, 3, 4])])

    then_a = branch("then_a", [
        helper.make_node("Constant", [], ["ka"], name="ka", value_floats=[2.0, 3.0, 4.0, 5.0]),
        helper.make_node("Mul", ["x", "ka"], ["then_a_out"], name="then_a_mul"),
    ], "then_a_out")
    else_a = branch("else_a", [helper.make_node("Neg", ["x"], ["else_a_out"], name="else_a_neg")], "else_a_out")
    then_b = branch("then_b", [helper.make_node("Abs", ["x"], ["then_b_out"], name="then_b_abs")], "then_b_out")
    else_b = branch("else_b", [helper.make_node("Identity", ["x"], ["else_b_out"], name="else_b_id")], "else_b_out")
    nodes = [
        helper.make_node("If", ["yes"], ["a"], name="if_a", then_branch=then_a, else_branch=else_a),
        helper.make_node("If", ["no"], ["b"], name="if_b", then_branch=then_b, else_branch=else_b),
        helper.make_node("Add", ["b", "x"], ["c"], name="add"),
    ]
    inits = [tensor("yes", np.array(True)), tensor("no", np.array([False]))]
    model = build(nodes, _x(), [vi("a"), vi("c")], inits)
    before = run(model, {"x": X})
    result = ConstantFoldingPass()(model)
    assert result.changes == 3  # two Ifs inlined, the inlined Constant lifted
    assert histogram(model) == {"Mul": 1, "Identity": 1, "Add": 1}
    assert [o.name for o in model.graph.outputs] == ["a", "c"]
    check(model)
    assert_close(before, run(model, {"x": X}))


# ---- remove-unused, deduplicate-initializers, topological-sort ------------------------------------


def test_remove_unused_deduplicate_and_sort() -> None:
    w = RNG.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["m1", "W2"], ["y"], name="late"),  # out of order on purpose
        helper.make_node("MatMul", ["x", "W1"], ["m1"], name="early"),
        helper.make_node("Relu", ["x"], ["dead"], name="dead"),
        helper.make_node("Exp", ["dead"], ["dead2"], name="dead2"),
    ]
    inits = [tensor("W1", w), tensor("W2", w.copy()), tensor("unused", w), tensor("other", w[::-1].copy())]
    graph = helper.make_graph(nodes, "g", [vi("x", shape=[2, 4])], [vi("y", shape=[2, 4])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from lpot_ir.ir import from_proto

    model = from_proto(proto)
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    expected = x @ w @ w

    assert TopologicalSortPass()(model).changes == 1
    assert [n.name for n in model.graph] == ["early", "late", "dead", "dead2"]
    removed = RemoveUnusedPass()(model)
    assert removed.changes == 4  # two dead nodes, 'unused' and 'other'
    assert DeduplicateInitializersPass()(model).changes == 1
    assert sorted(model.graph.initializers) == ["W1"]
    check(model)
    np.testing.assert_allclose(run(model, {"x": x})[0], expected, rtol=1e-5)


def test_registered_cleanup_steps_are_in_place_passes() -> None:
    for name in ("constant-folding", "remove-unused", "deduplicate-initializers", "topological-sort"):
        step = get_pass(name)
        assert step.in_place and step.changes_input


@pytest.mark.parametrize("name", ["remove-identity", "remove-noop-chains"])
def test_rule_sets_resolve_by_name(name: str) -> None:
    assert get_pass(name).rule_set.name == name


# ---- canonicalize --------------------------------------------------------------------------------


def test_sum_of_two_becomes_add_and_sum_of_one_disappears() -> None:
    from lpot_ir.passes.cleanup import canonicalize_rules

    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Sum", ["x", "r"], ["s"], name="residual"),
        helper.make_node("Sum", ["s"], ["t"], name="lone"),
        helper.make_node("Sum", ["t", "x", "r"], ["y"], name="three"),
    ]
    model = build(nodes, _x(), [vi("y")])
    rewrite_and_compare(
        model, canonicalize_rules(), {"x": X},
        counts={"SumOfTwoToAdd": 1, "SumOfOneToInput": 1}, ops={"Relu": 1, "Add": 1, "Sum": 1},
    )
