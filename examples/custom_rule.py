"""Write, register and run your own rewrite rules and pass with lpot-ir.

Run it:  python examples/custom_rule.py

It builds a tiny model with neutral arithmetic (``x * 1``, ``0 + y``), registers a rule set that
removes it and a pass that strips doc strings, runs them as a pipeline, prints the report, and
checks in ONNX Runtime that the outputs did not change.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.ir import load_model, to_proto
from lpot_ir.ir.pattern import Match, Rule, RuleSet, const, op, var
from lpot_ir.passes import Pass, PassResult, register_pass, register_rule_set, run_pipeline


# 1. Rules: a pattern, a check that says why it declines, a replacement. Mul and Add are commutative,
#    so `1 * x` and `0 + y` are matched too without writing those variants.
def _neutral(value: float):
    def check(m: Match) -> str | None:
        x, c = m["x"], m.const("c")
        if x is None or x.shape is None or x.type is None:
            return "the shape or type of x is unknown"
        if c is None or not np.all(c == value):
            return f"the constant is not all {value:g}"
        if c.dtype != x.dtype.numpy() or c.ndim > len(x.shape) or any(d != 1 for d in c.shape):
            return "the constant would broadcast or change the type"
        return None  # accept

    return check


REMOVE_MUL_BY_ONE = Rule(
    "RemoveMulByOne",
    op("Mul", var("x"), const("c")),
    lambda b, m: [m["x"]],  # the replacement: the root's output becomes x
    check=_neutral(1.0),
    spec="Mul(x, 1) → x",
)

REMOVE_ADD_ZERO = Rule(
    "RemoveAddZero",
    op("Add", var("x"), const("c")),
    lambda b, m: [m["x"]],
    check=_neutral(0.0),
    spec="Add(x, 0) → x",
)


@register_rule_set("remove-neutral-arithmetic")
def neutral_arithmetic_rules() -> RuleSet:
    return RuleSet("remove-neutral-arithmetic", [REMOVE_MUL_BY_ONE, REMOVE_ADD_ZERO])


# 2. A pass: one base class, declares it works in place, returns whether (and how much) it changed.
@register_pass("strip-doc-strings")
class StripDocStrings(Pass):
    in_place = True

    def call(self, model: ir.Model) -> PassResult:
        changes = 0
        for node in model.graph:
            if node.doc_string:
                node.doc_string = None
                changes += 1
        return PassResult(model, changes > 0, changes=changes)


def build_model() -> ir.Model:
    nodes = [
        helper.make_node("Mul", ["x", "one"], ["a"], name="times_one", doc_string="scale"),
        helper.make_node("Add", ["zero", "a"], ["b"], name="plus_zero"),
        helper.make_node("Mul", ["b", "two"], ["c"], name="times_two"),
        helper.make_node("Relu", ["c"], ["y"], name="relu", doc_string="activation"),
    ]
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.zeros((1, 1), np.float32), "zero"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    graph = helper.make_graph(
        nodes, "neutral", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits,
    )
    return load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def main() -> None:
    model = build_model()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    before = run(model, x)
    report = run_pipeline(model, ["remove-neutral-arithmetic", "strip-doc-strings", "remove-unused"], trace=True)
    print(report)
    print("nodes:", [f"{n.op_type}:{n.name}" for n in model.graph])
    rewrite = report["remove-neutral-arithmetic"].rewrite
    assert rewrite is not None
    print("why not:", rewrite.explain("times_two", "RemoveMulByOne"))
    onnx.checker.check_model(to_proto(model), full_check=True)
    after = run(model, x)
    print("outputs match:", bool(np.allclose(before, after)))


if __name__ == "__main__":
    main()
