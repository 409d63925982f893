"""The strategy registry, the base-class protocol, and a user-written strategy."""

from __future__ import annotations

import pytest

from lpot_ir.errors import ConfigError
from lpot_ir.strategies import STRATEGIES, TuneStrategy, get_strategy, register_strategy
from lpot_ir.strategies.base import MAX_KNOWN_PROPOSALS, Search, TrialResult
from tests.strategies.synthetic import drive


def test_six_strategies_registered():
    assert {"basic", "mse", "bayesian", "tpe", "exhaustive", "random"} <= set(STRATEGIES)
    assert get_strategy("Basic") is STRATEGIES["basic"]


def test_unknown_strategy_names_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'basic'"):
        get_strategy("basik")


def test_unknown_option_names_the_closest(small_space, small_context):
    with pytest.raises(ConfigError, match="Did you mean 'growth'"):
        get_strategy("basic")(small_space, small_context, grwth=3)
    with pytest.raises(ConfigError, match="growth"):
        get_strategy("basic")(small_space, small_context, growth=0.5)


def test_user_strategy_registers_and_runs(small_space, small_context):
    @register_strategy("fp32-last-node-first")
    class LastNodeFirst(TuneStrategy):
        """Falls back nodes from the end of the model, accumulating."""

        def search(self) -> Search:
            config = self.space.model_wise_configs()[0]
            result = yield config
            for node in reversed(self.space.nodes):
                if result.meets_goal:
                    return
                config = self.space.with_fp32(config, [node.name])
                result = yield config

    try:
        strategy = get_strategy("FP32-last-node-first")(small_space, small_context, seed=3)
        results = drive(strategy, small_context)
        assert results[-1].meets_goal
        assert [len(small_space.fp32_nodes(r.config)) for r in results] == list(range(len(results)))
        assert strategy.propose() is None and strategy.exhausted
        with pytest.raises(ConfigError, match="already registered"):

            @register_strategy("fp32-last-node-first")
            class Other(TuneStrategy):
                def search(self) -> Search:
                    yield from ()

        with pytest.raises(TypeError):
            register_strategy("not-a-strategy")(object)  # type: ignore[arg-type]
    finally:
        STRATEGIES.pop("fp32-last-node-first", None)


def test_protocol_guards(small_space, small_context):
    strategy = get_strategy("random")(small_space, small_context, seed=1)
    first = strategy.propose()
    with pytest.raises(RuntimeError, match="observe"):
        strategy.propose()
    strategy.observe(TrialResult(0, first, 0.5, {}, False, None, 0.0))
    assert strategy.propose().key() != first.key()


def test_known_configs_cost_no_trial_and_endless_repeats_stop(small_space, small_context):
    @register_strategy("repeat-forever")
    class RepeatForever(TuneStrategy):
        def search(self) -> Search:
            config = self.space.model_wise_configs()[0]
            while True:
                yield config

    try:
        strategy = get_strategy("repeat-forever")(small_space, small_context)
        results = drive(strategy, small_context)
        assert len(results) == 1  # the repeats were answered from history
        assert strategy.exhausted and MAX_KNOWN_PROPOSALS > 1
    finally:
        STRATEGIES.pop("repeat-forever", None)


def test_resumed_history_is_never_proposed_again(small_space, small_context):
    first = get_strategy("basic")(small_space, small_context)
    earlier = drive(first, small_context, max_trials=2)
    resumed = get_strategy("basic")(small_space, small_context)
    for result in earlier:
        resumed.observe(result)
    rest = drive(resumed, small_context)
    full = drive(get_strategy("basic")(small_space, small_context), small_context)
    assert [r.config.key() for r in earlier + rest] == [r.config.key() for r in full]
    assert not {r.config.key() for r in earlier} & {r.config.key() for r in rest}


def test_the_documented_example_strategy_works(small_space, small_context):
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "strategies" / "writing_your_own.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    try:
        exec(compile(code, "writing_your_own.md", "exec"), namespace)
        results = drive(get_strategy("last-first")(small_space, small_context), small_context)
        assert results[-1].meets_goal and len(results) == 1 + len(small_space.nodes)  # n0 is critical
        strategy = get_strategy("last-first")(small_space, small_context, start=2)
        results = drive(strategy, small_context)
        assert not any(r.meets_goal for r in results) and len(results) == 1 + len(small_space.nodes) - 2
        assert strategy.exhausted
        with pytest.raises(ConfigError, match="Did you mean 'start'"):
            get_strategy("last-first")(small_space, small_context, stat=1)
    finally:
        STRATEGIES.pop("last-first", None)
