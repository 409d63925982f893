"""Models for the mixed-precision tests: a small transformer encoder built with onnx.helper, and its inputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def transformer_encoder(
    *, layers: int = 2, seq: int = 16, hidden: int = 64, heads: int = 4, ffn: int = 128, classes: int = 8, seed: int = 0
) -> onnx.ModelProto:
    """A pre-LN transformer encoder (multi-head attention + GELU feed-forward, residuals) and a classifier
    head on the mean over tokens; weights are random with 1/sqrt(fan-in) scale (opset 17).

    Input ``x`` [batch, seq, hidden] float32; output ``logits`` [batch, classes].
    """
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    head_dim = hidden // heads

    def weight(name: str, *shape: int, scale: float | None = None) -> str:
        fan_in = shape[0] if len(shape) > 1 else 1
        std = scale if scale is not None else 1.0 / np.sqrt(fan_in)
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name))
        return name

    def const(name: str, value: object, dtype: type = np.int64) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    split_heads = const("split_heads", [0, seq, heads, head_dim])
    merge_heads = const("merge_heads", [0, seq, hidden])
    scale = const("attn_scale", np.sqrt(head_dim), np.float32)
    sqrt2 = const("sqrt2", np.sqrt(2.0), np.float32)
    one = const("one", 1.0, np.float32)
    half = const("half", 0.5, np.float32)
    x = "x"
    for i in range(layers):
        p = f"l{i}"
        ln1 = node("LayerNormalization", [x, weight(f"{p}.ln1.g", hidden, scale=0.1), weight(f"{p}.ln1.b", hidden, scale=0.1)],
                   f"{p}/ln1", axis=-1)
        heads_out = {}
        for part in ("q", "k", "v"):
            mm = node("MatMul", [ln1, weight(f"{p}.{part}.w", hidden, hidden)], f"{p}/{part}/MatMul")
            add = node("Add", [mm, weight(f"{p}.{part}.b", hidden, scale=0.02)], f"{p}/{part}/Add")
            shaped = node("Reshape", [add, split_heads], f"{p}/{part}/Reshape")
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            heads_out[part] = node("Transpose", [shaped], f"{p}/{part}/Transpose", perm=perm)
        scores = node("MatMul", [heads_out["q"], heads_out["k"]], f"{p}/attn/scores")
        scaled = node("Div", [scores, scale], f"{p}/attn/scaled")
        probs = node("Softmax", [scaled], f"{p}/attn/softmax", axis=-1)
        context = node("MatMul", [probs, heads_out["v"]], f"{p}/attn/context")
        merged = node("Reshape", [node("Transpose", [context], f"{p}/attn/merge_t", perm=[0, 2, 1, 3]), merge_heads],
                      f"{p}/attn/merge")
        proj = node("Add", [node("MatMul", [merged, weight(f"{p}.o.w", hidden, hidden)], f"{p}/o/MatMul"),
                            weight(f"{p}.o.b", hidden, scale=0.02)], f"{p}/o/Add")
        x = node("Add", [x, proj], f"{p}/residual1")
        ln2 = node("LayerNormalization", [x, weight(f"{p}.ln2.g", hidden, scale=0.1), weight(f"{p}.ln2.b", hidden, scale=0.1)],
                   f"{p}/ln2", axis=-1)
        up = node("Add", [node("MatMul", [ln2, weight(f"{p}.fc1.w", hidden, ffn)], f"{p}/fc1/MatMul"),
                          weight(f"{p}.fc1.b", ffn, scale=0.02)], f"{p}/fc1/Add")
        erf = node("Erf", [node("Div", [up, sqrt2], f"{p}/gelu/div")], f"{p}/gelu/erf")
        gelu = node("Mul", [node("Mul", [up, node("Add", [erf, one], f"{p}/gelu/add")], f"{p}/gelu/mul"), half],
                    f"{p}/gelu/out")
        down = node("Add", [node("MatMul", [gelu, weight(f"{p}.fc2.w", ffn, hidden)], f"{p}/fc2/MatMul"),
                            weight(f"{p}.fc2.b", hidden, scale=0.02)], f"{p}/fc2/Add")
        x = node("Add", [x, down], f"{p}/residual2")
    final = node("LayerNormalization", [x, weight("final.g", hidden, scale=0.1), weight("final.b", hidden, scale=0.1)],
                 "final/ln", axis=-1)
    pooled = node("ReduceMean", [final], "pool/mean", axes=[1], keepdims=0)
    logits = node("Gemm", [pooled, weight("head.w", hidden, classes), weight("head.b", classes, scale=0.02)], "logits")
    graph = helper.make_graph(
        nodes, "transformer", [helper.make_tensor_value_info("x", FLOAT, ["batch", seq, hidden])],
        [helper.make_tensor_value_info(logits, FLOAT, ["batch", classes])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def encoder_inputs(count: int, *, seq: int = 16, hidden: int = 64, seed: int = 1) -> np.ndarray:
    """``count`` token-embedding sequences [count, seq, hidden] (unit normal)."""
    return np.random.default_rng(seed).standard_normal((count, seq, hidden)).astype(np.float32)


def two_matmuls(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """``y = Relu(x @ w1) @ w2`` with x [batch, w1.shape[0]] (opset 17)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes, "two_matmuls", [helper.make_tensor_value_info("x", FLOAT, ["batch", w1.shape[0]])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", w2.shape[1]])],
        [numpy_helper.from_array(w1.astype(np.float32), "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
