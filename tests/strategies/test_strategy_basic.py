"""basic and mse on the real ResNet-50 node list with the documented accuracy model (synthetic.py)."""

from __future__ import annotations

from lpot_ir.strategies import get_strategy
from lpot_ir.strategies.base import TrialResult, TuningSpace
from tests.strategies.synthetic import (
    SyntheticContext,
    default_model_wise,
    drive,
    first_success,
    inc_basic_trials,
)


def _fp32_groups(space: TuningSpace, result: TrialResult) -> set[tuple[str, ...]]:
    fp32 = set(space.fp32_nodes(result.config))
    return {g for g in space.fallback_groups if fp32 & set(g)}


def test_basic_reaches_goal_with_few_trials(resnet_space, resnet_context, critical):
    results = drive(get_strategy("basic")(resnet_space, resnet_context), resnet_context)
    to_goal = first_success(results)
    inc = inc_basic_trials(resnet_space, resnet_context)
    one_by_one = len(resnet_space.model_wise) + len(resnet_space.fallback_groups)
    assert to_goal is not None
    assert to_goal < one_by_one  # fewer than trying each op alone
    assert 2 * to_goal <= inc  # at most half of INC 2.6 basic (simulated on the same model)
    assert to_goal <= 6  # 2 model-wise + geometric batches 1, 2, 4 (+1)
    # phase 1 tried both candidates, fastest expected (per-channel) first
    assert [r.config.global_config for r in results[:2]] == list(resnet_space.model_wise)
    assert resnet_context.sensitivity_calls <= to_goal  # one instrumented run per fallback step at most


def test_basic_shrinks_fp32_set_to_what_is_needed(resnet_space, resnet_context, critical):
    results = drive(get_strategy("basic")(resnet_space, resnet_context), resnet_context)
    best = max((r for r in results if r.meets_goal), key=lambda r: -len(resnet_space.fp32_nodes(r.config)))
    needed = {g for g in resnet_space.fallback_groups if set(g) & set(critical)}
    assert _fp32_groups(resnet_space, best) == needed  # exactly the critical groups stay FP32
    assert len(results) <= 3 * len(needed) + 8  # the shrinking is bounded too
    keys = [r.config.key() for r in results]
    assert len(keys) == len(set(keys))


def test_basic_reverts_groups_together(resnet_space, resnet_context):
    results = drive(get_strategy("basic")(resnet_space, resnet_context), resnet_context)
    for result in results:
        fp32 = set(resnet_space.fp32_nodes(result.config))
        for group in resnet_space.fallback_groups:
            assert set(group) <= fp32 or not set(group) & fp32


def test_basic_stops_after_model_wise_success(resnet_space, resnet_context):
    context = SyntheticContext(resnet_space, critical=[])  # nothing critical: INT8 meets the goal
    results = drive(get_strategy("basic")(resnet_space, context), context)
    assert len(results) == 1 and results[0].meets_goal
    assert context.sensitivity_calls == 0


def test_basic_without_rerank_or_growth_is_slower(resnet_space, critical):
    def trials(**options) -> int:
        context = SyntheticContext(resnet_space, critical)
        result = first_success(drive(get_strategy("basic")(resnet_space, context, **options), context))
        assert result is not None
        return result

    default = trials()
    assert default <= trials(rerank=False)
    assert default < trials(growth=1.0, rerank=False)


def test_basic_unreachable_goal_ends_with_none(small_space):
    context = SyntheticContext(small_space, [n.name for n in small_space.nodes])
    context.baseline_accuracy = 0.76
    context.meets_goal = lambda accuracy: False  # type: ignore[method-assign]
    strategy = get_strategy("basic")(small_space, context)
    results = drive(strategy, context)
    # 4 model-wise points (2 candidates x 2 sizes), then batches 1, 2, ... until all groups are FP32
    assert len(small_space.fp32_nodes(results[-1].config)) == len(small_space.nodes)
    assert len(results) == 4 + 3
    assert strategy.propose() is None and strategy.propose() is None


def test_basic_deterministic(resnet_space, critical):
    runs = []
    for _ in range(2):
        context = SyntheticContext(resnet_space, critical)
        runs.append(
            [r.config.key() for r in drive(get_strategy("basic")(resnet_space, context, seed=5), context)]
        )
    assert runs[0] == runs[1]


def test_mse_falls_back_one_group_at_a_time_in_error_order(resnet_space, resnet_context, critical):
    results = drive(get_strategy("mse")(resnet_space, resnet_context), resnet_context)
    assert results[-1].meets_goal and sum(r.meets_goal for r in results) == 1
    sizes = [len(_fp32_groups(resnet_space, r)) for r in results[2:]]
    assert sizes == list(range(1, len(sizes) + 1))  # accumulating, one group per trial
    assert resnet_context.sensitivity_calls == 1  # one instrumented run, not one trial per op
    assert len(results) < len(resnet_space.fallback_groups)
    basic_context = SyntheticContext(resnet_space, critical)
    basic = first_success(drive(get_strategy("basic")(resnet_space, basic_context), basic_context))
    assert basic < first_success(results)


def test_basic_caps_model_wise_trials(resnet, critical):
    from lpot_ir.strategies.space import model_wise_combinations

    nodes, groups = resnet
    candidates = model_wise_combinations(
        activation_algorithms=("minmax", "kl", "percentile"),
        weight_granularities=("per_channel", "per_tensor"),
    )
    space = TuningSpace(nodes, candidates, sampling_sizes=(100, 200), groups=groups)
    assert len(space.model_wise_configs()) == 12
    for limit, expected in ((0, 12), (3, 3)):
        context = SyntheticContext(space, critical)
        results = drive(get_strategy("basic")(space, context, max_model_wise=limit), context)
        assert not any(space.fp32_nodes(r.config) for r in results[:expected])
        assert space.fp32_nodes(results[expected].config)  # fallback starts right after
    assert default_model_wise()[0].weight.granularity.value == "per_channel"


def test_basic_survives_failed_trials_and_sensitivity(resnet_space, critical):
    context = SyntheticContext(resnet_space, critical)

    def broken(config):
        raise RuntimeError("instrumented run failed")

    context.op_sensitivity = broken  # type: ignore[method-assign]
    strategy = get_strategy("basic")(resnet_space, context)
    results = []
    while (config := strategy.propose()) is not None and len(results) < 200:
        failed = len(results) == 0  # the first model-wise trial crashes
        accuracy = None if failed else context.accuracy(config)
        result = TrialResult(
            len(results),
            config,
            accuracy,
            {},
            bool(accuracy and context.meets_goal(accuracy)),
            "boom" if failed else None,
        )
        strategy.observe(result)
        results.append(result)
    assert results[0].failed and results[1].accuracy is not None
    assert any(r.meets_goal for r in results)  # model order instead of sensitivity, still finite
    assert strategy.best.meets_goal
    # fallback started from the per-channel candidate's sibling that did not fail
    assert results[2].config.global_config == results[1].config.global_config


def test_relative_accuracy_follows_metric_direction(small_space, small_context):
    strategy = get_strategy("basic")(small_space, small_context)
    config = small_space.model_wise_config(0)
    better = TrialResult(0, config, 0.8, {}, True)
    assert strategy.relative_accuracy(better) > 0
    small_context.higher_is_better = False  # a loss: lower is better
    assert strategy.relative_accuracy(better) < 0
    assert strategy.relative_accuracy(TrialResult(1, config, None, {}, False, "crash")) == float("-inf")
