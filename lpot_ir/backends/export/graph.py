"""The framework-neutral view of an ONNX graph that the PyTorch and TensorFlow lowerings interpret."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from lpot_ir.errors import ConversionError, ModelLoadError

__all__ = ["SUPPORTED_OPS", "LoweredNode", "LoweredGraph", "lower_graph", "as_model_proto", "spatial_pads"]

logger = logging.getLogger(__name__)

SUPPORTED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "Conv",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Exp",
        "Log",
        "Neg",
        "Abs",
        "Reciprocal",
        "Erf",
        "Relu",
        "LeakyRelu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Softmax",
        "LogSoftmax",
        "LayerNormalization",
        "BatchNormalization",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Flatten",
        "Reshape",
        "Transpose",
        "Concat",
        "Split",
        "Squeeze",
        "Unsqueeze",
        "Gather",
        "Slice",
        "Shape",
        "Cast",
        "Identity",
        "Dropout",
        "Constant",
        "ConstantOfShape",
        "Expand",
        "Where",
        "Equal",
        "Less",
        "Greater",
        "Not",
        "Min",
        "Max",
        "Sum",
        "Mod",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "Pad",
        "SpaceToDepth",
        "Range",
        "Tile",
    }
)
"""ONNX ops both lowerings run (default domain). Anything else makes the export fail with its name."""


@dataclasses.dataclass(frozen=True)
class LoweredNode:
    """One node: op type, name, input names ('' for omitted optional inputs), output names, attributes."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


def spatial_pads(
    node: LoweredNode,
    spatial_shape: Sequence[int | None],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """ONNX pads ``[begin..., end...]`` of a Conv/pool node, resolving ``auto_pad`` the way ONNX defines it.

    Raises:
        ConversionError: ``auto_pad`` SAME on a spatial axis whose size is not known.
    """
    nd = len(kernel)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            size = spatial_shape[i]
            if size is None:
                raise ConversionError(f"{node.op_type} node {node.name!r}: auto_pad SAME needs static spatial sizes.")
            out = math.ceil(size / strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin + end
    if auto == "VALID":
        return [0] * (2 * nd)
    return list(node.attrs.get("pads", [0] * (2 * nd)))


@dataclasses.dataclass(frozen=True)
class LoweredGraph:
    """A topologically ordered graph with constants as numpy arrays."""

    inputs: tuple[tuple[str, np.dtype, tuple[int | None, ...]], ...]
    outputs: tuple[str, ...]
    constants: dict[str, np.ndarray]
    nodes: tuple[LoweredNode, ...]
    opset: int


def as_model_proto(model: Any) -> onnx.ModelProto:
    """A ModelProto from a ModelProto, bytes, path, ``onnx_ir.Model`` or an object with ``.model`` (QuantizedModel)."""
    if hasattr(model, "model") and isinstance(model.model, onnx.ModelProto):
        return model.model
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if hasattr(model, "graph") and type(model).__module__.startswith("onnx_ir"):
        return ir.serde.serialize_model(model)
    if isinstance(model, (str, os.PathLike)):
        try:
            return onnx.load(os.fspath(model))
        except Exception as exc:
            raise ModelLoadError(
                f"{os.fspath(model)!r} could not be read as an ONNX model ({exc})."
            ) from None
    raise ModelLoadError(
        f"Expected an ONNX model (ModelProto, bytes, path, onnx_ir.Model), got {type(model).__qualname__}."
    )


def lower_graph(model: Any) -> LoweredGraph:
    """Read a model into a :class:`LoweredGraph`, checking every op is in :data:`SUPPORTED_OPS`.

    Raises:
        ConversionError: ops the lowering does not run (each named with its nodes), or subgraphs.
    """
    proto = as_model_proto(model)
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    unsupported: dict[str, list[str]] = defaultdict(list)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            unsupported[f"{node.domain + '.' if node.domain else ''}{node.op_type}"].append(
                node.name or node.output[0]
            )
        elif any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            unsupported[node.op_type].append(node.name)
    if unsupported:
        listing = "; ".join(
            f"{op} (node {', '.join(repr(n) for n in names[:3])})" for op, names in unsupported.items()
        )
        raise ConversionError(
            f"The model has ops the framework lowering does not run: {listing}. Use the Q/DQ ONNX model with "
            "ONNX Runtime, or export with QuantFormat QDQ (not QOperator) so only standard ops remain."
        )
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    inputs = []
    for vi in graph.input:
        if vi.name in constants:
            continue
        tt = vi.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        inputs.append((vi.name, dtype, dims))
    nodes = []
    for i, node in enumerate(graph.node):
        attrs = {a.name: _attr_value(a) for a in node.attribute}
        nodes.append(
            LoweredNode(
                node.op_type, node.name or f"{node.op_type}_{i}", tuple(node.input), tuple(node.output), attrs
            )
        )
    return LoweredGraph(tuple(inputs), tuple(o.name for o in graph.output), constants, tuple(nodes), opset)


def _attr_value(attr: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value


def constant_value(node: LoweredNode) -> np.ndarray:
    """The value of a ``Constant`` node."""
    a = node.attrs
    if "value" in a:
        return np.asarray(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise ConversionError(
        f"Constant node {node.name!r} uses an attribute the lowering does not read: {sorted(a)}."
    )
