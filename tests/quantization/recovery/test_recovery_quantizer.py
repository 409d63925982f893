"""Recovery rewrites inside ModelQuantizer: prepared models calibrated on their own, factors in the
recipe, bit-identical replay without data, and the bundled example's accuracy with equalization."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from recovery_helpers import conv_chain, outlier_projections, per_tensor_config

from lpot_ir.ir.quant import RecoveryConfig
from lpot_ir.passes.quantization.recovery import recovery_statistics
from lpot_ir.quantizer import ModelQuantizer, Recipe, apply_recipe, default_config


def _loader(shape: tuple[int, ...], seed: int = 0) -> list[tuple[np.ndarray, None]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 1, shape).astype(np.float32), None) for _ in range(2)]


@pytest.mark.parametrize(
    ("build", "shape", "recovery"),
    [
        (conv_chain, (8, 3, 8, 8), RecoveryConfig(equalization=True)),
        (outlier_projections, (8, 5, 32), RecoveryConfig(smoothquant_alpha=0.6)),
        (outlier_projections, (8, 5, 32), RecoveryConfig(equalization=True, smoothquant_alpha=0.6)),
    ],
)
def test_recipe_replays_the_recovered_model_bit_for_bit(tmp_path, build, shape, recovery) -> None:
    model = build()
    quantizer = ModelQuantizer(model, _loader(shape), workspace=tmp_path)
    config = dataclasses.replace(per_tensor_config(), recovery=recovery)
    qmodel = quantizer.quantize(config)
    assert qmodel.recovery and qmodel.recipe.factors
    path = qmodel.save(tmp_path / "int8.onnx")
    data = json.loads((tmp_path / "int8.recipe.json").read_text())
    assert set(data["recovery_factors"]) == set(qmodel.recipe.factors)
    replayed = apply_recipe(model, path.with_name("int8.recipe.json"))
    assert replayed.model.SerializeToString() == qmodel.model.SerializeToString()
    # the prepared model was calibrated on its own: its cache entry is not the plain model's
    quantizer.quantize(per_tensor_config())
    statistics_run = bool(recovery_statistics(quantizer.fp32_model))  # only when some rewrite reads them
    assert len(list((tmp_path / "calibration").glob("calib-*.json"))) == 2 + statistics_run


def test_plain_recipes_carry_no_factors_and_settings_share_one_statistics_run(tmp_path) -> None:
    model = outlier_projections()
    quantizer = ModelQuantizer(model, _loader((8, 5, 32)), workspace=tmp_path)
    plain = quantizer.quantize(default_config())
    assert "recovery_factors" not in plain.recipe.to_dict() and not plain.recovery
    for alpha in (0.3, 0.7):
        quantizer.quantize(dataclasses.replace(default_config(), recovery=RecoveryConfig(smoothquant_alpha=alpha)))
    assert len(list((tmp_path / "calibration").glob("calib-*.json"))) == 4  # plain, channel stats, 2 prepared
    smoothed = quantizer.quantize(dataclasses.replace(default_config(), recovery=RecoveryConfig(smoothquant_alpha=0.7)))
    assert Recipe.from_dict(json.loads(smoothed.recipe.to_json())).factors == smoothed.recipe.factors
    mul = smoothed.decisions.get("ln/SmoothMul")
    assert mul is not None and not mul.quantized  # the inserted Mul stays in the LayerNorm's FP32 region


@pytest.mark.slow
def test_bundled_example_recovers_its_accuracy_with_equalization() -> None:
    """The digits CNN (trained here on real digits; one stem channel scaled 120x, undone by ReLU's
    homogeneity) loses most of its accuracy under per-tensor weights; equalization gives it back."""
    from lpot_ir.examples_data import digits_example

    example = digits_example()
    quantizer = ModelQuantizer(str(example.model_path), example.calib_dataloader())
    fp32 = example.accuracy(str(example.model_path))
    plain = example.accuracy(quantizer.quantize(per_tensor_config()).model)
    equalized = quantizer.quantize(per_tensor_config(RecoveryConfig(equalization=True)))
    # measured (portable example): FP32 98.4%, per-tensor INT8 22.6% (7-bit weights 10.8%), equalized 98.4% (98.8%)
    assert plain < fp32 - 0.5
    assert example.accuracy(equalized.model) >= fp32 - 0.01
    assert len(equalized.recovery["equalization"].applied) == 4
