"""The suite's peer glue that runs in every venv (benchmarks/suite/peers): the If-specialization rewrite
the peers get for Silero VAD, the goal test and the quantized-node count.

The models are built here (no package data): a sample-rate switch like Silero VAD's (a top-level If on a
scalar input, a Constant-held weight, and inside the taken branch a shape-test If like PyTorch's
``squeeze(dim)`` export), run by ONNX Runtime before and after the rewrite.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from suite.peers.driver_common import goal_met, quantized_node_count  # noqa: E402
from suite.peers.graph_fixes import prepare_peer_model  # noqa: E402


def _switch_model() -> onnx.ModelProto:
    """y = (sr == 16000) ? (first dim of x == 2 ? relu(x) * w : -x) : x + 1, w held by a Constant node."""
    weight = np.arange(1, 4, dtype=np.float32)
    shape_test = helper.make_graph(
        [
            helper.make_node("Shape", ["h"], ["shape"]),
            helper.make_node(
                "Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.int64))
            ),
            helper.make_node("Gather", ["shape", "zero"], ["dim0"]),
            helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array([2], np.int64))),
            helper.make_node("Equal", ["dim0", "two"], ["is_two"]),
            helper.make_node(
                "If",
                ["is_two"],
                ["inner"],
                then_branch=helper.make_graph(
                    [helper.make_node("Identity", ["h"], ["kept"])],
                    "keep",
                    [],
                    [helper.make_tensor_value_info("kept", TensorProto.FLOAT, ["rows", 3])],
                ),
                else_branch=helper.make_graph(
                    [helper.make_node("Neg", ["h"], ["negated"])],
                    "negate",
                    [],
                    [helper.make_tensor_value_info("negated", TensorProto.FLOAT, ["rows", 3])],
                ),
            ),
        ],
        "rate16k",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, ["rows", 3])],
    )
    shape_test.node.insert(0, helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weight)))
    shape_test.node.insert(1, helper.make_node("Relu", ["x"], ["r"]))
    shape_test.node.insert(2, helper.make_node("Mul", ["r", "w"], ["h"]))
    other_rate = helper.make_graph(
        [
            helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.float32))),
            helper.make_node("Add", ["x", "one"], ["shifted"]),
        ],
        "rate8k",
        [],
        [helper.make_tensor_value_info("shifted", TensorProto.FLOAT, ["rows", 3])],
    )
    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))
            ),
            helper.make_node("Equal", ["sr", "rate"], ["is_16k"]),
            helper.make_node("If", ["is_16k"], ["y"], then_branch=shape_test, else_branch=other_rate),
        ],
        "switch",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})[0]


def _feeds(rates: list[int], rows: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {"x": rng.normal(size=(rows, 3)).astype(np.float32), "sr": np.array(rate, np.int64)} for rate in rates
    ]


def test_ifs_taken_the_same_way_on_every_feed_are_inlined_and_compute_the_same() -> None:
    model = _switch_model()
    feeds = _feeds([16000] * 4)
    peer = prepare_peer_model(model, feeds)
    graph = peer.model.graph
    assert [n.op_type for n in graph.node if n.op_type in ("If", "Constant")] == []
    assert "w" in {init.name for init in graph.initializer}  # the Constant-held weight, as an initializer
    assert [i.name for i in graph.input] == ["x"] and [i.name for i in peer.dropped_inputs] == ["sr"]
    restored = peer.restore_interface(peer.model)
    assert [i.name for i in restored.graph.input] == ["x", "sr"]
    for feed in feeds:
        expected = _run(model, feed)
        np.testing.assert_array_equal(_run(peer.model, peer.feed(feed)), expected)
        np.testing.assert_array_equal(_run(restored, feed), expected)
    assert peer.notes and "2 If nodes" in peer.notes[0]


def test_an_if_that_branches_differently_across_feeds_is_kept() -> None:
    model = _switch_model()
    peer = prepare_peer_model(model, _feeds([16000, 8000]))
    assert peer.model is model and not peer.dropped_inputs and not peer.notes
    # the top If is constant but the inner shape test is not (2 rows, then 3 rows): only the top goes
    mixed = _feeds([16000]) + _feeds([16000], rows=3)
    peer = prepare_peer_model(model, mixed)
    assert [n.op_type for n in peer.model.graph.node].count("If") == 1
    for feed in mixed:
        np.testing.assert_array_equal(_run(peer.model, peer.feed(feed)), _run(model, feed))


def test_goal_and_quantized_node_count() -> None:
    assert goal_met(0.90, 0.8911, 0.01, True) and not goal_met(0.90, 0.8909, 0.01, True)
    assert goal_met(0.20, 0.2019, 0.01, False) and not goal_met(0.20, 0.2021, 0.01, False)
    assert not goal_met(None, 0.9, 0.01, True)
    model = _switch_model()
    assert quantized_node_count(model) == 0
    then_graph = model.graph.node[2].attribute[0].g
    then_graph.node.append(helper.make_node("DynamicQuantizeLinear", ["h"], ["q", "s", "z"]))
    assert quantized_node_count(model) == 1  # found inside the subgraph
