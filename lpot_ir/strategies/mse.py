"""LPOT's mse strategy: fall back ops one at a time, in the order of their measured INT8 error.

Phase 1 is basic's (model-wise candidates, fastest expected first, stop at the first that meets the
goal). Then the quantization error is measured once on the most accurate phase-1 configuration (one
instrumented run, not one trial per op) and ranked into fallback steps as basic does (per quantized
tensor: the fallback groups of its producer and readers together, then single groups by per-node
error); steps are reverted to FP32 one at a time in that order, accumulating, until the goal is met.
No re-ranking, no batches, no shrinking of the FP32 set, no accuracy proxy: the predictable LPOT
behaviour.

Trials: one per model-wise candidate tried, then ``k`` where ``k`` is the rank of the last step that
must stay FP32.

Both phases are ordered alternatives (:class:`~lpot_ir.strategies.base.UntilGoal`): nothing in them
depends on a result except where to stop. With one worker they are evaluated one at a time; with
several, the next candidates run speculatively and the result is the same (the first candidate in order
that meets the goal).
"""

from __future__ import annotations

from types import MappingProxyType

from lpot_ir.strategies.base import BatchSearch, UntilGoal, register_strategy
from lpot_ir.strategies.basic import BasicStrategy

__all__ = ["MseStrategy"]


@register_strategy("mse")
class MseStrategy(BasicStrategy):
    """Basic's phase 1, then accumulative one-by-one fallback in measured-error order.

    Options:
        max_model_wise: try at most this many model-wise configurations, fastest expected first,
            before falling back (0: all). Default 8.
    """

    default_options = MappingProxyType({"max_model_wise": 8})
    fixed_options = MappingProxyType({"growth": 1.0, "rerank": False, "reenable": False, "proxy": False})

    def search(self) -> BatchSearch:  # type: ignore[override]
        candidates = self.space.model_wise_configs()
        limit = int(self.options["max_model_wise"]) or len(candidates)
        tried = yield UntilGoal(candidates[:limit])
        if not tried or tried[-1].meets_goal:
            return
        base = max(enumerate(tried), key=lambda ir_: (self.relative_accuracy(ir_[1]), -ir_[0]))[1].config
        groups = list(self.space.fallback_groups)
        if not groups:
            return
        steps, _ = self._rank(base, groups)
        reverted: list[tuple[str, ...]] = []
        prefixes = []
        for step in steps:
            if set(step) <= set(reverted):
                continue
            reverted = self._extend(reverted, [step])
            prefixes.append(self._config(base, reverted))
        yield UntilGoal(prefixes)
