"""synthetic_inputs / synthetic_shapes / parse_shape_overrides."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lpot_ir.backends.onnxruntime import (
    make_session,
    parse_shape_overrides,
    synthetic_inputs,
    synthetic_shapes,
)
from lpot_ir.errors import DataError


@pytest.fixture(scope="module")
def mixed_model() -> onnx.ModelProto:
    """image: float16 [batch, 3, H, 5]; ids: int64 [batch, ?]; flag: bool [2]; unranked: float32 (no shape)."""
    unranked = helper.make_tensor_value_info("unranked", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["image"], ["o1"]),
            helper.make_node("Identity", ["ids"], ["o2"]),
            helper.make_node("Not", ["flag"], ["o3"]),
            helper.make_node("Identity", ["unranked"], ["o4"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT16, ["batch", 3, "H", 5]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", None]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, [2]),
            unranked,
        ],
        [
            helper.make_tensor_value_info("o1", TensorProto.FLOAT16, None),
            helper.make_tensor_value_info("o2", TensorProto.INT64, None),
            helper.make_tensor_value_info("o3", TensorProto.BOOL, None),
            helper.make_tensor_value_info("o4", TensorProto.FLOAT, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_synthetic_inputs_respect_dtypes_static_and_dynamic_dims(mixed_model):
    feed = synthetic_inputs(mixed_model, batch_size=4, seed=3)
    assert {k: v.shape for k, v in feed.items()} == {
        "image": (4, 3, 1, 5), "ids": (4, 1), "flag": (2,), "unranked": (4,)
    }
    assert {k: v.dtype for k, v in feed.items()} == {
        "image": np.float16, "ids": np.int64, "flag": np.bool_, "unranked": np.float32
    }
    assert set(np.unique(feed["ids"])) <= {0, 1}
    again = synthetic_inputs(mixed_model, batch_size=4, seed=3)
    assert all(np.array_equal(feed[k], again[k]) for k in feed)
    assert not np.array_equal(feed["image"], synthetic_inputs(mixed_model, batch_size=4, seed=4)["image"])
    # The feed runs in ONNX Runtime as is.
    outputs = make_session(mixed_model).run(None, feed)
    np.testing.assert_array_equal(outputs[2], ~feed["flag"])


def test_shape_overrides(mixed_model):
    shapes = synthetic_shapes(mixed_model, batch_size=2, shapes={"image": (1, 3, 7, 5), "ids": [2, 9]})
    assert shapes["image"] == (1, 3, 7, 5) and shapes["ids"] == (2, 9)
    with pytest.raises(DataError, match=r"does not fit the model's shape \(batch, 3, H, 5\)"):
        synthetic_shapes(mixed_model, shapes={"image": (1, 4, 7, 5)})
    with pytest.raises(DataError, match="'nope' that the model does not have"):
        synthetic_shapes(mixed_model, shapes={"nope": (1,)})


def test_parse_shape_overrides():
    assert parse_shape_overrides(["data:1x3x224x224", "ids:2,7"]) == {"data": (1, 3, 224, 224), "ids": (2, 7)}
    assert parse_shape_overrides(["4x3"], ["x"]) == {"x": (4, 3)}
    with pytest.raises(DataError, match="has no input name"):
        parse_shape_overrides(["4x3"], ["x", "y"])
    with pytest.raises(DataError, match="positive integer dims"):
        parse_shape_overrides(["x:4xa"])
    with pytest.raises(DataError, match="positive integer dims"):
        parse_shape_overrides(["x:0x3"])
