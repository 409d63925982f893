"""exhaustive, random, tpe and bayesian: coverage, no duplicates, exhaustion, determinism, reaching the goal."""

from __future__ import annotations

import numpy as np
import pytest

from lpot_ir.strategies import get_strategy
from lpot_ir.strategies.base import TuningSpace
from lpot_ir.strategies.bayesian import HammingGP
from tests.strategies.synthetic import SyntheticContext, drive, first_success


def _keys(results) -> list[str]:
    return [r.config.key() for r in results]


def _tiny(small_space: TuningSpace) -> TuningSpace:
    """A conv and its relu, one candidate, one size."""
    return TuningSpace(small_space.nodes[:2], small_space.model_wise[:1])


def test_exhaustive_covers_the_space_once_in_order(small_space, small_context):
    strategy = get_strategy("exhaustive")(small_space, small_context)
    results = drive(strategy, small_context)
    assert len(results) == small_space.size == len(set(_keys(results)))
    assert strategy.propose() is None
    assert [r.config for r in results[:4]] == list(small_space.model_wise_configs())

    def rank(config) -> tuple[int, int]:  # (nodes changed, of which FP32) from the nearest candidate
        opts = small_context.options(config)
        out = []
        for g in range(len(small_space.model_wise)):
            start = [c.by_global[g] for c in small_space.choices]
            changed = [i for i, (a, b) in enumerate(zip(opts, start, strict=True)) if a != b]
            out.append((len(changed), sum(opts[i] == small_space.choices[i].fp32_index for i in changed)))
        return min(out)

    ranks = [rank(r.config) for r in results]
    assert ranks == sorted(ranks)
    assert first_success(results) is not None


def test_random_is_a_seeded_permutation(small_space, small_context):
    runs = {
        seed: drive(get_strategy("random")(small_space, small_context, seed=seed), small_context)
        for seed in (1, 2)
    }
    again = drive(get_strategy("random")(small_space, small_context, seed=1), small_context)
    assert _keys(again) == _keys(runs[1])
    assert _keys(runs[1]) != _keys(runs[2])
    for results in runs.values():
        assert len(results) == small_space.size == len(set(_keys(results)))
        assert first_success(results) is not None


def test_random_samples_large_spaces_without_repeats(resnet_space, resnet_context):
    assert resnet_space.size > 10**30
    first = drive(get_strategy("random")(resnet_space, resnet_context, seed=4), resnet_context, max_trials=30)
    second = drive(
        get_strategy("random")(resnet_space, resnet_context, seed=4), resnet_context, max_trials=30
    )
    assert _keys(first) == _keys(second) and len(set(_keys(first))) == 30
    fractions = [len(resnet_space.fp32_nodes(r.config)) / len(resnet_space.nodes) for r in first]
    assert 0.25 < float(np.mean(fractions)) < 0.5  # each node FP32 with probability 1/2 or 1/3


@pytest.mark.parametrize("name", ["tpe", "bayesian"])
def test_model_based_search_reaches_goal(name, small_space, small_context):
    results = drive(get_strategy(name)(small_space, small_context, seed=11), small_context, max_trials=40)
    assert len(set(_keys(results))) == len(results) == 40
    assert [r.config for r in results[:4]] == list(small_space.model_wise_configs())  # warm start
    assert first_success(results) is not None
    # the FP32 cost steers it to small FP32 sets: the two critical nodes plus at most one more
    fewest = min(len(small_space.fp32_nodes(r.config)) for r in results if r.meets_goal)
    assert fewest <= 3


@pytest.mark.parametrize("name", ["tpe", "bayesian"])
def test_model_based_search_is_deterministic_per_seed(name, small_space, small_context):
    def run(seed: int) -> list[str]:
        return _keys(
            drive(get_strategy(name)(small_space, small_context, seed=seed), small_context, max_trials=20)
        )

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize("name", ["exhaustive", "random", "tpe", "bayesian", "basic", "mse"])
def test_every_strategy_ends_on_a_tiny_space(name, small_space):
    space = _tiny(small_space)
    context = SyntheticContext(space, [])
    context.meets_goal = lambda accuracy: False  # type: ignore[method-assign]  # never stop early
    strategy = get_strategy(name)(space, context, seed=2)
    results = drive(strategy, context, max_trials=100)
    assert space.size == 4  # (INT8, FP32) x (INT8, FP32)
    assert len(results) == len(set(_keys(results))) <= space.size
    if name not in ("basic", "mse"):
        assert len(results) == space.size  # the whole space, then None
    assert strategy.propose() is None


def test_gp_fits_and_ranks():
    rng = np.random.default_rng(0)
    radices = [2, 3, 3, 2, 3]
    points = np.array([[int(rng.integers(r)) for r in radices] for _ in range(30)])
    target = (points[:, 1] == 2).astype(float) - 0.3 * (points[:, 3] == 1)
    gp = HammingGP(radices).fit(points, target)
    mean, std = gp.predict(points)
    assert np.allclose(mean, target, atol=0.05) and np.all(std < 0.2)
    good, bad = np.array([[0, 2, 0, 0, 0]]), np.array([[0, 0, 0, 1, 0]])
    assert gp.predict(good)[0][0] > gp.predict(bad)[0][0]
