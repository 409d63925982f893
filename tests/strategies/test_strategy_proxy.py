"""basic with an accuracy proxy (``context.estimate``) on the real ResNet-50 node list (synthetic.py).

The proxy here is the synthetic model's own accuracy drop (a perfect predictor), an always-optimistic
one (0: every configuration looks fine) or one that raises; the real proxy on a real model is tested
in tests/tuning/test_proxy_and_groups.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from lpot_ir.ir.quant import TuningConfig
from lpot_ir.strategies import get_strategy
from tests.strategies.synthetic import BASELINE, TOLERANCE, SyntheticContext, drive, first_success


@dataclass
class ProxyContext(SyntheticContext):
    """The synthetic context with ``estimate``: the drop it predicts is the true drop x ``bias``."""

    bias: float = 1.0
    estimate_calls: int = 0
    broken: bool = False

    @property
    def estimate_threshold(self) -> float:
        return BASELINE * TOLERANCE

    def estimate(self, config: TuningConfig) -> float:
        self.estimate_calls += 1
        if self.broken:
            raise RuntimeError("the proxy run failed")
        return max(0.0, (BASELINE - self.accuracy(config)) * self.bias)


def _fp32_groups(space, config):
    fp32 = set(space.fp32_nodes(config))
    return [g for g in space.fallback_groups if fp32 & set(g)]


def test_perfect_proxy_meets_the_goal_with_the_first_evaluation(resnet_space, critical):
    context = ProxyContext(resnet_space, critical)
    results = drive(get_strategy("basic")(resnet_space, context), context)
    assert first_success(results) == 1  # the all-INT8 candidates are predicted to fail: never evaluated
    needed = {g for g in resnet_space.fallback_groups if set(g) & set(critical)}
    assert set(_fp32_groups(resnet_space, results[0].config)) == needed  # exactly the critical groups
    # with a positive timeout, re-quantizing them is tried, each in one trial at most, and fails
    assert all(not r.meets_goal for r in results[1:]) and len(results) <= 1 + len(needed)
    assert context.estimate_calls <= len(resnet_space.fallback_groups) + len(resnet_space.model_wise) + 8


def test_without_proxy_option_the_search_is_unchanged(resnet_space, critical):
    plain = SyntheticContext(resnet_space, critical)
    expected = [r.config.key() for r in drive(get_strategy("basic")(resnet_space, plain), plain)]
    context = ProxyContext(resnet_space, critical)
    results = drive(get_strategy("basic")(resnet_space, context, proxy=False), context)
    assert [r.config.key() for r in results] == expected
    assert context.estimate_calls == 0


def test_optimistic_proxy_is_distrusted_and_the_goal_still_met(resnet_space, critical):
    context = ProxyContext(resnet_space, critical, bias=0.0)  # predicts no loss at all
    results = drive(get_strategy("basic")(resnet_space, context), context)
    assert not results[0].meets_goal  # the model-wise candidate is evaluated (not a clear miss)
    assert first_success(results) is not None
    keys = [r.config.key() for r in results]
    assert len(keys) == len(set(keys))
    for result in results:  # groups still revert together
        fp32 = set(resnet_space.fp32_nodes(result.config))
        assert all(set(g) <= fp32 or not set(g) & fp32 for g in resnet_space.fallback_groups)


def test_failing_proxy_falls_back_to_the_plain_search(resnet_space, critical):
    plain = SyntheticContext(resnet_space, critical)
    expected = [r.config.key() for r in drive(get_strategy("basic")(resnet_space, plain), plain)]
    context = ProxyContext(resnet_space, critical, broken=True)
    results = drive(get_strategy("basic")(resnet_space, context), context)
    assert [r.config.key() for r in results] == expected
    assert context.estimate_calls == 1  # tried once, then not again


def test_bisect_keeps_the_shortest_accepted_prefix_of_a_batch(resnet_space, critical):
    context = ProxyContext(resnet_space, critical)
    strategy = get_strategy("basic")(resnet_space, context)
    base = resnet_space.model_wise_configs()[0]
    steps, _scores = strategy._rank(base, list(resnet_space.fallback_groups))
    batch = steps[:16]
    chosen = strategy._bisect(base, [], batch)
    accepted = [
        k for k in range(1, len(batch) + 1)
        if context.estimate(strategy._config(base, strategy._extend([], batch[:k]))) <= context.estimate_threshold
    ]  # fmt: skip
    assert accepted, "the test needs a batch whose full revert is accepted"
    assert len(chosen) == accepted[0] < len(batch)


def test_proxy_budget_bounds_proxy_runs(resnet_space, critical):
    context = ProxyContext(resnet_space, critical)
    results = drive(get_strategy("basic")(resnet_space, context, proxy_budget=3), context)
    assert context.estimate_calls <= 3
    assert first_success(results) is not None
