"""Helpers shared by the frontend tests (not fixtures): Q/DQ models made with ONNX Runtime, ORT runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def qdq_quantize(
    fp32: onnx.ModelProto,
    batches: list[dict[str, np.ndarray]],
    tmp: Path,
    *,
    per_channel: bool,
    signed_activations: bool = False,
) -> onnx.ModelProto:
    """A Q/DQ model made with onnxruntime.quantization.quantize_static (stands in for lpot's quantizer).

    Weights are 7-bit on x86 CPUs without VNNI, as lpot-ir's default: there ONNX Runtime's u8 x s8 kernels can
    saturate with 8-bit weights, and the tests comparing them with the Q/DQ semantics would measure that.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from lpot_ir.backends.onnxruntime.capabilities import cpu_features

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp / "fp32.onnx", tmp / f"qdq_{per_channel}_{signed_activations}.onnx"
    onnx.save(fp32, src)
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QInt8 if signed_activations else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=cpu_features().needs_reduce_range,
    )
    return onnx.load(dst)


def ort_run(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, optimize: bool = True
) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )


def output_step(model: onnx.ModelProto) -> float:
    """The quantization step of the graph's first output (the scale of the DequantizeLinear producing it)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = model.graph.output[0].name
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == out:
            return float(np.max(inits[node.input[1]]))
    raise AssertionError("the model's output is not produced by a DequantizeLinear")
