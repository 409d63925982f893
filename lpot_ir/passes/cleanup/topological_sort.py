"""Pass ``topological-sort``: wraps ``onnx_ir.passes.common.TopologicalSortPass`` (stable; sorts the
main graph and, through ``Graph.sort``, every subgraph)."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass as _OnnxIrTopologicalSort

from lpot_ir.passes.base import Pass, PassResult, register_pass

__all__ = ["TopologicalSortPass"]


@register_pass("topological-sort")
class TopologicalSortPass(Pass):
    """Sort nodes topologically, keeping the original order where possible (changes = 1 if reordered)."""

    name = "topological-sort"
    in_place = True

    def call(self, model: ir.Model) -> PassResult:
        modified = _OnnxIrTopologicalSort()(model).modified
        return PassResult(model, modified, changes=int(modified))
