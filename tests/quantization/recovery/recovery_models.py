"""Small real models for the recovery tests: built with onnx.helper, run in ONNX Runtime, fixed seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def build(
    nodes: Sequence[onnx.NodeProto],
    input_shape: Sequence[int | str],
    output: str,
    initializers: Mapping[str, np.ndarray],
    extra_outputs: Sequence[str] = (),
) -> onnx.ModelProto:
    """A float model with one input ``x`` and float output ``output`` (plus untyped ``extra_outputs``)."""
    graph = helper.make_graph(
        list(nodes),
        "recovery_test",
        [helper.make_tensor_value_info("x", FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output, FLOAT, None), *(onnx.ValueInfoProto(name=n) for n in extra_outputs)],
        [numpy_helper.from_array(np.asarray(a, dtype=np.float32), n) for n, a in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv 3x3 (3->8) -> Relu -> depthwise 3x3 (no bias) -> Relu -> Conv 1x1 (8->16) -> Add residual-free
    -> GlobalAveragePool -> Flatten -> Gemm (16->10): the layer kinds of a mobile CNN, on 3x16x16 images."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)),
        "b1": rng.normal(0, 0.1, 8),
        "w2": rng.normal(0, 0.3, (8, 1, 3, 3)),
        "w3": rng.normal(0, 0.3, (16, 8, 1, 1)),
        "b3": rng.normal(0, 0.1, 16),
        "wf": rng.normal(0, 0.3, (10, 16)),
        "bf": rng.normal(0, 0.1, 10),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pw"),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    return build(nodes, ["N", 3, 16, 16], "y", inits)


def images(count: int, seed: int, shape: Sequence[int] = (3, 16, 16)) -> np.ndarray:
    """Smooth random images (low-frequency noise), like photos more than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (count, shape[0], shape[1] // 4, shape[2] // 4))
    fine = np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)
    return (fine + 0.3 * rng.normal(0, 1, (count, *shape))).astype(np.float32)


def batches(data: np.ndarray, size: int = 8) -> list[tuple[np.ndarray, None]]:
    """LPOT-style (inputs, labels) batches."""
    return [(data[i : i + size], None) for i in range(0, len(data), size)]


def run(model: onnx.ModelProto, x: np.ndarray, outputs: Sequence[str] | None = None) -> list[np.ndarray]:
    """Run ``model`` on input ``x`` with one thread; ``outputs`` may name any tensor of the main graph."""
    if outputs:
        known = {o.name for o in model.graph.output}
        extra = [n for n in outputs if n not in known]
        if extra:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
            model = copy
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(list(outputs) if outputs else None, {"x": x})


def shifted_depthwise(seed: int = 0, channels: int = 8) -> onnx.ModelProto:
    """A depthwise 3x3 conv without bias whose per-tensor INT8 weights round with a systematic error.

    One large weight sets a coarse per-tensor grid (step ~0.016 for weights ~0.1), so each channel's rounding
    errors sum to a non-zero offset; on positive inputs (mean 0.5) that offset shifts the channel's mean output.
    """
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.1, (channels, 1, 3, 3))
    weight[0, 0, 1, 1] = 2.0
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="dw", pads=[1, 1, 1, 1], group=channels)
    return build([node], ["N", channels, 12, 12], "y", {"w": weight})


def positive_inputs(count: int, seed: int, shape: Sequence[int] = (8, 12, 12)) -> np.ndarray:
    """Uniform [0, 1) activations of ``shape`` per sample, like the output of a ReLU."""
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


def shifted_linear(kind: str, seed: int = 0, features: int = 32, outputs: int = 24) -> onnx.ModelProto:
    """``MatMul -> Add(bias)`` (``kind="matmul"``, the transformer form) or ``Gemm`` without bias (``"gemm"``)
    on inputs ``[N, 16, features]`` / ``[N, features]``, with the coarse per-tensor weight grid of
    :func:`shifted_depthwise`."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.1, (features, outputs))
    weight[0, 0] = 2.0
    if kind == "matmul":
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
            helper.make_node("Add", ["mm", "b"], ["y"], name="bias_add"),
        ]
        return build(nodes, ["N", 16, features], "y", {"w": weight, "b": rng.normal(0, 0.1, outputs)})
    return build([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], ["N", features], "y", {"w": weight})


def outlier_inputs(count: int, seed: int) -> np.ndarray:
    """``[count, 4, 8, 8]`` Gaussian activations; channel 0 has rare large outliers (~0.5% of its values, ~25x)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (count, 4, 8, 8)).astype(np.float32)
    spikes = rng.random((count, 8, 8)) < 0.005
    x[:, 0][spikes] = 25.0
    return x


def pointwise(outlier_weight: float, seed: int = 0) -> onnx.ModelProto:
    """A 1x1 conv (4 -> 8 channels) whose weights reading input channel 0 are scaled by ``outlier_weight``."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.5, (8, 4, 1, 1))
    weight[:, 0] *= outlier_weight
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="pw")
    return build([node], ["N", 4, 8, 8], "y", {"w": weight, "b": np.zeros(8)})
