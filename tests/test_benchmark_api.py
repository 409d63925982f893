"""LPOT's Benchmark API on a tiny trained classifier, in performance and accuracy modes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir import Benchmark
from lpot_ir.backends.onnxruntime import PerformanceResult, available_cores
from lpot_ir.benchmark import AccuracyResult
from lpot_ir.errors import ConfigError, ConversionError, DataError, EvaluationError

N_CLASSES, N_FEATURES, BATCH = 3, 4, 8


def _train_softmax_regression(x: np.ndarray, y: np.ndarray, steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    w = np.zeros((N_FEATURES, N_CLASSES))
    b = np.zeros(N_CLASSES)
    onehot = np.eye(N_CLASSES)[y]
    for _ in range(steps):
        logits = x @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * x.T @ (p - onehot) / len(x)
        b -= 0.5 * (p - onehot).mean(0)
    return w.astype(np.float32), b.astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    """A softmax classifier trained on 3 overlapping Gaussian blobs; (model, batches, numpy accuracy)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.5, (N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, 64)
    x = (centers[y] + rng.normal(0, 1.2, (64, N_FEATURES))).astype(np.float32)
    w, b = _train_softmax_regression(x, y)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["logits"]), helper.make_node("Softmax", ["logits"], ["prob"])],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", N_FEATURES])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", N_CLASSES])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    batches = [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, 64, BATCH)]
    expected = float(((x @ w + b).argmax(1) == y).mean())
    assert 0.5 < expected < 1.0  # a real, imperfect classifier
    return model, batches, expected


