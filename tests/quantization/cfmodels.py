"""Small models with control flow for the tests: an If (nested If inside) on a scalar mode input, a Loop,
a Scan, a Loop whose body values change shape, and a Loop with an If in its body."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


class _Weights:
    """Deterministic weights: each model draws from its own generator, so every call builds the same model."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int, scale: float = 0.3) -> np.ndarray:
        return (self.rng.normal(size=shape) * scale).astype(np.float32)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def if_model() -> onnx.ModelProto:
    """``y = If(mode == 16) then A(h) else B(h)``, ``h = Relu(Conv(x))`` in the main graph.

    * then_branch: Conv -> Relu -> GlobalAveragePool -> Flatten -> inner If (sum of x > 0) with a MatMul in
      each branch (weights in the branches);
    * else_branch: Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul whose weight ``Me`` is a main-graph
      initializer read from the outer scope.
    """
    weights = _Weights(1)
    inner_then = helper.make_graph(
        [helper.make_node("MatMul", ["t_flat", "Mi1"], ["i1_out"], name="inner_then_matmul")], "inner_then", [],
        [helper.make_tensor_value_info("i1_out", FLOAT, ["N", 5])], [numpy_helper.from_array(weights(6, 5), "Mi1")],
    )
    inner_else = helper.make_graph(
        [helper.make_node("MatMul", ["t_flat", "Mi2"], ["i2_out"], name="inner_else_matmul")], "inner_else", [],
        [helper.make_tensor_value_info("i2_out", FLOAT, ["N", 5])], [numpy_helper.from_array(weights(6, 5), "Mi2")],
    )
    then_graph = helper.make_graph(
        [
            helper.make_node("Conv", ["h", "Wt", "Bt"], ["t_conv"], pads=[1, 1, 1, 1], name="then_conv"),
            helper.make_node("Relu", ["t_conv"], ["t_relu"], name="then_relu"),
            helper.make_node("GlobalAveragePool", ["t_relu"], ["t_pool"], name="then_pool"),
            helper.make_node("Flatten", ["t_pool"], ["t_flat"], name="then_flatten"),
            helper.make_node("If", ["positive"], ["t_out"], then_branch=inner_then, else_branch=inner_else,
                             name="inner_if"),
        ],
        "then", [], [helper.make_tensor_value_info("t_out", FLOAT, ["N", 5])],
        [numpy_helper.from_array(weights(6, 8, 3, 3, scale=0.2), "Wt"), numpy_helper.from_array(weights(6), "Bt")],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Conv", ["h", "We"], ["e_conv"], name="else_conv"),
            helper.make_node("Relu", ["e_conv"], ["e_relu"], name="else_relu"),
            helper.make_node("GlobalAveragePool", ["e_relu"], ["e_pool"], name="else_pool"),
            helper.make_node("Flatten", ["e_pool"], ["e_flat"], name="else_flatten"),
            helper.make_node("MatMul", ["e_flat", "Me"], ["e_out"], name="else_matmul"),
        ],
        "else", [], [helper.make_tensor_value_info("e_out", FLOAT, ["N", 5])],
        [numpy_helper.from_array(weights(6, 8, 1, 1), "We")],
    )
    nodes = [
        helper.make_node("Conv", ["x", "W0"], ["h0"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["h0"], ["h"], name="relu0"),
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="total"),
        helper.make_node("Greater", ["total", "zero"], ["positive"], name="positive"),
        helper.make_node("Equal", ["mode", "sixteen"], ["is16"], name="is16"),
        helper.make_node("If", ["is16"], ["y"], then_branch=then_graph, else_branch=else_graph, name="mode_if"),
    ]
    graph = helper.make_graph(
        nodes, "if_model",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("mode", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 5])],
        [numpy_helper.from_array(weights(8, 3, 3, 3), "W0"), numpy_helper.from_array(weights(6, 5), "Me"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
         numpy_helper.from_array(np.array(16, np.int64), "sixteen")],
    )
    return _model(graph)


