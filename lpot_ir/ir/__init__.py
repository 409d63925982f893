"""lpot-ir's IR: a thin layer on ``onnx_ir`` (load/save/normalize) and the shared quantization vocabulary."""

from __future__ import annotations

from lpot_ir.ir.model import (
    DEFAULT_OPSET,
    all_graphs,
    all_nodes,
    clone_model,
    from_proto,
    load_model,
    model_digest,
    save_model,
    to_proto,
)

__all__ = [
    "DEFAULT_OPSET",
    "all_graphs",
    "all_nodes",
    "clone_model",
    "from_proto",
    "load_model",
    "model_digest",
    "save_model",
    "to_proto",
]
