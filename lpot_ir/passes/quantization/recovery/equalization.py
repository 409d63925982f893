"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"), an FP32 rewrite run before
calibration.

Spec: ``Conv(x, W1, b1) → act → Conv(·, W2, b2)  ⇒  Conv(x, W1/s, b1/s) → act → Conv(·, W2·s, b2)``
with one factor ``s_c = sqrt(r1_c / r2_c)`` per channel ``c`` between the two convolutions, where ``r1_c``
is the largest ``|W1|`` of output channel ``c`` and ``r2_c`` the largest ``|W2|`` reading input channel
``c``. Afterwards both ranges are ``sqrt(r1_c * r2_c)``: per-tensor weight quantization loses far less
on the channels that were small, and the activation between the two convs gets more even channels.

The rewrite is exact because every op allowed between the two convolutions commutes with a positive
per-channel scale: ``Relu``, ``LeakyRelu``, ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``,
``GlobalMaxPool`` and ``Pad`` (zero, reflect or edge padding of the spatial axes). Depthwise and grouped convolutions are handled by their group
structure (a depthwise conv in the middle of ``Conv → DW → Conv`` gets one factor on its input side and
one on its output side); chains are equalized pairwise, sweep after sweep, until no factor moves by
more than ``tolerance`` (at most ``max_iterations`` sweeps).

``Clip`` (ReLU6) is not positively homogeneous: ``Clip(x/s, 0, 6) != Clip(x, 0, 6)/s`` where ``x``
reaches the bound. Replacing ReLU6 by ReLU (what some tools do) changes the function: on
EfficientNet-Lite0 it changes the top-1 class of 91% of the images, so it is never done here. By
default a pair through a Clip declines. With ``clip_headroom=h`` and per-channel statistics of the
Clip's input from calibration (``channel_ranges``), a channel is scaled if ``h`` times its calibrated
extremes stay within the Clip's bounds, and only shrunk (``s >= 1``), so the Clip can differ only on
values beyond its own bound that calibration never came near; channels that came near keep ``s = 1``.
That is exact on the calibration data but not everywhere (on EfficientNet-Lite0 new images moved the
logits by up to 0.4 at ``h = 2``), and it gained nothing there: the channels that matter are the ones
that reach 6, which no exact rewrite can scale. Hence off by default.

High-bias absorption (optional, needs the same statistics): through a plain ``Relu`` into a consumer
without padding, ``c = max(0, min over calibration of the pre-activation)`` per channel moves out of
the first bias into the second (``b1 -= c``, ``b2 += W2 · c``): exact wherever the pre-activation stays
above ``c``, which calibration saw everywhere. It shrinks the activation's range when channels ride on
a large positive bias.

Declines (each with its reason in the report): a weight or bias shared with another node or not a
constant; the first conv's output read by more than one node or being a graph output; any other op
between the convs (``Add``, ``Concat``, ``Sigmoid`` ...); a Clip whose bounds exclude 0 or that every
channel reached; channel counts that do not line up.

The factors (float32) are recorded per pair (:class:`~lpot_ir.passes.quantization.recovery.report.SiteFactors`)
and a replay with ``factors=`` applies exactly those, so a recipe reproduces the model bit for bit.

