"""Lowering a (Q/DQ) ONNX model back to a framework: PyTorch ``nn.Module``, TensorFlow SavedModel.

Both lowerings interpret the ONNX graph with the framework's own ops (no ONNX Runtime at run time).
QuantizeLinear / DequantizeLinear are reproduced exactly as ONNX defines them (round half to even,
saturation to the integer range, per-tensor or per-channel), so the lowered model's outputs match the
ONNX Runtime candidate within one quantization step of the output.
"""

from __future__ import annotations

from lpot_ir.backends.export.graph import SUPPORTED_OPS, LoweredGraph, lower_graph
from lpot_ir.backends.export.tensorflow_lowering import export_to_tensorflow
from lpot_ir.backends.export.torch_lowering import export_to_pytorch

__all__ = ["SUPPORTED_OPS", "LoweredGraph", "lower_graph", "export_to_pytorch", "export_to_tensorflow"]
