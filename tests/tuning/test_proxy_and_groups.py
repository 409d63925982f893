"""Per-tensor sensitivity, the accuracy proxy and the proxy-driven first trial on the real digits model."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lpot_ir.backends.onnxruntime.batching import feeds_from_batches
from lpot_ir.config.schema import AccuracyCriterion
from lpot_ir.ir.model import to_proto
from lpot_ir.quantizer import default_config
from lpot_ir.tuning import Evaluator, tune
from lpot_ir.tuning.loop import LoopContext
from lpot_ir.tuning.sensitivity import AgreementProxy, SensitivityMeter
from lpot_ir.tuning.space import build_space
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
    assert first.error > 50 * second.error
    assert meter.measure(default_config()) is report and meter.calls == 1  # cached by configuration key
    # with dw1 alone in FP32 the tensor is still quantized (the stem asks for it): dw1 is no longer named
    only_dw1 = meter.measure(default_config().with_nodes_fp32([OUTLIER_OPS[1], "/dw1/dw1.2/Relu"]))
    still = next(t for t in only_dw1.tensors if t.tensor == first.tensor)
    assert still.nodes == (STEM_RELU,) and still.error == pytest.approx(first.error, rel=0.2)


def test_proxy_predicts_the_goal_on_calibration_samples(digits, quantizer, fp32, feeds):
    proxy = AgreementProxy(fp32, quantizer.quantize, feeds)
    assert proxy.applicable and proxy.samples == 100
    kept_fp32 = default_config().with_nodes_fp32(list(OUTLIER_FALLBACK))
    all_int8, fallback = proxy(default_config()), proxy(kept_fp32)
    assert proxy(default_config()) == all_int8 and proxy.runs == 2  # cached
    # Expected values from the models' own outputs on this CPU (the proxy runs the samples as one batch too):
    # INT8 kernels differ between CPUs, so no constant is right everywhere.
    calib = np.concatenate([feed["input"] for feed in feeds])
    fp32_class = np.argmax(logits(fp32, calib), axis=-1)
    for value, config in ((all_int8, default_config()), (fallback, kept_fp32)):
        int8_class = np.argmax(logits(quantizer.quantize(config).model, calib), axis=-1)
        assert value == float(np.mean(int8_class != fp32_class))
    # The decisions, against the threshold the strategies compare the proxy with (the 1% goal's allowed drop).
    # Their margins on every CPU are test_example_model.py's: all INT8 flips half the samples, the fallback none.
    goal = AccuracyCriterion(relative=0.01)
    threshold = LoopContext(digits.accuracy(fp32), goal, proxy=proxy).estimate_threshold
    assert threshold is not None and all_int8 > threshold >= fallback == 0.0
    # the bound it relies on holds on the evaluation split: |acc_int8 - acc_fp32| <= disagreement there
    int8 = quantizer.quantize(default_config()).model
    disagreement = float(np.mean(_top1(fp32, digits.eval_data) != _top1(int8, digits.eval_data)))
    assert abs(digits.accuracy(int8) - digits.accuracy(fp32)) <= disagreement + 1e-9


def _top1(model: onnx.ModelProto, data: np.ndarray) -> np.ndarray:
    return np.argmax(logits(model, data), axis=-1)


def test_proxy_does_not_apply_without_a_classifier_output():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1], np.arange(4, dtype=np.float32).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)}]
    proxy = AgreementProxy(model, lambda config: model, feeds)
    assert not proxy.applicable
    assert math.isnan(proxy(default_config())) and proxy.runs == 0
    context = LoopContext(baseline_accuracy=0.9, criterion=None, proxy=proxy)
    assert context.estimate_threshold is None  # so strategies tune without it


def test_basic_meets_the_goal_with_one_int8_evaluation(digits, quantizer, tmp_path):
    calls = []

    def eval_func(model):
        calls.append(1)
        return digits.eval_func(model)

    outcome = tune(make_config(tmp_path), quantizer, Evaluator(eval_func=eval_func), progress=False)
    assert outcome.met_goal and outcome.relative_loss <= 0.01
    assert len(outcome.trials) == 1 and len(calls) == 2  # FP32 baseline + one INT8 trial
    assert 1 <= outcome.estimate_calls <= 4
    space = build_space(make_config(tmp_path), quantizer.nodes, quantizer.fp32_model).space
    groups = {n: g for g in space.fallback_groups for n in g}
    expected = set(groups[OUTLIER_OPS[0]]) | set(groups[OUTLIER_OPS[1]])
    fp32_nodes = {n for n, d in outcome.decisions.items() if not d["quantized"]}
    assert fp32_nodes == expected  # only the outlier tensor's producer and reader groups stay FP32
    assert "accuracy proxy predicted" in outcome.decisions[OUTLIER_OPS[0]]["reason"]


def test_positive_timeout_spends_no_trial_on_predicted_failures(digits, quantizer, tmp_path):
    outcome = tune(
        make_config(tmp_path, timeout=3600, max_trials=20),
        quantizer,
        Evaluator(eval_func=digits.eval_func),
        progress=False,
    )
    assert outcome.met_goal and outcome.stop_reason == "the search space is exhausted"
    assert len(outcome.trials) == 1  # re-quantizing stem or dw1 alone is predicted to miss by far


def test_mse_finds_the_outlier_tensor_at_its_first_fallback(digits, quantizer, tmp_path):
    outcome = tune(
        make_config(tmp_path, "mse"), quantizer, Evaluator(eval_func=digits.eval_func), progress=False
    )
    assert [t.meets_goal for t in outcome.trials] == [False, True]  # all INT8, then stem + dw1 together
    assert outcome.estimate_calls == 0  # mse evaluates every step (LPOT's predictable behaviour)
    for name in OUTLIER_OPS:
        assert outcome.decisions[name]["quantized"] is False
    assert outcome.decisions["/pw2/pw2.0/Conv"]["quantized"] is True
