"""The loop's contract: stopping rules, failed trials, the FP32 baseline error, reports and decisions."""

from __future__ import annotations

import json
import logging

import pytest

from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.tuning import Evaluator, tune
from tests.tuning.helpers import OUTLIER_OPS, PLAIN, make_config


def _run(config, quantizer, eval_func):
    return tune(config, quantizer, Evaluator(eval_func=eval_func), progress=False)


def test_timeout_zero_stops_at_first_success(digits, quantizer, tmp_path):
    outcome = _run(make_config(tmp_path), quantizer, digits.eval_func)
    assert outcome.met_goal
    assert [t.meets_goal for t in outcome.trials] == [False] * (len(outcome.trials) - 1) + [True]
    assert outcome.best is outcome.trials[-1]
    assert "first success" in outcome.stop_reason


def test_positive_timeout_searches_on_until_exhausted(digits, quantizer, tmp_path):
    first = _run(make_config(tmp_path / "a", strategy_options=PLAIN), quantizer, digits.eval_func)
    outcome = _run(
        make_config(tmp_path / "b", timeout=3600, max_trials=50, strategy_options=PLAIN), quantizer, digits.eval_func
    )
    assert outcome.stop_reason == "the search space is exhausted"
    assert len(outcome.trials) > len(first.trials)
    keys = [t.config.key() for t in outcome.trials]
    assert len(keys) == len(set(keys))
    assert outcome.met_goal
    # the extra trials re-quantized ops the first success had kept in FP32
    assert len(outcome.model.quantized_nodes) >= len(first.model.quantized_nodes)