:func:`equalize` runs the algorithm on a model; :class:`CrossLayerEqualizationPass` is the registered
``int8-prepare`` step (switched by ``RecoveryConfig.equalization``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from lpot_ir.calibration.result import ChannelRange
from lpot_ir.errors import QuantizationError
from lpot_ir.ir.builder import GraphBuilder
from lpot_ir.ir.pattern import attribute_value
from lpot_ir.passes.base import register_pass
from lpot_ir.passes.quantization.context import QuantizationPass
from lpot_ir.passes.quantization.recovery.report import (
    RecoveryPassResult,
    RecoveryReport,
    SiteFactors,
    constant_array,
    set_constant,
)

__all__ = [
    "SPEC",
    "TECHNIQUE",
    "EqualizationPair",
    "CrossLayerEqualizationPass",
    "equalize",
    "find_pairs",
    "equalization_statistics",
    "compute_factors",
    "apply_factors",
]

logger = logging.getLogger(__name__)

TECHNIQUE = "equalization"
"""The key of this technique's factors in recipes and reports."""

SPEC = "Conv(x, W1, b1) → act → Conv(·, W2, b2)  ⇒  Conv(x, W1/s, b1/s) → act → Conv(·, W2·s, b2)"

_HOMOGENEOUS = ("Relu", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Pad")
"""Ops that commute with a positive per-channel scale (Pad: spatial zero/reflect/edge padding only)."""


@dataclass
class EqualizationPair:
    """Two convolutions linked through ops that commute with a per-channel scale.

    Attributes:
        producer: the first Conv (its output channels are divided by ``s``).
        consumer: the second Conv (its input channels are multiplied by ``s``).
        path: the nodes between them, in order.
        clip: ``(lo, hi)`` bounds of the one Clip on the path (``None`` when there is none).
        clip_input: the value whose per-channel range decides which channels a Clip lets scale.
        relu_input: the Relu input, when the path is exactly one Relu and the consumer has no padding
            (high-bias absorption applies).
    """

    producer: ir.Node
    consumer: ir.Node
    path: tuple[ir.Node, ...] = ()
    clip: tuple[float | None, float | None] | None = None
    clip_input: str | None = None
    relu_input: str | None = None

    @property
    def key(self) -> str:
        return f"{self.producer.name} -> {self.consumer.name}"

    @property
    def channels(self) -> int:
        w = constant_array(self.producer.inputs[1])
        assert w is not None
        return int(w.shape[0])


# --------------------------------------------------------------------------------------------------
# Finding pairs
# --------------------------------------------------------------------------------------------------


def _is_onnx(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _conv_weights(node: ir.Node, role: str) -> str | None:
    """Why ``node``'s weight/bias cannot be rescaled (``None``: they can)."""
    if node.op_type != "Conv" or not _is_onnx(node):
        return f"{role} {node.op_type} '{node.name}' is not a Conv"
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return f"{role} Conv '{node.name}' has no weight input"
    for index, what in ((1, "weight"), (2, "bias")):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            continue
        array = constant_array(value)
        if array is None:
            return f"the {what} of {role} Conv '{node.name}' is not a constant initializer"
        if array.dtype != np.float32:
            return f"the {what} of {role} Conv '{node.name}' is {array.dtype}, not float32"
        users = {use.node.name or "" for use in value.uses()}
        if len(users) > 1 or value.is_graph_output():
            others = sorted(users - {node.name})
            return f"the {what} '{value.name}' of {role} Conv '{node.name}' is shared with {others}"
    w = constant_array(node.inputs[1])
    assert w is not None
    if w.ndim < 3:
        return f"the weight of {role} Conv '{node.name}' has rank {w.ndim}"
    group = int(attribute_value(node, "group", 1) or 1)
    if group < 1 or w.shape[0] % group:
        return f"{role} Conv '{node.name}' has {w.shape[0]} output channels, not divisible by group={group}"
    return None


def _single_user(value: ir.Value) -> ir.Node | str:
    """The one node reading ``value``, or why there is not exactly one."""
    if value.is_graph_output():
        return f"'{value.name}' is a graph output"
    users = list(dict.fromkeys(use.node for use in value.uses()))
    if len(users) != 1:
        names = ", ".join(f"{u.op_type} '{u.name}'" for u in users) or "nothing"
        return f"'{value.name}' is read by {len(users)} nodes ({names})"
    return users[0]


def _clip_bounds(node: ir.Node) -> tuple[float | None, float | None] | str:
    bounds: list[float | None] = []
    for index in (1, 2):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            bounds.append(None)
            continue
        array = constant_array(value)
        if array is None or array.size != 1:
            return f"Clip '{node.name}' has a bound that is not a constant scalar"
        bounds.append(float(array.reshape(())))
    lo, hi = bounds
    if (lo is not None and lo > 0) or (hi is not None and hi < 0):
        return f"Clip '{node.name}' bounds [{lo}, {hi}] exclude 0"
    return lo, hi


def _path_node_ok(node: ir.Node, value: ir.Value) -> str | None:
    """Why ``node`` (reading ``value`` at input 0) does not commute with a per-channel scale."""
    if not _is_onnx(node) or (node.op_type not in _HOMOGENEOUS and node.op_type != "Clip"):
        return f"'{value.name}' goes to {node.op_type} '{node.name}', which does not commute with a per-channel scale"
    if node.inputs[0] is not value or any(v is value for v in node.inputs[1:]):
        return f"'{value.name}' is not only the data input of {node.op_type} '{node.name}'"
    if len(node.outputs) > 1 and any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return f"{node.op_type} '{node.name}' has a second output in use"
    if node.op_type == "Pad":
        mode = attribute_value(node, "mode", "constant") or "constant"
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        pads = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if pads is None:
            return f"Pad '{node.name}' has no constant pads"
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            return f"Pad '{node.name}' has an axes input"
        pads = pads.reshape(-1)
        rank = pads.size // 2
        if rank < 2 or pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
            return f"Pad '{node.name}' pads the batch or channel axis"
        if mode == "constant" and len(node.inputs) > 2 and node.inputs[2] is not None:
            fill = constant_array(node.inputs[2])
            if fill is None or np.any(fill != 0):
                return f"Pad '{node.name}' pads with a constant that is not 0"
    return None


def _pair_from(producer: ir.Node) -> EqualizationPair | str:
    """The pair starting at ``producer``, or why there is none."""
    reason = _conv_weights(producer, "the first")
    if reason:
        return reason
    value = producer.outputs[0]
    path: list[ir.Node] = []
    clip: tuple[float | None, float | None] | None = None
    clip_input: str | None = None
    while True:
        user = _single_user(value)
        if isinstance(user, str):
            return user
        if user.op_type == "Conv" and _is_onnx(user):
            break
        reason = _path_node_ok(user, value)
        if reason:
            return reason
        if user.op_type == "Clip":
            if clip is not None:
                return f"more than one Clip between '{producer.name}' and the next Conv"
            bounds = _clip_bounds(user)
            if isinstance(bounds, str):
                return bounds
            if bounds[0] not in (None, 0.0) or bounds[1] not in (None, 0.0):
                clip, clip_input = bounds, value.name
        path.append(user)
        if len(path) > 8:
            return f"more than 8 ops between '{producer.name}' and the next Conv"
        value = user.outputs[0]
    consumer = user
    if consumer.inputs[0] is not value or any(v is value for v in consumer.inputs[1:]):
        return f"'{value.name}' is not (only) the data input of Conv '{consumer.name}'"
    reason = _conv_weights(consumer, "the second")
    if reason:
        return reason
    w1, w2 = constant_array(producer.inputs[1]), constant_array(consumer.inputs[1])
    assert w1 is not None and w2 is not None
    group2 = int(attribute_value(consumer, "group", 1) or 1)
    if w2.shape[1] * group2 != w1.shape[0]:
        return (
            f"Conv '{producer.name}' has {w1.shape[0]} output channels but Conv '{consumer.name}' reads "
            f"{w2.shape[1] * group2}"
        )
    relu_input = None
    if len(path) == 1 and path[0].op_type == "Relu" and _no_padding(consumer):
        relu_input = producer.outputs[0].name
    return EqualizationPair(producer, consumer, tuple(path), clip, clip_input, relu_input)


def _no_padding(conv: ir.Node) -> bool:
    auto_pad = attribute_value(conv, "auto_pad", "NOTSET") or "NOTSET"
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    pads = attribute_value(conv, "pads", None)
    return auto_pad in ("NOTSET", "VALID") and not any(pads or ())


def find_pairs(model: ir.Model) -> tuple[list[EqualizationPair], list[tuple[str, str]]]:
    """Every equalizable Conv pair of the main graph, and (site, reason) for each Conv that has none."""
    pairs: list[EqualizationPair] = []
    declined: list[tuple[str, str]] = []
    for node in model.graph:
        if node.op_type != "Conv" or not _is_onnx(node):
            continue
        found = _pair_from(node)
        if isinstance(found, str):
            declined.append((node.name or "(unnamed Conv)", found))
        else:
            pairs.append(found)
    return pairs, declined


def equalization_statistics(model: ir.Model, *, absorb_bias: bool = True, through_clip: bool = False) -> dict[str, int]:
    """Values whose per-channel range (axis 1) equalization reads: Relu inputs for high-bias absorption
    and, with ``through_clip``, Clip inputs. Give these to ``calibrate(channel_axes=...)``."""
    pairs, _ = find_pairs(model)
    wanted: dict[str, int] = {}
    for pair in pairs:
        if absorb_bias and pair.relu_input:
            wanted[pair.relu_input] = 1
        if through_clip and pair.clip_input:
            wanted[pair.clip_input] = 1
    return wanted


# --------------------------------------------------------------------------------------------------
# Computing the factors
# --------------------------------------------------------------------------------------------------


def _group(node: ir.Node) -> int:
    return int(attribute_value(node, "group", 1) or 1)


def _out_range(w: np.ndarray) -> np.ndarray:
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1)


def _grouped(w: np.ndarray, group: int) -> np.ndarray:
    """``W[M, Cg, k...]`` as ``[group, M/group, Cg, k]`` (input channel ``c`` is ``[c // Cg, :, c % Cg]``)."""
    return w.reshape(group, w.shape[0] // group, w.shape[1], -1)


def _in_range(w: np.ndarray, group: int) -> np.ndarray:
    return np.abs(_grouped(w, group)).max(axis=(1, 3)).reshape(-1)


def _scale_inputs(w: np.ndarray, group: int, s: np.ndarray) -> np.ndarray:
    grouped = _grouped(w, group) * s.reshape(group, 1, w.shape[1], 1)
    return grouped.reshape(w.shape)


@dataclass
class _Limits:
    """Per-channel bounds on a pair's cumulative factor: ``fixed`` channels keep 1, others stay >= ``low``."""

    fixed: np.ndarray
    low: np.ndarray
    note: str = ""


def _clip_limits(pair: EqualizationPair, ranges: ChannelRange, headroom: float) -> _Limits | str:
    assert pair.clip is not None
    lo_b, hi_b = pair.clip
    lo, hi = ranges.arrays()
    if lo.shape[0] != pair.channels:
        return f"the calibrated range of '{pair.clip_input}' has {lo.shape[0]} channels, the Conv {pair.channels}"
    fixed = ~(np.isfinite(lo) & np.isfinite(hi))
    if hi_b is not None and hi_b > 0:
        fixed |= np.where(hi > 0, hi * headroom, 0.0) > hi_b
    if lo_b is not None and lo_b < 0:
        fixed |= np.where(lo < 0, lo * headroom, 0.0) < lo_b
    # s >= 1 only: the channel shrinks, so the Clip can act (wrongly) only on values beyond its own bound,
    # which calibration never saw. Growing a channel (s < 1) would move the effective bound inside the
    # channel's range, and a channel that was nearly silent on calibration data may not be elsewhere.
    low = np.ones_like(hi)
    if fixed.all():
        return (
            f"every channel of '{pair.clip_input}' reached the Clip bounds [{lo_b}, {hi_b}] on the calibration "
            "data (scaling them would change what the Clip cuts)"
        )
    note = f"{int(fixed.sum())} of {fixed.size} channels reached the Clip bound and keep s=1" if fixed.any() else ""
    return _Limits(fixed, low, note)


@dataclass
class _Result:
    factors: dict[str, SiteFactors] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    declined: dict[str, str] = field(default_factory=dict)
    iterations: int = 0


def compute_factors(
    pairs: list[EqualizationPair],
    channel_ranges: Mapping[str, ChannelRange] | None = None,
    *,
    max_iterations: int = 100,
    tolerance: float = 1e-4,
    absorb_bias: bool = True,
    clip_headroom: float | None = None,
) -> _Result:
    """The equalization factors (and bias shifts) of ``pairs``, from the FP32 weights (float64 math).

    Args:
        pairs: from :func:`find_pairs`.
        channel_ranges: per-channel ranges (axis 1) of the values :func:`equalization_statistics` names.
        max_iterations: the cap on sweeps over all pairs.
        tolerance: stop when no factor of a sweep differs from 1 by more than this (in log space).
        absorb_bias: move the always-positive part of a Relu's input from one bias to the next.
        clip_headroom: ``None`` (default): pairs through a Clip decline. A number ``h >= 1``: a channel
            is shrunk through a Clip if ``h`` times its calibrated extremes stay within the bounds.
    """
    result = _Result()
    ranges = dict(channel_ranges or {})
    active: list[tuple[EqualizationPair, _Limits | None]] = []
    limits: _Limits | str | None
    for pair in pairs:
        if pair.clip is None:
            active.append((pair, None))
            continue
        assert pair.clip_input is not None
        if clip_headroom is None:
            result.declined[pair.key] = (
                f"Clip{list(pair.clip)} between the convs is not positively homogeneous: scaling a channel that "
                "reaches its bound would change what it cuts (scaling through a Clip is off by default)"
            )
            continue
        if pair.clip_input not in ranges:
            result.declined[pair.key] = (
                f"Clip{list(pair.clip)} between the convs is not positively homogeneous, and no calibration "
                f"statistics of '{pair.clip_input}' say which channels stay within its bounds"
            )
            continue
        limits = _clip_limits(pair, ranges[pair.clip_input], clip_headroom)
        if isinstance(limits, str):
            result.declined[pair.key] = limits
            continue
        active.append((pair, limits))

    weights: dict[ir.Node, np.ndarray] = {}
    for pair, _ in active:
        for node in (pair.producer, pair.consumer):
            if node not in weights:
                w = constant_array(node.inputs[1])
                assert w is not None
                weights[node] = w.astype(np.float64)
    total = {pair.key: np.ones(pair.channels) for pair, _ in active}
    for sweep in range(1, max_iterations + 1):
        largest = 0.0
        for pair, limits in active:
            w1, w2 = weights[pair.producer], weights[pair.consumer]
            r1, r2 = _out_range(w1), _in_range(w2, _group(pair.consumer))
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            if limits is not None:
                wanted = total[pair.key] * s
                s = np.where(limits.fixed, 1.0, np.maximum(wanted, limits.low) / total[pair.key])
            weights[pair.producer] = w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1))
            weights[pair.consumer] = _scale_inputs(w2, _group(pair.consumer), s)
            total[pair.key] = total[pair.key] * s
            largest = max(largest, float(np.max(np.abs(np.log(s)))))
        result.iterations = sweep
        if largest <= tolerance:
            break
    else:
        logger.info("Cross-layer equalization stopped after %d sweeps (cap) before converging.", max_iterations)

    for pair, limits in active:
        scale = total[pair.key].astype(np.float32)
        shift = None
        detail = f"{int(np.count_nonzero(scale != 1))} of {scale.size} channels scaled"
        if limits is not None and limits.note:
            detail += f" ({limits.note})"
        if absorb_bias and pair.relu_input is not None and pair.relu_input in ranges:
            lo, _hi = ranges[pair.relu_input].arrays()
            if lo.shape[0] == scale.size:
                c = np.where(np.isfinite(lo), np.maximum(lo, 0.0), 0.0) / scale.astype(np.float64)
                if np.any(c > 0):
                    shift = c.astype(np.float32)
                    detail += f"; high bias absorbed on {int(np.count_nonzero(shift))} channels"
        if not np.any(scale != 1) and shift is None:
            result.declined[pair.key] = "the weight ranges are already equal (every factor is 1)"
            continue
        result.factors[pair.key] = SiteFactors.from_arrays(scale, shift)
        result.details[pair.key] = detail
    return result


# --------------------------------------------------------------------------------------------------
# Applying the factors
# --------------------------------------------------------------------------------------------------


@dataclass
class _ConvEdit:
    in_scale: np.ndarray | None = None
    in_shift: np.ndarray | None = None
    out_scale: np.ndarray | None = None
    out_shift: np.ndarray | None = None


def apply_factors(model: ir.Model, pairs: list[EqualizationPair], factors: Mapping[str, SiteFactors]) -> int:
    """Rescale the weights and biases of ``pairs`` by ``factors`` (pair key -> factors); return the count.

    Each weight is computed from the original one in float64 and rounded once, so the result depends
    only on the model and the (float32) factors: a replay reproduces it bit for bit.

    Raises:
        QuantizationError: a factor's length does not match its pair's channels.
    """
    edits: dict[ir.Node, _ConvEdit] = {}
    applied = 0
    for pair in pairs:
        site = factors.get(pair.key)
        if site is None:
            continue
        scale, shift = site.scale_array().astype(np.float64), site.shift_array()
        if scale.size != pair.channels or (shift is not None and shift.size != pair.channels):
            raise QuantizationError(
                f"The equalization factors for '{pair.key}' have {scale.size} channels, the model {pair.channels}. "
                "The recipe does not belong to this model; quantize it again."
            )
        if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
            raise QuantizationError(f"The equalization factors for '{pair.key}' are not all positive and finite.")
        shift64 = shift.astype(np.float64) if shift is not None else None
        edits.setdefault(pair.producer, _ConvEdit()).out_scale = scale
        edits[pair.producer].out_shift = shift64
        edits.setdefault(pair.consumer, _ConvEdit()).in_scale = scale
        edits[pair.consumer].in_shift = shift64
        applied += 1
    builder: GraphBuilder | None = None
    for node, edit in edits.items():
        weight_value = node.inputs[1]
        assert weight_value is not None
        w = constant_array(weight_value)
        assert w is not None
        bias_value = node.inputs[2] if len(node.inputs) > 2 else None
        b = constant_array(bias_value)
        new_w = w.astype(np.float64)
        new_b = b.astype(np.float64) if b is not None else np.zeros(w.shape[0])
        if edit.in_scale is not None:
            new_w = _scale_inputs(new_w, _group(node), edit.in_scale)
            if edit.in_shift is not None:  # the input lost c per channel: add W·c back (no padding)
                grouped = _grouped(new_w, _group(node))
                c = edit.in_shift.reshape(_group(node), 1, w.shape[1], 1)
                new_b = new_b + (grouped * c).sum(axis=(2, 3)).reshape(-1)
        if edit.out_scale is not None:
            new_w = new_w / edit.out_scale.reshape((-1,) + (1,) * (w.ndim - 1))
            new_b = new_b / edit.out_scale
            if edit.out_shift is not None:
                new_b = new_b - edit.out_shift
        set_constant(weight_value, new_w.astype(w.dtype))
        if b is not None:
            assert bias_value is not None
            set_constant(bias_value, new_b.astype(b.dtype))
        elif np.any(new_b != 0):
            builder = builder or GraphBuilder(model)
            bias = builder.initializer(f"{node.name}/equalized_bias", new_b.astype(w.dtype))
            if len(node.inputs) < 3:
                node.resize_inputs(3)
            node.replace_input_with(2, bias)
    return applied


# --------------------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------------------


def equalize(
    model: ir.Model,
    *,
    channel_ranges: Mapping[str, ChannelRange] | None = None,
    factors: Mapping[str, SiteFactors] | None = None,
    max_iterations: int = 100,
    tolerance: float = 1e-4,
    absorb_bias: bool = True,
    clip_headroom: float | None = None,
) -> RecoveryReport:
    """Cross-layer equalization of ``model``'s Conv pairs (see the module docstring), in place.

    Args:
        model: the FP32 model.
        channel_ranges: per-channel ranges of :func:`equalization_statistics`' values (calibration of the
            FP32 model); without them no bias is absorbed (and nothing is scaled through a Clip).
        factors: replay exactly these factors (pair key -> :class:`SiteFactors`, e.g. from a recipe)
            instead of computing them; a pair the model lacks is an error.
        max_iterations, tolerance, absorb_bias, clip_headroom: see :func:`compute_factors`.

    Returns:
        Every Conv (applied or declined with the reason) and the factors used.
    """
    if max_iterations < 1 or not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError("max_iterations must be >= 1 and tolerance >= 0")
    if clip_headroom is not None and not clip_headroom >= 1.0:
        raise ValueError(f"clip_headroom must be None or >= 1, got {clip_headroom}")
    report = RecoveryReport(TECHNIQUE)
    pairs, declined = find_pairs(model)
    if factors is not None:
        missing = sorted(set(factors) - {p.key for p in pairs})
        if missing:
            raise QuantizationError(
                f"The recipe equalizes Conv pair(s) this model does not have: {missing[:3]}. Apply the recipe "
                "to the FP32 model it was made from."
            )
        details = {key: "replayed" for key in factors}
    else:
        computed = compute_factors(
            pairs, channel_ranges, max_iterations=max_iterations, tolerance=tolerance,
            absorb_bias=absorb_bias, clip_headroom=clip_headroom,
        )
        factors, details = computed.factors, computed.details
        report.iterations = computed.iterations
        declined += list(computed.declined.items())
    applied = apply_factors(model, pairs, factors)
    for pair in pairs:
        if pair.key in factors:
            report.apply(pair.key, details.get(pair.key, ""))
    for site, reason in declined:
        report.decline(site, reason)
    report.factors = dict(factors)
    logger.info("cross-layer equalization: %d pair(s) applied, %d declined", applied, len(report.declined))
    return report


@register_pass("cross-layer-equalization")
class CrossLayerEqualizationPass(QuantizationPass):
    """``int8-prepare`` step: cross-layer equalization when ``context.recovery.equalization`` is on.

    Reads the per-channel ranges of Relu inputs (high-bias absorption) from the context when it has
    calibration data; replays ``context.recovery_factors["equalization"]`` when given.
    """

    spec: ClassVar[str] = SPEC

    def call(self, model: ir.Model) -> RecoveryPassResult:
        context = self.context
        if not context.recovery.equalization:
            return RecoveryPassResult(model, False)
        replay = context.recovery_factors
        if replay is not None:
            report = equalize(model, factors=dict(replay.get(TECHNIQUE, {})))
        else:
            wanted = equalization_statistics(model)
            ranges = context.channel_statistics(wanted) if wanted and context.has_data else None
            report = equalize(model, channel_ranges=ranges)
        applied = len(report.applied)
        return RecoveryPassResult(
            model, applied > 0, changes=applied, details={"pairs": applied, "declined": len(report.declined)},
            report=report,
        )
