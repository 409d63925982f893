"""Pass ``shrink-pruned-channels``: physically remove the channels that structured pruning made dead.

Spec: ``Conv(x, W[C]) → BatchNorm → Relu → Conv(·, V[·, C])`` with ``W[k] = 0, b[k] = 0`` →
``Conv(x, W[C - 1]) → BatchNorm → Relu → Conv(·, V[·, C - 1])``.

For every channel group (:func:`~lpot_ir.passes.pruning.channels.find_channel_groups`) a channel ``k``
is removed when one of these holds:

* **constant** (filter pruning): every source's weights for ``k`` are zero, so the channel is the
  constant ``bias[k]`` everywhere; the constant is followed through the members (Relu, Clip,
  BatchNorm, depthwise Conv, Add/Mul ...) and, where it reaches a sink as a non-zero constant, folded
  into the sink's bias (a Conv without padding, or a Gemm). A zero constant needs no folding, so
  padding does not matter then.
* **unused** (channel pruning): every sink's weights for ``k`` are zero, so nothing reads the channel.

Removing means deleting slices: the sources' output channels (weight rows and bias), the members'
per-channel parameters (BatchNorm, depthwise weights and ``group``, constant operands), and the
sinks' input channels (through Concat offsets and Flatten repeats). The rewrite is exact up to float
rounding of the folded biases. Each group keeps at least one channel. A group that cannot shrink is
declined with its reason (graph input or output, grouped convolution, an op that mixes channels ...);
:class:`ShrinkResult` lists every group with channels removed or declined.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from lpot_ir.passes.base import Pass, PassResult, register_pass
from lpot_ir.passes.pruning.channels import (
    BINARY_OPS,
    POOL_OPS,
    REDUCE_OPS,
    ChannelGroup,
    ChannelParam,
    GroupAnalysis,
    constant_array,
    find_channel_groups,
    weight_channel_axes,
)

__all__ = ["ShrinkPrunedChannelsPass", "ShrinkResult", "GroupReport", "shrink_pruned_channels", "dead_channels"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupReport:
    """What the pass did with one channel group.

    Attributes:
        sources: the compute nodes producing the channels.
        channels: channels before.
        removed: channels removed.
        dead: channels that are constant or unused (removed, unless declined).
        decline: why nothing was removed although channels were dead (``None``: not declined).
    """

    sources: tuple[str, ...]
    channels: int
    removed: int
    dead: int
    decline: str | None = None


@dataclass
class ShrinkResult(PassResult):
    """The pass result with one :class:`GroupReport` per group that had dead channels."""

    groups: list[GroupReport] = field(default_factory=list)

    @property
    def declined(self) -> list[GroupReport]:
        return [g for g in self.groups if g.decline is not None]


# -- constants through the graph ------------------------------------------------------------------


def _unary(node: ir.Node) -> Callable[[np.ndarray], np.ndarray] | None:
    op = node.op_type
    attrs = node.attributes
    if op in ("Identity", "Dropout", "Cast"):
        return lambda x: x
    if op == "Relu":
        return lambda x: np.maximum(x, 0.0)
    if op == "Clip":
        lo = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        hi = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
        if (len(node.inputs) > 1 and node.inputs[1] is not None and lo is None) or (
            len(node.inputs) > 2 and node.inputs[2] is not None and hi is None
        ):
            return None
        lo_f = float(lo) if lo is not None else attrs.get_float("min", -math.inf)
        hi_f = float(hi) if hi is not None else attrs.get_float("max", math.inf)
        return lambda x: np.clip(x, lo_f, hi_f)
    if op == "LeakyRelu":
        alpha = attrs.get_float("alpha", 0.01)
        return lambda x: np.where(x >= 0, x, alpha * x)
    if op == "Sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if op == "HardSigmoid":
        a, b = attrs.get_float("alpha", 0.2), attrs.get_float("beta", 0.5)
        return lambda x: np.clip(a * x + b, 0.0, 1.0)
    if op == "HardSwish":
        return lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if op == "Tanh":
        return np.tanh
    if op == "Abs":
        return np.abs
    if op == "Neg":
        return np.negative
    if op == "Exp":
        return np.exp
    return None


def _zero_preserving(node: ir.Node) -> bool:
    return node.op_type in ("Gelu", "Erf", "Elu", "Selu", "Sqrt", "Mish", "Celu")


class _Constants:
    """Per-feature constant values of tracked activations (NaN: not constant)."""

    def __init__(self, model: ir.Model, analysis: GroupAnalysis) -> None:
        self.analysis = analysis
        self.values: dict[str, np.ndarray] = {}
        for node in model.graph:
            for out in node.outputs:
                name = out.name or ""
                if name in analysis.segments:
                    self.values[name] = self._compute(node, out)

    def width(self, name: str) -> int:
        return sum(s.width for s in self.analysis.segments[name])

    def of(self, value: ir.Value | None) -> np.ndarray | None:
        return None if value is None else self.values.get(value.name or "")

    def _nan(self, name: str) -> np.ndarray:
        return np.full(self.width(name), np.nan)

    def _compute(self, node: ir.Node, out: ir.Value) -> np.ndarray:
        name = out.name or ""
        op = node.op_type
        data = self.of(node.inputs[0]) if node.inputs else None
        with np.errstate(all="ignore"):
            if op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
                return self._compute_node(node, name, data)
            if data is None:
                return self._nan(name)
            if op in ("BatchNormalization",):
                scale, shift, mean, var = (constant_array(node.inputs[i]).astype(np.float64) for i in (1, 2, 3, 4))  # type: ignore[union-attr]
                eps = node.attributes.get_float("epsilon", 1e-5)
                return (data - mean) / np.sqrt(var + eps) * scale + shift
            if op in BINARY_OPS:
                return self._binary(node, name)
            if op == "Concat":
                parts: list[np.ndarray] = []
                for v in node.inputs:
                    if v is not None:
                        known = self.of(v)
                        parts.append(known if known is not None else np.full(self._input_width(node, v), np.nan))
                return np.concatenate(parts)
            if op in ("Flatten", "Reshape"):
                return np.repeat(data, self.width(name) // max(len(data), 1))
            if op in ("Squeeze", "Unsqueeze", "Transpose", "GlobalAveragePool", "GlobalMaxPool", "MaxPool"):
                return data
            if op in ("ReduceMean", "ReduceMax", "ReduceMin"):
                return data
            if op == "ReduceSum":
                return np.where(data == 0, 0.0, np.nan)
            if op in POOL_OPS or op in REDUCE_OPS:
                if op == "AveragePool" and node.attributes.get_int("count_include_pad", 0) != 0:
                    return np.where(data == 0, 0.0, np.nan)
                return data
            if op == "Pad":
                value = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
                mode = node.attributes.get_string("mode", "constant")
                if mode != "constant":
                    return data
                pad = float(value) if value is not None else 0.0
                return np.where(data == pad, data, np.nan)
            f = _unary(node)
            if f is not None:
                return f(data)
            if _zero_preserving(node):
                return np.where(data == 0, 0.0, np.nan)
        return self._nan(name)

    def _input_width(self, node: ir.Node, value: ir.Value) -> int:
        axis = node.attributes.get_int("axis", 0)
        dims = value.shape
        dim = dims[axis] if dims is not None else None
        return dim if isinstance(dim, int) else 0

    def _compute_node(self, node: ir.Node, name: str, data: np.ndarray | None) -> np.ndarray:
        group_attr = node.attributes.get_int("group", 1)
        weight = constant_array(node.inputs[1])
        if weight is None:
            return self._nan(name)
        bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if node.op_type == "Conv" and group_attr > 1:  # depthwise member
            if data is None:
                return self._nan(name)
            b = bias.astype(np.float64).reshape(-1) if bias is not None else np.zeros(weight.shape[0])
            sums = weight.reshape(weight.shape[0], -1).astype(np.float64).sum(axis=1)
            if _padded(node):
                return np.where(data == 0, b, np.nan)  # padding breaks the constant at the borders
            return b + data * sums
        group = self._source_group(name)
        if group is None:
            return self._nan(name)
        source = next(p for p in group.sources if p.node == node.name and p.role == "weight")
        moved = np.moveaxis(weight, source.axis, 0).reshape(weight.shape[source.axis], -1)
        zero = ~np.any(moved != 0, axis=1)
        b = np.zeros(len(zero))
        if bias is not None:
            b = bias.astype(np.float64).reshape(-1)
            if node.op_type == "Gemm":
                b = b * node.attributes.get_float("beta", 1.0)
        return np.where(zero, b, np.nan)

    def _source_group(self, name: str) -> ChannelGroup | None:
        segs = self.analysis.segments.get(name)
        if not segs:
            return None
        return self.analysis.groups.get(segs[0].group)

    def _binary(self, node: ir.Node, name: str) -> np.ndarray:
        width = self.width(name)
        axis = self.analysis.axes[name]
        out_rank = len(node.outputs[0].shape or [])
        operands: list[np.ndarray] = []
        for value in node.inputs:
            if value is None:
                continue
            tracked = self.of(value)
            if tracked is not None:
                operands.append(tracked)
                continue
            const = constant_array(value)
            if const is None:
                operands.append(np.full(width, np.nan))  # an activation broadcast over the channels
                continue
            const = const.astype(np.float64)
            aligned = axis - (out_rank - const.ndim)
            if const.size == 1:
                operands.append(np.full(width, float(const.reshape(-1)[0])))
            elif 0 <= aligned < const.ndim and const.size == const.shape[aligned] == width:
                operands.append(const.reshape(-1))
            else:
                operands.append(np.full(width, np.nan))  # varies along other axes: not a per-channel constant
        op = node.op_type
        result = operands[0]
        for other in operands[1:]:
            if op in ("Add", "Sum"):
                result = result + other
            elif op == "Sub":
                result = result - other
            elif op == "Mul":
                result = np.where((result == 0) | (other == 0), 0.0, result * other)
            elif op == "Div":
                result = np.where(result == 0, 0.0, result / other)
            elif op == "Max":
                result = np.maximum(result, other)
            elif op == "Min":
                result = np.minimum(result, other)
            elif op == "PRelu":
                result = np.where(result >= 0, result, result * other)
        return result


# -- deciding and rewriting -----------------------------------------------------------------------


def _padded(node: ir.Node) -> bool:
    pads = node.attributes.get_ints("pads") or []
    auto = node.attributes.get_string("auto_pad", "NOTSET")
    return any(pads) or auto not in ("NOTSET", "VALID")


def _sink_input(model_nodes: dict[str, ir.Node], sink: ChannelParam) -> ir.Value | None:
    node = model_nodes.get(sink.node)
    return node.inputs[0] if node is not None and node.inputs else None


def _absorbable(node: ir.Node, constant: float) -> bool:
    if constant == 0.0:
        return True
    if node.op_type == "Conv":
        return not _padded(node)
    if node.op_type == "Gemm":
        return node.attributes.get_float("beta", 1.0) != 0.0
    return False


def dead_channels(model: ir.Model, analysis: GroupAnalysis | None = None) -> dict[int, tuple[list[int], list[int]]]:
    """Group id -> (channels whose sources are all zero, channels no sink reads), for prunable groups."""
    analysis = analysis or find_channel_groups(model)
    nodes = {n.name or "": n for n in model.graph}
    constants = _Constants(model, analysis)
    out: dict[int, tuple[list[int], list[int]]] = {}
    for gid, group in analysis.groups.items():
        if not group.sources or not group.sinks:
            continue
        constant, unused = _classify(group, nodes, constants)
        out[gid] = (constant, unused)
    return out


def _classify(
    group: ChannelGroup, nodes: dict[str, ir.Node], constants: _Constants
) -> tuple[list[int], list[int]]:
    constant_ok = np.ones(group.channels, dtype=bool)
    unused = np.ones(group.channels, dtype=bool)
    for sink in group.sinks:
        node = nodes[sink.node]
        weight = constant_array(node.inputs[sink.input])
        data = constants.of(_sink_input(nodes, sink))
        if weight is None:
            return [], []
        moved = np.moveaxis(weight, sink.axis, 0)
        for k in range(group.channels):
            idx = sink.segment.indices([k])
            if np.any(moved[idx] != 0):
                unused[k] = False
            if data is None:
                constant_ok[k] = False
                continue
            values = data[idx]
            if not np.all(np.isfinite(values)) or not np.all(values == values[0]) or not _absorbable(node, float(values[0])):
                constant_ok[k] = False
    return [int(k) for k in np.flatnonzero(constant_ok)], [int(k) for k in np.flatnonzero(unused)]


class _Editor:
    """Collects slice deletions and bias additions per (node, input), then applies them once."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.nodes = {n.name or "": n for n in model.graph}
        self.deletions: dict[tuple[str, int], dict[int, set[int]]] = {}
        self.bias_delta: dict[str, np.ndarray] = {}
        self.new_group: dict[str, int] = {}
        self._names = {v.name for v in model.graph.initializers.values()}

    def delete(self, param: ChannelParam, channels: list[int]) -> None:
        by_axis = self.deletions.setdefault((param.node, param.input), {})
        by_axis.setdefault(param.axis, set()).update(int(i) for i in param.segment.indices(channels))

    def fold(self, sink: ChannelParam, channels: list[int], data: np.ndarray) -> None:
        """Fold the constant values of removed input channels into the sink's bias."""
        node = self.nodes[sink.node]
        weight = constant_array(node.inputs[sink.input]).astype(np.float64)  # type: ignore[union-attr]
        idx = sink.segment.indices(channels)
        values = data[idx]
        if not np.any(values != 0):
            return
        moved = np.moveaxis(weight, sink.axis, 0)[idx]  # [features, out, ...] or [features, ...]
        contribution = np.tensordot(values, moved, axes=([0], [0]))  # out axis first for Conv / remaining axis for Gemm
        if node.op_type == "Conv":
            delta = contribution.reshape(contribution.shape[0], -1).sum(axis=1)
        else:  # Gemm: y = alpha * A @ B' + beta * C
            delta = contribution.reshape(-1) * node.attributes.get_float("alpha", 1.0) / node.attributes.get_float("beta", 1.0)
        self.bias_delta[sink.node] = self.bias_delta.get(sink.node, 0.0) + delta

    def apply(self) -> None:
        for node_name, delta in self.bias_delta.items():
            node = self.nodes[node_name]
            created = self._add_bias(node, np.asarray(delta))
            if created:  # a new bias of a node that is also a source: drop its removed output channels too
                weight = constant_array(node.inputs[1])
                axes = weight_channel_axes(node, weight.ndim) if weight is not None else None
                removed = self.deletions.get((node_name, 1), {}).get(axes[0]) if axes is not None else None
                if removed:
                    self.deletions[(node_name, 2)] = {0: set(removed)}
        for (node_name, index), by_axis in self.deletions.items():
            node = self.nodes[node_name]
            value = node.inputs[index]
            data = constant_array(value)
            assert value is not None and data is not None
            for axis, indices in by_axis.items():
                data = np.delete(data, sorted(indices), axis=axis)
            self._replace(node, index, data)
            if node.op_type == "Conv" and index == 1 and node.attributes.get_int("group", 1) > 1:
                node.attributes["group"] = ir.AttrInt64("group", int(data.shape[0]))

    def _add_bias(self, node: ir.Node, delta: np.ndarray) -> bool:
        """Add ``delta`` to the node's bias; return whether a new bias input was created."""
        index = 2
        current = constant_array(node.inputs[index]) if len(node.inputs) > index and node.inputs[index] is not None else None
        if current is None:
            dtype = constant_array(node.inputs[1]).dtype  # type: ignore[union-attr]
            new = delta.astype(dtype)
            value = self._initializer(f"{node.name}_folded_bias", new)
            while len(node.inputs) < 3:
                node.resize_inputs(len(node.inputs) + 1)
            node.replace_input_with(index, value)
            return True
        new = (current.astype(np.float64) + delta.reshape(current.shape)).astype(current.dtype)
        self._replace(node, index, new)
        return False

    def _replace(self, node: ir.Node, index: int, data: np.ndarray) -> None:
        value = node.inputs[index]
        assert value is not None
        if value.producer() is None and value.const_value is not None and len(value.uses()) == 1 and not value.is_graph_output():
            value.const_value = ir.tensor(data, name=value.name)
            value.shape = ir.Shape(data.shape)
            return
        new = self._initializer(f"{value.name}_shrunk", data)
        node.replace_input_with(index, new)

    def _initializer(self, base: str, data: np.ndarray) -> ir.Value:
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        value = ir.Value(name=name, shape=ir.Shape(data.shape), type=ir.TensorType(ir.DataType.from_numpy(data.dtype)))
        value.const_value = ir.tensor(data, name=name)
        self.model.graph.register_initializer(value)
        return value


