"""``summarize_model``: parameter counts and bytes are integers (JSON ints), 4-bit tensors packed."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.inspection import summarize_model


def _model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")  # 12 elements, 48 bytes
    packed = helper.make_tensor("P", TensorProto.UINT4, [3], [1, 2, 3])  # 3 elements, 2 bytes packed
    shape = numpy_helper.from_array(np.array([5], np.int64), "shape")  # int64: not a parameter
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2, np.float16))),  # 4 bytes
        helper.make_node("ConstantOfShape", ["shape"], ["z"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),  # 20 bytes
        helper.make_node("MatMul", ["x", "W"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [weight, packed, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_parameter_bytes_are_integers():
    summary = summarize_model(_model())
    assert summary.parameters == 12 + 3 + 2 + 5
    assert summary.parameter_bytes == 48 + 2 + 4 + 20
    assert type(summary.parameter_bytes) is int
    assert '"parameter_bytes": 74}' in json.dumps(summary.to_dict())
