"""Rule set ``remove-identity``: drop Identity nodes and inference-time Dropout.

Written as rules rather than wrapping ``onnx_ir.passes.common.IdentityEliminationPass`` because that
pass renames the Identity's input to the output's name even when the input is itself a graph output,
which silently drops one of the model's outputs; the driver declines that case instead.
"""

from __future__ import annotations

import numpy as np

from lpot_ir.ir.pattern import Builder, Match, Rule, RuleSet, op, var
from lpot_ir.passes.base import register_rule_set

__all__ = ["remove_identity_rules", "REMOVE_IDENTITY", "REMOVE_DROPOUT"]


def _forward_x(b: Builder, m: Match):  # noqa: ANN202 - replacement signature
    return [m["x"]]


REMOVE_IDENTITY = Rule(
    "RemoveIdentity",
    op("Identity", var("x")),
    _forward_x,
    spec="Identity(x) → x",
)


def _dropout_is_inference(m: Match) -> str | None:
    node = m.node("Dropout")
    if m["training_mode"] is not None:
        flag = m.const("training_mode")
        if flag is None:
            return "training_mode is not a constant"
        if bool(np.asarray(flag).reshape(-1)[0]):
            return "training_mode is true"
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return f"the mask output '{node.outputs[1].name}' is used"
    return None


REMOVE_DROPOUT = Rule(
    "RemoveDropout",
    op("Dropout", var("x"), var("ratio", optional=True), var("training_mode", optional=True)),
    _forward_x,
    check=_dropout_is_inference,
    spec="Dropout(x) → x   (inference: training_mode absent or false, mask unused)",
)


@register_rule_set("remove-identity")
def remove_identity_rules() -> RuleSet:
    """Identity and inference Dropout removal."""
    return RuleSet("remove-identity", [REMOVE_IDENTITY, REMOVE_DROPOUT], "Remove Identity and inference Dropout")
