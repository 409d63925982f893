"""The default strategy: keep the speed. Recover accuracy in INT8 first, revert as little as measured.

The result a user wants is the fastest INT8 model that meets the accuracy goal, so the search works
from the fast end and gives speed away only where an evaluation shows it must:

1. **Model-wise.** The global candidates (model-wise configurations x calibration sampling sizes),
   fastest expected first, each with the *speed regions* applied: fallback groups whose INT8 kernels
   are slower than FP32 (``context.latency_model()``, two profiled runs) start in FP32, since that
   costs no accuracy. Stop at the first that meets the goal.
2. **Recovery.** Accuracy-recovery settings that keep every op in INT8 (``TuningConfig.recovery``:
   per-tensor range search, bias correction, MSE weight clipping; cross-layer equalization where the
   model has Conv chains; SmoothQuant where it has MatMul/Gemm weights; AdaRound last) are read by the
   output-distance proxy (``context.distance``: how far the candidate's outputs are from FP32's on
   calibration feeds, no labels), and the closest one is evaluated if it is clearly closer than plain
   INT8.
3. **Fallback.** One instrumented run ranks fallback steps (per quantized tensor, largest error first;
   see :mod:`lpot_ir.strategies.fallback`). The proxy is calibrated on this run's own evaluations
   (:class:`~lpot_ir.tuning.proxy.ProxyCalibration`: each evaluated candidate is a (distance, loss)
   point). With a calibrated proxy the strategy bisects, on proxy readings only, for the shortest
   prefix of steps predicted to lose at most ``margin`` x the allowed loss, grows it into contiguous
   regions with the latency model (INT8 islands whose boundaries cost more than they save join the
   FP32 side), and evaluates that one candidate. A miss adds a point to the calibration and the search
   goes on past it (re-ranking after a miss while the advice budget lasts). Without a proxy (no
   calibration data, budget spent, or its predictions contradicted by evaluations), steps are
   reverted in geometrically growing batches.

   **Mixed precision.** When the space gives nodes a bf16/fp16 option (a 16-bit type in the YAML dtype
   lists, ``TuningSpace.float_choices``), the fallback runs first with the reverted nodes in that type
   (bf16 before fp16; LPOT's order: INT8, then the 16-bit type, then FP32), nodes without the option and
   speed regions in FP32. If reverting every group that way still misses the goal, the fallback runs
   again in FP32. When tuning goes on after the goal is met (``timeout > 0``), the FP32 twin of the
   16-bit candidate that met it is evaluated too, so the choice between them rests on the measured
   objectives (the ranking prefers no 16-bit types on a tie).
4. **Speed** (``reenable``, only when tuning goes on after the goal is met, ``timeout > 0``): the
   reverted groups are re-quantized, those the latency model says cost the most first, in halving
   chunks (delta debugging); candidates the calibrated proxy predicts to miss are not evaluated.

The proxy only orders candidates and picks which one to evaluate; a candidate is skipped only where
this run's evaluations predict it misses. The context's advice budget (proxy, sensitivity and
profiling time, a few evaluations' worth) bounds the extra work: when it is spent the strategy goes on
with evaluations alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Generator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import DType, RecoveryConfig, TuningConfig, WeightRounding
from lpot_ir.strategies.base import (
    BatchSearch,
    Search,
    StrategyContext,
    TrialResult,
    TuneStrategy,
    TuningSpace,
    UntilGoal,
    register_strategy,
)
from lpot_ir.strategies.fallback import Group, Step, extend, rank_steps
from lpot_ir.strategies.proxy import ProxyCalibration

__all__ = ["BasicStrategy", "recovery_candidates"]

logger = logging.getLogger(__name__)

_CONV_OPS = ("Conv", "ConvTranspose")
_MATMUL_OPS = ("MatMul", "Gemm")


PROBE_ABOVE = 2.0
"""A fallback candidate probes (aims between the goal and the closest miss) while every evaluated miss
lost more than this many times the allowed loss (see ``BasicStrategy._target_loss``)."""


def recovery_candidates(space: TuningSpace) -> list[RecoveryConfig]:
    """The single recovery techniques that can apply to the space's nodes, cheapest first.

    Per-tensor range search, bias correction and MSE weight clipping apply to any model; cross-layer
    equalization to models with Conv nodes; SmoothQuant (alpha 0.5, its authors' default) to models
    with MatMul/Gemm nodes.
    """
    ops = {n.op_type for n in space.nodes}
    candidates = [
        RecoveryConfig(range_search=True),
        RecoveryConfig(bias_correction=True),
        RecoveryConfig(weight_rounding=WeightRounding.MSE),
    ]
    if ops & set(_CONV_OPS):
        candidates.append(RecoveryConfig(equalization=True))
    if ops & set(_MATMUL_OPS):
        candidates.append(RecoveryConfig(smoothquant_alpha=0.5))
    return candidates


def _union(settings: Sequence[RecoveryConfig]) -> RecoveryConfig:
    """One recovery setting with every technique any of ``settings`` turns on."""
    merged = RecoveryConfig()
    for s in settings:
        merged = RecoveryConfig(
            equalization=merged.equalization or s.equalization,
            smoothquant_alpha=s.smoothquant_alpha if s.smoothquant_alpha is not None else merged.smoothquant_alpha,
            bias_correction=merged.bias_correction or s.bias_correction,
            weight_rounding=s.weight_rounding if s.weight_rounding is not WeightRounding.NEAREST else merged.weight_rounding,
            range_search=merged.range_search or s.range_search,
        )
    return merged


@register_strategy("basic")
class BasicStrategy(TuneStrategy):
    """Speed-keeping search: model-wise, recovery, calibrated-proxy fallback in regions, re-enable.

    Options:
        proxy: use the output-distance proxy (``context.distance``) to choose candidates. Default true.
        recovery: try accuracy-recovery settings before reverting ops. Default true.
        speed: use the latency model (``context.latency_model``) for regions. Default true.
        margin: the fallback prefix is chosen for a predicted loss of ``margin`` x the allowed loss.
            Default 0.7.
        growth: factor by which the fallback batch grows after a failed trial when no calibrated
            proxy guides it (1 = one step at a time). Default 2.
        rerank: measure the sensitivity again after a failed fallback trial (while the advice budget
            lasts). Default true.
        reenable: after the goal is met, try to re-quantize reverted groups (only matters when tuning
            goes on after the first success, ``timeout > 0``). Default true.
        max_model_wise: try at most this many model-wise configurations, fastest expected first,
            before recovery and fallback (0: all). Default 8.
    """

    default_options = MappingProxyType(
        {
            "proxy": True,
            "recovery": True,
            "speed": True,
            "margin": 0.7,
            "growth": 2.0,
            "rerank": True,
            "reenable": True,
            "max_model_wise": 8,
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
        margin = float(self.options["margin"])
        if not 0.0 < margin <= 1.0:
            raise ConfigError(f"tuning.strategy.margin must be in (0, 1], got {margin}.")
        self.calibration = ProxyCalibration()
        self.proxy_readings = 0
        self._unusable: set[str] = set()  # configurations that could not be built
        self._latency: Any = None
        self._latency_built = False
        self._low: DType | None = None  # the 16-bit type reverted groups take (mixed-precision pass), or None
        self._speed: set[Group] = set()  # groups kept FP32 for speed (they never take a 16-bit type)

    # -- what the context offers -------------------------------------------------------------------

    @property
    def allowed_loss(self) -> float | None:
        """The relative loss the goal allows (``None``: the context does not say)."""
        value = getattr(self.context, "allowed_loss", None)
        return float(value) if value is not None and math.isfinite(float(value)) else None

    def _distance(self, config: TuningConfig) -> Any:
        """The proxy reading of ``config`` (``None``: no proxy, budget spent, or it failed)."""
        if not self.options["proxy"]:
            return None
        measure = getattr(self.context, "distance", None)
        if measure is None:
            return None
        try:
            reading = measure(config)
        except Exception as exc:  # the proxy failing must not end tuning
            if config.recovery.enabled:  # this recovery setting cannot be built: skip it, keep the proxy
                logger.warning("basic: recovery setting %s failed (%s); skipping it", config.recovery.to_dict(), exc)
                self._unusable.add(config.key())
                return None
            logger.warning("basic: the accuracy proxy failed (%s); going on without it", exc)
            self.options["proxy"] = False
            return None
        if reading is not None:
            self.proxy_readings += 1
        return reading

    def _latency_model(self) -> Any:
        if not self.options["speed"]:
            return None
        if not self._latency_built:
            self._latency_built = True
            build = getattr(self.context, "latency_model", None)
            if build is not None:
                try:
                    self._latency = build(self.space.base)
                except Exception as exc:
                    logger.warning("basic: the latency model could not be built (%s); regions are off", exc)
        return self._latency

    def _regions(self, reverted: Sequence[Group]) -> list[Group]:
        """``reverted`` plus the INT8 groups whose reversion the latency model predicts to be faster."""
        model = self._latency_model()
        if model is None:
            return list(reverted)
        grown = model.regions(set(reverted))
        extra = [g for g in self.space.fallback_groups if g in grown and g not in reverted]
        self._speed.update(extra)
        for group in extra:
            fp32_ms, int8_ms = model.fp32_time.get(group, 0.0) * 1e3, model.int8_time.get(group, 0.0) * 1e3
            why = (
                f"kept FP32 for speed: its INT8 kernels are slower here ({int8_ms:.3f} ms vs {fp32_ms:.3f} ms FP32)"
                if int8_ms > fp32_ms
                else f"kept FP32 for speed: between FP32 neighbours its Q/DQ boundaries cost more than its INT8 "
                f"kernels save ({fp32_ms - int8_ms:.3f} ms)"
            )
            for name in group:
                self.notes.setdefault(name, why)
        return [*reverted, *extra]

    def _config(self, base: TuningConfig, groups: Sequence[Group]) -> TuningConfig:
        """``base`` with ``groups`` out of INT8: in the 16-bit type of the mixed-precision pass where they may
        run in it (not the speed regions), else FP32."""
        config = self.space.with_fp32(base, (n for g in groups for n in g))
        if self._low is not None:
            config = self.space.with_float(config, (n for g in groups if g not in self._speed for n in g), self._low)
        return config

    def _loss(self, result: TrialResult) -> float | None:
        relative = self.relative_accuracy(result)
        return None if not math.isfinite(relative) else -relative

    def _learn(self, result: TrialResult) -> None:
        """Add an evaluated candidate to the proxy calibration and its latency to the latency model."""
        loss = self._loss(result)
        if loss is None:
            return
        reading = self._distance(result.config)
        if reading is not None:
            self.calibration.add(reading.distance, loss)
        model = self._latency
        fp32_latency = getattr(self.context, "baseline_latency", None)
        measured = result.objectives.get("performance")
        if model is not None and measured and fp32_latency and not result.config.uses_low_precision_float:
            fp32 = set(self.space.fp32_nodes(result.config))
            groups = [g for g in self.space.fallback_groups if set(g) & fp32]
            model.observe(groups, float(fp32_latency) / float(measured))

    def _trusted(self) -> bool:
        allowed = self.allowed_loss
        return allowed is not None and self.calibration.calibrated and not self.calibration.contradicted(allowed)

    def _predicted_miss(self, config: TuningConfig) -> bool:
        """The calibrated proxy predicts ``config`` misses the goal (only with a trusted calibration)."""
        if not self._trusted():
            return False
        reading = self._distance(config)
        if reading is None:
            return False
        predicted = self.calibration.predict(reading.distance)
        return predicted is not None and predicted > float(self.allowed_loss or 0.0)

    # -- the search --------------------------------------------------------------------------------

    def search(self) -> BatchSearch:
        start_regions = self._regions([])
        candidates = self.space.model_wise_configs()
        limit = int(self.options["max_model_wise"]) or len(candidates)
        tried: list[tuple[TuningConfig, TrialResult]] = []
        chosen = candidates[:limit]
        results = yield UntilGoal(self._config(c, start_regions) for c in chosen)  # in parallel with workers
        for config, result in zip(chosen, results, strict=False):
            self._learn(result)
            if result.meets_goal:
                logger.info("basic: model-wise configuration of trial %d meets the goal", result.index)
                if self.options["reenable"] and start_regions:
                    yield from self._reenable(config, list(start_regions), {})
                return
            tried.append((config, result))
        base, best = max(tried, key=lambda cr: (self.relative_accuracy(cr[1]), -cr[1].index))
        base, met = yield from self._recover(base, best, start_regions)
        if met:
            return
        floats = self.space.float_dtypes
        if floats and not base.global_config.fp32:  # 16-bit globals (mixed precision alone) fall back to FP32
            self._low = floats[0]
            met = yield from self._fallback(base, start_regions)
            self._low = None
            if met:
                return
            logger.info("basic: %s fallback did not meet the goal; falling back to FP32", floats[0])
        yield from self._fallback(base, start_regions)

    # -- phase 2: recovery -------------------------------------------------------------------------

    def _recover(self, base: TuningConfig, plain: TrialResult, regions: Sequence[Group]) -> Any:
        """Evaluate the recovery setting the proxy finds closest to FP32; returns ``(base, met)``."""
        if not self.options["recovery"] or base.recovery.enabled:
            return base, False
        plain_reading = self._distance(plain.config)
        if plain_reading is None:
            return base, False
        readings: list[tuple[float, RecoveryConfig]] = []
        for setting in recovery_candidates(self.space):
            candidate = self._config(dataclasses.replace(base, recovery=setting), regions)
            reading = self._distance(candidate)
            if reading is None:
                if candidate.key() in self._unusable:
                    continue
                break
            if reading.distance < plain_reading.distance:
                readings.append((reading.distance, setting))
        if not readings:
            logger.info("basic: no recovery setting brings the outputs closer to FP32; going to fallback")
            return base, False
        helpful = [s for _, s in sorted(readings, key=lambda r: r[0])]
        options = [(readings[0][0] if len(helpful) == 1 else math.inf, helpful[0])]
        if len(helpful) > 1:
            merged = _union(helpful)
            reading = self._distance(self._config(dataclasses.replace(base, recovery=merged), regions))
            best_single = min(readings, key=lambda r: r[0])
            options = [best_single] + ([(reading.distance, merged)] if reading is not None else [])
        distance, setting = min(options, key=lambda r: r[0])
        if not distance < 0.9 * plain_reading.distance:
            return base, False
        candidate = dataclasses.replace(base, recovery=setting)
        result = yield self._config(candidate, regions)
        self._learn(result)
        if result.meets_goal:
            if self.options["reenable"] and regions:
                yield from self._reenable(candidate, list(regions), {})
            return candidate, True
        if self.relative_accuracy(result) >= self.relative_accuracy(plain):
            return candidate, False
        return base, False

    # -- phase 3: fallback -------------------------------------------------------------------------

    def _fallback(self, base: TuningConfig, regions: Sequence[Group]) -> Generator[Any, Any, bool]:
        """Revert fallback steps until a candidate meets the goal (batches of prefixes with several
        workers and no proxy guidance); returns whether one did."""
        groups = list(self.space.fallback_groups)
        if not groups:
            return False
        into = str(self._low) if self._low is not None else "FP32"
        steps, scores = rank_steps(self.space, self.context, self._config(base, regions), groups)
        steps = self._speed_order(steps, scores)
        reverted: list[Group] = list(regions)
        growth = float(self.options["growth"])
        size = 1.0
        reranks = 0
        while True:
            remaining = [s for s in steps if not set(s) <= set(reverted)]
            if not remaining:
                logger.info("basic: every op is out of INT8 (%s) and the goal is still not met", into)
                return False
            chosen = self._proxy_prefix(base, reverted, remaining)
            if chosen is None and self.batch_size > 1:
                fp32, config, result, size = yield from self._prefixes(base, reverted, remaining, size)
            else:
                if chosen is None:
                    chosen = remaining[: max(1, int(size))]
                    size *= growth
                reverted = extend(reverted, chosen)
                fp32 = self._regions(reverted)
                config = self._config(base, fp32)
                result = yield config
                self._learn(result)
            if result.meets_goal:
                if self._low is not None:  # tuning goes on (timeout > 0): measure the same groups in FP32 too
                    low, self._low = self._low, None
                    self._learn((yield self._config(base, fp32)))
                    self._low = low
                if self.options["reenable"]:
                    yield from self._reenable(base, fp32, scores)
                return True
            rest = [g for g in groups if g not in fp32]
            if not rest:
                logger.info("basic: every op is out of INT8 (%s) and the goal is still not met", into)
                return False
            reverted = fp32
            budget = getattr(self.context, "advice_left", None)
            if self.options["rerank"] and reranks < 2 and (budget is None or budget() > 0):
                reranks += 1
                steps, new_scores = rank_steps(self.space, self.context, config, rest)
                scores.update(new_scores)
                steps = self._speed_order(steps, scores)

    def _prefixes(self, base: TuningConfig, reverted: list[Group], remaining: list[Step], size: float) -> Any:
        """With several workers and no proxy guidance: the next ``batch_size`` growing prefixes of
        ``remaining`` at once (the sizes one worker would try one after the other, without re-ranking
        between them), as ordered alternatives; returns ``(fp32 groups, config, result, next size)`` of the
        first that meets the goal, else of the last."""
        growth = float(self.options["growth"])
        prefixes: list[tuple[list[Group], TuningConfig]] = []
        taken = 0
        while len(prefixes) < self.batch_size and taken < len(remaining):
            taken = min(len(remaining), taken + max(1, int(size)))
            size *= growth
            fp32 = self._regions(extend(reverted, remaining[:taken]))
            prefixes.append((fp32, self._config(base, fp32)))
        results = yield UntilGoal(config for _, config in prefixes)
        for result in results:
            self._learn(result)
        fp32, config = prefixes[len(results) - 1]
        return fp32, config, results[-1], size

    def _speed_order(self, steps: list[Step], scores: Mapping[Group, float]) -> list[Step]:
        """Steps by error per unit of latency that reverting them costs (the latency model's), so that the
        shortest prefix that meets the goal also gives away the least speed; unchanged without a model.

        A step's cost is what its groups' FP32 kernels add over their INT8 ones, floored at a quarter of
        the median positive cost, so that near-free steps are not ranked by their noise.
        """
        model = self._latency
        if model is None or not steps:
            return steps
        positive = sorted(c for c in (model.revert_seconds(g) for g in self.space.fallback_groups) if c > 0)
        floor = 0.25 * positive[len(positive) // 2] if positive else 1e-9
        position = {step: i for i, step in enumerate(steps)}

        def ratio(step: Step) -> float:
            error = max((scores.get(g, 0.0) for g in step), default=0.0)
            cost = sum(max(model.revert_seconds(g), 0.0) for g in step)
            return error / max(cost, floor)

        return sorted(steps, key=lambda step: (-ratio(step), position[step]))

    def _target_loss(self, allowed: float) -> float:
        """The loss the next fallback candidate aims at: ``margin`` x the allowed loss, or a probe.

        The calibration interpolates linearly from FP32 (distance 0, loss 0) to the points this run
        evaluated. When the closest miss lost more than :data:`PROBE_ABOVE` x the allowed loss and nothing
        has met the goal yet, the line to the goal is a long extrapolation, and on classifiers (where a
        small output change flips no top-1) it overstates the loss of small distances: the candidate it
        picks reverts nearly everything. The candidate then aims at the geometric mean of the target and
        that miss instead: if it meets the goal, far more stays INT8; if it misses, it is a measured point
        near the goal, and each probe halves the gap (in log scale) for one evaluation.
        """
        target = float(self.options["margin"]) * allowed
        points = self.calibration.points
        if any(loss <= allowed for d, loss in points if d > 0):
            return target
        misses = [loss for d, loss in points if d > 0 and loss > allowed]
        if not misses or min(misses) <= PROBE_ABOVE * allowed:
            return target
        return math.sqrt(target * min(misses))

    def _proxy_prefix(self, base: TuningConfig, reverted: list[Group], remaining: list[Step]) -> list[Step] | None:
        """The shortest prefix of ``remaining`` the calibrated proxy predicts to meet the goal.

        ``None`` when the proxy cannot guide (not calibrated, contradicted, or no reading). Bisection
        on proxy readings of the region-grown configurations; the whole list is the upper end.
        """
        allowed = self.allowed_loss
        if allowed is None or not self._trusted():
            return None
        target = self.calibration.threshold(self._target_loss(allowed))
        if target is None:
            return None

        def distance(n: int) -> float | None:
            groups = self._regions(extend(reverted, remaining[:n]))
            reading = self._distance(self._config(base, groups))
            return None if reading is None else reading.distance

        lo, hi = 1, len(remaining)
        first = distance(lo)
        if first is None:
            return None
        if first <= target:
            return remaining[:lo]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            value = distance(mid)
            if value is None:
                return remaining[:hi]
            if value <= target:
                hi = mid
            else:
                lo = mid
        return remaining[:hi]

    # -- phase 4: speed ------------------------------------------------------------------------------

    def _reenable(self, base: TuningConfig, reverted: list[Group], scores: dict[Group, float]) -> Search:
        """Re-quantize reverted groups, those costing the most latency (then least sensitive) first."""
        model = self._latency
        position = {g: i for i, g in enumerate(reverted)}

        def cost(group: Group) -> float:
            return model.revert_seconds(group) if model is not None else 0.0

        todo = sorted(
            (g for g in reverted if model is None or cost(g) > 0),
            key=lambda g: (-cost(g), scores.get(g, 0.0), -position[g]),
        )
        current = list(reverted)
        chunk = max(1, len(todo) // 2)
        while todo:
            trial = set(todo[:chunk])
            config = self._config(base, [g for g in current if g not in trial])
            if self._predicted_miss(config):
                meets = False  # this run's evaluations predict a miss: no trial
            else:
                result = yield config
                self._learn(result)
                meets = result.meets_goal
            if meets:
                current = [g for g in current if g not in trial]
                todo = todo[chunk:]
                chunk = min(chunk, max(1, len(todo)))
            elif chunk == 1:
                todo = todo[1:]
            else:
                chunk = max(1, chunk // 2)
