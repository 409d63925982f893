"""Every strategy tunes the digits model within bounded trials; basic needs fewer than op-by-op fallback."""

from __future__ import annotations

import pytest

from lpot_ir.tuning import Evaluator, tune
from lpot_ir.tuning.space import build_space
from tests.tuning.helpers import OUTLIER_OPS, PLAIN, make_config

STRATEGIES = ["basic", "mse", "exhaustive", "random", "tpe", "bayesian"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_reaches_goal_or_reports(strategy, digits, quantizer, tmp_path):
    config = make_config(tmp_path, strategy, max_trials=25)
    outcome = tune(config, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert outcome.model is not None
    assert 1 <= len(outcome.trials) <= 25
    keys = [t.config.key() for t in outcome.trials]
    assert len(keys) == len(set(keys)), "a configuration was evaluated twice"
    assert outcome.files["report"].is_file() and outcome.files["model"].is_file()
    if outcome.met_goal:
        assert outcome.relative_loss <= 0.01
        assert outcome.trials[-1].meets_goal  # timeout 0: stop at the first success
        assert sum(t.meets_goal for t in outcome.trials) == 1
        # the outlier tensor either stays FP32, or is quantized with accuracy recovery (range search clips it)
        recovered = outcome.best.config.recovery.enabled
        for name in OUTLIER_OPS:
            assert outcome.decisions[name]["quantized"] is False or recovered
    else:
        assert outcome.warning and "No configuration met" in outcome.warning
    if strategy in ("basic", "mse", "exhaustive"):
        assert outcome.met_goal


def test_basic_needs_fewer_trials_than_op_by_op(digits, quantizer, tmp_path):
    config = make_config(tmp_path, strategy_options=PLAIN)
    outcome = tune(config, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert outcome.met_goal
    groups = build_space(config, quantizer.nodes, quantizer.fp32_model).space.fallback_groups
    # LPOT / INC basic spend one trial per op (group) before accumulating fallbacks
    assert len(outcome.trials) < 1 + len(groups)
    assert outcome.sensitivity_calls >= 1
