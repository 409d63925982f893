"""Helpers for the quantization tests: tiny ONNX models, ONNX Runtime runs, minmax ranges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import TensorRange

FLOAT = TensorProto.FLOAT


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, Sequence[int | str]]],
    outputs: Sequence[tuple[str, Sequence[int | str] | None]],
    initializers: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A float model from nodes, (name, shape) inputs/outputs and named initializers."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(n, FLOAT, list(s)) for n, s in inputs],
        [_output_info(n, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if any(shape is None for _n, shape in outputs):  # the checker wants output shapes: infer them
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output]}
        for out in model.graph.output:
            if not out.type.tensor_type.HasField("shape") and known.get(out.name) is not None:
                out.type.CopyFrom(known[out.name].type)
    return model


def _output_info(name: str, shape: Sequence[int | str] | None) -> onnx.ValueInfoProto:
    """A float output; ``None`` shape: rank unknown (symbolic dims are given by shape inference later)."""
    info = helper.make_tensor_value_info(name, FLOAT, list(shape) if shape is not None else None)
    if shape is None:
        info.type.tensor_type.ClearField("shape")
    return info


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return session(model).run(None, dict(feed))


def minmax_ranges(model, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, TensorRange]:
    """Min/max of every float tensor of the main graph over ``feeds`` (a tiny local calibrator)."""
    proto = model if isinstance(model, onnx.ModelProto) else to_proto(model)
    proto = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*proto.graph.value_info, *proto.graph.input]}
    names = [i.name for i in proto.graph.input]
    names += [o for n in proto.graph.node for o in n.output if o]
    names = [n for n in dict.fromkeys(names) if types.get(n, FLOAT) == FLOAT]
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.output[:]
    copy.graph.output.extend(helper.make_tensor_value_info(n, FLOAT, None) for n in names)
    sess = session(copy)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for feed in feeds:
        for name, value in zip(names, sess.run(None, dict(feed)), strict=True):
            if value.size == 0:
                continue
            lo[name] = min(lo.get(name, np.inf), float(value.min()))
            hi[name] = max(hi.get(name, -np.inf), float(value.max()))
    return {n: TensorRange(lo[n], hi[n]) for n in lo}


def check_valid(model: onnx.ModelProto, *, contrib: bool = False) -> None:
    """Full ONNX check (standard domain only unless ``contrib``) and an ONNX Runtime session."""
    onnx.checker.check_model(model, full_check=True)
    if not contrib:
        domains = {n.domain for n in model.graph.node}
        assert domains <= {"", "ai.onnx"}, domains
    session(model)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in model.graph.node:
        out[node.op_type] = out.get(node.op_type, 0) + 1
    return out


def ort_optimized_ops(model: onnx.ModelProto, path: str) -> list[str]:
    """The op types ONNX Runtime runs after its graph optimizations (what it fused Q/DQ into)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = path
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(path).graph.node]
