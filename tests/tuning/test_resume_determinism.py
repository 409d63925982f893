"""Resume after a kill reaches the same result without re-evaluating; the same seed gives the same run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lpot_ir.errors import ConfigError
from lpot_ir.tuning import Evaluator, TuningHistory, tune
from tests.tuning.helpers import PLAIN, make_config

ROOT = Path(__file__).resolve().parents[2]


def _script(workspace: Path, kill_at: int, resume: bool, options: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [str(workspace), str(kill_at), "1" if resume else "0"] + ([json.dumps(options)] if options is not None else [])
    return subprocess.run(
        [sys.executable, str(Path(__file__).with_name("resume_script.py")), *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_result(tmp_path):
    reference = _script(tmp_path / "reference", kill_at=-1, resume=False)
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = json.loads(reference.stdout.strip().splitlines()[-1])
    assert len(expected["keys"]) >= 4

    killed = _script(tmp_path / "run", kill_at=4, resume=False)  # call 1 is the baseline: dies in trial 2
    assert killed.returncode == 3
    header, finished = TuningHistory(tmp_path / "run" / "history.jsonl").read()
    assert [t.index for t in finished] == [0, 1]

    resumed = _script(tmp_path / "run", kill_at=-1, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["replayed"] == 2
    assert result["calls"] == len(result["keys"]) - 2  # no baseline, no finished trial evaluated again
    assert result["keys"] == expected["keys"]
    assert result["best"] == expected["best"]
    assert result["model_sha"] == expected["model_sha"]


@pytest.mark.slow
def test_resume_with_advice_makes_the_same_decisions(tmp_path):
    """With the proxy and the latency model on, a resumed run reuses the advice plan and the profiles
    stored in the workspace (nothing re-measured), so timing noise cannot change its decisions."""
    options = {"recovery": False}
    killed = _script(tmp_path, kill_at=2, resume=False, options=options)  # dies in trial 0
    assert killed.returncode == 3
    header, finished = TuningHistory(tmp_path / "history.jsonl").read()
    assert finished == [] and header.advice["units"] > 0
    profiles = tmp_path / "latency_model.json"
    stamp = profiles.stat().st_mtime_ns
    resumed = _script(tmp_path, kill_at=-1, resume=True, options=options)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["replayed"] == 0 and result["calls"] == len(result["keys"])  # the baseline was not re-run
    assert profiles.stat().st_mtime_ns == stamp  # the profiles were read back, not measured again
    assert TuningHistory(tmp_path / "history.jsonl").read()[0].advice == header.advice


def test_resume_from_a_different_run_is_refused(digits, quantizer, tmp_path):
    tune(make_config(tmp_path, max_trials=1), quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    other = make_config(tmp_path / "b", "random", max_trials=1, resume=tmp_path)
    with pytest.raises(ConfigError, match="records a different tuning run .*strategy"):
        tune(other, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)


def test_torn_last_history_line_is_ignored(digits, quantizer, tmp_path):
    config = make_config(tmp_path, max_trials=2, strategy_options=PLAIN)  # two trials without the advice
    tune(config, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    path = tmp_path / "history.jsonl"
    path.write_text(path.read_text() + '{"kind": "trial", "ind')
    _header, trials = TuningHistory(path).read()
    assert len(trials) == 2


def test_same_seed_same_trials_and_model(digits, quantizer, tmp_path):
    runs = []
    for name in ("a", "b"):
        config = make_config(tmp_path / name, "random", max_trials=4, random_seed=7)
        outcome = tune(config, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
        runs.append(
            ([t.config.key() for t in outcome.trials], hashlib.sha256(outcome.model.model.SerializeToString()).digest())
        )
    assert runs[0] == runs[1]
    other = make_config(tmp_path / "c", "random", max_trials=4, random_seed=8)
    outcome = tune(other, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert [t.config.key() for t in outcome.trials] != runs[0][0]
