"""The default strategy: predict with a cheap proxy, then evaluate; sensitivity-ordered FP32 fallback.

Phase 1 tries the global candidates (model-wise configurations x calibration sampling sizes),
fastest expected first, and stops at the first that meets the goal. When the context offers a
proxy (``context.estimate``, see below), a candidate the proxy predicts to miss the goal by far
(disagreement above twice the allowed drop) is not evaluated.

Phase 2 starts from the most accurate phase-1 configuration (or the one the proxy liked best) and
measures the quantization error once (one instrumented run, not a trial). It ranks *fallback steps*:

* with ``context.tensor_sensitivity`` (the tuning loop has it): one step per quantized tensor, largest
  per-channel error first; a step reverts every fallback group of the nodes that make that tensor
  quantized (its producer and its quantized readers: reverting only one side leaves the tensor
  quantized), then the remaining groups one by one in per-node order;
* otherwise one step per fallback group, in ``context.op_sensitivity`` order.

**Proxy first** (``proxy``): while ``context.estimate`` -- the fraction of calibration samples whose
top-1 class differs between the candidate and FP32, no evaluation -- is above
``context.estimate_threshold`` (the allowed absolute accuracy drop), the next step is reverted (and
the steps re-ranked on the new configuration when ``rerank``). The first configuration the proxy
accepts is evaluated. Proxy runs are bounded by ``proxy_budget`` (default: the number of fallback
groups + model-wise candidates + 8); if the proxy accepts nothing within it, it is ignored.

Then, while the goal is not met, steps are reverted in batches that grow geometrically (``growth``)
and re-ranked after each failed batch (``rerank``). Before a batch is evaluated, the proxy bisects it
to the shortest prefix it accepts, so the first passing configuration keeps as many ops INT8 as
possible. A proxy-accepted configuration that fails evaluation tightens the proxy's threshold below
that configuration's disagreement (or turns the proxy off at 0).

Phase 3 (``reenable``), once the goal is met and the loop keeps tuning (``timeout > 0``), shrinks the
FP32 set: it re-quantizes the reverted groups least sensitive first, half of them at a time, halving
the chunk when a re-quantization breaks the goal (delta debugging); re-quantizations the proxy
predicts to miss by far count as failures without a trial. Configurations already evaluated are answered from history.

Trials to the first configuration that meets the goal, with the proxy: one, when the ranking and the
proxy are right (the digits example: FP32 baseline + one INT8 trial). Without it: one per model-wise
candidate tried, then about ``log2(k) + 1`` where ``k`` is the number of steps that must stay FP32
(LPOT and Intel Neural Compressor's basic strategy spend one trial per op before accumulating).
"""

from __future__ import annotations

import logging
import math
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
Step = tuple[Group, ...]
"""Fallback groups reverted together (those of one quantized tensor, or a single group)."""


