"""basic with the output-distance proxy (``context.distance``) on the real ResNet-50 node list (synthetic.py).

The distance here is a documented function of the synthetic model's true accuracy drop: linear with a
bias (a proxy on another scale than accuracy: the calibration must map it), quadratic (monotone but
not linear), square root (a classifier: the loss stays near zero for small distances), scrambled (its ordering contradicts the evaluations) or raising. The real proxy on a real
model is tested in tests/tuning/test_proxy_and_groups.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lpot_ir.ir.quant import TuningConfig
from lpot_ir.strategies import get_strategy
from lpot_ir.strategies.proxy import DistanceReading
from tests.strategies.synthetic import BASELINE, TOLERANCE, SyntheticContext, drive, first_success


@dataclass
class DistanceContext(SyntheticContext):
    """The synthetic context with ``distance``: ``shape`` of the true relative drop, times ``scale``."""

    scale: float = 3.0
    shape: str = "linear"
    readings: int = 0
    allowed_loss: float = TOLERANCE

    def distance(self, config: TuningConfig) -> DistanceReading:
        self.readings += 1
        drop = max(0.0, (BASELINE - self.accuracy(config)) / BASELINE)
        if self.shape == "raise":
            raise RuntimeError("the proxy run failed")
        if self.shape == "quadratic":
            value = drop**2 * 100
        elif self.shape == "sqrt":  # a classifier's output distance: small changes flip no top-1
            value = math.sqrt(drop) * self.scale
        elif self.shape == "scrambled":  # unrelated to the drop: a deterministic hash of the configuration
            value = int(config.key()[:6], 16) / 0xFFFFFF
        else:
            value = drop * self.scale
        return DistanceReading(value, math.nan, 0.0)


def _fp32_groups(space, config):
    fp32 = set(space.fp32_nodes(config))
    return [g for g in space.fallback_groups if fp32 & set(g)]


def _needed(space, critical):
    return {g for g in space.fallback_groups if set(g) & set(critical)}


def test_calibrated_proxy_picks_the_fallback_that_meets_the_goal(resnet_space, critical):
    context = DistanceContext(resnet_space, critical)
    results = drive(get_strategy("basic")(resnet_space, context), context)
    # the two model-wise candidates, then fallbacks chosen on proxy readings alone: the first miss lost
    # far more than allowed, so one probe (which a linear proxy makes miss) precedes the aimed candidate
    assert first_success(results) == 4
    chosen = set(_fp32_groups(resnet_space, results[3].config))
    needed = _needed(resnet_space, critical)
    assert needed <= chosen
    assert len(chosen) <= len(needed) + 3  # the sensitivity ranking leaks (synthetic.py): a few extra


def test_nonlinear_proxy_is_calibrated_by_its_misses(resnet_space, critical):
    context = DistanceContext(resnet_space, critical, shape="quadratic")
    results = drive(get_strategy("basic")(resnet_space, context), context)
    success = first_success(results)
    assert success is not None and success <= 5
    assert _needed(resnet_space, critical) <= set(_fp32_groups(resnet_space, results[success - 1].config))


def test_a_far_first_miss_is_followed_by_a_probe_not_by_reverting_everything(resnet_space, critical):
    # the first miss loses ~13x the allowed loss; a line from FP32 through it overstates what small
    # distances lose under a square-root proxy, so aiming straight at the goal would revert ~55 groups
    context = DistanceContext(resnet_space, critical, shape="sqrt")
    results = drive(get_strategy("basic")(resnet_space, context), context)
    success = first_success(results)
    assert success is not None and success <= 4
    chosen = set(_fp32_groups(resnet_space, results[success - 1].config))
    assert _needed(resnet_space, critical) <= chosen
    assert len(chosen) <= len(_needed(resnet_space, critical)) + 3


def test_contradicted_proxy_is_not_trusted(resnet_space, critical):
    scrambled = DistanceContext(resnet_space, critical, shape="scrambled")
    results = drive(get_strategy("basic")(resnet_space, scrambled), scrambled)
    plain = SyntheticContext(resnet_space, critical)
    reference = drive(get_strategy("basic")(resnet_space, plain, proxy=False), plain)
    assert first_success(results) is not None
    # it costs at most what the search without a proxy costs, plus the trial it misled
    assert first_success(results) <= first_success(reference) + 1


def test_failing_proxy_falls_back_to_the_plain_search(resnet_space, critical):
    context = DistanceContext(resnet_space, critical, shape="raise")
    results = drive(get_strategy("basic")(resnet_space, context), context)
    plain = SyntheticContext(resnet_space, critical)
    expected = [r.config.key() for r in drive(get_strategy("basic")(resnet_space, plain, proxy=False), plain)]
    assert [r.config.key() for r in results] == expected


def test_without_proxy_option_the_search_is_unchanged(resnet_space, critical):
    plain = SyntheticContext(resnet_space, critical)
    expected = [r.config.key() for r in drive(get_strategy("basic")(resnet_space, plain), plain)]
    context = DistanceContext(resnet_space, critical)
    results = drive(get_strategy("basic")(resnet_space, context, proxy=False), context)
    assert [r.config.key() for r in results] == expected
    assert context.readings == 0


def test_reenable_skips_what_the_calibrated_proxy_predicts_to_miss(resnet_space, critical):
    context = DistanceContext(resnet_space, critical)
    results = drive(get_strategy("basic")(resnet_space, context), context)
    success = first_success(results)
    after = results[success:]
    # re-quantizing a critical group alone is predicted to miss by the calibration: never evaluated
    for result in after:
        fp32 = set(resnet_space.fp32_nodes(result.config))
        assert all(set(g) <= fp32 for g in _needed(resnet_space, critical))
    # and what it does try shrinks the FP32 set to exactly the critical groups
    best = min((r for r in results if r.meets_goal), key=lambda r: len(_fp32_groups(resnet_space, r.config)))
    assert set(_fp32_groups(resnet_space, best.config)) == _needed(resnet_space, critical)
