"""Channel groups: which tensors' channels must be removed together, and whether they can be.

A *channel group* is a set of channels that one removal touches everywhere at once. It starts at the
output channels of a compute node (a Conv, Gemm or MatMul with constant weights: a *source*), flows
through ops that treat channels one by one (Relu, Clip, BatchNormalization, a depthwise Conv, pooling,
Add/Mul of two tensors with the same channels, ...: *members* that may hold per-channel parameters),
and ends at compute nodes that read it as their input channels (*sinks*). An ``Add`` of two branches
(a residual connection) joins their groups into one; a ``Concat`` along the channel axis lays several
groups side by side (*segments* with an offset); ``Flatten`` of ``[N, C, H, W]`` turns each channel
into ``H*W`` consecutive features (a *repeat*).

The output-channel axis of each compute op's weight comes from the capability table
(:data:`~lpot_ir.backends.onnxruntime.capabilities.CAPABILITIES`: ``channel_axis``,
``transposed_channel_axis``); the input-channel axis is the other matrix axis.

A group that reaches something the rewrite cannot shrink is *declined* with the reason: a graph
input or output, a grouped convolution, an op that mixes channels (Softmax over channels,
LayerNormalization, Reshape to another layout), a split along the channel axis, and so on.

:func:`find_channel_groups` is pure analysis: :mod:`lpot_ir.passes.pruning.shrink` removes channels,
:mod:`lpot_ir.pruning` chooses which channels to prune (torch models and ONNX models alike).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, output_channel_axis

__all__ = [
    "ChannelParam",
    "ChannelGroup",
    "Segment",
    "GroupAnalysis",
    "find_channel_groups",
    "weight_channel_axes",
    "constant_array",
]

logger = logging.getLogger(__name__)

UNARY_OPS = frozenset(
    {
        "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Erf", "Identity",
        "Dropout", "Abs", "Neg", "Elu", "Selu", "Softplus", "Exp", "Sqrt", "Cast", "Mish", "Celu",
    }
)  # fmt: skip
"""Ops applied to each element alone: channels pass through unchanged."""

BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "PRelu"})
"""Elementwise ops with broadcasting: operands with the same channels join one group."""

POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample"})
"""Spatial ops on NCHW tensors: each channel stays a channel."""

REDUCE_OPS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum"})


@dataclass(frozen=True)
class Segment:
    """Where a group's channels lie along a value's channel axis.

    Channel ``k`` of the group is features ``start + k * repeat + j`` (``0 <= j < repeat``) of the value.
    """

    group: int
    start: int
    length: int
    repeat: int = 1

    def indices(self, channels: list[int] | np.ndarray) -> np.ndarray:
        """The feature indices of the given group channels."""
        ch = np.asarray(channels, dtype=np.int64)
        return (self.start + ch[:, None] * self.repeat + np.arange(self.repeat)[None, :]).reshape(-1)

    @property
    def width(self) -> int:
        """Features the segment spans."""
        return self.length * self.repeat


@dataclass(frozen=True)
class ChannelParam:
    """A constant tensor slice that belongs to a group.

    Attributes:
        node: the node reading it.
        input: the input index.
        value: the initializer name.
        axis: the axis holding the group's channels (non-negative).
        role: ``weight`` / ``bias`` (source), ``input_weight`` (sink), ``depthwise`` / ``depthwise_bias``,
            ``bn_scale`` / ``bn_shift`` / ``bn_mean`` / ``bn_var``, ``operand`` (Add/Mul constant).
        segment: where the group's channels lie along ``axis`` (offset and repeat).
    """

    node: str
    input: int
    value: str
    axis: int
    role: str
    segment: Segment


@dataclass
class ChannelGroup:
    """One set of channels removed together.

    Attributes:
        id: the group id.
        channels: how many channels.
        sources: output-channel slices of the producing compute nodes' weights and biases.
        members: per-channel parameters along the way (BatchNorm, depthwise Conv, constant operands).
        sinks: input-channel slices of the consuming compute nodes' weights.
        values: (value name, segment) of every activation carrying the group.
        decline: why the group cannot be shrunk (``None``: it can).
    """

    id: int
    channels: int
    sources: list[ChannelParam] = field(default_factory=list)
    members: list[ChannelParam] = field(default_factory=list)
    sinks: list[ChannelParam] = field(default_factory=list)
    values: list[tuple[str, Segment]] = field(default_factory=list)
    decline: str | None = None

    @property
    def prunable(self) -> bool:
        """Whether the group can be shrunk (it has a source and a sink and nothing declined it)."""
        return self.decline is None and bool(self.sources) and bool(self.sinks)

    @property
    def source_nodes(self) -> list[str]:
        return list(dict.fromkeys(p.node for p in self.sources if p.role == "weight"))

    @property
    def params(self) -> list[ChannelParam]:
        return [*self.sources, *self.members, *self.sinks]


@dataclass
class GroupAnalysis:
    """The result of :func:`find_channel_groups`.

    Attributes:
        groups: every group (declined ones included), by id.
        segments: value name -> its segments (the value's channel layout).
        axes: value name -> its channel axis.
    """

    groups: dict[int, ChannelGroup]
    segments: dict[str, list[Segment]]
    axes: dict[str, int]

    @property
    def prunable(self) -> list[ChannelGroup]:
        """The groups that can be shrunk."""
        return [g for g in self.groups.values() if g.prunable]


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's data when it is constant: an initializer (not a graph input), a ``Constant`` node's
    output, or either seen through ``Identity`` nodes; else ``None``."""
    for _ in range(16):
        if value is None:
            return None
        if value.const_value is not None and not value.is_graph_input():
            return value.const_value.numpy()
        producer = value.producer()
        if producer is None or producer.domain not in ("", "ai.onnx"):
            return None
        if producer.op_type == "Identity":
            value = producer.inputs[0]
            continue
        if producer.op_type == "Constant":
            attr = producer.attributes.get("value")
            return attr.as_tensor().numpy() if attr is not None and attr.type == ir.AttributeType.TENSOR else None
        return None
    return None


def weight_channel_axes(node: ir.Node, rank: int) -> tuple[int, int] | None:
    """(output-channel axis, input-channel axis) of a compute node's weight (input 1), or ``None``.

    The output axis is the capability table's ``channel_axis`` (``transposed_channel_axis`` when
    ``transB=1``); the input axis is the other matrix axis (Conv: 1, ConvTranspose: 0, MatMul: -2).
    """
    cap = CAPABILITIES.get(node.op_type)
    axis = output_channel_axis(node)
    if cap is None or not cap.weight_inputs or rank < 2 or axis is None:
        return None
    out_axis = axis % rank
    if node.op_type in ("Conv", "ConvTranspose"):
        in_axis = 1 - out_axis
    else:
        in_axis = (rank - 2) if out_axis == rank - 1 else rank - 1
    return out_axis, in_axis


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.groups: dict[int, ChannelGroup] = {}

    def new(self, channels: int, decline: str | None = None) -> int:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.groups[gid] = ChannelGroup(gid, channels, decline=decline)
        return gid

    def find(self, gid: int) -> int:
        root = gid
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[gid] != root:
            self.parent[gid], gid = root, self.parent[gid]
        return root

    def get(self, gid: int) -> ChannelGroup:
        return self.groups[self.find(gid)]

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        ga, gb = self.groups[ra], self.groups[rb]
        self.parent[rb] = ra
        ga.sources += gb.sources
        ga.members += gb.members
        ga.sinks += gb.sinks
        ga.values += gb.values
        ga.decline = ga.decline or gb.decline
        del self.groups[rb]
        return ra

    def decline(self, gid: int, reason: str) -> None:
        group = self.get(gid)
        if group.decline is None:
            group.decline = reason


def _static_dims(value: ir.Value) -> list[int | None] | None:
    shape = value.shape
    if shape is None:
        return None
    return [d if isinstance(d, int) else None for d in shape]


def _int_list(node: ir.Node, attr: str, input_index: int) -> list[int] | None:
    """Axes from an attribute (older opsets) or a constant input (newer ones)."""
    if attr in node.attributes:
        return list(node.attributes.get_ints(attr) or [])
    if input_index < len(node.inputs) and node.inputs[input_index] is not None:
        data = constant_array(node.inputs[input_index])
        if data is None:
            producer = node.inputs[input_index].producer()  # type: ignore[union-attr]
            if producer is not None and producer.op_type == "Constant":
                tensor = producer.attributes.get("value")
                data = tensor.as_tensor().numpy() if tensor is not None else None
        return None if data is None else [int(v) for v in np.asarray(data).reshape(-1)]
    return []


class _Analyzer:
    def __init__(self, model: ir.Model) -> None:
        self.graph = model.graph
        self.uf = _UnionFind()
        self.segments: dict[ir.Value, list[Segment]] = {}
        self.axes: dict[ir.Value, int] = {}

    # -- helpers ---------------------------------------------------------------------------------

    def _decline_value(self, value: ir.Value, reason: str) -> None:
        for seg in self.segments.get(value, ()):
            self.uf.decline(seg.group, reason)

    def _set(self, value: ir.Value, segs: list[Segment], axis: int) -> None:
        self.segments[value] = segs
        self.axes[value] = axis
        for seg in segs:
            self.uf.get(seg.group).values.append((value.name or "", seg))

    def _opaque(self, value: ir.Value, channels: int, reason: str) -> list[Segment]:
        gid = self.uf.new(channels, reason)
        return [Segment(gid, 0, channels)]

    def _width(self, value: ir.Value) -> int:
        return sum(s.width for s in self.segments[value])

    # -- the walk --------------------------------------------------------------------------------

    def run(self) -> GroupAnalysis:
        for node in self.graph:
            tracked = [v for v in node.inputs if v is not None and v in self.segments]
            try:
                self._visit(node, tracked)
            except _Decline as exc:
                for value in tracked:
                    self._decline_value(value, f"{node.op_type} node '{node.name}': {exc}")
                for value in node.outputs:
                    if value in self.segments:
                        self._decline_value(value, f"{node.op_type} node '{node.name}': {exc}")
        for value in self.graph.outputs:
            if value in self.segments:
                self._decline_value(value, f"the channels reach the graph output '{value.name}'")
        groups = {gid: g for gid, g in self.uf.groups.items()}
        for g in groups.values():
            if g.decline is None and not g.sinks and g.sources:
                g.decline = "no compute node reads the channels"
        return GroupAnalysis(
            groups,
            {v.name or "": [Segment(self.uf.find(s.group), s.start, s.length, s.repeat) for s in segs]
             for v, segs in self.segments.items()},
            {v.name or "": a for v, a in self.axes.items()},
        )  # fmt: skip

    def _visit(self, node: ir.Node, tracked: list[ir.Value]) -> None:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            if tracked:
                raise _Decline(f"custom op of domain '{node.domain}'")
            return
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            if tracked:
                raise _Decline("a subgraph reads the channels")
            return
        if op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            self._compute(node)
        elif not tracked:
            return
        elif op in UNARY_OPS:
            self._pass_through(node, node.inputs[0])
        elif op == "BatchNormalization":
            self._batchnorm(node)
        elif op in BINARY_OPS:
            self._binary(node)
        elif op == "Concat":
            self._concat(node)
        elif op in POOL_OPS:
            self._pool(node)
        elif op in REDUCE_OPS:
            self._reduce(node)
        elif op in ("Flatten", "Reshape"):
            self._flatten(node)
        elif op in ("Squeeze", "Unsqueeze"):
            self._squeeze(node)
        elif op == "Transpose":
            self._transpose(node)
        elif op == "Pad":
            self._pad(node)
        else:
            raise _Decline("the rewrite cannot shrink this op's input channels")

    def _pass_through(self, node: ir.Node, data: ir.Value | None, axis: int | None = None) -> None:
        if data is None or data not in self.segments:
            return
        for other in node.inputs[1:]:
            if other is not None and other in self.segments:
                raise _Decline("a second input carries channels")
        self._set(node.outputs[0], list(self.segments[data]), self.axes[data] if axis is None else axis)

    # -- compute ---------------------------------------------------------------------------------

    def _compute(self, node: ir.Node) -> None:
        ins = node.inputs
        data = ins[0] if ins else None
        weight_value = ins[1] if len(ins) > 1 else None
        weight = constant_array(weight_value)
        op = node.op_type
        out = node.outputs[0]
        group_attr = node.attributes.get_int("group", 1) if op in ("Conv", "ConvTranspose") else 1
        if weight is None or weight.ndim < 2 or (op == "MatMul" and weight.ndim != 2):
            if data is not None and data in self.segments:
                raise _Decline("its weight is not a constant initializer of rank 2 or more")
            if weight_value is not None and weight_value in self.segments:
                raise _Decline("the channels are its second matrix operand")
            return
        axes = weight_channel_axes(node, weight.ndim)
        assert axes is not None
        out_axis, in_axis = axes
        if op == "Gemm" and node.attributes.get_int("transA", 0) != 0:
            if data is not None and data in self.segments:
                raise _Decline("Gemm with transA=1")
            return
        depthwise = op == "Conv" and group_attr > 1 and group_attr == weight.shape[0] and weight.shape[1] == 1
        if depthwise:
            self._depthwise(node, weight)
            return
        if group_attr != 1:
            if data is not None and data in self.segments:
                raise _Decline(f"grouped convolution (group={group_attr})")
            self._set(out, self._opaque(out, weight.shape[out_axis], f"produced by grouped convolution '{node.name}'"),
                      1)  # fmt: skip
            return
        # the data input: its channels are the weight's input channels (sink)
        if data is not None and data in self.segments:
            data_axis = self.axes[data]
            rank = len(data.shape) if data.shape is not None else None
            expected = 1 if op in ("Conv", "ConvTranspose") else (rank - 1 if rank is not None else None)
            if expected is None or data_axis != expected:
                raise _Decline("the channels are not the contraction axis")
            if self._width(data) != weight.shape[in_axis]:
                raise _Decline("weight and input channel counts differ")
            for seg in self.segments[data]:
                self.uf.get(seg.group).sinks.append(
                    ChannelParam(node.name or "", 1, weight_value.name or "", in_axis, "input_weight", seg)  # type: ignore[union-attr]
                )
        # the output: a new group (source)
        channels = int(weight.shape[out_axis])
        gid = self.uf.new(channels)
        seg = Segment(gid, 0, channels)
        group = self.uf.get(gid)
        group.sources.append(ChannelParam(node.name or "", 1, weight_value.name or "", out_axis, "weight", seg))  # type: ignore[union-attr]
        bias_index = 2 if op in ("Conv", "ConvTranspose", "Gemm") else None
        if bias_index is not None and len(ins) > bias_index and ins[bias_index] is not None:
            bias = constant_array(ins[bias_index])
            if bias is None:
                group.decline = f"the bias of '{node.name}' is not a constant"
            elif bias.ndim >= 1 and bias.shape[-1] == channels and int(np.prod(bias.shape[:-1])) == 1:
                group.sources.append(
                    ChannelParam(node.name or "", bias_index, ins[bias_index].name or "", bias.ndim - 1, "bias", seg)  # type: ignore[union-attr]
                )
            elif bias.size != 1:
                group.decline = f"the bias of '{node.name}' is not a vector over the output channels"
        out_rank = len(out.shape) if out.shape is not None else (2 if op == "Gemm" else None)
        if op in ("Conv", "ConvTranspose"):
            out_channel_axis = 1
        elif out_rank is None:
            group.decline = f"the rank of '{out.name}' is unknown"
            out_channel_axis = 1
        else:
            out_channel_axis = out_rank - 1
        self._set(out, [seg], out_channel_axis)

    def _depthwise(self, node: ir.Node, weight: np.ndarray) -> None:
        data = node.inputs[0]
        out = node.outputs[0]
        channels = weight.shape[0]
        if data is None or data not in self.segments:
            self._set(out, self._opaque(out, channels, f"the input of depthwise '{node.name}' is not tracked"), 1)
            return
        if self.axes[data] != 1 or self._width(data) != channels:
            raise _Decline("depthwise convolution over another axis")
        segs = list(self.segments[data])
        if any(s.repeat != 1 for s in segs):
            raise _Decline("depthwise convolution of flattened features")
        for seg in segs:
            group = self.uf.get(seg.group)
            group.members.append(ChannelParam(node.name or "", 1, node.inputs[1].name or "", 0, "depthwise", seg))  # type: ignore[union-attr]
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                if constant_array(node.inputs[2]) is None:
                    raise _Decline("the depthwise bias is not a constant")
                group.members.append(ChannelParam(node.name or "", 2, node.inputs[2].name or "", 0, "depthwise_bias", seg))
        self._set(out, segs, 1)

    # -- members ---------------------------------------------------------------------------------

    def _batchnorm(self, node: ir.Node) -> None:
        data = node.inputs[0]
        if data is None or data not in self.segments or self.axes[data] != 1:
            raise _Decline("BatchNormalization over another axis")
        if node.attributes.get_int("training_mode", 0):
            raise _Decline("BatchNormalization in training mode")
        roles = {1: "bn_scale", 2: "bn_shift", 3: "bn_mean", 4: "bn_var"}
        for index, role in roles.items():
            value = node.inputs[index] if index < len(node.inputs) else None
            if constant_array(value) is None:
                raise _Decline(f"its {role[3:]} is not a constant")
        for seg in self.segments[data]:
            if seg.repeat != 1:
                raise _Decline("BatchNormalization of flattened features")
            group = self.uf.get(seg.group)
            for index, role in roles.items():
                group.members.append(ChannelParam(node.name or "", index, node.inputs[index].name or "", 0, role, seg))  # type: ignore[union-attr]
        self._set(node.outputs[0], list(self.segments[data]), 1)

    def _binary(self, node: ir.Node) -> None:
        out = node.outputs[0]
        out_dims = _static_dims(out)
        if out_dims is None:
            raise _Decline("the output rank is unknown")
        out_rank = len(out_dims)
        tracked = [v for v in node.inputs if v is not None and v in self.segments]

        def out_axis_of(value: ir.Value) -> int:
            if value.shape is None:
                raise _Decline("an operand's rank is unknown")
            return self.axes[value] + (out_rank - len(value.shape))

        first = tracked[0]
        out_axis = out_axis_of(first)
        segs = list(self.segments[first])
        width = self._width(first)
        for value in tracked[1:]:
            other = self.segments[value]
            if out_axis_of(value) != out_axis:
                raise _Decline("the operands' channel axes differ")
            if len(other) != len(segs) or any(
                (a.start, a.length, a.repeat) != (b.start, b.length, b.repeat) for a, b in zip(segs, other, strict=True)
            ):
                raise _Decline("the operands' channels are laid out differently")
            segs = [Segment(self.uf.union(a.group, b.group), a.start, a.length, a.repeat) for a, b in zip(segs, other, strict=True)]
        for index, operand in enumerate(node.inputs):
            if operand is None or operand in self.segments:
                continue
            value = operand
            dims = _static_dims(value)
            const = constant_array(value)
            if dims is None and const is not None:
                dims = list(const.shape)
            if dims is None:
                raise _Decline("an operand's shape is unknown")
            aligned = out_axis - (out_rank - len(dims))
            size = dims[aligned] if 0 <= aligned < len(dims) else 1
            if size == 1:
                continue  # broadcast along the channels: nothing to shrink
            if size != width:
                raise _Decline("an operand's size along the channel axis differs")
            if const is None:
                raise _Decline("another operand with these channels comes from a node the pass does not track")
            if node.op_type == "PRelu" and index != 1:
                raise _Decline("PRelu data operand")
            for seg in segs:
                self.uf.get(seg.group).members.append(
                    ChannelParam(node.name or "", index, value.name or "", aligned, "operand", seg)
                )
        self._set(out, segs, out_axis)

    def _concat(self, node: ir.Node) -> None:
        out = node.outputs[0]
        dims = _static_dims(out)
        if dims is None:
            raise _Decline("the output rank is unknown")
        axis = node.attributes.get_int("axis", 0) % len(dims)
        tracked = [v for v in node.inputs if v is not None and v in self.segments]
        channel_axes = {self.axes[v] for v in tracked}
        if channel_axes != {axis}:
            raise _Decline("concatenation along another axis than the channels")
        segs: list[Segment] = []
        offset = 0
        for value in node.inputs:
            if value is None:
                continue
            if value in self.segments:
                for seg in self.segments[value]:
                    segs.append(Segment(seg.group, offset + seg.start, seg.length, seg.repeat))
                offset += self._width(value)
                continue
            vdims = _static_dims(value)
            width = vdims[axis] if vdims is not None and axis < len(vdims) else None
            if width is None:
                raise _Decline("an untracked input's channel count is unknown")
            opaque = self._opaque(value, width, f"concatenated with '{value.name}', which the pass does not track")
            segs.append(Segment(opaque[0].group, offset, width))
            offset += width
        self._set(out, segs, axis)

    def _pool(self, node: ir.Node) -> None:
        data = node.inputs[0]
        if data is None or data not in self.segments or self.axes[data] != 1:
            raise _Decline("pooling over the channel axis")
        if node.op_type in ("Resize", "Upsample"):
            scales = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            sizes = node.inputs[3] if len(node.inputs) > 3 else None
            if sizes is not None or scales is None or scales.size < 2 or float(scales[1]) != 1.0:
                raise _Decline("a Resize that may change the channel axis")
        if any(v is not None and v in self.segments for v in node.inputs[1:]):
            raise _Decline("a second input carries channels")
        self._set(node.outputs[0], list(self.segments[data]), 1)

    def _reduce(self, node: ir.Node) -> None:
        data = node.inputs[0]
        assert data is not None
        rank = len(data.shape) if data.shape is not None else None
        axes = _int_list(node, "axes", 1)
        if rank is None or axes is None or not axes:
            raise _Decline("reduction axes or rank unknown (or all axes)")
        axes = [a % rank for a in axes]
        axis = self.axes[data]
        if axis in axes:
            raise _Decline("reduction over the channel axis")
        keep = node.attributes.get_int("keepdims", 1)
        new_axis = axis if keep else axis - sum(1 for a in axes if a < axis)
        self._set(node.outputs[0], list(self.segments[data]), new_axis)

    def _flatten(self, node: ir.Node) -> None:
        data = node.inputs[0]
        assert data is not None
        dims = _static_dims(data)
        out_dims = _static_dims(node.outputs[0])
        if dims is None or out_dims is None or len(out_dims) != 2:
            raise _Decline("only a flatten to [N, features] with known ranks keeps channels apart")
        axis = self.axes[data]
        if node.op_type == "Flatten" and node.attributes.get_int("axis", 1) != 1:
            raise _Decline("Flatten with axis other than 1")
        if node.op_type == "Reshape":
            if any(d is None for d in dims[1:]):
                raise _Decline("a Reshape of a tensor whose channel and spatial sizes are not static")
            if _last_shape_entry(node.inputs[1] if len(node.inputs) > 1 else None) != -1:
                raise _Decline("a Reshape whose shape names the feature count (write -1 to let it shrink)")
        if axis != 1 or any(d is None for d in dims[2:]):
            raise _Decline("flattening needs the channels on axis 1 and static spatial sizes")
        inner = math.prod(d or 0 for d in dims[2:]) if len(dims) > 2 else 1
        segs = [Segment(s.group, s.start * inner, s.length, s.repeat * inner) for s in self.segments[data]]
        self._set(node.outputs[0], segs, 1)

    def _squeeze(self, node: ir.Node) -> None:
        data = node.inputs[0]
        assert data is not None
        axes = _int_list(node, "axes", 1)
        rank = len(data.shape) if data.shape is not None else None
        out_rank = len(node.outputs[0].shape) if node.outputs[0].shape is not None else None
        if axes is None or rank is None or out_rank is None or not axes:
            raise _Decline("squeeze/unsqueeze axes or ranks unknown")
        axis = self.axes[data]
        if node.op_type == "Squeeze":
            axes = [a % rank for a in axes]
            if axis in axes:
                raise _Decline("squeezing the channel axis")
            new_axis = axis - sum(1 for a in axes if a < axis)
        else:
            axes = sorted(a % out_rank for a in axes)
            new_axis = axis
            for a in axes:
                if a <= new_axis:
                    new_axis += 1
        self._set(node.outputs[0], list(self.segments[data]), new_axis)

    def _transpose(self, node: ir.Node) -> None:
        data = node.inputs[0]
        assert data is not None
        perm = node.attributes.get_ints("perm")
        rank = len(data.shape) if data.shape is not None else None
        if perm is None:
            if rank is None:
                raise _Decline("Transpose of unknown rank")
            perm = list(reversed(range(rank)))
        self._set(node.outputs[0], list(self.segments[data]), list(perm).index(self.axes[data]))

    def _pad(self, node: ir.Node) -> None:
        data = node.inputs[0]
        assert data is not None
        pads = _int_list(node, "pads", 1)
        rank = len(data.shape) if data.shape is not None else None
        if pads is None or rank is None or len(pads) != 2 * rank:
            raise _Decline("Pad with unknown pads or explicit axes")
        axis = self.axes[data]
        if pads[axis] or pads[axis + rank]:
            raise _Decline("padding along the channel axis")
        self._pass_through(node, data)


def _last_shape_entry(shape: ir.Value | None) -> int | None:
    """The last entry of a Reshape's shape: a constant, or the last constant part of a Concat (``[N, -1]``
    built from ``Shape``); ``None`` when it is not known."""
    data = constant_array(shape)
    if data is not None:
        return int(np.asarray(data).reshape(-1)[-1]) if np.asarray(data).size else None
    producer = shape.producer() if shape is not None else None
    if producer is not None and producer.op_type == "Concat" and producer.inputs:
        return _last_shape_entry(producer.inputs[-1])
    return None


class _Decline(Exception):
    """A node the rewrite cannot shrink through (the message says why)."""


def find_channel_groups(model: ir.Model) -> GroupAnalysis:
    """Find the channel groups of ``model``'s main graph (nodes in topological order, shapes inferred).

    Returns:
        The :class:`GroupAnalysis`: every group with its sources, members, sinks and decline reason.
    """
    return _Analyzer(model).run()
