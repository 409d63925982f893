"""The rewrite driver: fixpoint, benefit order, step cap, trace, subgraphs, names, worklist cost."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from onnx import TensorProto, helper
from passes_testutil import RNG, assert_close, build, check, histogram, run, tensor, vi

from lpot_ir.ir.pattern import Decline, Rule, RuleSet, op, var
from lpot_ir.passes import RewriteDriver, RewriteLimitError, apply_rules
from lpot_ir.passes.cleanup import remove_identity_rules

X = RNG.standard_normal((2, 3)).astype(np.float32)


def _chain(n: int, op_type: str = "Identity") -> list:
    nodes = [helper.make_node("Relu", ["x"], ["v0"], name="relu")]
    nodes += [helper.make_node(op_type, [f"v{i}"], [f"v{i + 1}"], name=f"n{i}") for i in range(n)]
    nodes.append(helper.make_node("Neg", [f"v{n}"], ["y"], name="neg"))
    return nodes


def test_fixpoint_removes_a_whole_chain_in_one_run() -> None:
    model = build(_chain(6), [vi("x", shape=[2, 3])], [vi("y")])
    before = run(model, {"x": X})
    report = apply_rules(model, remove_identity_rules())
    assert report.counts == {"RemoveDropout": 0, "RemoveIdentity": 6} and report.steps == 6
    assert histogram(model) == {"Relu": 1, "Neg": 1}
    check(model)
    assert_close(before, run(model, {"x": X}))


def _to(op_type: str):
    def replace(b, m):
        return [b.op(op_type, m["x"])]

    return replace


def test_larger_pattern_wins_then_name_not_code_order() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r1"),
        helper.make_node("Relu", ["a"], ["y"], name="r2"),
    ]
    small_z = Rule("ZSingle", op("Relu", var("x")), _to("Sigmoid"), check=lambda m: m.root.name == "r2" or "r1 only")
    small_a = Rule("ASingle", op("Relu", var("x")), _to("Tanh"), check=lambda m: m.root.name == "r2" or "r1 only")
    pair = Rule("Pair", op("Relu", op("Relu", var("x"))), _to("Abs"))
    model = build(nodes, [vi("x", shape=[2, 3])], [vi("y")])
    report = apply_rules(model, [small_z, small_a, pair])
    assert report.counts == {"Pair": 1, "ASingle": 0, "ZSingle": 0}
    assert histogram(model) == {"Abs": 1}
    model = build(nodes, [vi("x", shape=[2, 3])], [vi("y")])
    report = apply_rules(model, [small_z, small_a])  # equal benefit: the name decides
    assert report.counts == {"ASingle": 1, "ZSingle": 0}
    assert histogram(model) == {"Relu": 1, "Tanh": 1}


def _ping_pong() -> RuleSet:
    return RuleSet("ping-pong", [
        Rule("SigmoidToTanh", op("Sigmoid", var("x")), _to("Tanh")),
        Rule("TanhToSigmoid", op("Tanh", var("x")), _to("Sigmoid")),
    ])


def test_step_cap_raises_clearly() -> None:
    model = build([helper.make_node("Sigmoid", ["x"], ["y"], name="s")], [vi("x", shape=[2, 3])], [vi("y")])
    with pytest.raises(RewriteLimitError, match="stopped after 50 rewrites .*keep undoing each other"):
        apply_rules(model, _ping_pong(), max_steps=50)


def test_step_cap_can_warn_and_stop(caplog: pytest.LogCaptureFixture) -> None:
    model = build([helper.make_node("Sigmoid", ["x"], ["y"], name="s")], [vi("x", shape=[2, 3])], [vi("y")])
    with caplog.at_level(logging.WARNING, logger="lpot_ir.passes.rewrite"):
        report = RewriteDriver(_ping_pong(), max_steps=7, on_limit="warn").run(model)
    assert report.hit_limit and report.steps == 7
    assert "step cap" in caplog.text
    check(model)  # still a valid model


def test_trace_says_why_each_rule_did_not_fire() -> None:
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
        helper.make_node("Mul", ["x", "s"], ["y"], name="mul"),
        helper.make_node("Mul", ["y", "x"], ["z"], name="mul2"),
    ]
    swish = Rule(
        "Swish", op("Mul", var("x"), op("Sigmoid", var("x"))), lambda b, m: [b.op("Neg", m["x"])],
        check=lambda m: "declined on purpose" if m.root.name == "mul" else None,
    )
    model = build(nodes, [vi("x", shape=[2, 3])], [vi("z")])
    report = apply_rules(model, [swish], trace=True)
    assert report.total == 0
    assert report.explain("mul", "Swish") == "Swish did not fire on 'mul': check declined: declined on purpose"
    reason = report.explain("mul2", "Swish")
    assert reason.startswith("Swish did not fire on 'mul2': input ") and "pattern expects Sigmoid" in reason
    assert report.explain("sig", "Swish") == "Swish was never tried on 'sig': its root is Mul, the node is Sigmoid"
    assert [e.rule for e in report.why_not("mul")] == ["Swish"]


def test_debug_logging_records_declines(caplog: pytest.LogCaptureFixture) -> None:
    model = build([helper.make_node("Dropout", ["x"], ["y", "mask"], name="d")], [vi("x", shape=[2, 3])],
                  [vi("y"), vi("mask", TensorProto.BOOL)])
    with caplog.at_level(logging.DEBUG, logger="lpot_ir.passes.rewrite"):
        apply_rules(model, remove_identity_rules())
    assert "RemoveDropout on Dropout 'd': declined: check declined: the mask output 'mask' is used" in caplog.text


def test_rewrites_inside_if_branches() -> None:
    def branch(name: str, op_type: str) -> object:
        nodes = [
            helper.make_node("Identity", ["x"], [f"{name}_a"], name=f"{name}_id"),
            helper.make_node(op_type, [f"{name}_a"], [f"{name}_b"], name=f"{name}_op"),
            helper.make_node("Identity", [f"{name}_b"], [f"{name}_out"], name=f"{name}_id2"),
        ]
        return helper.make_graph(nodes, name, [], [vi(f"{name}_out", shape=[2, 3])])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("then", "Relu"),
                         else_branch=branch("else", "Neg")),
    ]
    model = build(nodes, [vi("x", shape=[2, 3])], [vi("y")], [tensor("zero", np.array(0.0, np.float32))])
    feeds_pos, feeds_neg = {"x": np.abs(X) + 0.1}, {"x": -np.abs(X) - 0.1}
    before = run(model, feeds_pos), run(model, feeds_neg)
    report = apply_rules(model, remove_identity_rules())
    assert report.counts["RemoveIdentity"] == 4
    assert histogram(model) == {"ReduceSum": 1, "Greater": 1, "If": 1, "Relu": 1, "Neg": 1}
    if_node = next(n for n in model.graph if n.op_type == "If")
    assert [o.name for o in if_node.attributes["then_branch"].as_graph().outputs] == ["then_out"]
    check(model)
    assert_close(before[0], run(model, feeds_pos))
    assert_close(before[1], run(model, feeds_neg))


def test_new_nodes_get_unique_deterministic_names() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r"),
        helper.make_node("Relu", ["a"], ["y"], name="r/Abs"),  # the name a new node would take
    ]
    rule = Rule("ReluToAbs", op("Relu", var("x")), _to("Abs"), check=lambda m: m.root.name == "r" or "first only")

    def names() -> list[str]:
        model = build(nodes, [vi("x", shape=[2, 3])], [vi("y")])
        apply_rules(model, [rule])
        return [n.name for n in model.graph]

    first = names()
    assert first == ["r/Abs_1", "r/Abs"] and names() == first


def test_replacement_may_decline_late() -> None:
    rule = Rule("Never", op("Relu", var("x")), lambda b, m: Decline("weights too small"))
    model = build([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", shape=[2, 3])], [vi("y")])
    report = apply_rules(model, [rule], trace=True)
    assert report.total == 0 and report.explain("r", "Never").endswith("replacement declined: weights too small")
    assert histogram(model) == {"Relu": 1}


def test_worklist_tries_each_node_a_bounded_number_of_times() -> None:
    n = 300
    model = build(_chain(n, "Dropout"), [vi("x", shape=[2, 3])], [vi("y")])
    report = apply_rules(model, remove_identity_rules(), trace=True)
    assert report.counts["RemoveDropout"] == n
    # Each Dropout is tried once; a rewrite re-queues only its neighbourhood (here the next node).
    assert len(report.trace) <= 3 * (n + 2)
