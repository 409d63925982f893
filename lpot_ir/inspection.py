"""A summary of an ONNX model, for ``lpot inspect``: I/O, opsets, op histogram, parameter count.

Parameters are the elements of the model's constant tensors that are not ``int64`` (``int64`` constants
are shapes, axes and indices, not weights): initializers, ``Constant`` node values, and ``ConstantOfShape``
outputs whose shape is itself constant (old model-zoo graphs compute their weights that way). Every graph
counts, subgraphs included.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.benchmarking import format_table
from lpot_ir.ir.model import ModelSource, all_graphs, all_nodes, load_model

__all__ = ["TensorSummary", "ModelSummary", "summarize_model", "human_count", "human_bytes"]

logger = logging.getLogger(__name__)

_NOT_PARAMETERS = frozenset({ir.DataType.INT64, ir.DataType.STRING, ir.DataType.BOOL, ir.DataType.UNDEFINED})


@dataclass(frozen=True)
class TensorSummary:
    """A graph input or output: name, dims (``int`` static, ``str`` symbolic, ``None`` unknown), dtype."""

    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: str

    def shape_text(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ModelSummary:
    """What ``lpot inspect`` shows."""

    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]
    opsets: dict[str, int]
    ir_version: int | None
    producer: str
    nodes: int
    op_histogram: dict[str, int] = field(default_factory=dict)
    parameters: int = 0
    parameter_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types)."""
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "opsets": dict(self.opsets),
            "ir_version": self.ir_version,
            "producer": self.producer,
            "nodes": self.nodes,
            "op_histogram": dict(self.op_histogram),
            "parameters": self.parameters,
            "parameter_bytes": self.parameter_bytes,
        }

    def to_text(self) -> str:
        """Tables for a terminal."""

        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(self.opsets.items()))
        lines = [
            f"opset: {opsets}   ir_version: {self.ir_version}   producer: {self.producer or '-'}",
            f"nodes: {self.nodes}   parameters: {human_count(self.parameters)} ({self.parameters:,}), "
            f"{human_bytes(self.parameter_bytes)}",
            "",
            format_table(
                ("", "name", "shape", "dtype"),
                [("input", t.name, t.shape_text(), t.dtype) for t in self.inputs]
                + [("output", t.name, t.shape_text(), t.dtype) for t in self.outputs],
            ),
            "",
            format_table(("op type", "count"), sorted(self.op_histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def human_count(n: int) -> str:
    """``1234567`` -> ``1.23M``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """``4938000`` -> ``4.71 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable


def _tensor_summary(value: ir.Value) -> TensorSummary:
    shape = None
    if value.shape is not None:
        shape = tuple(
            d if isinstance(d, int) else (getattr(d, "value", None) or None) for d in value.shape
        )
    dtype = value.dtype.name.lower() if value.dtype is not None else "?"
    return TensorSummary(value.name or "", shape, dtype)


def _count(tensor: Any) -> tuple[int, int]:
    """(elements, bytes) of a constant tensor that is a parameter, else (0, 0)."""
    if tensor is None or tensor.dtype in _NOT_PARAMETERS:
        return 0, 0
    size = int(np.prod(tensor.shape.numpy())) if tensor.shape is not None else 0
    return size, _nbytes(size, tensor.dtype)


def _nbytes(size: int, dtype: ir.DataType) -> int:
    """Bytes of ``size`` elements; ``itemsize`` is a float (0.5 for 4-bit types, packed two per byte)."""
    return math.ceil(size * dtype.itemsize)


def _parameters(model: ir.Model) -> tuple[int, int]:
    elements = nbytes = 0
    for graph in all_graphs(model):
        for value in graph.initializers.values():
            e, b = _count(value.const_value)
            elements, nbytes = elements + e, nbytes + b
        for node in graph:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                attr = node.attributes.get("value")
                if attr is not None and attr.type == ir.AttributeType.TENSOR:
                    e, b = _count(attr.as_tensor())
                    elements, nbytes = elements + e, nbytes + b
            elif node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
                shape_input = node.inputs[0] if node.inputs else None
                shape = shape_input.const_value if shape_input is not None else None
                if shape is None:
                    continue
                attr = node.attributes.get("value")
                dtype = attr.as_tensor().dtype if attr is not None else ir.DataType.FLOAT
                if dtype in _NOT_PARAMETERS:
                    continue
                size = int(np.prod(shape.numpy()))
                elements, nbytes = elements + size, nbytes + _nbytes(size, dtype)
    return elements, nbytes


def summarize_model(source: ModelSource | ir.Model) -> ModelSummary:
    """Summarize a model (path, bytes, ``onnx.ModelProto`` or ``onnx_ir.Model``) as it is: no opset upgrade.

    Raises:
        ModelLoadError: the file is missing, not ONNX, truncated, or fails the ONNX checker.
    """
    model = source if isinstance(source, ir.Model) else load_model(source, target_opset=None)
    histogram = Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        for node in all_nodes(model)
    )
    parameters, parameter_bytes = _parameters(model)
    return ModelSummary(
        inputs=tuple(_tensor_summary(v) for v in model.graph.inputs if v.name not in model.graph.initializers),
        outputs=tuple(_tensor_summary(v) for v in model.graph.outputs),
        opsets=dict(model.opset_imports),
        ir_version=model.ir_version,
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        nodes=sum(histogram.values()),
        op_histogram=dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        parameters=parameters,
        parameter_bytes=parameter_bytes,
    )
