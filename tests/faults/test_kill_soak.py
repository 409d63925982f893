"""SIGKILL a tuning run at random moments (seeded) and resume it: nothing finished is evaluated again, the
workspace is whole after every kill, and the result is the uninterrupted run's (benchmarks/kill_soak.py,
which runs the long soak; this is its short version)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lpot_ir.ir.quant import TuningConfig
from lpot_ir.tuning import Evaluator, tune
from tests.tuning.helpers import make_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from kill_soak import PHASES, check_workspace, run_soak  # noqa: E402


@pytest.mark.slow
def test_kill_soak_loses_nothing(tmp_path):
    result = run_soak(kills=4, seed=3, workdir=tmp_path, log=lambda line: None, max_kills_per_cycle=4)
    assert result.ok, "\n".join(result.problems)
    assert result.kills == 4 and result.children >= 5
    assert result.cycles_equal_to_reference == result.cycles
    assert result.stale_temporaries_at_end == 0


def test_the_workspace_check_finds_damage(digits, quantizer, tmp_path):
    """The soak's integrity check is not blind: a torn report, a half PNG, a bad JSON file and a recipe from
    another trial are all found."""
    tune(make_config(tmp_path, timeout=3600, max_trials=3, strategy_options={"proxy": False}), quantizer,
         Evaluator(eval_func=digits.eval_func), progress=False)
    assert check_workspace(tmp_path, digits.model_path) == []
    (tmp_path / "tuning.png").write_bytes((tmp_path / "tuning.png").read_bytes()[:1000])
    (tmp_path / "summary.json").write_text('{"best_trial": 2')
    report = tmp_path / "report.txt"
    report.write_text(report.read_text()[:200])
    quantizer.quantize(TuningConfig()).recipe.save(tmp_path / "best_model.recipe.json")
    found = " | ".join(check_workspace(tmp_path, digits.model_path))
    for damage in ("tuning.png", "summary.json", "report.txt", "do not match"):
        assert damage in found, found
    assert set(PHASES) >= {"calibration", "save", "report", "history"}
