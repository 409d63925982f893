"""Lowering a (Q/DQ) ONNX model back to a framework: PyTorch ``nn.Module``, TensorFlow SavedModel, MXNet
symbol + params.

The PyTorch and TensorFlow lowerings interpret the ONNX graph with the framework's own ops (no ONNX
Runtime at run time); the MXNet one builds an ``mx.sym`` graph in the isolated MXNet environment
(:mod:`lpot_ir.backends.export.mxnet_lowering`).
QuantizeLinear / DequantizeLinear are reproduced exactly as ONNX defines them (round half to even,
saturation to the integer range, per-tensor or per-channel), so the lowered model's outputs match the
ONNX Runtime candidate within one quantization step of the output.
"""

from __future__ import annotations

from lpot_ir.backends.export.graph import SUPPORTED_OPS, LoweredGraph, lower_graph

__all__ = ["SUPPORTED_OPS", "LoweredGraph", "lower_graph", "export_to_pytorch", "export_to_tensorflow", "export_to_mxnet"]


def export_to_pytorch(qdq_model):  # type: ignore[no-untyped-def]
    """See :func:`lpot_ir.backends.export.torch_lowering.export_to_pytorch`."""
    from lpot_ir.backends.export.torch_lowering import export_to_pytorch as _export

    return _export(qdq_model)


def export_to_tensorflow(qdq_model, path):  # type: ignore[no-untyped-def]
    """See :func:`lpot_ir.backends.export.tensorflow_lowering.export_to_tensorflow`."""
    from lpot_ir.backends.export.tensorflow_lowering import export_to_tensorflow as _export

    return _export(qdq_model, path)


def export_to_mxnet(qdq_model, path, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`lpot_ir.backends.export.mxnet_lowering.export_to_mxnet`."""
    from lpot_ir.backends.export.mxnet_lowering import export_to_mxnet as _export

    return _export(qdq_model, path, **kwargs)
