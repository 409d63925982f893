"""Lowering a (Q/DQ) ONNX model back to a framework: PyTorch ``nn.Module``, TensorFlow SavedModel, MXNet
symbol + params.

The PyTorch and TensorFlow lowerings interpret the ONNX graph with the framework's own ops (no ONNX
Runtime at run time); the MXNet one has MXNet build an ``mx.sym`` graph in the isolated MXNet environment
(:mod:`lpot_ir.backends.export.mxnet_lowering`; there Q/DQ runs as FP32 fake quantization).
QuantizeLinear / DequantizeLinear are reproduced exactly as ONNX defines them (round half to even,
saturation to the integer range, per-tensor or per-channel), so the lowered model's outputs match the
ONNX Runtime candidate within one quantization step of the output.
"""

from __future__ import annotations

from lpot_ir.backends.export.graph import SUPPORTED_OPS, LoweredGraph, lower_graph
from lpot_ir.backends.export.mxnet_lowering import MXNetExport, export_to_mxnet
from lpot_ir.backends.export.tensorflow_lowering import export_to_tensorflow
from lpot_ir.backends.export.torch_lowering import export_to_pytorch

__all__ = [
    "SUPPORTED_OPS",
    "LoweredGraph",
    "MXNetExport",
    "lower_graph",
    "export_to_pytorch",
    "export_to_tensorflow",
    "export_to_mxnet",
]
