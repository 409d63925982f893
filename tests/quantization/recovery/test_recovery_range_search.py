"""Per-tensor range search: the consumer-weighted error picks the range; one-sided tensors get asym."""

from __future__ import annotations

import dataclasses

import numpy as np
from onnx import numpy_helper
from recovery_models import batches, outlier_inputs, pointwise, positive_inputs, run

from lpot_ir.ir.quant import DType, OpQuantConfig, QuantSpec, RecoveryConfig, Scheme
from lpot_ir.quantizer import ModelQuantizer, apply_recipe, default_config


def _quantize(model, calibration, recovery: RecoveryConfig, activation: QuantSpec | None = None):
    config = dataclasses.replace(default_config(), recovery=recovery)
    if activation is not None:
        config = dataclasses.replace(config, global_config=OpQuantConfig(activation, config.global_config.weight))
    return ModelQuantizer(model, batches(calibration)).quantize(config)


def _output_error(model, quantized, held: np.ndarray) -> float:
    return float(np.mean(np.square(run(quantized.model, held)[0] - run(model, held)[0])))


def test_outliers_are_clipped_only_where_the_consumer_barely_reads_them():
    calibration, held = outlier_inputs(32, 1), outlier_inputs(64, 2)
    quiet = pointwise(outlier_weight=0.02)  # the consumer's weights on the outlier channel are tiny
    plain = _quantize(quiet, calibration, RecoveryConfig())
    searched = _quantize(quiet, calibration, RecoveryConfig(range_search=True))
    assert searched.recipe.records["range-search"]["algorithms"]["x"] != "minmax"
    assert searched.recipe.ranges["x"].hi < 0.5 * plain.recipe.ranges["x"].hi  # the 25.0 spikes are clipped
    # fixed seeds: measured 0.74x the min/max model's output error on held-out samples
    assert _output_error(quiet, searched, held) < 0.9 * _output_error(quiet, plain, held)

    loud = pointwise(outlier_weight=10.0)  # same input, but the outlier channel dominates the output
    searched = _quantize(loud, calibration, RecoveryConfig(range_search=True))
    assert searched.recipe.records["range-search"]["algorithms"]["x"] == "minmax"
    assert searched.recipe.ranges["x"].hi == plain.recipe.ranges["x"].hi


def test_a_one_sided_tensor_configured_symmetric_switches_to_asymmetric():
    model = pointwise(outlier_weight=1.0)
    calibration, held = positive_inputs(32, 1, (4, 8, 8)), positive_inputs(64, 2, (4, 8, 8))
    symmetric = QuantSpec(DType.UINT8, Scheme.SYM)  # zero point 128: half the grid below 0, never used here
    plain = _quantize(model, calibration, RecoveryConfig(), symmetric)
    searched = _quantize(model, calibration, RecoveryConfig(range_search=True), symmetric)
    assert searched.recipe.records["range-search"]["schemes"]["x"] == Scheme.ASYM.value
    initializers = {t.name: numpy_helper.to_array(t) for t in searched.model.graph.initializer}
    assert initializers["x_zero_point"] == 0  # asymmetric over [0, 1]: the grid starts at 0
    # the input's step halves, so its error drops ~4x; with the output's own rounding: measured 0.58x overall
    assert _output_error(model, searched, held) < 0.8 * _output_error(model, plain, held)
    again = apply_recipe(model, searched.recipe)
    assert again.model.SerializeToString() == searched.model.SerializeToString()


def test_without_a_better_candidate_the_configured_range_stays():
    model = pointwise(outlier_weight=1.0)
    calibration = positive_inputs(32, 1, (4, 8, 8))  # uniform: every algorithm finds about [0, 1]
    plain = _quantize(model, calibration, RecoveryConfig())
    searched = _quantize(model, calibration, RecoveryConfig(range_search=True))
    assert "schemes" not in searched.recipe.records["range-search"]
    assert searched.recipe.ranges["x"] == plain.recipe.ranges["x"]
