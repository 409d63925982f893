"""An op kept in FP32 after an INT8 neighbour stays FP32 in ONNX Runtime.

ORT's ``WeightBiasQuantization`` (graph optimization level 1 and up) quantizes, per tensor, the float
weight of any Conv/ConvTranspose/Gemm whose input comes from a per-tensor ``DequantizeLinear``: without
the ``KeepFp32WeightsOf*`` rules (``avoid-slow-ort-fusions``) an FP32 fallback reading an INT8
neighbour's output would silently run with per-tensor INT8 weights. Here the fallback's output channels
have weights spanning three decades, so a per-tensor weight scale rounds the small channels to zero.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from qhelpers import make_model

from lpot_ir.ir.quant import TuningConfig
from lpot_ir.quantizer import quantize

C = 8
SPREAD = np.logspace(-3, 0, C).astype(np.float32)  # output channels' weight magnitudes, 0.001 .. 1


def _model(op_type: str) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """``first`` -> Relu -> ``a``, read by the FP32 fallback ``middle`` (output ``y``) and by the INT8
    ``side``, so that ``a`` is quantized and ``middle`` reads it through a DequantizeLinear; ``middle``'s
    output is read by the INT8 ``after``, so it goes on into a QuantizeLinear (what ORT's rule matches)."""
    rng = np.random.default_rng(0)
    if op_type == "Conv":
        shape = (1, C, 8, 8)
        inits = {
            "w1": rng.normal(0, 0.3, (C, C, 1, 1)).astype(np.float32),
            "w2": (rng.normal(0, 1, (C, 1, 3, 3)) * SPREAD[:, None, None, None]).astype(np.float32),
            "w3": rng.normal(0, 0.3, (C, C, 1, 1)).astype(np.float32),
        }
        side = helper.make_node("Conv", ["a", "w3"], ["z"], name="side")
        after = helper.make_node("Conv", ["y", "w3"], ["u"], name="after")
        first = helper.make_node("Conv", ["x", "w1"], ["a0"], name="first")
        middle = helper.make_node("Conv", ["a", "w2"], ["y"], name="middle", group=C, pads=[1, 1, 1, 1])
        out = [1, C, 8, 8]
    else:
        shape = (4, 32)
        inits = {
            "w1": rng.normal(0, 0.3, (32, 32)).astype(np.float32),
            "w2": (rng.normal(0, 1, (32, C)) * SPREAD[None, :]).astype(np.float32),
            "w3": rng.normal(0, 0.3, (32, C)).astype(np.float32),
        }
        side = helper.make_node("Gemm", ["a", "w3"], ["z"], name="side")
        inits["w4"] = rng.normal(0, 0.3, (C, C)).astype(np.float32)
        after = helper.make_node("Gemm", ["y", "w4"], ["u"], name="after")
        first = helper.make_node("Gemm", ["x", "w1"], ["a0"], name="first")
        middle = helper.make_node("Gemm", ["a", "w2"], ["y"], name="middle")
        out = [4, C]
    relu = helper.make_node("Relu", ["a0"], ["a"], name="act")
    outputs = [("y", out), ("z", out), ("u", out)]
    return make_model([first, relu, middle, side, after], [("x", list(shape))], outputs, inits), shape


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray], level: ort.GraphOptimizationLevel) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


@pytest.mark.parametrize("op_type", ["Conv", "Gemm"])
def test_an_fp32_fallback_after_an_int8_neighbour_keeps_its_float_weights_in_onnx_runtime(op_type):
    model, shape = _model(op_type)
    rng = np.random.default_rng(1)
    calib = [(rng.normal(0, 1, shape).astype(np.float32), None) for _ in range(8)]
    quantized = quantize(model, TuningConfig().with_nodes_fp32(["middle"]), calib)
    assert quantized.decisions["side"].quantized and not quantized.decisions["middle"].quantized
    assert "middle" in {n.name for n in quantized.model.graph.node}  # the rewrite keeps the node's name
    feed = {"x": rng.normal(0, 1, shape).astype(np.float32)}
    # without graph optimizations ORT runs the graph as written: the middle op on its float weights
    as_written = _run(quantized.model, feed, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    optimized = _run(quantized.model, feed, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    axes = tuple(i for i in range(as_written.ndim) if i != 1)
    per_channel = np.sqrt(((optimized - as_written) ** 2).sum(axis=axes) / (as_written**2).sum(axis=axes))
    # the same float computation: only summation order may differ (with per-tensor INT8 weights the
    # small channels are zeros: relative error 1.0-2.5 there, measured without the rules)
    assert float(per_channel.max()) < 1e-3