def shrink_pruned_channels(model: ir.Model) -> ShrinkResult:
    """Remove dead channels from ``model`` in place (see the module docstring)."""
    analysis = find_channel_groups(model)
    nodes = {n.name or "": n for n in model.graph}
    constants = _Constants(model, analysis)
    editor = _Editor(model)
    reports: list[GroupReport] = []
    removed_per_group: dict[int, list[int]] = {}
    for gid, group in sorted(analysis.groups.items()):
        if not group.sources:
            continue
        constant, unused = _classify(group, nodes, constants) if group.sinks else ([], [])
        dead = sorted(set(constant) | set(unused))
        if not dead:
            # report zero filters that are not removable, e.g. a group declined for its graph output
            zero = _zero_sources(group, nodes)
            if zero and group.decline is not None:
                reports.append(GroupReport(tuple(group.source_nodes), group.channels, 0, zero, group.decline))
            continue
        if not group.prunable:
            reports.append(GroupReport(tuple(group.source_nodes), group.channels, 0, len(dead), group.decline))
            continue
        if len(dead) == group.channels:
            dead = dead[1:]  # keep one channel: every tensor keeps a valid shape
        removed_per_group[gid] = dead
        for sink in group.sinks:
            fold = [k for k in dead if k in constant and k not in unused]
            data = constants.of(_sink_input(nodes, sink))
            if fold and data is not None:
                editor.fold(sink, fold, data)
        for param in group.params:
            editor.delete(param, dead)
        reports.append(GroupReport(tuple(group.source_nodes), group.channels, len(dead), len(dead)))
    if removed_per_group:
        editor.apply()
        _update_shapes(model, analysis, removed_per_group)
    for report in reports:
        if report.decline is not None:
            logger.info(
                "shrink-pruned-channels: %d dead channel(s) of %s kept: %s", report.dead, ", ".join(report.sources), report.decline
            )
    total = sum(len(v) for v in removed_per_group.values())
    return ShrinkResult(
        model, total > 0, changes=total, details={"channels removed": total, "groups shrunk": len(removed_per_group)},
        groups=reports,
    )


