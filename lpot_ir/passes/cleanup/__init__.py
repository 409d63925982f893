"""FP32 cleanup passes and rule sets (importing this package registers them).

=====================  =========  =================================================================
name                   kind       what it does
=====================  =========  =================================================================
constant-folding       pass       evaluate constant subexpressions into initializers
remove-identity        rule set   Identity, inference Dropout
remove-noop-chains     rule set   no-op Cast / Reshape / Transpose and their chains
canonicalize           rule set   two-input Sum to Add (old exporters' residual connections)
remove-unused          pass       dead nodes, unused initializers (all graphs)
deduplicate-initializers pass     identical initializers become one
topological-sort       pass       stable topological order
=====================  =========  =================================================================
"""

from __future__ import annotations

from lpot_ir.passes.cleanup.canonicalize import canonicalize_rules
from lpot_ir.passes.cleanup.constant_folding import ConstantFoldingPass
from lpot_ir.passes.cleanup.initializers import DeduplicateInitializersPass
from lpot_ir.passes.cleanup.noop_chains import noop_chain_rules
from lpot_ir.passes.cleanup.remove_identity import remove_identity_rules
from lpot_ir.passes.cleanup.topological_sort import TopologicalSortPass
from lpot_ir.passes.cleanup.unused import RemoveUnusedPass

__all__ = [
    "canonicalize_rules",
    "ConstantFoldingPass",
    "DeduplicateInitializersPass",
    "RemoveUnusedPass",
    "TopologicalSortPass",
    "noop_chain_rules",
    "remove_identity_rules",
]
