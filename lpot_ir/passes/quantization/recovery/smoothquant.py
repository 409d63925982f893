"""SmoothQuant (Xiao et al. 2022), an FP32 rewrite run before calibration.

Spec: ``X → MatMul(·, W)  ⇒  X/s → MatMul(·, s·W)``, ``s_j = max|X_j|^α / max|W_j|^(1-α)`` per input
channel ``j`` (the last axis of ``X``, a row of ``W``). A few channels of a transformer's activations
hold most of its range ("outliers"), so one per-tensor INT8 scale for ``X`` wastes its levels on
them; dividing those channels by ``s`` and multiplying the weight rows that read them by ``s`` moves
part of the range (``α``: how much) into the weights, which are quantized per output channel.

``max|X_j|`` comes from calibration of the FP32 model (per-channel statistics of ``X``,
:func:`smoothquant_statistics`); ``max|W_j|`` is the largest over every MatMul/Gemm that reads ``X``
(the Q, K and V projections share their input, so they share one ``s``). A channel whose statistics
or weights are all zero keeps ``s = 1``.

Where ``X/s`` goes (the first that applies):

* folded into ``X``'s producer when every reader of ``X`` is smoothed (``Shape`` readers do not count):
  ``LayerNormalization`` (scale and bias ``/ s``), ``Mul``/``Div`` by a constant (the constant ``/ s`` or
  ``· s``), ``Add`` of a constant to such a foldable value (both ``/ s``), ``MatMul``/``Gemm`` with a
  constant weight (its output columns and bias ``/ s``). A constant that other nodes share (after
  deduplication, a LayerNorm's scale may be one initializer for several layers) is copied for this node.
  No op is added. A *scalar* constant is not folded: a per-channel one would stop ONNX Runtime's fusions
  (GELU's ``x * 0.5 * (1 + erf(..))`` with a vector 0.5 is no longer fused into ``BiasGelu``; on MiniLM that
  cost six fused kernels), so those sites get an inserted Mul instead.
  A ``Mul``/``Div``/``Add`` folds only where it stays FP32 (an op that can run in INT8 would quantize its
  now per-channel constant per tensor, which loses the small channels: on a test model with ``α = 0.9``
  that destroyed the output).
* otherwise, with ``insert_mul``, an inserted ``Mul(X, 1/s)`` read only by the smoothed nodes, where
  ``X``'s producer stays FP32 anyway (no INT8 kernel, or its inputs come from such an op). This is what a post-LN encoder (BERT,
  MiniLM) needs: the LayerNorm output also feeds the residual ``Add``, so it cannot be folded. The Mul
  joins the LayerNorm's FP32 region and costs one elementwise pass over ``X``. After a producer that
  can run in INT8 (a Reshape, a Conv ...) a Mul would split the INT8 region; those sites decline (on
  MiniLM the attention output's Reshape site gained nothing when tried).
* otherwise the site declines with the reason.

Also declined: a weight shared with a node outside the group, a ``Gemm`` with ``transA``, an ``X`` of
unknown or mismatched width, a site without calibration statistics.

The factors (float32 ``s`` per site) are recorded (:class:`~lpot_ir.passes.quantization.recovery.report.SiteFactors`)
and a replay with ``factors=`` applies exactly those, so a recipe reproduces the model bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, OpCategory
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
    "SmoothGroup",
    "SmoothQuantPass",
    "smooth",
    "find_groups",
    "smoothquant_statistics",
    "compute_scales",
    "apply_scales",
]

logger = logging.getLogger(__name__)

TECHNIQUE = "smoothquant"
"""The key of this technique's factors in recipes and reports."""

SPEC = "X → MatMul(·, W)  ⇒  X/s → MatMul(·, s·W),  s_j = max|X_j|^α / max|W_j|^(1-α)"

_MAX_FOLD_DEPTH = 4


@dataclass(frozen=True)
class _FoldStep:
    """One constant that absorbs ``1/s``: ``node``'s input ``index``, divided (or, ``multiply``, multiplied) by s.

    ``axis`` is the constant's axis holding the channels for a weight matrix (``None``: the constant
    broadcasts along the last axis of ``X``).
    """

    node: ir.Node
    index: int
    multiply: bool = False
    axis: int | None = None


