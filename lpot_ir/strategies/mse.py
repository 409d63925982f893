"""LPOT's mse strategy: fall back ops one at a time, in the order of their measured INT8 error.

The model-wise candidates are tried first (fastest expected first, stop at the first that meets the
goal). Then the quantization error is measured once on the most accurate of them (one instrumented
run, not one trial per op) and ranked into fallback steps (:mod:`lpot_ir.strategies.fallback`: per
quantized tensor, the fallback groups of its producer and readers together, then single groups by
per-node error); steps are reverted to FP32 one at a time in that order, accumulating, until the goal
is met. No re-ranking, no recovery, no accuracy proxy: the predictable LPOT behaviour.

Trials: one per model-wise candidate tried, then ``k`` where ``k`` is the rank of the last step that
must stay FP32.

Batches: both phases are ordered alternatives (:class:`~lpot_ir.strategies.base.UntilGoal`), so with
several workers the next candidates (the next accumulated prefixes) are evaluated speculatively while
the earlier ones run; the result is the first that meets the goal in this order, as with one worker.
"""

from __future__ import annotations

from types import MappingProxyType

from lpot_ir.strategies.base import BatchSearch, TrialResult, TuneStrategy, UntilGoal, register_strategy
from lpot_ir.strategies.fallback import Group, extend, rank_steps

__all__ = ["MseStrategy"]


@register_strategy("mse")
class MseStrategy(TuneStrategy):
    """Model-wise candidates, then accumulative one-by-one fallback in measured-error order.

    Options:
        max_model_wise: try at most this many model-wise configurations, fastest expected first,
            before falling back (0: all). Default 8.
    """

    default_options = MappingProxyType({"max_model_wise": 8})

    def search(self) -> BatchSearch:
        candidates = self.space.model_wise_configs()
        limit = int(self.options["max_model_wise"]) or len(candidates)
        tried: list[TrialResult] = yield UntilGoal(candidates[:limit])
        if not tried or tried[-1].meets_goal:
            return
        base = max(tried, key=lambda r: (self.relative_accuracy(r), -r.index)).config
        steps, _ = rank_steps(self.space, self.context, base, list(self.space.fallback_groups))
        reverted: list[Group] = []
        prefixes = []
        for step in steps:
            reverted = extend(reverted, [step])
            prefixes.append(self.space.with_fp32(base, (n for g in reverted for n in g)))
        if prefixes:
            yield UntilGoal(prefixes)