class Top1:
    """A user metric: top-1 accuracy of the first output against integer labels."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = self.total = 0

    def update(self, preds, labels) -> None:
        assert isinstance(preds, list)  # one array per model output, as LPOT passes them
        self.correct += int((preds[0].argmax(1) == np.asarray(labels)).sum())
        self.total += len(labels)

    def result(self) -> float:
        return self.correct / self.total


def test_accuracy_mode_with_user_metric(trained):
    model, batches, expected = trained
    evaluator = Benchmark({"evaluation": {"accuracy": {"configs": {"cores_per_instance": 1}}}})
    evaluator.model = model
    evaluator.b_dataloader = batches
    evaluator.metric = Top1()
    result = evaluator(mode="accuracy")
    assert isinstance(result, AccuracyResult)
    assert result.accuracy == pytest.approx(expected)
    assert (result.batches, result.samples, result.batch_size, result.cores_per_instance) == (8, 64, BATCH, 1)
    assert result.latency_p50_ms <= result.latency_p90_ms <= result.latency_p99_ms
    data = result.to_dict()
    json.dumps(data)
    assert data["mode"] == "accuracy" and data["metric"] == "Top1"
    assert "accuracy (Top1)" in str(result) and f"{expected:.4f}" in str(result)


def test_accuracy_mode_with_yaml_metric_and_iteration(trained, tmp_path):
    model, batches, _ = trained
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    conf = tmp_path / "conf.yaml"
    conf.write_text("evaluation:\n  accuracy:\n    metric:\n      topk: 1\n    iteration: 2\n")
    evaluator = Benchmark(str(conf))
    evaluator.model = str(path)
    evaluator.b_dataloader = batches
    result = evaluator.fit("accuracy")
    first_two = Top1()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x, y in batches[:2]:
        first_two.update(sess.run(None, {"x": x}), y)
    assert result.metric == "topk" and result.batches == 2 and result.samples == 16
    assert result.accuracy == pytest.approx(first_two.result())


@pytest.mark.parametrize("iteration", [0, -1, 3])
def test_benchmark_and_tuning_evaluator_read_iteration_alike(trained, iteration):
    from lpot_ir.tuning import Evaluator

    model, batches, expected = trained
    evaluator = Benchmark({"evaluation": {"accuracy": {"iteration": iteration}}})
    evaluator.model, evaluator.b_dataloader, evaluator.metric = model, batches, Top1()
    result = evaluator(mode="accuracy")
    assert result.batches == (3 if iteration == 3 else len(batches))  # 0 and -1: every batch
    tuning = Evaluator(dataloader=batches, metric=Top1(), iteration=iteration)(model)
    assert tuning == pytest.approx(result.accuracy)
    if iteration != 3:
        assert tuning == pytest.approx(expected)


def test_performance_mode_defaults_to_whole_dataloader(trained):
    model, batches, _ = trained

    class Wrapped:  # like a quantized model: the ONNX model is in .model
        def __init__(self, proto):
            self.model = proto

    evaluator = Benchmark({"evaluation": {"performance": {"warmup": 2, "configs": {"cores_per_instance": 1}}}})
    evaluator.model = Wrapped(model)
    evaluator.b_dataloader = batches
    result = evaluator.fit()
    assert isinstance(result, PerformanceResult)
    assert (result.iterations, result.samples, result.warmup, result.instances, result.cores_per_instance) == (
        8, 64, 2, 1, 1)
    assert result.latency_p50_ms <= result.latency_p90_ms <= result.latency_p99_ms


@pytest.mark.slow
@pytest.mark.skipif(len(available_cores()) < 2, reason="needs 2 cores")
def test_performance_mode_two_instances_one_core_each(trained):
    model, batches, _ = trained
    conf = {"evaluation": {"performance": {"warmup": 1, "iteration": 5,
                                           "configs": {"cores_per_instance": 1, "num_of_instance": 2}}}}
    evaluator = Benchmark(conf)
    evaluator.model = model
    evaluator.b_dataloader = batches
    result = evaluator()
    assert result.instances == 2 and len(result.per_instance) == 2
    assert sorted(t.cores for t in result.per_instance) == [(c,) for c in available_cores()[:2]]
    assert all(t.iterations == 5 and t.samples == 5 * BATCH for t in result.per_instance)
    assert result.samples == 2 * 5 * BATCH and result.iterations == 5 and result.cores_per_instance == 1
    assert result.latency_p50_ms <= result.latency_p90_ms <= result.latency_p99_ms
    assert result.throughput == pytest.approx(sum(t.throughput for t in result.per_instance))
    text = str(result)
    assert "instances" in text and "cores per instance" in text and "samples/s" in text


def test_errors_are_clear(trained):
    model, batches, _ = trained
    evaluator = Benchmark()
    with pytest.raises(ConfigError, match="has no model"):
        evaluator.fit()
    evaluator.model = model
    with pytest.raises(ConfigError, match="mode must be one of"):
        evaluator.fit("speed")
    evaluator.b_dataloader = batches
    with pytest.raises(ConfigError, match="Accuracy mode needs a metric"):
        evaluator.fit("accuracy")

    class Broken(Top1):
        def update(self, preds, labels):
            raise ValueError("labels are strings")

    evaluator.metric = Broken()
    with pytest.raises(EvaluationError, match="raised ValueError in update\\(\\) on batch 0: labels are strings"):
        evaluator.fit("accuracy")
    evaluator.metric = Top1()
    evaluator.b_dataloader = [x for x, _ in batches]  # bare inputs: no labels for the metric
    with pytest.raises(DataError, match="needs \\(inputs, labels\\) pairs"):
        evaluator.fit("accuracy")
    evaluator.b_dataloader = [(np.ones((2, 5), np.float32), np.zeros(2))]
    with pytest.raises(DataError, match="axis 1 must be 4, got 5"):
        evaluator.fit()
    evaluator.model = object()  # not ONNX: goes to lpot_ir.frontends.to_onnx, which cannot tell its framework
    with pytest.raises(ConversionError, match="Cannot tell the framework"):
        evaluator.fit()
    too_many = len(available_cores()) + 1
    evaluator = Benchmark({"evaluation": {"performance": {"configs": {"cores_per_instance": too_many}}}})
    evaluator.model = model
    evaluator.b_dataloader = batches
    with pytest.raises(ConfigError, match=f"cores_per_instance \\({too_many}\\) x num_of_instance \\(1\\)"):
        evaluator.fit()


@pytest.mark.slow
def test_framework_model_goes_through_the_converter_hook():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, N_CLASSES), torch.nn.Softmax(-1)).eval()
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((BATCH, N_FEATURES)).astype(np.float32), rng.integers(0, N_CLASSES, BATCH))
               for _ in range(3)]
    evaluator = Benchmark({"evaluation": {"accuracy": {"metric": {"topk": 1}}}})
    evaluator.model = net
    evaluator.b_dataloader = batches
    result = evaluator.fit("accuracy")
    with torch.no_grad():
        expected = np.mean([net(torch.from_numpy(x)).argmax(1).numpy() == y for x, y in batches])
    assert result.accuracy == pytest.approx(expected) and result.samples == 3 * BATCH
