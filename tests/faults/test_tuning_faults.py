"""Faults during tuning: an eval_func that raises, returns None, NaN or infinity, or hangs past
``exit_policy.eval_timeout`` fails its trial with the reason and tuning goes on; a full disk while the workspace, the calibration cache or ``lpot quantize -o`` is written
leaves the previous files as they were (real write failures: RLIMIT_FSIZE, see tests/faults/limits.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from lpot_ir.calibration import calibrate
from lpot_ir.cli import main
from lpot_ir.errors import EvaluationError, WriteError
from lpot_ir.tuning import Evaluator, TuningHistory, tune
from lpot_ir.tuning.report import format_decisions, format_trials, write_decisions, write_plot, write_report
from tests.faults.limits import file_size_limit, snapshot, temporaries
from tests.tuning.helpers import make_config

NO_PROXY = {"proxy": False}  # several trials, deterministic order


def _tune(config, quantizer, eval_func):
    return tune(config, quantizer, Evaluator(eval_func=eval_func), progress=False)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(None, "returned None, not a number"), (math.nan, "returned nan"), (np.float32("-inf"), "returned -inf")],
    ids=["None", "NaN", "-inf"],
)
def test_eval_func_returning_no_number_fails_the_trial_and_tuning_goes_on(digits, quantizer, tmp_path, bad, reason):
    calls = {"n": 0}

    def eval_func(model):
        calls["n"] += 1
        return bad if calls["n"] == 2 else digits.eval_func(model)  # call 1: the FP32 baseline; 2: trial 0

    outcome = _tune(make_config(tmp_path, max_trials=10, strategy_options=NO_PROXY), quantizer, eval_func)
    first = outcome.trials[0]
    assert first.failed.startswith("evaluation failed: EvaluationError: The eval_func") and reason in first.failed
    assert first.accuracy is None and not first.meets_goal
    assert len(outcome.trials) > 1 and outcome.met_goal and outcome.best is not first
    recorded = TuningHistory(outcome.files["history"]).read()[1]
    assert recorded[0].failed == first.failed
    assert first.failed in outcome.files["report"].read_text()


def test_eval_func_raising_fails_the_trial_and_tuning_goes_on(digits, quantizer, tmp_path):
    calls = {"n": 0}

    def eval_func(model):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyError("no such label file")
        return digits.eval_func(model)

    outcome = _tune(make_config(tmp_path, max_trials=10, strategy_options=NO_PROXY), quantizer, eval_func)
    first = outcome.trials[0]
    assert first.failed == "evaluation failed: KeyError: 'no such label file'" and first.accuracy is None
    assert len(outcome.trials) > 1 and outcome.met_goal and outcome.best is not first
    assert TuningHistory(outcome.files["history"]).read()[1][0].failed == first.failed


def test_eval_func_hanging_past_the_timeout_fails_the_trial_and_tuning_goes_on(digits, quantizer, tmp_path):
    """Trial 0's evaluation blocks until the test ends; with ``eval_timeout: 5`` it is recorded as failed
    after 5 s and the next trials run (the blocked thread is released at the end). A digits evaluation takes
    about 0.2 s: 25 times less than the timeout, so a loaded machine does not time the others out."""
    release = threading.Event()
    calls = {"n": 0}

    def eval_func(model):
        calls["n"] += 1
        if calls["n"] == 2:
            release.wait(300)
            return 1.0  # arrives after the timeout: dropped
        return digits.eval_func(model)

    config = make_config(tmp_path, max_trials=10, strategy_options=NO_PROXY)
    exit_policy = dataclasses.replace(config.tuning.exit_policy, eval_timeout=5)
    config = dataclasses.replace(config, tuning=dataclasses.replace(config.tuning, exit_policy=exit_policy))
    evaluator = Evaluator(eval_func=eval_func)
    try:
        outcome = tune(config, quantizer, evaluator, progress=False)
    finally:
        release.set()
    first = outcome.trials[0]
    assert first.failed.startswith("evaluation timed out after 5 s") and first.accuracy is None
    assert len(outcome.trials) > 1 and outcome.met_goal and outcome.best is not first


def test_eval_func_returning_nan_on_the_fp32_model_is_a_clear_error(quantizer, tmp_path):
    with pytest.raises(EvaluationError, match="returned nan; it must return the model's accuracy as a finite number"):
        _tune(make_config(tmp_path), quantizer, lambda model: float("nan"))


@pytest.fixture(scope="module")
def finished(digits, quantizer, tmp_path_factory):
    """A finished tuning run: its workspace and outcome (three trials)."""
    workspace = tmp_path_factory.mktemp("finished")
    config = make_config(workspace, timeout=3600, max_trials=3, strategy_options=NO_PROXY)
    return workspace, _tune(config, quantizer, digits.eval_func)


def _writers(workspace: Path, outcome):
    trials, decisions = outcome.trials, outcome.decisions
    header = TuningHistory(outcome.files["history"]).read()[0]
    return {
        "best model + recipe": lambda: outcome.model.save(workspace / "best_model.onnx"),
        "history (new run)": lambda: TuningHistory(workspace / "history.jsonl").start(header, trials),
        "history (a trial)": lambda: TuningHistory(workspace / "history.jsonl").append(trials[0]),
        "report": lambda: write_report(
            workspace / "report.txt", [("model", "digits")], format_trials(trials, 0.98, {}, 0), format_decisions(decisions)
        ),
        "decisions": lambda: write_decisions(workspace / "decisions.json", decisions),
        "plot": lambda: write_plot(workspace / "tuning.png", trials, 0.98, 0.97, 0),
    }


@pytest.mark.parametrize(
    "writer", ["best model + recipe", "history (new run)", "history (a trial)", "report", "decisions", "plot"]
)
def test_full_disk_keeps_each_workspace_file(finished, writer):
    workspace, outcome = finished
    before = snapshot(workspace)
    write = _writers(workspace, outcome)[writer]
    with file_size_limit(256), pytest.raises(WriteError, match="Could not write .*(unchanged|earlier content)"):
        write()
    assert snapshot(workspace) == before
    assert temporaries(workspace) == []


def test_full_disk_at_the_end_of_a_resumed_run_keeps_the_workspace(digits, quantizer, tmp_path):
    config = make_config(tmp_path, timeout=3600, max_trials=3, strategy_options=NO_PROXY)
    first = _tune(config, quantizer, digits.eval_func)
    before = snapshot(tmp_path)
    resume = make_config(tmp_path, timeout=3600, max_trials=3, strategy_options=NO_PROXY, resume=tmp_path)
    # the history (a few kB) is rewritten, the best model (tens of kB) is not: the disk fills up there
    limit = (tmp_path / "history.jsonl").stat().st_size + 2048
    assert (tmp_path / "best_model.onnx").stat().st_size > limit
    with file_size_limit(limit), pytest.raises(WriteError, match="best_model.onnx"):
        _tune(resume, quantizer, digits.eval_func)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "history.jsonl"} == {
        k: v for k, v in before.items() if k != "history.jsonl"
    }
    assert [t.config.key() for t in TuningHistory(tmp_path / "history.jsonl").read()[1]] == [
        t.config.key() for t in first.trials
    ]
    assert temporaries(tmp_path) == []
    resumed = _tune(resume, quantizer, digits.eval_func)  # space again: resume finishes with nothing lost
    assert resumed.evaluated == 0 and resumed.replayed == len(first.trials)
    assert (tmp_path / "best_model.onnx").read_bytes() == before["best_model.onnx"]


def test_full_disk_skips_the_calibration_cache_and_goes_on(digits, quantizer, tmp_path, caplog):
    cache = tmp_path / "calibration"
    model = quantizer.fp32_model
    first = calibrate(model, digits.calib_dataloader(), sampling_size=20, progress=False, cache_dir=cache)
    entry = next(cache.glob("calib-*.json"))
    entry.write_text(entry.read_text())  # the previous entry, written
    before = snapshot(cache)
    with caplog.at_level(logging.WARNING), file_size_limit(64):
        again = calibrate(model, digits.calib_dataloader(), sampling_size=40, progress=False, cache_dir=cache)
    assert "Could not write the calibration cache" in caplog.text and "Could not write '" in caplog.text
    assert snapshot(cache) == before and temporaries(cache) == []
    assert again.num_samples == 40 and first.num_samples == 20


def test_full_disk_in_lpot_quantize_is_one_paragraph_and_keeps_the_output(digits, tmp_path, capsys):
    output = tmp_path / "int8.onnx"
    args = ["quantize", str(digits.model_path), "-o", str(output), "--calib", str(digits.calib_data_path)]
    assert main(args) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    with file_size_limit(512):
        code = main([*args, "--approach", "post_training_dynamic_quant"])  # another model, same path
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("lpot quantize: error:")]
    assert len(lines) == 1 and "Could not write" in lines[0] and "int8.onnx" in lines[0] and "Traceback" not in err
    assert snapshot(tmp_path) == before and temporaries(tmp_path) == []
    assert json.loads((tmp_path / "int8.recipe.json").read_text())["config"]["approach"] != "post_training_dynamic_quant"


def test_lpot_tune_resume_before_any_history_starts_a_new_run(digits, tmp_path, capsys):
    """A run killed before its FP32 baseline was recorded has no history; ``--resume`` (what a scheduler that
    restarts killed jobs runs) starts over instead of failing, and the next ``--resume`` replays everything."""
    folder = digits.copy_files(tmp_path)
    conf = Path(__file__).resolve().parents[2] / "examples" / "usage_yaml_only" / "conf.yaml"
    (folder / "conf.yaml").write_text(conf.read_text())
    argv = ["tune", "conf.yaml", "-m", "model.onnx", "--no-progress", "--resume", "-w", str(tmp_path / "ws")]
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        assert main(argv) == 0
        first, err = capsys.readouterr()
        assert "--resume: no tuning history in" in err
        assert main(argv) == 0
        again = capsys.readouterr().out
    finally:
        os.chdir(cwd)
    evaluated = re.search(r"trials: +(\d+) \((\d+) evaluated, (\d+) resumed\)", first)
    resumed = re.search(r"trials: +(\d+) \((\d+) evaluated, (\d+) resumed\)", again)
    assert evaluated and resumed and int(evaluated.group(2)) > 0
    assert resumed.group(1) == evaluated.group(1) and resumed.group(2) == "0" and resumed.group(3) == evaluated.group(1)