@dataclass
class SmoothGroup:
    """The MatMul/Gemm nodes that read one activation ``X`` through a constant weight.

    Attributes:
        value: ``X``.
        consumers: the smoothed nodes (``X`` is their input 0, their weight is input 1).
        channels: the width of ``X`` (the weights' input channels).
        fold: the constants that absorb ``1/s`` in ``X``'s producer (``None``: no fold possible).
        no_fold: why there is no fold (empty when there is one).
        no_insert: why an inserted Mul is not worth it either (empty when it is, or when there is a fold).
    """

    value: ir.Value
    consumers: tuple[ir.Node, ...]
    channels: int
    fold: tuple[_FoldStep, ...] | None
    no_fold: str = ""
    no_insert: str = ""

    @property
    def key(self) -> str:
        return self.value.name or ""


def _is_onnx(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _weight_rows(node: ir.Node) -> np.ndarray | None:
    """The constant weight of a MatMul/Gemm as ``[K, N]`` (a view), or ``None``."""
    w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return None
    if node.op_type == "Gemm" and int(attribute_value(node, "transB", 0) or 0):
        return w.T
    return w


def _consumer_reason(node: ir.Node, value: ir.Value) -> str | None:
    """Why ``node`` (reading ``value``) cannot be smoothed; ``None`` when it can."""
    if not _is_onnx(node) or node.op_type not in ("MatMul", "Gemm"):
        return f"{node.op_type} '{node.name}' is not a MatMul/Gemm"
    if node.inputs[0] is not value or any(v is value for v in node.inputs[1:]):
        return f"'{value.name}' is not only input 0 of {node.op_type} '{node.name}'"
    if node.op_type == "Gemm" and int(attribute_value(node, "transA", 0) or 0):
        return f"Gemm '{node.name}' has transA=1"
    if _weight_rows(node) is None:
        return f"{node.op_type} '{node.name}' has no constant float32 matrix weight"
    return None


def _shared_weight(node: ir.Node, group: set[str]) -> str | None:
    weight = node.inputs[1]
    assert weight is not None
    others = sorted({u.node.name or "" for u in weight.uses()} - group)
    if others or weight.is_graph_output():
        return f"the weight '{weight.name}' of {node.op_type} '{node.name}' is shared with {others}"
    return None


def _float_constant(node: ir.Node, index: int) -> np.ndarray | None:
    """A float32 constant input (shared or not: a fold gives the node its own copy when it is shared)."""
    value = node.inputs[index] if index < len(node.inputs) else None
    array = constant_array(value)
    if array is None or array.dtype != np.float32:
        return None
    return array


def _broadcasts_on_last(array: np.ndarray, channels: int) -> bool:
    """``array`` broadcasts along the last axis only (shape ``()``, ``(K,)``, ``(1, ..., K)`` or ``(..., 1)``)."""
    if array.ndim == 0:
        return True
    return array.shape[-1] in (1, channels) and all(d == 1 for d in array.shape[:-1])


def _fold_steps(value: ir.Value, channels: int, depth: int = 0) -> tuple[_FoldStep, ...] | str:
    """The constants of ``value``'s producer that can absorb a per-channel ``1/s`` (or why none can)."""
    producer = value.producer()
    if producer is None or value.graph is None:
        return f"'{value.name}' is a graph input"
    if not _is_onnx(producer):
        return f"'{value.name}' comes from {producer.op_type} '{producer.name}', which cannot absorb a scale"
    op_type = producer.op_type
    if op_type == "LayerNormalization":
        axis = int(attribute_value(producer, "axis", -1))
        rank = len(value.shape) if value.shape is not None else None
        if axis != -1 and (rank is None or axis != rank - 1):
            return f"LayerNormalization '{producer.name}' normalizes axis {axis}, not the last"
        steps = []
        for index in (1, 2):
            if index >= len(producer.inputs) or producer.inputs[index] is None:
                continue
            array = _float_constant(producer, index)
            if array is None or array.shape not in ((channels,), ()):
                return f"the scale or bias of LayerNormalization '{producer.name}' is not a float32 ({channels},) constant"
            steps.append(_FoldStep(producer, index))
        return tuple(steps)
    if op_type in ("Mul", "Div", "Add") and len(producer.inputs) == 2:
        consts = [constant_array(v) is not None for v in producer.inputs]
        if consts.count(True) != 1 or (op_type == "Div" and consts[0]):
            return f"{op_type} '{producer.name}' does not combine one value with one constant"
        if not _stays_fp32(producer):
            return (
                f"{op_type} '{producer.name}' can run in INT8, which would quantize its constant per tensor; a "
                "per-channel 1/s there loses the small channels"
            )
        index = consts.index(True)
        array = _float_constant(producer, index)
        if array is None or not _broadcasts_on_last(array, channels):
            return f"the constant of {op_type} '{producer.name}' is not float32 or not per last-axis channel"
        if array.ndim == 0 or array.shape[-1] != channels:
            return (
                f"the constant of {op_type} '{producer.name}' is a scalar; a per-channel one would stop ONNX Runtime "
                "fusing the pattern it belongs to (GELU's 0.5 into BiasGelu)"
            )
        if op_type != "Add":
            return (_FoldStep(producer, index, multiply=op_type == "Div"),)
        other = producer.inputs[1 - index]
        assert other is not None
        if depth >= _MAX_FOLD_DEPTH or len(other.uses()) != 1 or other.is_graph_output():
            return f"Add '{producer.name}' adds a constant to a value that is read elsewhere"
        inner = _fold_steps(other, channels, depth + 1)
        if isinstance(inner, str):
            return f"Add '{producer.name}' adds a constant to a value that cannot absorb the scale ({inner})"
        return (_FoldStep(producer, index), *inner)
    if op_type in ("MatMul", "Gemm"):
        w = _float_constant(producer, 1)
        if w is None or w.ndim != 2:
            return f"{op_type} '{producer.name}' has no constant float32 matrix weight"
        trans_b = op_type == "Gemm" and int(attribute_value(producer, "transB", 0) or 0)
        axis = 0 if trans_b else 1
        if w.shape[axis] != channels:
            return f"{op_type} '{producer.name}' has {w.shape[axis]} output channels, not {channels}"
        steps = [_FoldStep(producer, 1, axis=axis)]
        if op_type == "Gemm" and len(producer.inputs) > 2 and producer.inputs[2] is not None:
            c = _float_constant(producer, 2)
            if c is None or not _broadcasts_on_last(c, channels):
                return f"the bias of Gemm '{producer.name}' is not a float32 constant per output channel"
            steps.append(_FoldStep(producer, 2))
        return tuple(steps)
    return f"'{value.name}' comes from {op_type} '{producer.name}', which cannot absorb a per-channel scale"


def _group_for(value: ir.Value) -> SmoothGroup | str | None:
    """The group reading ``value``, a reason it has none, or ``None`` when no MatMul/Gemm reads it."""
    readers = list(dict.fromkeys(use.node for use in value.uses()))
    candidates = [n for n in readers if _is_onnx(n) and n.op_type in ("MatMul", "Gemm") and n.inputs[0] is value]
    if not candidates:
        return None
    reasons = [r for r in (_consumer_reason(n, value) for n in candidates) if r]
    consumers = [n for n in candidates if _consumer_reason(n, value) is None]
    if not consumers:
        return "; ".join(reasons)
    names = {n.name or "" for n in consumers}
    shared = [r for r in (_shared_weight(n, names) for n in consumers) if r]
    if shared:
        return "; ".join(shared)
    widths = {int(_weight_rows(n).shape[0]) for n in consumers}  # type: ignore[union-attr]
    if len(widths) != 1:
        return f"the MatMul/Gemm nodes reading '{value.name}' have weights of different widths {sorted(widths)}"
    (channels,) = widths
    dims = value.shape.dims if value.shape is not None else ()
    if dims and isinstance(dims[-1], int) and dims[-1] != channels:
        return f"'{value.name}' has {dims[-1]} channels on its last axis, the weights {channels}"
    others = [n for n in readers if n not in consumers and not (_is_onnx(n) and n.op_type == "Shape")]
    if value.is_graph_output():
        fold: tuple[_FoldStep, ...] | str = f"'{value.name}' is a graph output"
    elif others:
        names_shown = ", ".join(f"{n.op_type} '{n.name}'" for n in others[:3])
        fold = f"'{value.name}' is also read by {names_shown}"
    else:
        fold = _fold_steps(value, channels)
    if isinstance(fold, str):
        return SmoothGroup(value, tuple(consumers), channels, None, fold, _insert_reason(value))
    return SmoothGroup(value, tuple(consumers), channels, fold)


def _insert_reason(value: ir.Value) -> str:
    """Why a ``Mul`` inserted after ``value`` would cost more than it saves (empty: it would not).

    A Mul after an op that stays FP32 anyway (LayerNormalization, Erf ...) joins an FP32 region and costs
    one elementwise pass. After an op that can run in INT8 (Reshape, Transpose, Conv, Add ...) it would
    split the INT8 region with a requantization; measured on MiniLM, the one such site (the attention
    output's Reshape) gained nothing, so it declines.
    """
    producer = value.producer()
    if producer is None:
        return f"'{value.name}' is a graph input, which can be quantized, and a Mul after it would add a requantization"
    if not _stays_fp32(producer):
        return (
            f"its producer {producer.op_type} '{producer.name}' can run in INT8, and a Mul after it would split "
            "the INT8 region"
        )
    return ""


def _stays_fp32(node: ir.Node, depth: int = 0) -> bool:
    """Whether ``node`` stays FP32 under any configuration: ONNX Runtime has no INT8 kernel for it, or it
    is an op that is quantized only when its inputs arrive quantized (Add, Mul, Reshape ...) and one of
    them comes from an op that stays FP32 (the annotators' follower rule). Unsure means no."""
    if not _is_onnx(node):
        return True
    cap = CAPABILITIES.get(node.op_type)
    if cap is None:
        return True
    if cap.category in (OpCategory.COMPUTE, OpCategory.EMBEDDING, OpCategory.RECURRENT) or depth >= 8:
        return False
    for value in node.inputs:
        if value is None or constant_array(value) is not None:
            continue
        producer = value.producer()
        if producer is not None and _stays_fp32(producer, depth + 1):
            return True
    return False


def find_groups(model: ir.Model) -> tuple[list[SmoothGroup], list[tuple[str, str]]]:
    """Every smoothable activation of the main graph, and (site, reason) for those that are not."""
    groups: list[SmoothGroup] = []
    declined: list[tuple[str, str]] = []
    seen: set[int] = set()
    for node in model.graph:
        if not (_is_onnx(node) and node.op_type in ("MatMul", "Gemm")) or not node.inputs:
            continue
        value = node.inputs[0]
        if value is None or id(value) in seen:
            continue
        seen.add(id(value))
        found = _group_for(value)
        if found is None:
            continue
        if isinstance(found, str):
            declined.append((value.name or "", found))
        else:
            groups.append(found)
    return groups, declined


def smoothquant_statistics(model: ir.Model, *, insert_mul: bool = True) -> dict[str, int]:
    """Activations whose per-channel abs-max (last axis) SmoothQuant reads; give them to
    ``calibrate(channel_axes=...)``. Without ``insert_mul`` only foldable sites are listed."""
    groups, _ = find_groups(model)
    return {g.key: -1 for g in groups if g.fold is not None or (insert_mul and not g.no_insert)}


def compute_scales(
    groups: list[SmoothGroup], channel_ranges: Mapping[str, ChannelRange] | None, alpha: float
) -> tuple[dict[str, SiteFactors], dict[str, str]]:
    """``s`` per group (float32) from the activation statistics and the weights; and the declines."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    factors: dict[str, SiteFactors] = {}
    declined: dict[str, str] = {}
    ranges = dict(channel_ranges or {})
    for group in groups:
        if group.fold is None and group.no_insert:
            declined[group.key] = f"X/s cannot be folded ({group.no_fold}) and {group.no_insert}"
            continue
        stats = ranges.get(group.key)
        if stats is None:
            declined[group.key] = f"no calibration statistics of '{group.key}' (per-channel abs-max)"
            continue
        act = stats.absmax()
        if act.size != group.channels:
            declined[group.key] = f"calibration saw {act.size} channels in '{group.key}', the weights have {group.channels}"
            continue
        wmax = np.zeros(group.channels)
        for node in group.consumers:
            rows = _weight_rows(node)
            assert rows is not None
            wmax = np.maximum(wmax, np.abs(rows.astype(np.float64)).max(axis=1))
        ok = (act > 0) & (wmax > 0)
        s = np.ones(group.channels)
        s[ok] = np.power(act[ok], alpha) / np.power(wmax[ok], 1.0 - alpha)
        scale = s.astype(np.float32)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            declined[group.key] = "the smoothing factors overflow float32"
            continue
        factors[group.key] = SiteFactors.from_arrays(scale)
    return factors, declined


def _scaled(array: np.ndarray, s: np.ndarray, *, multiply: bool, axis: int | None) -> np.ndarray:
    data = array.astype(np.float64)
    if axis is None:  # broadcasts along the last axis: () / (K,) / (1.., K) / (.., 1)
        shape = data.shape[:-1] + (s.size,) if data.ndim else (s.size,)
        data = np.broadcast_to(data, shape)
        factor = s
    else:
        factor = s.reshape([-1 if a == axis else 1 for a in range(data.ndim)])
    out = data * factor if multiply else data / factor
    return out.astype(array.dtype)


def apply_scales(
    model: ir.Model, groups: list[SmoothGroup], factors: Mapping[str, SiteFactors], *, insert_mul: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """Scale the weights of each group by ``s`` and fold or insert ``1/s``; return (applied details, declines).

    Every new constant is computed from the original one in float64 and rounded once, so the result
    depends only on the model and the float32 factors.

    Raises:
        QuantizationError: a factor's length does not match its group's channels.
    """
    applied: dict[str, str] = {}
    declined: dict[str, str] = {}
    builder: GraphBuilder | None = None
    for group in groups:
        site = factors.get(group.key)
        if site is None:
            continue
        s = site.scale_array().astype(np.float64)
        if s.size != group.channels:
            raise QuantizationError(
                f"The SmoothQuant factors for '{group.key}' have {s.size} channels, the model {group.channels}. "
                "The recipe does not belong to this model; quantize it again."
            )
        if group.fold is None and (not insert_mul or group.no_insert):
            why = group.no_insert or "inserting a Mul is off"
            declined[group.key] = f"X/s cannot be folded ({group.no_fold}) and {why}"
            continue
        for node in group.consumers:
            weight = node.inputs[1]
            assert weight is not None
            w = constant_array(weight)
            assert w is not None
            trans = node.op_type == "Gemm" and int(attribute_value(node, "transB", 0) or 0)
            set_constant(weight, _scaled(w, s, multiply=True, axis=1 if trans else 0))
        names = ", ".join(n.name or "" for n in group.consumers)
        if group.fold is not None:
            for step in group.fold:
                value = step.node.inputs[step.index]
                assert value is not None
                array = constant_array(value)
                assert array is not None
                new = _scaled(array, s, multiply=step.multiply, axis=step.axis)
                shared = len(value.uses()) > 1 or value.is_graph_output()
                if shared or new.shape != array.shape:  # own copy; a scalar or (.., 1) one becomes per channel
                    builder = builder or GraphBuilder(model)
                    step.node.replace_input_with(step.index, builder.initializer(f"{value.name}/smoothed", new))
                    if not value.uses() and not value.is_graph_output() and value.name in model.graph.initializers:
                        model.graph.initializers.pop(value.name or "")
                else:
                    set_constant(value, new)
            producer = group.value.producer()
            assert producer is not None
            applied[group.key] = f"{len(group.consumers)} node(s) ({names}); X/s folded into {producer.op_type} '{producer.name}'"
        else:
            builder = builder or GraphBuilder(model)
            inverse = builder.initializer(f"{group.key}/smooth_inverse", (1.0 / s).astype(np.float32))
            mul = builder.node(
                "Mul", [group.value, inverse],
                outputs=[(f"{group.key}/smoothed", group.value.dtype, group.value.shape)],
                name=f"{group.key}/SmoothMul",
            )
            builder.insert_after_producer(group.value, [mul])
            for node in group.consumers:
                node.replace_input_with(0, mul.outputs[0])
            applied[group.key] = f"{len(group.consumers)} node(s) ({names}); inserted Mul '{mul.name}' ({group.no_fold})"
    return applied, declined


def smooth(
    model: ir.Model,
    alpha: float,
    *,
    channel_ranges: Mapping[str, ChannelRange] | None = None,
    factors: Mapping[str, SiteFactors] | None = None,
    insert_mul: bool = True,
) -> RecoveryReport:
    """SmoothQuant for ``model``'s MatMul/Gemm inputs (see the module docstring), in place.

    Args:
        model: the FP32 model.
        alpha: migration strength in [0, 1] (0.5 in the paper).
        channel_ranges: per-channel ranges (axis -1) of :func:`smoothquant_statistics`' values.
        factors: replay exactly these factors (site -> :class:`SiteFactors`, e.g. from a recipe); a site
            the model lacks is an error.
        insert_mul: where ``X/s`` cannot be folded into the producer, insert a ``Mul`` (else decline).

    Returns:
        Every site (applied or declined with the reason) and the factors used.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    report = RecoveryReport(TECHNIQUE)
    groups, declined = find_groups(model)
    if factors is not None:
        missing = sorted(set(factors) - {g.key for g in groups})
        if missing:
            raise QuantizationError(
                f"The recipe smooths MatMul input(s) this model does not have: {missing[:3]}. Apply the recipe "
                "to the FP32 model it was made from."
            )
    else:
        factors, more = compute_scales(groups, channel_ranges, float(alpha))
        declined += list(more.items())
    applied, refused = apply_scales(model, groups, factors, insert_mul=insert_mul)
    declined += list(refused.items())
    for key, detail in applied.items():
        report.apply(key, detail)
    for site, reason in declined:
        report.decline(site, reason)
    report.factors = {key: factors[key] for key in applied}
    logger.info("SmoothQuant: %d site(s) applied, %d declined", len(applied), len(report.declined))
    return report


@register_pass("smoothquant")
class SmoothQuantPass(QuantizationPass):
    """``int8-prepare`` step: SmoothQuant with ``context.recovery.smoothquant_alpha`` (off when ``None``).

    Reads the per-channel abs-max of the MatMul/Gemm inputs from the context (calibration data is
    required); replays ``context.recovery_factors["smoothquant"]`` when given.
    """

    spec: ClassVar[str] = SPEC

    def call(self, model: ir.Model) -> RecoveryPassResult:
        context = self.context
        alpha = context.recovery.smoothquant_alpha
        if alpha is None:
            return RecoveryPassResult(model, False)
        replay = context.recovery_factors
        if replay is not None:
            report = smooth(model, alpha, factors=dict(replay.get(TECHNIQUE, {})))
        else:
            if not context.has_data:
                raise QuantizationError(
                    "SmoothQuant needs the per-channel ranges of the MatMul/Gemm inputs from calibration data, but "
                    "none was given. Pass calib_dataloader= (Python) or --calib DATA (CLI), or set "
                    "recovery.smoothquant_alpha to None (quantization.recipes.smooth_quant: false)."
                )
            wanted = smoothquant_statistics(model)
            report = smooth(model, alpha, channel_ranges=context.channel_statistics(wanted) if wanted else {})
        applied = len(report.applied)
        return RecoveryPassResult(
            model, applied > 0, changes=applied, details={"sites": applied, "declined": len(report.declined)},
            report=report,
        )
