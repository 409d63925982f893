"""Per-tensor sensitivity, the output-distance proxy and its calibration, on the real digits model."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lpot_ir.backends.onnxruntime.batching import feeds_from_batches
from lpot_ir.ir.model import to_proto
from lpot_ir.quantizer import ModelQuantizer, default_config
from lpot_ir.strategies.proxy import ProxyCalibration
from lpot_ir.tuning import Evaluator, TuningHistory, tune
from lpot_ir.tuning.proxy import (
    OutputDistance,
    OutputKind,
    infer_output_kind,
    output_distance,
)
from lpot_ir.tuning.sensitivity import SensitivityMeter
from tests.tuning.helpers import OUTLIER_FALLBACK, OUTLIER_OPS, logits, make_config

STEM_RELU = "/stem/stem.2/Relu"


@pytest.fixture(scope="module")
def fp32(quantizer) -> onnx.ModelProto:
    return to_proto(quantizer.fp32_model)


@pytest.fixture(scope="module")
def feeds(digits, fp32):
    return feeds_from_batches(digits.calib_dataloader(), fp32, 100)


def test_outlier_tensor_ranks_first_and_names_both_ends(quantizer, fp32, feeds):
    meter = SensitivityMeter(fp32, quantizer.quantize, feeds)
    report = meter.measure(default_config())
    first, second = report.tensors[0], report.tensors[1]
    assert first.tensor == f"{STEM_RELU}_output_0"
    # its quantized producer (the stem's fused Relu) and its quantized reader (dw1) change together
    assert set(first.nodes) == {STEM_RELU, OUTLIER_OPS[1]}
    # measured 1400x here (AMX CPU): the outlier tensor's INT8 step is ~120x the others' (OUTLIER_SCALE), and kernel
    # rounding moves errors by fractions of a step, so 50x holds on any CPU
    assert first.error > 50 * second.error
    assert meter.measure(default_config()) is report and meter.calls == 1  # cached by configuration key
    # with dw1 alone in FP32 the tensor is still quantized (the stem asks for it): dw1 is no longer named
    only_dw1 = meter.measure(default_config().with_nodes_fp32([OUTLIER_OPS[1], "/dw1/dw1.2/Relu"]))
    still = next(t for t in only_dw1.tensors if t.tensor == first.tensor)
    assert still.nodes == (STEM_RELU,) and still.error == pytest.approx(first.error, rel=0.2)


def test_output_distance_orders_candidates_like_the_evaluation(digits, quantizer, fp32, feeds):
    proxy = OutputDistance(fp32, quantizer.quantize, feeds)
    assert proxy.kind is OutputKind.CLASSIFICATION and proxy.output_name == "logits"
    all_int8 = proxy(default_config())
    fixed = proxy(default_config().with_nodes_fp32(list(OUTLIER_FALLBACK)))
    assert proxy(default_config()) is all_int8 and proxy.runs == 2  # cached by configuration key
    # the candidate the evaluation prefers is the closer one, by a wide margin (the outlier tensor
    # carries nearly all of the quantization error: see the sensitivity test above)
    assert digits.accuracy(quantizer.quantize(default_config().with_nodes_fp32(list(OUTLIER_FALLBACK))).model) > digits.accuracy(
        quantizer.quantize(default_config()).model
    )
    assert fixed.distance * 5 < all_int8.distance  # measured 91x here (AMX CPU): the outlier's step dominates
    assert fixed.top1_flips <= all_int8.top1_flips
    # the top-1 flip rate bounds the accuracy change on any labelled set: |acc_int8 - acc_fp32| <= flips there
    int8 = quantizer.quantize(default_config()).model
    flips = float(np.mean(_top1(fp32, digits.eval_data) != _top1(int8, digits.eval_data)))
    assert abs(digits.accuracy(int8) - digits.accuracy(fp32)) <= flips + 1e-9


def _top1(model: onnx.ModelProto, data: np.ndarray) -> np.ndarray:
    return np.argmax(logits(model, data), axis=-1)


def test_output_kinds_follow_what_the_output_is():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 10)).astype(np.float32)
    probs = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    assert infer_output_kind("out", "Gemm", scores) is OutputKind.CLASSIFICATION
    assert infer_output_kind("y", None, probs) is OutputKind.CLASSIFICATION
    assert infer_output_kind("y", "Softmax", probs.reshape(2, 2, 10)) is OutputKind.SEQUENCE
    assert infer_output_kind("last_hidden_state", "LayerNormalization", rng.normal(size=(2, 7, 32))) is OutputKind.EMBEDDING
    assert infer_output_kind("edges", "Sigmoid", rng.random((1, 1, 16, 16))) is OutputKind.DENSE
    assert infer_output_kind("prob", "Sigmoid", rng.random((4, 1))) is OutputKind.DENSE  # one value: not classes
    assert infer_output_kind("ids", "ArgMax", np.arange(4)) is OutputKind.LABELS


def test_distances_measure_what_each_kind_cares_about():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 10))
    assert output_distance(OutputKind.CLASSIFICATION, x, x) == (0.0, 0.0)
    # a scaled embedding has the same direction: no distance; a rotated one has some
    assert output_distance(OutputKind.EMBEDDING, 3 * x, x)[0] == pytest.approx(0.0, abs=1e-12)
    assert output_distance(OutputKind.EMBEDDING, x[:, ::-1], x)[0] > 0.5
    # moving the top class of every sample flips every top-1
    swapped = x.copy()
    swapped[np.arange(64), np.argmax(x, -1)] = x.min() - 1
    distance, flips = output_distance(OutputKind.CLASSIFICATION, swapped, x)
    assert flips == 1.0 and 0 < distance <= 1
    # dense: the normalized squared error, 1 for an output of the right spread and no correlation
    noise = rng.normal(size=(1000,))
    assert output_distance(OutputKind.DENSE, noise, rng.normal(size=(1000,)))[0] == pytest.approx(2.0, rel=0.2)
    assert output_distance(OutputKind.LABELS, np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4]))[0] == 0.25
    assert output_distance(OutputKind.DENSE, np.ones((2, 3)), np.ones((3, 2)))[0] == 1.0  # shapes differ


def test_calibration_predicts_only_from_evaluated_points():
    calibration = ProxyCalibration()
    assert calibration.predict(0.1) is None and calibration.threshold(0.01) is None
    calibration.add(0.2, 0.04)  # one evaluated candidate: distance 0.2 lost 4%
    assert calibration.predict(0.1) == pytest.approx(0.02)  # linear through FP32 (0, 0)
    assert calibration.threshold(0.01) == pytest.approx(0.05)
    assert calibration.predict(0.4) == pytest.approx(0.08)  # beyond the points: the steepest slope
    calibration.add(0.1, 0.001)  # a closer candidate lost little: the curve bends
    assert calibration.predict(0.1) == pytest.approx(0.001)
    assert calibration.threshold(0.01) == pytest.approx(0.1 + 0.1 * (0.009 / 0.039))
    assert not calibration.contradicted(0.01)
    calibration.add(0.15, 0.0)  # met the goal, closer than the 0.2 miss: consistent
    assert not calibration.contradicted(0.01)
    calibration.add(0.05, 0.03)  # closer than a candidate that met the goal, yet it missed
    assert calibration.contradicted(0.01)
    values = [calibration.predict(d) for d in np.linspace(0, 0.5, 26)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))  # monotone


def test_proxy_uses_feeds_as_given_for_a_fixed_batch_model():
    """A model whose batch is fixed at 1 is read one feed at a time, never concatenated."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    rng = np.random.default_rng(2)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], rng.normal(size=12).astype(np.float32).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.normal(size=(1, 4)).astype(np.float32)} for _ in range(6)]
    quantizer = ModelQuantizer(model, [(f["x"], None) for f in feeds])
    proxy = OutputDistance(model, quantizer.quantize, feeds)
    reading = proxy(default_config())
    assert proxy.kind is OutputKind.CLASSIFICATION and math.isfinite(reading.distance)
    assert proxy(default_config().with_nodes_fp32(["mm"])).distance == 0.0


