"""Bias correction on real numerics: INT8 weight rounding shifts the mean output; correction removes it."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from recovery_models import batches, positive_inputs, run, shifted_depthwise, shifted_linear

from lpot_ir.ir.quant import Granularity, OpQuantConfig, RecoveryConfig, RecoveryOptions, TuningConfig
from lpot_ir.quantizer import ModelQuantizer, apply_recipe, default_config


def _per_tensor_weights(recovery: RecoveryConfig) -> TuningConfig:
    config = default_config()
    weight = dataclasses.replace(config.global_config.weight, granularity=Granularity.PER_TENSOR)
    return dataclasses.replace(
        config, global_config=OpQuantConfig(config.global_config.activation, weight), recovery=recovery
    )


def _shift_and_floor(model: onnx.ModelProto, quantized: onnx.ModelProto, held: np.ndarray, calibration: int, axis: int):
    """Mean absolute per-channel output shift on held-out samples, and its noise floor.

    The floor is what a perfect correction would still show: the standard error of the held-out mean plus
    that of the correction's own estimate (``calibration`` samples), both from the per-sample shifts.
    """
    reference = run(model, held)[0]
    output = run(quantized, held)[0]
    other = tuple(i for i in range(1, reference.ndim) if i != axis % reference.ndim)
    per_sample = (output - reference).mean(axis=other)  # [samples, channels]
    spread = per_sample.std(axis=0)
    floor = np.sqrt(spread**2 / len(held) + spread**2 / calibration)
    return float(np.abs(per_sample.mean(axis=0)).mean()), float(floor.mean())


@pytest.mark.parametrize(
    ("model", "shape", "samples", "axis"),
    [
        (shifted_depthwise(), (8, 12, 12), (32, 64), 1),
        (shifted_linear("matmul"), (16, 32), (32, 64), -1),
        (shifted_linear("gemm"), (32,), (256, 512), -1),  # one output row per sample: more samples
    ],
    ids=["conv-bias-created", "matmul-float-bias-add", "gemm-bias-created"],
)
def test_bias_correction_removes_the_mean_shift_on_held_out_samples(model, shape, samples, axis):
    calibration, held = positive_inputs(samples[0], 1, shape), positive_inputs(samples[1], 2, shape)
    quantizer = ModelQuantizer(model, batches(calibration, 32), recovery_options=RecoveryOptions(samples=samples[0]))
    plain = quantizer.quantize(_per_tensor_weights(RecoveryConfig()))
    corrected = quantizer.quantize(_per_tensor_weights(RecoveryConfig(bias_correction=True)))
    before, floor = _shift_and_floor(model, plain.model, held, len(calibration), axis)
    after, _ = _shift_and_floor(model, corrected.model, held, len(calibration), axis)
    # The model is built so rounding shifts every channel (measured 20-60x the noise floor); a correction
    # estimated on the calibration samples leaves only the floor (measured ~0.6x) plus the int32 bias rounding.
    assert before > 10 * floor, "the test model no longer shows a rounding shift"
    assert after < 3 * floor + 1e-4, f"shift {before:.2e} -> {after:.2e}, floor {floor:.2e}"
    assert list(corrected.recipe.records["bias-correction"]["biases"]) == [
        n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
    ]
    again = apply_recipe(model, corrected.recipe)  # no data: the stored corrections
    assert again.model.SerializeToString() == corrected.model.SerializeToString()


def test_bias_correction_only_adds_a_bias_where_one_is_needed():
    model = shifted_depthwise()
    calibration = positive_inputs(16, 1)
    quantizer = ModelQuantizer(model, batches(calibration))
    corrected = quantizer.quantize(_per_tensor_weights(RecoveryConfig(bias_correction=True)))
    conv = next(n for n in corrected.model.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3 and corrected.recipe.records["bias-correction"]["biases"]["dw"]["created"]
    dq = next(n for n in corrected.model.graph.node if n.output[0] == conv.input[2])
    assert dq.op_type == "DequantizeLinear"  # int32 bias, fused by ONNX Runtime into QLinearConv
    init = {t.name: t for t in corrected.model.graph.initializer}[dq.input[0]]
    assert init.data_type == onnx.TensorProto.INT32


def test_layerwise_recovery_serves_an_activation_read_by_a_later_side_branch():
    """HED's shape: a block's output feeds the next block and, late in node order, a side-output conv. The
    side conv is visited after every node reading that activation has run, which once freed it (HED failed
    with "could not compute tensor ..._quantized"); the walk now keeps it until the side conv is served."""
    from recovery_models import build

    rng = np.random.default_rng(4)
    inits = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
        "w2": rng.normal(0, 0.3, (8, 8, 3, 3)), "b2": rng.normal(0, 0.1, 8),
        "w3": rng.normal(0, 0.3, (8, 8, 3, 3)), "b3": rng.normal(0, 0.1, 8),
        "ws": rng.normal(0, 0.3, (1, 8, 1, 1)), "bs": rng.normal(0, 0.1, 1),
        "wt": rng.normal(0, 0.3, (1, 8, 1, 1)), "bt": rng.normal(0, 0.1, 1),
    }
    nodes = [
        onnx.helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        onnx.helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        onnx.helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Conv", ["c3", "wt", "bt"], ["top"], name="side_top"),
        onnx.helper.make_node("Conv", ["r1", "ws", "bs"], ["side"], name="side_early"),  # reads r1, late in order
        onnx.helper.make_node("Add", ["top", "side"], ["y"], name="fuse"),
    ]
    model = build(nodes, ["N", 3, 12, 12], "y", inits)
    data = positive_inputs(16, 5, (3, 12, 12))
    quantizer = ModelQuantizer(model, batches(data, 8))
    corrected = quantizer.quantize(dataclasses.replace(default_config(), recovery=RecoveryConfig(bias_correction=True)))
    assert "side_early" in corrected.recipe.records["bias-correction"]["biases"]
    rounded = quantizer.quantize(dataclasses.replace(default_config(), recovery=RecoveryConfig(weight_rounding="adaround")))
    assert run(rounded.model, data)[0].shape == run(model, data)[0].shape
