"""Evaluations in local worker processes: same results as in-process, faults, timeouts, shipping errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest

from lpot_ir.errors import EvaluationError
from lpot_ir.tuning import Evaluator, tune
from tests.tuning.distributed_helpers import MisbehaveOnce, SlowEvaluation, random_config
from tests.tuning.helpers import PLAIN, make_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _summary(outcome):
    return [(t.config.key(), t.accuracy, t.failed) for t in outcome.trials]


def _history(workspace: Path) -> list[dict]:
    lines = (workspace / "history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


@pytest.fixture(scope="module")
def reference(digits, quantizer, tmp_path_factory):
    """The random search evaluated in the tuning process (today's behaviour)."""
    outcome = tune(random_config(tmp_path_factory.mktemp("ref")), quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert [t.worker for t in outcome.trials] == ["in-process"] * 4
    return outcome


def test_two_local_workers_reproduce_one_and_record_the_worker(digits, quantizer, tmp_path, reference):
    outcome = tune(random_config(tmp_path, workers=2), quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert _summary(outcome) == _summary(reference)  # same trials, same accuracies, same order
    assert outcome.best.config.key() == reference.best.config.key()
    workers = {line["worker"] for line in _history(tmp_path)}
    assert all(w.startswith("process:") for w in workers) and len(workers) <= 2


def test_mse_on_two_workers_chooses_what_one_worker_chooses(digits, quantizer, tmp_path):
    one = tune(make_config(tmp_path / "one", "mse"), quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    two = tune(make_config(tmp_path / "two", "mse", workers=2), quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert one.met_goal and two.met_goal
    assert two.best.config.key() == one.best.config.key()
    assert _summary(two) == _summary(one)  # speculative trials past the first success are not chosen from


def test_basic_fallback_on_four_workers_meets_the_goal_in_parallel_prefixes(digits, quantizer, tmp_path):
    one = tune(make_config(tmp_path / "one", strategy_options=PLAIN), quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    config = make_config(tmp_path / "four", strategy_options=PLAIN, workers=4)
    four = tune(config, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert one.met_goal and four.met_goal
    # the prefixes one worker tries one after the other (1, 2, 4... steps) run at once; the first that meets
    # the goal is chosen, so the chosen model keeps no more ops in FP32 than the sequential search's
    assert len(four.model.quantized_nodes) >= len(one.model.quantized_nodes)
    assert all(line["worker"].startswith("process:") for line in _history(tmp_path / "four"))


def test_worker_killed_mid_trial_is_rerun_and_nothing_is_lost(digits, quantizer, tmp_path, reference):
    marker = tmp_path / "killed"
    evaluation = MisbehaveOnce(digits, marker, "kill")
    outcome = tune(random_config(tmp_path / "ws", workers=2), quantizer, Evaluator(eval_func=evaluation), progress=False)
    assert marker.exists()  # a worker process did die with SIGKILL during a trial
    assert _summary(outcome) == _summary(reference)  # its trial was evaluated again; no trial failed or is missing
    assert len(_history(tmp_path / "ws")) == 4


def test_hung_evaluation_hits_eval_timeout_and_its_worker_is_replaced(digits, quantizer, tmp_path, reference):
    evaluation = MisbehaveOnce(digits, tmp_path / "hung", "hang", seconds=300)
    config = _with_eval_timeout(random_config(tmp_path / "ws", workers=2), 5.0)
    began = time.monotonic()
    outcome = tune(config, quantizer, Evaluator(eval_func=evaluation), progress=False)
    assert time.monotonic() - began < 300  # the hung worker was stopped, not waited for
    failed = [t for t in outcome.trials if t.failed]
    assert len(failed) == 1 and "timed out after 5 s" in failed[0].failed
    others = [s for s in _summary(outcome) if s[2] is None]
    assert others == [s for s in _summary(reference) if s[0] != failed[0].config.key()]


def test_in_process_eval_timeout_fails_the_trial_and_goes_on(digits, quantizer, tmp_path, reference):
    evaluation = MisbehaveOnce(digits, tmp_path / "hung", "hang", seconds=4)
    config = _with_eval_timeout(random_config(tmp_path / "ws"), 1.0)
    outcome = tune(config, quantizer, Evaluator(eval_func=evaluation), progress=False)
    assert [t.failed is not None for t in outcome.trials] == [True, False, False, False]
    assert "timed out after 1 s" in outcome.trials[0].failed
    assert _summary(outcome)[1:] == _summary(reference)[1:]


def test_eval_func_that_cannot_be_shipped_says_what_to_change(digits, quantizer, tmp_path):
    session = ort.InferenceSession(str(digits.model_path), providers=["CPUExecutionProvider"])

    def eval_func(model):
        return float(session.get_inputs()[0].shape[0] or 0)

    with pytest.raises(EvaluationError) as info:
        tune(random_config(tmp_path, workers=2), quantizer, Evaluator(eval_func=eval_func), progress=False)
    message = str(info.value)
    assert "tuning.workers: 2" in message and "closure variable 'session'" in message
    assert "inside eval_func" in message and "tuning.workers: 1" in message
    assert not (tmp_path / "history.jsonl").exists()  # said before any evaluation


def test_driver_killed_then_resumed_on_workers(digits, quantizer, tmp_path, reference):
    workspace = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/tuning/distributed_script.py"), str(workspace), "0.5"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if (workspace / "history.jsonl").exists() and len(_history(workspace)) >= 1:
                break
            time.sleep(0.05)
        assert driver.poll() is None, "the driver finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    kept = _history(workspace)
    assert 1 <= len(kept) < 4
    config = random_config(workspace, resume=workspace, workers=2)
    outcome = tune(config, quantizer, Evaluator(eval_func=SlowEvaluation(digits, 0.5)), progress=False)
    assert _summary(outcome) == _summary(reference)
    assert outcome.replayed == len(kept) and outcome.evaluated == 4 - len(kept)


def _with_eval_timeout(config, seconds: float):
    import dataclasses

    policy = dataclasses.replace(config.tuning.exit_policy, eval_timeout=seconds)
    return dataclasses.replace(config, tuning=dataclasses.replace(config.tuning, exit_policy=policy))