@register_strategy("basic")
class BasicStrategy(TuneStrategy):
    """Proxy-predicted first trial, geometric sensitivity-ordered fallback, then FP32-set shrinking.

    Options:
        growth: factor by which the fallback batch grows after a failed trial (1 = one step at a
            time, as LPOT's mse strategy). Default 2.
        rerank: measure the sensitivity again after each failed fallback batch. Default true.
        reenable: after the goal is met, try to re-quantize reverted groups. Default true.
        max_model_wise: try at most this many model-wise configurations, fastest expected first,
            before falling back (0: all). Default 8.
        proxy: use ``context.estimate`` (when the context has it) to pick configurations before
            evaluating them. Default true.
        proxy_budget: at most this many proxy runs in the whole search (0: the number of fallback
            groups + model-wise candidates + 8). Default 0.
    """

    default_options = MappingProxyType(
        {
            "growth": 2.0,
            "rerank": True,
            "reenable": True,
            "max_model_wise": 8,
            "proxy": True,
            "proxy_budget": 0,
        }
    )
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
        budget = int(self.options.get("proxy_budget", 0))
        if budget < 0:
            raise ConfigError(f"tuning.strategy.proxy_budget must be >= 0 (0: automatic), got {budget}.")
        self._proxy_left = budget or len(space.fallback_groups) + len(space.model_wise_configs()) + 8
        self._threshold = self._proxy_threshold()
        self._estimates: dict[str, float] = {}
        self.proxy_runs = 0

    # -- the proxy -------------------------------------------------------------------------------

    def _proxy_threshold(self) -> float | None:
        if not self.options.get("proxy", False):
            return None
        threshold = getattr(self.context, "estimate_threshold", None)
        if getattr(self.context, "estimate", None) is None or threshold is None:
            return None
        threshold = float(threshold)
        return threshold if math.isfinite(threshold) and threshold >= 0 else None

    def _predict(self, config: TuningConfig) -> float | None:
        """The proxy's disagreement for ``config``, or ``None`` (no proxy, budget spent, or it failed)."""
        if self._threshold is None:
            return None
        key = config.key()
        if key in self._estimates:
            return self._estimates[key]
        if self._proxy_left <= 0:
            return None
        self._proxy_left -= 1
        self.proxy_runs += 1
        try:
            value = float(self.context.estimate(config))  # type: ignore[attr-defined]
        except Exception as exc:  # the proxy failing must not end tuning
            logger.warning("basic: the accuracy proxy failed (%s); going on without it", exc)
            self._threshold = None
            return None
        if not math.isfinite(value):
            self._threshold = None
            return None
        self._estimates[key] = value
        return value

    def _accepts(self, config: TuningConfig) -> bool | None:
        """``True``/``False``: the proxy predicts ``config`` meets / misses the goal; ``None``: no prediction."""
        value = self._predict(config)
        if value is None or self._threshold is None:
            return None
        return value <= self._threshold

    def _clear_miss(self, config: TuningConfig) -> bool:
        """The proxy predicts ``config`` misses the goal by far (disagreement above twice the allowed drop)."""
        value = self._predict(config)
        return value is not None and self._threshold is not None and value > 2 * self._threshold

    def _distrust(self, config: TuningConfig) -> None:
        """``config`` was accepted by the proxy but failed: demand less disagreement from now on."""
        value = self._estimates.get(config.key())
        if value is None or self._threshold is None:
            return
        tighter = min(self._threshold, value) * 0.5
        self._threshold = tighter if value > 0 else None
        logger.info(
            "basic: the proxy accepted a configuration that missed the goal; %s",
            f"threshold now {tighter:.4g}" if self._threshold is not None else "not using it any more",
        )

    # -- phase 1 ---------------------------------------------------------------------------------

    def search(self) -> Search:
        candidates = self.space.model_wise_configs()
        limit = int(self.options["max_model_wise"]) or len(candidates)
        tried: list[TrialResult] = []
        skipped: list[tuple[float, int, TuningConfig]] = []
        for position, config in enumerate(candidates[:limit]):
            if self._clear_miss(config):
                rate = self._estimates[config.key()]
                logger.info(
                    "basic: the proxy predicts the model-wise configuration misses the goal (%.4f)", rate
                )
                skipped.append((rate, position, config))
                continue
            result = yield config
            if result.meets_goal:
                logger.info("basic: model-wise configuration of trial %d meets the goal", result.index)
                return
            tried.append(result)
        if tried:
            start = max(enumerate(tried), key=lambda ir_: (self.relative_accuracy(ir_[1]), -ir_[0]))[1].config
        else:
            start = min(skipped, key=lambda s: (s[0], s[1]))[2]
        yield from self._fallback(start)

    # -- ranking ---------------------------------------------------------------------------------

    def _group_of(self) -> dict[str, Group]:
        return {n: g for g in self.space.fallback_groups for n in g}

    def _rank(self, config: TuningConfig, groups: Sequence[Group]) -> tuple[list[Step], dict[Group, float]]:
        """Fallback steps among ``groups``, most sensitive first under ``config`` (ties: model order)."""
        try:
            sensitivity = self.context.op_sensitivity(config)
        except Exception as exc:  # the instrumented run failing must not end tuning
            logger.warning("basic: measuring op sensitivity failed (%s); falling back in model order", exc)
            sensitivity = {}
        scores = group_sensitivity(groups, sensitivity)
        order = sorted(range(len(groups)), key=lambda i: (-scores[i], i))
        group_scores = {groups[i]: scores[i] for i in order}
        steps: list[Step] = []
        measure = getattr(self.context, "tensor_sensitivity", None)
        if measure is not None:
            wanted = set(groups)
            group_of = self._group_of()
            position = {g: i for i, g in enumerate(self.space.fallback_groups)}
            try:
                tensors = list(measure(config))
            except Exception as exc:
                logger.warning("basic: measuring tensor sensitivity failed (%s); ranking ops alone", exc)
                tensors = []
            for tensor in sorted(tensors, key=lambda t: -float(t.error)):
                step = tuple(
                    sorted(
                        {group_of[n] for n in tensor.nodes if n in group_of} & wanted,
                        key=position.__getitem__,
                    )
                )
                if step and step not in steps:
                    steps.append(step)
                    for g in step:
                        group_scores[g] = max(group_scores.get(g, 0.0), float(tensor.error))
        steps.extend((groups[i],) for i in order if (groups[i],) not in steps)
        return steps, group_scores

    def _config(self, base: TuningConfig, groups: Sequence[Group]) -> TuningConfig:
        return self.space.with_fp32(base, (n for g in groups for n in g))

    @staticmethod
    def _extend(reverted: list[Group], steps: Sequence[Step]) -> list[Group]:
        out = list(reverted)
        for step in steps:
            out.extend(g for g in step if g not in out)
        return out

    # -- phase 2 ---------------------------------------------------------------------------------

    def _fallback(self, base: TuningConfig) -> Search:
        groups = list(self.space.fallback_groups)
        if not groups:
            return
        steps, scores = self._rank(base, groups)
        reverted: list[Group] = []
        if self._threshold is not None:
            found = self._proxy_first(base, steps, scores)
            if found is not None:
                reverted = found
                config = self._config(base, reverted)
                result = yield config
                if result.meets_goal:
                    if self.options["reenable"]:
                        yield from self._reenable(base, reverted, scores)
                    return
                self._distrust(config)
                rest = [g for g in groups if g not in reverted]
                if not rest:
                    logger.info("basic: every op is FP32 and the goal is still not met; the search is over")
                    return
                steps, new_scores = self._rank(config, rest)
                scores.update(new_scores)
        yield from self._geometric(base, reverted, steps, scores, first=not reverted)

    def _proxy_first(
        self, base: TuningConfig, steps: list[Step], scores: dict[Group, float]
    ) -> list[Group] | None:
        """Revert steps one at a time (proxy runs only) until the proxy accepts; ``None`` if it never does."""
        reverted: list[Group] = []
        remaining = list(steps)
        while remaining:
            reverted = self._extend(reverted, remaining[:1])
            remaining = [s for s in remaining[1:] if not set(s) <= set(reverted)]
            config = self._config(base, reverted)
            verdict = self._accepts(config)
            if verdict is None:
                return None
            if verdict:
                logger.info(
                    "basic: the proxy accepts %d fallback group(s) in FP32 (disagreement %.4f <= %.4f)",
                    len(reverted), self._estimates[config.key()], self._threshold,
                )  # fmt: skip
                return reverted
            if self.options["rerank"] and remaining:
                rest = [g for g in self.space.fallback_groups if g not in reverted]
                remaining, new_scores = self._rank(config, rest)
                scores.update(new_scores)
        return None

    def _geometric(
        self,
        base: TuningConfig,
        reverted: list[Group],
        steps: list[Step],
        scores: dict[Group, float],
        *,
        first: bool,
    ) -> Search:
        growth = float(self.options["growth"])
        size = 1.0 if first else growth
        while True:
            remaining = [s for s in steps if not set(s) <= set(reverted)]
            if not remaining:
                logger.info("basic: every op is FP32 and the goal is still not met; the search is over")
                return
            batch = remaining[: max(1, int(size))]
            chosen = self._bisect(base, reverted, batch)
            reverted = self._extend(reverted, chosen)
            config = self._config(base, reverted)
            result = yield config
            if result.meets_goal:
                break
            if config.key() in self._estimates and self._accepts(config):
                self._distrust(config)
            size *= growth
            rest = [g for g in self.space.fallback_groups if g not in reverted]
            if not rest:
                logger.info("basic: every op is FP32 and the goal is still not met; the search is over")
                return
            if self.options["rerank"]:
                steps, new_scores = self._rank(config, rest)
                scores.update(new_scores)
        if self.options["reenable"]:
            yield from self._reenable(base, reverted, scores)

    def _bisect(self, base: TuningConfig, reverted: list[Group], batch: list[Step]) -> list[Step]:
        """The shortest prefix of ``batch`` the proxy accepts (binary search), else the whole batch."""
        if len(batch) <= 1 or self._threshold is None:
            return batch
        if not self._accepts(self._config(base, self._extend(reverted, batch))):
            return batch
        lo, hi = 1, len(batch)  # hi is accepted
        while lo < hi:
            mid = (lo + hi) // 2
            if self._accepts(self._config(base, self._extend(reverted, batch[:mid]))):
                hi = mid
            else:
                lo = mid + 1
        return batch[:hi]

    # -- phase 3 ---------------------------------------------------------------------------------

    def _reenable(self, base: TuningConfig, reverted: list[Group], scores: dict[Group, float]) -> Search:
        """Re-quantize reverted groups, least sensitive (then latest reverted) first, chunks halving."""
        position = {g: i for i, g in enumerate(reverted)}
        todo = sorted(reverted, key=lambda g: (scores.get(g, 0.0), -position[g]))
        current = list(reverted)
        chunk = max(1, len(todo) // 2)
        while todo:
            trial = set(todo[:chunk])
            config = self._config(base, [g for g in current if g not in trial])
            if self._clear_miss(config):
                meets = False  # the proxy predicts a clear miss: no trial
            else:
                meets = (yield config).meets_goal
            if meets:
                current = [g for g in current if g not in trial]
                todo = todo[chunk:]
                chunk = min(chunk, max(1, len(todo)))
            elif chunk == 1:
                todo = todo[1:]
            else:
                chunk = max(1, chunk // 2)
