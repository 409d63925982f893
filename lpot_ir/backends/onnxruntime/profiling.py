"""Per-node kernel times from ONNX Runtime's profiler, attributed back to the model's own nodes.

ONNX Runtime rewrites the graph before it runs it: it fuses Conv + Relu, turns DQ -> Conv -> Q into
QLinearConv, and moves convolutions into its blocked (NCHWc) layout with ReorderInput/ReorderOutput
nodes between. Its profiler names each kernel after the node it ran, so a time is attributed back to
the model's node by that name: exactly, with an ``_token_<n>`` suffix removed (fused nodes), or through
an output value name with ``_nchwc`` removed (blocked-layout nodes are named after their output). What
cannot be attributed (layout reorders, transposes ORT inserted) is kept by op type, so the total stays
the sum of every kernel.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from lpot_ir.backends.onnxruntime.session import make_session, new_session

__all__ = ["NodeProfile", "profile_nodes", "instrumented_model", "run_all_values", "value_elements"]

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"_token_\d+$")
_KERNEL = "_kernel_time"
_FUSED = "fused "


@dataclass(frozen=True)
class NodeProfile:
    """Mean kernel seconds per run.

    Attributes:
        node_seconds: model node name -> seconds (every kernel attributed to that node summed).
        node_ops: model node name -> the op types ONNX Runtime ran for it (e.g. ``QLinearConv``).
        other_seconds: op type -> seconds of kernels not attributed to a model node.
        total_seconds: the sum of every kernel's time per run.
    """

    node_seconds: Mapping[str, float]
    node_ops: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    other_seconds: Mapping[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.node_seconds.values()) + sum(self.other_seconds.values()))


def _attribute(kernel_node: str, nodes: set[str], producers: Mapping[str, str]) -> str | None:
    # ONNX Runtime names a fused node after the first node it fuses: "fused fc0" for Gemm + Relu
    unfused = kernel_node.removeprefix(_FUSED)
    candidates = list(dict.fromkeys([kernel_node, _TOKEN.sub("", kernel_node), unfused, _TOKEN.sub("", unfused)]))
    for name in candidates:
        if name in nodes:
            return name
    for name in candidates:
        if name.endswith("_nchwc"):
            value = name[: -len("_nchwc")]
            if value in producers:
                return producers[value]
        if name in producers:
            return producers[name]
    return None


def profile_nodes(
    model: onnx.ModelProto,
    feed: Mapping[str, np.ndarray],
    *,
    iterations: int = 20,
    warmup: int = 3,
    intra_op_threads: int = 1,
    seconds: float | None = None,
) -> NodeProfile:
    """Run ``model`` on ``feed`` with ONNX Runtime's profiler and attribute kernel times to its nodes.

    Args:
        model: the model (its main-graph node names are what times are attributed to).
        feed: one complete input feed.
        iterations: profiled runs (times are averaged over them).
        warmup: runs before the measured ones (a profiling session records every run; the warm-up
            runs' events are dropped by keeping each kernel's last ``iterations`` events).
        intra_op_threads: ONNX Runtime intra-op threads.
        seconds: if given, fewer iterations (at least 3) when ``iterations`` runs would take longer
            than this (timed on the first warm-up run).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="lpot-profile-") as folder:
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = new_session(model, options)
        runs = max(1, int(iterations))
        began = time.perf_counter()
        session.run(None, dict(feed))
        once = time.perf_counter() - began
        if seconds is not None and once * runs > seconds:
            runs = max(3, int(seconds / max(once, 1e-9)))
        for _ in range(max(0, int(warmup) - 1) + runs):
            session.run(None, dict(feed))
        path = session.end_profiling()
        with open(path, encoding="utf-8") as handle:
            events = json.load(handle)
    nodes = {n.name for n in model.graph.node if n.name}
    producers = {out: n.name for n in model.graph.node for out in n.output if out and n.name}
    kernel_events: dict[str, list[float]] = collections.defaultdict(list)
    ops: dict[str, str] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith(_KERNEL):
            continue
        args = event.get("args", {})
        kernel = str(args.get("node_name") or name[: -len(_KERNEL)])
        kernel_events[kernel].append(float(event.get("dur", 0.0)) * 1e-6)
        ops[kernel] = str(args.get("op_name", ""))
    node_seconds: dict[str, float] = collections.defaultdict(float)
    node_ops: dict[str, list[str]] = collections.defaultdict(list)
    other: dict[str, float] = collections.defaultdict(float)
    for kernel, durations in kernel_events.items():
        seconds = float(np.mean(durations[-runs:]) if len(durations) >= runs else np.sum(durations) / runs)
        owner = _attribute(kernel, nodes, producers)
        if owner is None:
            other[ops.get(kernel) or "unknown"] += seconds
        else:
            node_seconds[owner] += seconds
            if ops.get(kernel) and ops[kernel] not in node_ops[owner]:
                node_ops[owner].append(ops[kernel])
    return NodeProfile(dict(node_seconds), {k: tuple(v) for k, v in node_ops.items()}, dict(other))


def instrumented_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], ir.Model]:
    """The model with every float node output of its main graph exposed as a graph output.

    Returns:
        ``(the model, names of all its outputs, its IR)``.
    """
    graph_model = ir.serde.deserialize_model(model)
    graph = graph_model.graph
    existing = {v.name for v in graph.outputs}
    names: list[str] = []
    for node in graph:
        for value in node.outputs:
            if value.name and value.name not in existing and value.dtype == ir.DataType.FLOAT:
                graph.outputs.append(value)
                existing.add(value.name)
                names.append(value.name)
    for value in graph.outputs:
        if value.name and value.name not in names:  # graph outputs are always named
            names.append(value.name)
    return ir.serde.serialize_model(graph_model), names, graph_model


def run_all_values(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a model (e.g. from :func:`instrumented_model`) once and return every output by name."""
    session = make_session(model, intra_op_threads=1)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, dict(feed)), strict=True))


def value_elements(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Elements of every float value of the main graph in one run on ``feed``."""
    instrumented, _, _ = instrumented_model(model)
    return {name: int(np.size(v)) for name, v in run_all_values(instrumented, feed).items()}
