"""Tiny real ONNX models for the ONNX Runtime backend tests."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

W = np.array([[1.0, -2.0], [0.5, 0.25], [-1.0, 3.0]], dtype=np.float32)


def two_input_model() -> onnx.ModelProto:
    """out = (x + y) @ W with x, y float32 [N, 3] (N symbolic) and W a 3x2 initializer."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("MatMul", ["s", "W"], ["out"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session")
def add_matmul_model() -> onnx.ModelProto:
    return two_input_model()
