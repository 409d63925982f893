"""Pass ``remove-unused``: dead nodes and unused initializers, in every graph.

Wraps ``onnx_ir.passes.common.RemoveUnusedNodesPass`` (dead nodes in all graphs, unused initializers
of the main graph) and adds what it leaves out: unused initializers of If/Loop/Scan bodies. The
model's inputs and outputs are never changed.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from lpot_ir.ir.model import all_graphs
from lpot_ir.passes.base import Pass, PassResult, register_pass

__all__ = ["RemoveUnusedPass"]


def _size(model: ir.Model) -> int:
    return sum(len(g) + len(g.initializers) for g in all_graphs(model))


@register_pass("remove-unused")
class RemoveUnusedPass(Pass):
    """Remove nodes whose outputs nobody uses and initializers nobody reads (changes = items removed)."""

    name = "remove-unused"
    in_place = True

    def call(self, model: ir.Model) -> PassResult:
        before = _size(model)
        RemoveUnusedNodesPass()(model)
        for graph in all_graphs(model):
            if graph is model.graph:
                continue
            for name, value in list(graph.initializers.items()):
                if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
                    del graph.initializers[name]
        changes = before - _size(model)
        return PassResult(model, changes > 0, changes=changes)
