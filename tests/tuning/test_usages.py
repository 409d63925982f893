"""The three LPOT usages, run as the examples users copy, and the Quantization API's contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from lpot_ir import Quantization, common
from lpot_ir.errors import ConfigError
from tests.tuning.helpers import make_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("usage", ["usage_yaml_only", "usage_dataloader_metric", "usage_eval_func"])
def test_example_runs(usage, tmp_path, digits):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / usage / "run.py"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["meets the criterion"] == "True"
    assert float(lines["FP32 accuracy"]) > 0.95
    assert float(lines["relative loss"].rstrip("%")) <= 1.0
    assert Path(lines["best model"]).is_file()
    assert (tmp_path / "work" / "lpot_workspace" / "report.txt").is_file()


def test_eval_func_receives_a_model_proto(digits, tmp_path):
    seen = []

    def eval_func(model):
        seen.append(type(model))
        return digits.eval_func(model)

    quantizer = Quantization(make_config(tmp_path))
    quantizer.progress = False
    q_model = quantizer(str(digits.model_path), q_dataloader=digits.calib_dataloader(), eval_func=eval_func)
    assert set(seen) == {onnx.ModelProto}
    assert isinstance(q_model.model, onnx.ModelProto)
    assert quantizer.outcome.met_goal
    saved = q_model.save(tmp_path / "out" / "int8.onnx")
    assert saved.is_file() and (tmp_path / "out" / "int8.recipe.json").is_file()


def test_user_metric_class_via_common_metric(digits, tmp_path):
    import numpy as np

    class Top1:
        def __init__(self):
            self.reset()

        def update(self, preds, labels):
            self.hit += int((np.argmax(preds[0], axis=1) == labels).sum())
            self.n += len(labels)

        def reset(self):
            self.hit, self.n = 0, 0

        def result(self):
            return self.hit / self.n

    quantizer = Quantization(make_config(tmp_path))
    quantizer.progress = False
    quantizer.model = onnx.load(str(digits.model_path))
    quantizer.calib_dataloader = digits.calib_dataloader()
    quantizer.eval_dataloader = digits.eval_dataloader()
    quantizer.metric = common.Metric(Top1)
    quantizer.fit()
    assert quantizer.outcome.baseline_accuracy == pytest.approx(digits.accuracy(digits.model_path))
    assert quantizer.outcome.met_goal


def test_fit_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="has no model"):
        Quantization(make_config(tmp_path)).fit()


def test_dataloader_without_metric_is_a_clear_error(digits, tmp_path):
    quantizer = Quantization(make_config(tmp_path))
    quantizer.model = str(digits.model_path)
    quantizer.calib_dataloader = digits.calib_dataloader()
    quantizer.eval_dataloader = digits.eval_dataloader()
    with pytest.raises(ConfigError, match="a metric is missing"):
        quantizer.fit()


def test_quant_aware_training_needs_q_func(digits, tmp_path):
    data = make_config(tmp_path).to_dict()
    data["quantization"] = {"approach": "quant_aware_training"}
    quantizer = Quantization(data)
    quantizer.model = str(digits.model_path)
    quantizer.eval_func = digits.eval_func
    with pytest.raises(ConfigError, match="needs a training loop: set quantizer.q_func"):
        quantizer.fit()
    quantizer.q_func = lambda model: None  # an ONNX model trains too (docs/qat.md), but this loop never runs it
    with pytest.raises(ConfigError, match="learned no activation range"):
        quantizer.fit()


def test_bad_property_values_are_rejected(tmp_path):
    quantizer = Quantization(make_config(tmp_path))
    with pytest.raises(ConfigError, match="eval_func must be callable"):
        quantizer.eval_func = 3
    with pytest.raises(ConfigError, match="calib_dataloader must be an iterable"):
        quantizer.calib_dataloader = 3


def test_top_level_exports_are_lazy():
    code = "import sys, lpot_ir; print('lpot_ir.quantization' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    import lpot_ir

    assert lpot_ir.Quantization is Quantization and lpot_ir.common is common
    assert isinstance(lpot_ir.__version__, str)


def test_lpot_tune_command(digits, tmp_path, capsys, monkeypatch):
    import shutil

    from lpot_ir.cli import main

    work = digits.copy_files(tmp_path / "work")
    shutil.copyfile(ROOT / "examples" / "usage_yaml_only" / "conf.yaml", work / "conf.yaml")
    monkeypatch.chdir(work)
    assert main(["tune", "conf.yaml", "-m", "model.onnx", "--no-progress", "-w", "ws"]) == 0
    out = capsys.readouterr().out
    assert "FP32 accuracy:" in out and "meets the criterion" in out
    assert (work / "ws" / "best_model.onnx").is_file()
    # --resume replays the finished trials instead of evaluating them again
    assert main(["tune", "conf.yaml", "-m", "model.onnx", "--no-progress", "-w", "ws", "--resume"]) == 0
    assert "0 evaluated" in capsys.readouterr().out
    # a user error is one paragraph and exit code 2
    assert main(["tune", "missing.yaml", "-m", "model.onnx"]) == 2
    assert "does not exist" in capsys.readouterr().err
