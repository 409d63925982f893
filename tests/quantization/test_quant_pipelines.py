"""Quantization as pipelines of registered passes: the pipelines are data, every step is registered, the
context reaches every step, the prepare stage is calibrated, recipes record and replay the steps."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper
from qhelpers import check_valid, make_model, run

from lpot_ir.errors import ConfigError, QuantizationError
from lpot_ir.ir.quant import Approach, QuantFormat, RecoveryConfig, TuningConfig
from lpot_ir.passes import PIPELINES, RuleSetPass, get_pass, insert_step, pipeline_steps, register_pass
from lpot_ir.passes.quantization import (
    PIPELINE_FOR,
    PREPARE_PIPELINE,
    QuantizationContext,
    QuantizationPass,
    QuantPassResult,
    quantize_model,
    select_pipeline,
)
from lpot_ir.quantizer import ModelQuantizer, Recipe, apply_recipe

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_quant_pass.py"
RNG = np.random.default_rng(5)


@pytest.fixture
def pipelines() -> Iterator[None]:
    """Restore the registered pipelines after a test that inserts a step."""
    saved = dict(PIPELINES)
    yield
    PIPELINES.clear()
    PIPELINES.update(saved)


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "Wg"], ["y"], transB=1, name="fc"),
    ]
    inits = {
        "W": (RNG.normal(size=(6, 3, 3, 3)) * 0.3).astype(np.float32),
        "B": (RNG.normal(size=(6,)) * 0.1).astype(np.float32),
        "Wg": (RNG.normal(size=(4, 6)) * 0.3).astype(np.float32),
    }
    return make_model(nodes, [("x", ["N", 3, 8, 8])], [("y", None)], inits)


@pytest.fixture(scope="module")
def feeds() -> list[dict[str, np.ndarray]]:
    return [{"x": np.random.default_rng(i).normal(size=(2, 3, 8, 8)).astype(np.float32)} for i in range(2)]


def test_every_quantization_step_is_registered() -> None:
    for name in ("qoperator", "avoid-slow-ort-fusions", "space-to-depth-stems"):
        step = get_pass(name)
        assert isinstance(step, RuleSetPass) and step.rule_set.name == name
    for pipeline in (PREPARE_PIPELINE, *PIPELINE_FOR.values()):
        assert isinstance(PIPELINES[pipeline], tuple)
        for step in pipeline_steps(pipeline):
            assert step in PIPELINES or get_pass(step, context=QuantizationContext(TuningConfig())) is not None


def test_the_config_selects_the_pipeline() -> None:
    assert select_pipeline(TuningConfig()) == "int8-qdq"
    assert select_pipeline(TuningConfig(approach=Approach.QAT, format=QuantFormat.QOPERATOR)) == "int8-qoperator"
    assert select_pipeline(TuningConfig(approach=Approach.DYNAMIC)) == "int8-dynamic"
    assert select_pipeline(TuningConfig(approach=Approach.DYNAMIC, format=QuantFormat.QOPERATOR)) == (
        "int8-dynamic-qoperator"
    )


def test_a_quantization_pass_needs_the_context() -> None:
    with pytest.raises(ConfigError, match="Pass 'insert-qdq' needs a QuantizationContext and was given no context"):
        get_pass("insert-qdq")
    with pytest.raises(ConfigError, match="was given a str"):
        get_pass("annotate", context="config")


def test_insert_step_checks_its_anchor(pipelines) -> None:
    with pytest.raises(ConfigError, match="Pipeline 'int8-qdq' has no step 'insert-qd'"):
        insert_step("int8-qdq", "remove-unused", after="insert-qd")
    with pytest.raises(ConfigError, match="No pipeline is named 'int8-qdd'"):
        insert_step("int8-qdd", "remove-unused")
    insert_step("int8-qdq", "remove-unused", before="insert-qdq")
    insert_step("int8-qdq", "remove-unused", before="insert-qdq")  # twice: once
    assert PIPELINES["int8-qdq"][:4] == ("annotate", "range-search", "remove-unused", "insert-qdq")


class _CountAnnotated(QuantizationPass):
    """Test step: counts annotated nodes, and says which configuration it saw."""

    def call(self, model: ir.Model) -> QuantPassResult:
        annotated = [n.name for n in model.graph if "lpot_ir.quant" in n.meta]
        return QuantPassResult(model, False, details={self.context.config.approach.value: len(annotated)})


def test_quantize_model_hands_one_context_to_every_step(model) -> None:
    register_pass("test-count-annotated", replace=True)(_CountAnnotated)
    ir_model = ir.serde.deserialize_model(model)
    context = QuantizationContext.for_model(ir_model, TuningConfig(approach=Approach.DYNAMIC))
    report = quantize_model(ir_model, context, pipeline=("annotate", "test-count-annotated", "dynamic-quantize"))
    assert report.steps is not None
    assert report.steps["test-count-annotated"].details == {"post_training_dynamic_quant": 2}  # conv and fc
    assert sorted(report.quantized) == ["conv", "fc"]


class _DoubleFirstWeight(QuantizationPass):
    """Test prepare step: doubles the Conv weight and bias when equalization is on (changes the function,
    so calibration of the unprepared model would give ranges half as wide and the outputs would saturate)."""

    def call(self, model: ir.Model) -> QuantPassResult:
        if not self.context.recovery.equalization:
            return QuantPassResult(model, False)
        assert len(self.context.calibration_feeds()) == 1  # one batch of 2 samples covers sampling size 2
        for name in ("W", "B"):
            value = model.graph.initializers[name]
            value.const_value = ir.Tensor(value.const_value.numpy() * 2, name=name)  # type: ignore[union-attr]
        return QuantPassResult(model, True, changes=2)


def test_the_prepare_stage_is_calibrated_and_cached(model, feeds, pipelines) -> None:
    register_pass("test-double-first-weight", replace=True)(_DoubleFirstWeight)
    builtin = pipeline_steps(PREPARE_PIPELINE)  # cross-layer-equalization, smoothquant
    insert_step(PREPARE_PIPELINE, "test-double-first-weight")
    quantizer = ModelQuantizer(model, feeds)
    off = TuningConfig(calib_sampling_size=2)
    on = TuningConfig(calib_sampling_size=2, recovery=RecoveryConfig(equalization=True))
    plain = quantizer.quantize(off)
    assert quantizer.prepared(off) is quantizer.prepared(TuningConfig(calib_sampling_size=2))  # switched off: the model itself
    prepared = quantizer.quantize(on)
    assert quantizer.prepared(on) is not quantizer.prepared(off)
    assert prepared.recipe.pipeline is not None and prepared.recipe.pipeline.prepare == (*builtin, "test-double-first-weight")
    check_valid(prepared.model)
    # the Conv doubled: Relu, average pool and the Gemm are linear for positive scales, so y doubles
    y_fp32, y_plain, y_prepared = run(model, feeds[0])[0], run(plain.model, feeds[0])[0], run(prepared.model, feeds[0])[0]
    step = 2 * float(np.abs(y_fp32).max()) / 127  # a few INT8 steps of the doubled output
    assert np.abs(y_plain - y_fp32).max() < step
    assert np.abs(y_prepared - 2 * y_fp32).max() < 2 * step  # ranges from the prepared model: no saturation
    # a replay of the recipe runs the prepare step again, with the calibration data it needs
    replay = apply_recipe(model, prepared.recipe, calib_dataloader=feeds)
    assert replay.model.SerializeToString() == prepared.model.SerializeToString()
    with pytest.raises(QuantizationError, match="needs calibration data"):
        apply_recipe(model, prepared.recipe)


def test_recipes_record_and_replay_the_pipeline(model, feeds, tmp_path) -> None:
    qm = ModelQuantizer(model, feeds).quantize(TuningConfig(format=QuantFormat.QOPERATOR))
    record = qm.recipe.pipeline
    assert record is not None and record.name == "int8-qoperator" and record.version == 1
    assert record.steps == pipeline_steps("int8-qoperator") and "qoperator" in record.steps
    path = qm.recipe.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["format_version"] == 2 and data["pipeline"]["steps"] == list(record.steps)
    assert apply_recipe(model, path).model.SerializeToString() == qm.model.SerializeToString()
    # a version 1 recipe (no pipeline) replays with the pipeline its configuration selects
    old = {k: v for k, v in data.items() if k != "pipeline"} | {"format_version": 1}
    assert apply_recipe(model, Recipe.from_dict(old)).model.SerializeToString() == qm.model.SerializeToString()
    # a step that is not registered in this process is named
    data["pipeline"]["steps"].insert(2, "my-unregistered-step")
    with pytest.raises(QuantizationError, match="'my-unregistered-step'.*not registered"):
        apply_recipe(model, Recipe.from_dict(data))


def test_custom_quant_pass_example_runs() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "int8-qdq: annotate -> range-search -> insert-qdq -> report-weight-error -> int8-refine -> " \
        "mixed-precision -> space-to-depth-stems -> avoid-slow-ort-fusions"
    errors = {line.split(":")[0]: float(line.split()[-1]) for line in lines if " W error " in line}
    # per channel, the 15 ordinary columns get scales 40x finer, which removes nearly all of the error
    # energy but the outlier column's own (1/16 of it): the relative RMS error drops about 4x
    assert errors["per_channel"] < errors["per_tensor"] / 2, errors
    assert "recipe: int8-qdq v1: annotate, range-search, insert-qdq, report-weight-error, weight-rounding, " \
        "bias-correction, mixed-precision, space-to-depth-stems, avoid-slow-ort-fusions" in lines
