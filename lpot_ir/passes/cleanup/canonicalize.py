"""Rule set ``canonicalize``: rewrite old spellings of common ops into the forms later passes know.

Old exporters (Caffe2, early PyTorch) wrote residual connections as ``Sum`` of two tensors. ``Add``
is the same computation for two inputs, and it is what the quantizer and ONNX Runtime's Q/DQ fusions
(QLinearAdd, Add + Relu) recognise, so residual blocks of such models can run in INT8.
"""

from __future__ import annotations

from lpot_ir.ir.pattern import Builder, Match, Rule, RuleSet, op, var
from lpot_ir.passes.base import register_rule_set

__all__ = ["canonicalize_rules", "SUM_OF_TWO_TO_ADD", "SUM_OF_ONE_TO_INPUT"]


def _add(b: Builder, m: Match):  # noqa: ANN202 - replacement signature
    return [b.op("Add", m["a"], m["b"])]


def _forward_x(b: Builder, m: Match):  # noqa: ANN202 - replacement signature
    return [m["x"]]


SUM_OF_TWO_TO_ADD = Rule(
    "SumOfTwoToAdd",
    op("Sum", var("a"), var("b")),
    _add,
    spec="Sum(a, b) → Add(a, b)",
    commute=False,
)

SUM_OF_ONE_TO_INPUT = Rule(
    "SumOfOneToInput",
    op("Sum", var("x")),
    _forward_x,
    spec="Sum(x) → x",
)


@register_rule_set("canonicalize")
def canonicalize_rules() -> RuleSet:
    """Old spellings to canonical ops: two-input Sum to Add, one-input Sum removed."""
    return RuleSet("canonicalize", [SUM_OF_TWO_TO_ADD, SUM_OF_ONE_TO_INPUT], "Canonical forms of old ops")