def test_basic_default_on_digits_keeps_the_advice_within_its_budget(digits, quantizer, tmp_path):
    calls = []

    def eval_func(model):
        calls.append(1)
        return digits.eval_func(model)

    outcome = tune(make_config(tmp_path, strategy_options={"recovery": False}), quantizer, Evaluator(eval_func=eval_func), progress=False)
    assert outcome.met_goal and outcome.relative_loss <= 0.01
    assert len(calls) <= 4  # FP32 baseline + at most 3 INT8 evaluations
    header, _ = TuningHistory(outcome.files["history"]).read()
    plan = header.advice
    assert plan["units"] > 0 and plan["eval_seconds"] > 0
    # the outlier tensor stays FP32 in the result, with a reason for each of its ends
    for name in OUTLIER_OPS:
        assert outcome.decisions[name]["quantized"] is False
        assert outcome.decisions[name]["reason"].startswith("tuning_fallback")
    # every proxy reading is charged one unit of the plan (other advice more): the plan bounds them
    assert outcome.proxy_readings <= plan["units"] + 1


def test_mse_finds_the_outlier_tensor_at_its_first_fallback(digits, quantizer, tmp_path):
    outcome = tune(
        make_config(tmp_path, "mse"), quantizer, Evaluator(eval_func=digits.eval_func), progress=False
    )
    assert [t.meets_goal for t in outcome.trials] == [False, True]  # all INT8, then stem + dw1 together
    assert outcome.proxy_readings == 0  # mse evaluates every step (LPOT's predictable behaviour)
    for name in OUTLIER_OPS:
        assert outcome.decisions[name]["quantized"] is False
    assert outcome.decisions["/pw2/pw2.0/Conv"]["quantized"] is True


@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (4, 7, 16), (4, 9), (4,)])
def test_error_statistics_equal_the_error_of_the_concatenated_samples(shape):
    from lpot_ir.tuning.sensitivity import ErrorStatistics, normalized_error

    rng = np.random.default_rng(3)
    reference = rng.normal(size=shape) * rng.uniform(0.1, 10, size=shape[-1] if len(shape) == 3 else 1)
    actual = reference + rng.normal(scale=0.05, size=shape)
    stats = ErrorStatistics()
    for i in range(shape[0]):  # one sample at a time, as the sensitivity meter streams them
        stats.update(actual[i : i + 1], reference[i : i + 1])
    assert stats.error() == pytest.approx(normalized_error(actual, reference), rel=1e-9)
