"""Helpers shared by the pass tests: build tiny models, run them in ONNX Runtime, compare."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.ir import all_nodes, load_model, to_proto
from lpot_ir.ir.pattern import RuleSet
from lpot_ir.passes import RewriteReport, apply_rules

RNG = np.random.default_rng(1978)
F = TensorProto.FLOAT


def tensor(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def vi(name: str, elem: int = F, shape: Sequence[int | str | None] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def build(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[TensorProto] = (),
    opset: int = 17,
) -> ir.Model:
    """A normalized IR model (names, shapes inferred) from onnx.helper pieces."""
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(proto)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for out in proto.graph.output:  # outputs declared without a shape get the inferred one
        if not out.type.tensor_type.HasField("shape") and known[out.name].type.tensor_type.HasField("shape"):
            out.type.CopyFrom(known[out.name].type)
    return load_model(proto)


def histogram(model: ir.Model) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in all_nodes(model)))


def run(model: ir.Model | onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    proto = model if isinstance(model, onnx.ModelProto) else to_proto(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def check(model: ir.Model) -> onnx.ModelProto:
    proto = to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def assert_close(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray], rtol: float = 1e-4) -> None:
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual, strict=True):
        assert e.shape == a.shape and e.dtype == a.dtype
        scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-6)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale)


def rewrite_and_compare(
    model: ir.Model,
    rules: RuleSet,
    feeds: Mapping[str, np.ndarray],
    *,
    counts: Mapping[str, int],
    ops: Mapping[str, int],
    rtol: float = 1e-4,
    trace: bool = False,
) -> RewriteReport:
    """Apply ``rules``; assert rewrite counts, the op histogram, checker and numerics vs the original."""
    before = run(model, feeds)
    report = apply_rules(model, rules, trace=trace)
    fired = {k: v for k, v in report.counts.items() if v}
    assert fired == dict(counts), (fired, report.trace)
    assert histogram(model) == dict(ops)
    check(model)
    assert_close(before, run(model, feeds), rtol=rtol)
    return report