def _zero_sources(group: ChannelGroup, nodes: dict[str, ir.Node]) -> int:
    zero = np.ones(group.channels, dtype=bool)
    for p in group.sources:
        if p.role != "weight":
            continue
        w = constant_array(nodes[p.node].inputs[p.input])
        if w is None:
            return 0
        zero &= ~np.any(np.moveaxis(w, p.axis, 0).reshape(w.shape[p.axis], -1) != 0, axis=1)
    return int(zero.sum())


def _update_shapes(model: ir.Model, analysis: GroupAnalysis, removed: dict[int, list[int]]) -> None:
    values = {v.name: v for node in model.graph for v in node.outputs}
    for name, segs in analysis.segments.items():
        features = sum(len(removed.get(s.group, ())) * s.repeat for s in segs)
        value = values.get(name)
        if not features or value is None or value.shape is None:
            continue
        axis = analysis.axes[name]
        dims = list(value.shape)
        if isinstance(dims[axis], int):
            dims[axis] = dims[axis] - features
            value.shape = ir.Shape(dims)


@register_pass("shrink-pruned-channels")
class ShrinkPrunedChannelsPass(Pass):
    """Remove channels whose filters were pruned to zero (or that nothing reads); see the module docstring."""

    def call(self, model: ir.Model) -> ShrinkResult:
        return shrink_pruned_channels(model)
