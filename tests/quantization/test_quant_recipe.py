"""Recipes: save, replay bit for bit without data, refuse a recipe for another model; the config round trip."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper
from qhelpers import check_valid, make_model, run

from lpot_ir.errors import QuantizationError
from lpot_ir.ir.quant import (
    CalibAlgorithm,
    DType,
    OpOverride,
    ScopeKind,
    SpecOverride,
    TuningConfig,
)
from lpot_ir.quantizer import ModelQuantizer, Recipe, apply_recipe, default_config, recipe_path_for

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["p", "W2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "Wg", "Bg"], ["y"], transB=1, name="fc"),
    ]
    inits = {
        "W": (rng.normal(size=(6, 3, 3, 3)) * 0.3).astype(np.float32),
        "B": (rng.normal(size=(6,)) * 0.1).astype(np.float32),
        "W2": (rng.normal(size=(8, 6, 1, 1)) * 0.3).astype(np.float32),
        "Wg": (rng.normal(size=(4, 8)) * 0.3).astype(np.float32),
        "Bg": (rng.normal(size=(4,)) * 0.1).astype(np.float32),
    }
    return make_model(nodes, [("x", ["N", 3, 8, 8])], [("y", None)], inits)


@pytest.fixture(scope="module")
def feeds() -> list[dict[str, np.ndarray]]:
    return [{"x": np.random.default_rng(i).normal(size=(2, 3, 8, 8)).astype(np.float32)} for i in range(3)]


def test_recipe_round_trip_is_bit_for_bit(model, feeds, tmp_path):
    config = default_config().with_override(
        ScopeKind.OP_TYPE, "Gemm", OpOverride(activation=SpecOverride(algorithm=CalibAlgorithm.PERCENTILE))
    )
    qm = ModelQuantizer(model, feeds).quantize(config)
    check_valid(qm.model)
    path = qm.save(tmp_path / "int8.onnx")
    recipe_file = recipe_path_for(path)
    assert path.exists() and recipe_file == tmp_path / "int8.recipe.json"
    data = json.loads(recipe_file.read_text())
    assert set(data) == {"format_version", "fp32_model_digest", "config", "ranges", "lpot_ir_version", "pipeline"}
    assert data["config"] == config.to_dict()
    assert set(data["ranges"]) >= {"x", "r"}

    replay = apply_recipe(model, recipe_file)  # no calibration data
    assert replay.model.SerializeToString() == qm.model.SerializeToString()
    assert onnx.load(str(path)).graph == qm.model.graph
    y = run(replay.model, feeds[0])[0]
    assert y.shape == (2, 4)


def test_recipe_for_another_model_is_refused(model, feeds, tmp_path):
    qm = ModelQuantizer(model, feeds).quantize()
    other = onnx.ModelProto()
    other.CopyFrom(model)
    other.graph.initializer[0].raw_data = np.zeros((6, 3, 3, 3), np.float32).tobytes()
    with pytest.raises(QuantizationError, match="different FP32 model"):
        apply_recipe(other, qm.recipe)


def test_malformed_recipes_raise_clear_errors(model, tmp_path):
    bad = tmp_path / "bad.recipe.json"
    bad.write_text("{not json")
    with pytest.raises(QuantizationError, match="not valid JSON"):
        apply_recipe(model, bad)
    bad.write_text(json.dumps({"format_version": 1, "config": {}}))
    with pytest.raises(QuantizationError, match="not a valid lpot-ir recipe"):
        Recipe.load(bad)
    bad.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(QuantizationError, match="format_version 99"):
        Recipe.load(bad)
    with pytest.raises(QuantizationError, match="Cannot read recipe"):
        Recipe.load(tmp_path / "missing.json")


def test_calibration_is_computed_once_per_algorithms_and_size(model, feeds):
    quantizer = ModelQuantizer(model, feeds)
    quantizer.quantize(default_config())
    quantizer.quantize(default_config().with_node("conv2", default_config().global_config))
    assert len(quantizer._calibrations) == 1
    kl = default_config().with_override(ScopeKind.OP_TYPE, "Conv", OpOverride(
        activation=SpecOverride(algorithm=CalibAlgorithm.KL)))
    quantizer.quantize(kl)
    assert len(quantizer._calibrations) == 2


def test_static_without_data_is_a_clear_error(model):
    with pytest.raises(QuantizationError, match="needs calibration data"):
        ModelQuantizer(model).quantize(TuningConfig())


def test_config_round_trips_and_precedence():
    config = (
        TuningConfig()
        .with_override(ScopeKind.NODE_NAME, "conv1", OpOverride(activation=SpecOverride(dtype=DType.INT8)))
        .with_override(ScopeKind.NAME_REGEX, "conv.*", OpOverride(activation=SpecOverride(dtype=DType.UINT8)))
        .with_override(ScopeKind.OP_TYPE, "Conv", OpOverride(fp32=True))
        .with_override(ScopeKind.NAME_REGEX, "conv1", OpOverride(fp32=False))
    )
    assert TuningConfig.from_json(config.to_json()) == config
    assert TuningConfig.from_yaml(config.to_yaml()) == config
    resolved = config.resolve("conv1", "Conv")
    assert not resolved.fp32 and resolved.activation.dtype is DType.INT8  # node name beats regex beats op type
    assert config.resolve("conv2", "Conv").fp32
