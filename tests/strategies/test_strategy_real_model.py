"""basic and mse on a real model: an MLP trained on sklearn's digits, quantized by ModelQuantizer, run in ORT.

The MLP has two hidden layers with one outlier channel each (the unit's incoming weights scaled up by
300, its outgoing weights scaled down by 300: the FP32 function is unchanged because ReLU is positively
homogeneous, but per-tensor u8 activations lose almost all resolution on those layers), so INT8 loses
~30 points of accuracy and only falling back the right ops meets a 1% goal. The context below measures
accuracy with ONNX Runtime on held-out digits and op sensitivity as the relative error of every
quantizable node's output between the FP32 and the INT8 model, in one run over 64 calibration samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.quantizer import ModelQuantizer
from lpot_ir.strategies import TuningSpace, get_strategy
from tests.strategies.synthetic import drive, inc_basic_trials

pytestmark = pytest.mark.slow


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model


@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]
    clf = MLPClassifier((48, 48, 48, 48), max_iter=300, random_state=0).fit(x_train, y_train)
    weights = [w.astype(np.float32) for w in clf.coefs_]
    biases = [b.astype(np.float32) for b in clf.intercepts_]
    for layer in (1, 3):  # outlier channels, FP32 function unchanged
        weights[layer][:, 0] *= 300
        biases[layer][0] *= 300
        weights[layer + 1][0, :] /= 300
    nodes, inits, current = [], [], "x"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"], name=f"fc{i}"))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"bias{i}"))
        current = f"a{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"], name=f"relu{i}"))
            current = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calib = [(x_train[i : i + 50], y_train[i : i + 50]) for i in range(0, 200, 50)]
    quantizer = ModelQuantizer(model, calib)
    return quantizer, x_train[:64], x_test, y_test


@dataclass
class OrtContext:
    """A StrategyContext on real quantized models run in ONNX Runtime."""

    quantizer: ModelQuantizer
    probe: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    baseline_accuracy: float = 0.0
    sensitivity_calls: int = 0

    def __post_init__(self) -> None:
        self.fp32 = to_proto(self.quantizer.fp32_model)
        self.baseline_accuracy = self._accuracy(self.fp32)
        graph = {n.name: n for n in self.quantizer.fp32_model.graph}
        self.outputs = {q.name: graph[q.name].outputs[0].name for q in self.quantizer.nodes}
        self.fp32_values = self._run(self.fp32)

    def _accuracy(self, model: onnx.ModelProto) -> float:
        logits = _session(model).run(None, {"x": self.x_test})[0]
        return float((logits.argmax(1) == self.y_test).mean())

    def _run(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        names = list(self.outputs.values())
        session = _session(_with_outputs(model, names))
        values = session.run(names, {"x": self.probe})
        return dict(zip(names, values, strict=True))

    def meets_goal(self, accuracy: float) -> bool:
        return accuracy >= self.baseline_accuracy * 0.99

    def accuracy(self, config: TuningConfig) -> float:
        return self._accuracy(self.quantizer.quantize(config).model)

    def op_sensitivity(self, config: TuningConfig) -> dict[str, float]:
        self.sensitivity_calls += 1
        int8 = self._run(self.quantizer.quantize(config).model)
        out = {}
        for node, value in self.outputs.items():
            ref = self.fp32_values[value]
            out[node] = float(np.mean((int8[value] - ref) ** 2) / (np.mean(ref**2) + 1e-12))
        return out


def test_basic_on_a_real_model(digits_mlp):
    quantizer, probe, x_test, y_test = digits_mlp
    context = OrtContext(quantizer, probe, x_test, y_test)
    space = TuningSpace(tuple(quantizer.nodes), base=TuningConfig(calib_sampling_size=200))
    int8 = context.accuracy(space.model_wise_configs()[0])
    assert int8 < context.baseline_accuracy * 0.95  # the outliers really hurt INT8

    results = drive(get_strategy("basic")(space, context), context, max_trials=50)
    to_goal = next(r.index + 1 for r in results if r.meets_goal)
    inc = inc_basic_trials(space, context)
    assert 2 * to_goal <= inc, (to_goal, inc)
    best = min((r for r in results if r.meets_goal), key=lambda r: len(space.fp32_nodes(r.config)))
    assert len(space.fp32_nodes(best.config)) <= 3  # the outlier layers' ops, not the whole model
    keys = [r.config.key() for r in results]
    assert len(keys) == len(set(keys))


def test_mse_on_a_real_model(digits_mlp):
    quantizer, probe, x_test, y_test = digits_mlp
    context = OrtContext(quantizer, probe, x_test, y_test)
    space = TuningSpace(tuple(quantizer.nodes), base=TuningConfig(calib_sampling_size=200))
    results = drive(get_strategy("mse")(space, context), context, max_trials=50)
    assert results[-1].meets_goal
    assert context.sensitivity_calls == 1
    assert len(results) < 1 + len(space.nodes)
