"""The default strategy: model-wise candidates, then sensitivity-ordered geometric FP32 fallback.

Phase 1 tries the global candidates (model-wise configurations x calibration sampling sizes),
fastest expected first, and stops at the first that meets the goal.

Phase 2 starts from the most accurate phase-1 configuration, asks the loop once for the per-node
error between FP32 and INT8 tensors (``context.op_sensitivity``: one instrumented run, not a trial)
and falls back the most sensitive fallback groups to FP32 *together*, in batches that grow
geometrically (1, 2, 4, ... groups; ``growth``). After each failed batch it measures the
sensitivity again on the new configuration (``rerank``): an upstream op's error no longer leaks
into its consumers once it runs in FP32, so the next batch targets the ops that are still bad.

Phase 3 (``reenable``), once the goal is met and the loop keeps tuning (``timeout > 0``), shrinks the
FP32 set: it re-quantizes the reverted groups least sensitive first, half of them at a time, halving
the chunk when a re-quantization breaks the goal (delta debugging). Configurations that were already
evaluated are answered from history without a trial.

Trials to the first configuration that meets the goal: one per model-wise candidate tried, then
about ``log2(k) + 1`` where ``k`` is the number of groups that must stay FP32 (LPOT and Intel Neural
Compressor's basic strategy spend one trial per op before accumulating).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.strategies.base import (
    Search,
    StrategyContext,
    TrialResult,
    TuneStrategy,
    TuningSpace,
    group_sensitivity,
    register_strategy,
)

__all__ = ["BasicStrategy"]

logger = logging.getLogger(__name__)

Group = tuple[str, ...]


@register_strategy("basic")
class BasicStrategy(TuneStrategy):
    """Model-wise candidates, then geometric sensitivity-ordered fallback, then FP32-set shrinking.

    Options:
        growth: factor by which the fallback batch grows after a failed trial (1 = one group at a
            time, as LPOT's mse strategy). Default 2.
        rerank: measure the sensitivity again after each failed fallback batch. Default true.
        reenable: after the goal is met, try to re-quantize reverted groups. Default true.
        max_model_wise: try at most this many model-wise configurations, fastest expected first,
            before falling back (0: all). Default 8.
    """

    default_options = MappingProxyType({"growth": 2.0, "rerank": True, "reenable": True, "max_model_wise": 8})
    fixed_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    """Options a subclass pins (not user-settable)."""

    def __init__(
        self, space: TuningSpace, context: StrategyContext, *, seed: int = 1978, **options: Any
    ) -> None:
        super().__init__(space, context, seed=seed, **options)
        self.options.update(self.fixed_options)
        if float(self.options["growth"]) < 1.0:
            raise ConfigError(
                f"tuning.strategy.growth must be >= 1 (the fallback batch never shrinks), got {self.options['growth']}."
            )

    def search(self) -> Search:
        candidates = self.space.model_wise_configs()
        limit = int(self.options["max_model_wise"]) or len(candidates)
        tried: list[TrialResult] = []
        for config in candidates[:limit]:
            result = yield config
            if result.meets_goal:
                logger.info("basic: model-wise configuration of trial %d meets the goal", result.index)
                return
            tried.append(result)
        start = max(enumerate(tried), key=lambda ir_: (self.relative_accuracy(ir_[1]), -ir_[0]))[1]
        yield from self._fallback(start.config)

    # -- phase 2 and 3 ---------------------------------------------------------------------------

    def _rank(self, config: TuningConfig, groups: Sequence[Group]) -> tuple[list[Group], dict[Group, float]]:
        """Groups ordered most sensitive first under ``config`` (ties: model order)."""
        try:
            sensitivity = self.context.op_sensitivity(config)
        except Exception as exc:  # the instrumented run failing must not end tuning
            logger.warning("basic: measuring op sensitivity failed (%s); falling back in model order", exc)
            sensitivity = {}
        scores = group_sensitivity(groups, sensitivity)
        order = sorted(range(len(groups)), key=lambda i: (-scores[i], i))
        return [groups[i] for i in order], {groups[i]: scores[i] for i in order}

    def _config(self, base: TuningConfig, groups: Sequence[Group]) -> TuningConfig:
        return self.space.with_fp32(base, (n for g in groups for n in g))

    def _fallback(self, base: TuningConfig) -> Search:
        groups = list(self.space.fallback_groups)
        if not groups:
            return
        growth = float(self.options["growth"])
        ranking, scores = self._rank(base, groups)
        reverted: list[Group] = []
        step = 1.0
        while True:
            taken = set(reverted)
            remaining = [g for g in ranking if g not in taken]
            if not remaining:
                logger.info("basic: every op is FP32 and the goal is still not met; the search is over")
                return
            batch = remaining[: max(1, int(step))]
            reverted.extend(batch)
            config = self._config(base, reverted)
            result = yield config
            if result.meets_goal:
                break
            step *= growth
            rest = remaining[len(batch) :]
            if self.options["rerank"] and rest:
                ranking, new_scores = self._rank(config, rest)
                scores.update(new_scores)
        if self.options["reenable"]:
            yield from self._reenable(base, reverted, scores)

    def _reenable(self, base: TuningConfig, reverted: list[Group], scores: dict[Group, float]) -> Search:
        """Re-quantize reverted groups, least sensitive (then latest reverted) first, chunks halving."""
        position = {g: i for i, g in enumerate(reverted)}
        todo = sorted(reverted, key=lambda g: (scores.get(g, 0.0), -position[g]))
        current = list(reverted)
        chunk = max(1, len(todo) // 2)
        while todo:
            trial = set(todo[:chunk])
            result = yield self._config(base, [g for g in current if g not in trial])
            if result.meets_goal:
                current = [g for g in current if g not in trial]
                todo = todo[chunk:]
                chunk = min(chunk, max(1, len(todo)))
            elif chunk == 1:
                todo = todo[1:]
            else:
                chunk = max(1, chunk // 2)