def test_max_trials_bounds_search_and_returns_best_with_warning(digits, quantizer, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lpot_ir.tuning"):
        config = make_config(tmp_path, max_trials=1, strategy_options=PLAIN)  # trial 0: all INT8
        outcome = _run(config, quantizer, digits.eval_func)
    assert len(outcome.trials) == 1
    assert outcome.stop_reason.startswith("max_trials (1)")
    assert not outcome.met_goal
    assert outcome.model is not None and outcome.best is outcome.trials[0]
    assert "No configuration met the accuracy criterion" in caplog.text
    report = outcome.files["report"].read_text()
    assert "WARNING" in report and "No configuration met" in report


def test_eval_func_raising_marks_trial_failed_and_tuning_goes_on(digits, quantizer, tmp_path):
    calls = {"n": 0}

    def flaky(model):
        calls["n"] += 1
        if calls["n"] == 2:  # the baseline is call 1; trial 0 is call 2
            raise RuntimeError("GPU fell off the bus\nsecond line")
        return digits.eval_func(model)

    outcome = _run(make_config(tmp_path, max_trials=10, strategy_options=PLAIN), quantizer, flaky)
    assert outcome.trials[0].failed == "evaluation failed: RuntimeError: GPU fell off the bus"
    assert outcome.trials[0].accuracy is None
    assert len(outcome.trials) > 1 and outcome.met_goal
    history = [json.loads(line) for line in outcome.files["history"].read_text().splitlines()]
    assert history[1]["failed"].startswith("evaluation failed")
    assert "failed: evaluation failed" in outcome.files["report"].read_text()


def test_baseline_evaluation_raising_is_a_clear_error(quantizer, tmp_path):
    def broken(model):
        raise KeyError("logits")

    with pytest.raises(EvaluationError, match="raised KeyError: 'logits' on the FP32 model"):
        _run(make_config(tmp_path), quantizer, broken)


def test_eval_func_returning_a_non_number_fails_the_trial(quantizer, tmp_path, digits):
    calls = {"n": 0}

    def odd(model):
        calls["n"] += 1
        return "high" if calls["n"] == 2 else digits.eval_func(model)

    outcome = _run(make_config(tmp_path, max_trials=3), quantizer, odd)
    assert "not a number" in outcome.trials[0].failed


def test_report_plot_and_decisions(digits, quantizer, tmp_path):
    outcome = _run(make_config(tmp_path, strategy_options=PLAIN), quantizer, digits.eval_func)
    files = outcome.files
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = files["report"].read_text()
    assert "Trials" in report and "Per-op decisions" in report and "FP32 accuracy" in report
    decisions = json.loads(files["decisions"].read_text())
    for name in OUTLIER_OPS:
        assert decisions[name]["quantized"] is False
        assert decisions[name]["reason"].startswith("tuning_fallback: fell back at trial")
        assert "lost" in decisions[name]["reason"]
    # the QuantizedModel's own decisions carry the same reason
    assert str(outcome.model.decisions[OUTLIER_OPS[0]].reason).startswith("tuning_fallback")
    assert files["model"].is_file() and files["recipe"].is_file()
    summary = json.loads(files["summary"].read_text())
    assert summary["met_goal"] is True and summary["best_trial"] == outcome.best.index


def test_op_wise_fp32_is_user_excluded_and_not_tuned(digits, quantizer, tmp_path):
    config = make_config(tmp_path)
    from lpot_ir.config import load_config

    data = config.to_dict()
    data["quantization"] = {"op_wise": {"/fc/Gemm": {"activation": {"dtype": "fp32"}}}}
    outcome = _run(load_config(data), quantizer, digits.eval_func)
    assert outcome.decisions["/fc/Gemm"]["quantized"] is False
    assert outcome.decisions["/fc/Gemm"]["reason"].startswith("user_excluded")


def test_op_wise_unknown_node_names_the_closest(quantizer, tmp_path, digits):
    from lpot_ir.config import load_config

    data = make_config(tmp_path).to_dict()
    data["quantization"] = {"op_wise": {"/fc/Gem": {"activation": {"dtype": "fp32"}}}}
    with pytest.raises(ConfigError, match="Did you mean '/fc/Gemm'"):
        _run(load_config(data), quantizer, digits.eval_func)


def test_unknown_strategy_option_is_a_config_error(quantizer, tmp_path, digits):
    config = make_config(tmp_path, strategy_options={"grwoth": 3})
    with pytest.raises(ConfigError, match="grwoth"):
        _run(config, quantizer, digits.eval_func)


@pytest.mark.parametrize("strategy, options, message", [
    ("basik", {}, "Unknown tuning strategy 'basik'.*Did you mean 'basic'"),
    ("basic", {"grwoth": 3}, "has no option 'grwoth'"),
])
def test_strategy_errors_come_before_any_model_runs(tmp_path, digits, strategy, options, message):
    from lpot_ir import Quantization

    calls = []

    def eval_func(model):
        calls.append(model)
        return digits.eval_func(model)

    quantizer = Quantization(make_config(tmp_path, strategy, strategy_options=options))
    quantizer.model = str(digits.model_path)
    quantizer.calib_dataloader = digits.calib_dataloader(batch_size=10)
    quantizer.eval_func = eval_func
    with pytest.raises(ConfigError, match=message):
        quantizer.fit()
    assert not calls  # the FP32 baseline was never evaluated


def test_no_evaluation_quantizes_without_tuning(quantizer, tmp_path):
    outcome = tune(make_config(tmp_path), quantizer, None, progress=False)
    assert len(outcome.trials) == 1 and outcome.baseline_accuracy is None
    assert "no accuracy tuning" in outcome.stop_reason
    assert outcome.files["model"].is_file()


def test_lower_is_better_metric(digits, quantizer, tmp_path):
    from lpot_ir.config import load_config

    data = make_config(tmp_path, strategy_options=PLAIN).to_dict()
    data["tuning"]["accuracy_criterion"] = {"absolute": 0.01, "higher_is_better": False}
    outcome = _run(load_config(data), quantizer, lambda model: 1.0 - digits.eval_func(model))
    assert outcome.met_goal
    assert outcome.best.accuracy <= outcome.baseline_accuracy + 0.01
    assert not outcome.trials[0].meets_goal  # all-INT8 errs about 11% more
    # for a loss, more error is a positive relative loss (the outcome's sign was reversed once)
    base = outcome.baseline_accuracy
    assert outcome.relative_loss == pytest.approx((outcome.best.accuracy - base) / abs(base))
    assert f"{outcome.relative_loss:.2%}" in outcome.files["report"].read_text()