def if_feed(mode: int, shift: float, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A feed of :func:`if_model`: ``shift`` decides the inner If (the sign of the sum of x)."""
    x = np.random.default_rng(seed).normal(size=(batch, 3, 8, 8)).astype(np.float32) + np.float32(shift)
    return {"x": x, "mode": np.array(mode, np.int64)}


def _loop_io(shape: list[int | str]) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
              helper.make_tensor_value_info("v_in", FLOAT, shape)]
    outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
               helper.make_tensor_value_info("v_out", FLOAT, shape)]
    return inputs, outputs


def loop_model(trips: int = 3) -> onnx.ModelProto:
    """``h = x @ W``; ``trips`` times: ``v = Relu(v @ Wl1) @ Wl2 + v`` (a Loop body with two MatMuls)."""
    weights = _Weights(2)
    inputs, outputs = _loop_io(["N", 8])
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["v_in", "Wl1"], ["b_mm1"], name="loop_matmul1"),
            helper.make_node("Relu", ["b_mm1"], ["b_relu"], name="loop_relu"),
            helper.make_node("MatMul", ["b_relu", "Wl2"], ["b_mm2"], name="loop_matmul2"),
            helper.make_node("Add", ["b_mm2", "v_in"], ["v_out"], name="loop_add"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
        ],
        "loop_body", inputs, outputs,
        [numpy_helper.from_array(weights(8, 8), "Wl1"), numpy_helper.from_array(weights(8, 8), "Wl2")],
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
         helper.make_node("Loop", ["trips", "", "h"], ["y"], body=body, name="loop")],
        "loop_model", [helper.make_tensor_value_info("x", FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 8])],
        [numpy_helper.from_array(weights(8, 8), "W"), numpy_helper.from_array(np.array(trips, np.int64), "trips")],
    )
    return _model(graph)


def loop_reference(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """The value of ``b_mm1`` in each iteration of :func:`loop_model`, computed with numpy."""
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    body = next(a.g for a in model.graph.node[1].attribute if a.name == "body")
    arrays.update({t.name: numpy_helper.to_array(t) for t in body.initializer})
    v = x @ arrays["W"]
    values = []
    for _ in range(int(arrays["trips"])):
        m1 = v @ arrays["Wl1"]
        values.append(m1)
        v = np.maximum(m1, 0) @ arrays["Wl2"] + v
    return values


def scan_model() -> onnx.ModelProto:
    """An RNN cell as a Scan over the first axis of ``x`` [T, N, 8]: ``s = Relu(s @ Ws + x_t @ Wx)``."""
    weights = _Weights(3)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["s_in", "Ws"], ["c_state"], name="scan_state_matmul"),
            helper.make_node("MatMul", ["x_t", "Wx"], ["c_input"], name="scan_input_matmul"),
            helper.make_node("Add", ["c_state", "c_input"], ["c_sum"], name="scan_add"),
            helper.make_node("Relu", ["c_sum"], ["s_out"], name="scan_relu"),
            helper.make_node("Identity", ["s_out"], ["y_t"], name="scan_out"),
        ],
        "scan_body",
        [helper.make_tensor_value_info("s_in", FLOAT, ["N", 8]), helper.make_tensor_value_info("x_t", FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("s_out", FLOAT, ["N", 8]), helper.make_tensor_value_info("y_t", FLOAT, ["N", 8])],
        [numpy_helper.from_array(weights(8, 8, scale=0.25), "Ws"), numpy_helper.from_array(weights(8, 8), "Wx")],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["s0", "x"], ["s_final", "ys"], body=body, num_scan_inputs=1, name="scan")],
        "scan_model",
        [helper.make_tensor_value_info("s0", FLOAT, ["N", 8]), helper.make_tensor_value_info("x", FLOAT, ["T", "N", 8])],
        [helper.make_tensor_value_info("s_final", FLOAT, ["N", 8]), helper.make_tensor_value_info("ys", FLOAT, ["T", "N", 8])],
    )
    return _model(graph)


def growing_loop_model() -> onnx.ModelProto:
    """A Loop whose carried value grows by one row per iteration: its body values change shape."""
    weights = _Weights(4)
    inputs, outputs = _loop_io(["K", 4])
    body = helper.make_graph(
        [
            helper.make_node("Concat", ["v_in", "row"], ["g_cat"], axis=0, name="grow_concat"),
            helper.make_node("MatMul", ["g_cat", "Wg"], ["v_out"], name="grow_matmul"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="grow_cond"),
        ],
        "grow_body", inputs, outputs,
        [numpy_helper.from_array(weights(4, 4), "Wg"), numpy_helper.from_array(weights(1, 4), "row")],
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
         helper.make_node("Loop", ["trips", "", "h"], ["y"], body=body, name="grow_loop")],
        "growing", [helper.make_tensor_value_info("x", FLOAT, ["K", 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["L", 4])],
        [numpy_helper.from_array(weights(4, 4), "W"), numpy_helper.from_array(np.array(3, np.int64), "trips")],
    )
    return _model(graph)


def if_in_loop_model() -> onnx.ModelProto:
    """A Loop whose body holds an If (on the iteration number) with a MatMul in one branch."""
    weights = _Weights(5)
    inputs, outputs = _loop_io(["N", 4])
    even = helper.make_graph(
        [helper.make_node("MatMul", ["v_in", "Wb"], ["even_out"], name="even_matmul")], "even", [],
        [helper.make_tensor_value_info("even_out", FLOAT, ["N", 4])], [numpy_helper.from_array(weights(4, 4), "Wb")],
    )
    odd = helper.make_graph(
        [helper.make_node("Neg", ["v_in"], ["odd_out"], name="odd_neg")], "odd", [],
        [helper.make_tensor_value_info("odd_out", FLOAT, ["N", 4])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Mod", ["i", "two"], ["parity"], name="parity"),
            helper.make_node("Equal", ["parity", "zero_i"], ["is_even"], name="is_even"),
            helper.make_node("If", ["is_even"], ["v_out"], then_branch=even, else_branch=odd, name="body_if"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
        ],
        "body", inputs, outputs,
        [numpy_helper.from_array(np.array(2, np.int64), "two"), numpy_helper.from_array(np.array(0, np.int64), "zero_i")],
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
         helper.make_node("Loop", ["trips", "", "h"], ["y"], body=body, name="loop")],
        "if_in_loop", [helper.make_tensor_value_info("x", FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4])],
        [numpy_helper.from_array(weights(4, 4), "W"), numpy_helper.from_array(np.array(3, np.int64), "trips")],
    )
    return _model(graph)
