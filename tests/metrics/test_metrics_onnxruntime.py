"""End to end: a YAML evaluation section drives a real ONNX Runtime session (dataloader -> model -> metric)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.config import create_dataloader, load_config
from lpot_ir.data import create_postprocess
from lpot_ir.metrics import create_metric


def make_linear_classifier(weight: np.ndarray, bias: np.ndarray) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"], name="fc")],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weight.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", weight.shape[1]])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def test_yaml_evaluation_section_on_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(6, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    inputs = rng.normal(size=(10, 6)).astype(np.float32)
    predicted = (inputs @ weight + bias).argmax(axis=1)
    labels = predicted.copy()
    labels[:3] = (labels[:3] + 1) % 4  # 3 of 10 wrong
    np.savez(
        tmp_path / "eval.npz", x=inputs, labels=labels + 1
    )  # stored shifted by one, as 1001-class sets are
    config = load_config(
        {
            "model": {"name": "linear", "framework": "onnxrt_qdq"},
            "evaluation": {
                "accuracy": {
                    "metric": {"topk": 1},
                    "dataloader": {
                        "batch_size": 4,
                        "dataset": {"numpy": {"path": str(tmp_path / "eval.npz")}},
                    },
                    "postprocess": {"transform": {"LabelShift": {"label_shift": 1}}},
                }
            },
        }
    )
    accuracy = config.evaluation.accuracy
    assert accuracy is not None and accuracy.dataloader is not None and accuracy.metric is not None
    session = ort.InferenceSession(make_linear_classifier(weight, bias), providers=["CPUExecutionProvider"])
    metric = create_metric(accuracy.metric)
    postprocess = create_postprocess(accuracy.postprocess.transform if accuracy.postprocess else None)
    batches = 0
    for batch_inputs, batch_labels in create_dataloader(accuracy.dataloader):
        outputs = session.run(None, {"x": batch_inputs})
        metric.update(*postprocess(outputs, batch_labels))
        batches += 1
    assert batches == 3
    assert metric.result() == 0.7
