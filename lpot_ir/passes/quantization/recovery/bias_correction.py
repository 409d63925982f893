"""Bias correction: remove the mean output shift that INT8 rounding gives each quantized layer.

Rounding a layer's weights (and its input) to INT8 does not only add noise: per output channel the
rounding errors need not sum to zero, so the quantized layer's output is shifted on average, and the
shift grows through the network (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
and Bias Correction", empirical bias correction; Neural Compressor's and NNCF's fast/empirical bias
correction). For each quantized Conv/Gemm/MatMul, in topological order, ``bias-correction`` measures on
calibration samples the per-channel shift

    E[W x + b] - E[W_q x_q + b_q]

between the FP32 layer on its FP32 input ``x`` and the quantized layer (dequantized weights ``W_q`` and
bias ``b_q``, AdaRound's if it ran) on its input ``x_q`` *in the quantized model in which every earlier
layer is already corrected* (:class:`~lpot_ir.passes.quantization.recovery.layerwise.LayerwiseWalk`), and
adds it to the bias. The means are exact: the mean commutes with the linear op, so it is the weight
times the per-tap mean of the input (no im2col of whole feature maps). The sequential variant costs one
inference of each model over the samples (plus one small session per layer), about what the "fast"
variant (FP32 inputs everywhere) costs, and it also removes the shifts that propagate from earlier
layers, so nothing is gained by the cheaper variant.

Where the correction goes, ONNX Runtime fusing it at no cost:

* a Conv/Gemm's int32 bias (scale = activation scale x weight scale), created when the node has none
  (QLinearConv / QGemm take it); an unchanged created bias is removed again;
* a MatMul's float bias ``Add`` right after it (the transformer form, left in float after
  MatMulIntegerToFloat by the annotator);
* a MatMul without one is left alone: a new ``Add`` would cost time.

The recipe stores each node's change (int32, in the narrowest integer type that holds it, or float32 for
an ``Add``); replaying applies it without data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES
from lpot_ir.errors import QuantizationError
from lpot_ir.ir.builder import GraphBuilder
from lpot_ir.ir.quant import Approach
from lpot_ir.passes.base import register_pass
from lpot_ir.passes.quantization.context import QuantizationPass, QuantPassResult
from lpot_ir.passes.quantization.qparams import quantize_bias
from lpot_ir.passes.quantization.recovery.layerwise import (
    LayerwiseWalk,
    Target,
    constant,
    dq_params,
    find_targets,
    first_samples,
    single_threaded_blas,
)
from lpot_ir.passes.quantization.recovery.record import BiasChange
from lpot_ir.passes.quantization.recovery.report import set_constant

__all__ = ["SIGNIFICANCE", "BiasSlot", "BiasCorrectionReport", "BiasCorrectionPass", "bias_slot", "mean_shift"]

logger = logging.getLogger(__name__)

_INT32 = np.iinfo(np.int32)

SIGNIFICANCE = 3.0
"""A channel is corrected only when its measured shift exceeds this many standard errors of its
per-sample estimate: a correction that is mostly sampling noise only adds error (measured effect in
docs/quantization.md, *Bias correction*)."""


@dataclass
class BiasSlot:
    """Where a target's bias correction goes.

    Attributes:
        kind: ``int32`` (the node's int32 bias, created if missing) or ``add`` (a float ``Add`` after a MatMul).
        value: the initializer (``None`` until a missing int32 bias is created).
        fp32: the FP32 model's bias per output channel (zeros when it has none).
        created: the int32 bias was created by this pass.
    """

    kind: str
    value: ir.Value | None
    fp32: np.ndarray
    created: bool = False


def _bias_input(node: ir.Node) -> int | None:
    """The input index of ``node``'s int32 bias in the capability table (``None``: the op has none)."""
    cap = CAPABILITIES.get(node.op_type)
    return None if cap is None else cap.bias_input


def bias_slot(target: Target) -> BiasSlot | None:
    """The bias slot of ``target``, or ``None`` when its correction has nowhere free to go."""
    node, fp_node, channels = target.node, target.fp_node, target.layer.out_channels
    index = _bias_input(node)
    if index is not None:
        if node.op_type == "Gemm" and node.attributes.get_float("beta", 1.0) != 1.0:
            return None
        bias_value = node.inputs[index] if len(node.inputs) > index else None
        if bias_value is not None:
            dq = bias_value.producer()
            fp_bias = constant(fp_node.inputs[index]) if len(fp_node.inputs) > index else None
            if dq is None or dq.op_type != "DequantizeLinear" or fp_bias is None or fp_bias.size != channels:
                return None
            q_bias = dq.inputs[0]
            if q_bias is None or q_bias.const_value is None or len(q_bias.uses()) != 1:
                return None
            return BiasSlot("int32", q_bias, fp_bias.reshape(-1).astype(np.float32))
        return BiasSlot("int32", None, np.zeros(channels, dtype=np.float32))
    out = node.outputs[0]  # MatMul: a float bias Add right after it
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output() or uses[0].node.op_type != "Add" or len(uses[0].node.inputs) != 2:
        return None
    add, index = uses[0].node, uses[0].idx
    other = add.inputs[1 - index]
    bias = constant(other)
    if other is None or bias is None or not other.is_initializer() or bias.dtype != np.float32:
        return None
    if bias.size != channels or (bias.ndim and bias.shape[-1] != channels) or len(other.uses()) != 1:
        return None
    fp_uses = list(fp_node.outputs[0].uses())
    if len(fp_uses) != 1 or fp_uses[0].node.name != add.name:
        return None
    fp_bias = constant(fp_uses[0].node.inputs[1 - fp_uses[0].idx])
    if fp_bias is None or fp_bias.size != channels:
        return None
    return BiasSlot("add", other, fp_bias.reshape(-1).astype(np.float32))


def _bias_scale(slot: BiasSlot) -> np.ndarray:
    assert slot.value is not None
    dq = next(iter(slot.value.uses())).node
    scale, _zp, _axis = dq_params(dq)
    return scale.reshape(-1).astype(np.float64)


def mean_shift(
    target: Target, slot: BiasSlot, x_q: list[np.ndarray], x_fp: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """``E[y_fp] - E[y_q]`` per output channel and its standard error (float64 each), from the per-tap means
    of each sample's inputs (the standard error from the spread of the per-sample shifts)."""
    layer = target.layer
    sums_q = np.concatenate([layer.row_sums(x) for x in x_q])  # [samples, g, K]
    sums_fp = np.concatenate([layer.row_sums(x) for x in x_fp])
    per_sample = sum(layer.num_positions(x.shape) for x in x_q) / len(sums_q)
    weight_fp = layer.weight_matrix(target.weight_fp32.astype(np.float64))  # [g, C, K]
    weight_q = layer.weight_matrix(target.dequantized_weight())
    # per sample: W @ mean_fp - W_q @ mean_q, [samples, C]
    shifts = (np.einsum("gck,sgk->sgc", weight_fp, sums_fp) - np.einsum("gck,sgk->sgc", weight_q, sums_q)) / per_sample
    shifts = shifts.reshape(len(sums_q), -1)
    if slot.value is None:
        bias_q = np.zeros(shifts.shape[1])
    else:
        current = slot.value.const_value.numpy().astype(np.float64).reshape(-1)  # type: ignore[union-attr]
        bias_q = current * _bias_scale(slot) if slot.kind == "int32" else current
    shift = shifts.mean(axis=0) + slot.fp32.astype(np.float64) - bias_q
    error = shifts.std(axis=0) / np.sqrt(len(shifts)) if len(shifts) > 1 else np.zeros_like(shift)
    return shift, error


def _create_bias(builder: GraphBuilder, target: Target, slot: BiasSlot) -> None:
    """Give a Conv/Gemm without bias a zero int32 bias (scale = activation scale x weight scale)."""
    act_scale = constant(target.act_dq.inputs[1])
    weight_scale, _zp, _axis = dq_params(target.weight_dq)
    channels = target.layer.out_channels
    assert act_scale is not None
    qbias, scale = quantize_bias(np.zeros(channels, dtype=np.float32), act_scale, weight_scale)
    scale = np.broadcast_to(scale, (channels,)).astype(np.float32)
    base = f"{target.name}_bias"
    q_init = builder.initializer(f"{base}_quantized", qbias)
    scale_init = builder.initializer(f"{base}_quantized_scale", scale)
    zp_init = builder.initializer(f"{base}_quantized_zero_point", np.zeros(channels, dtype=np.int32))
    dq = builder.node(
        "DequantizeLinear",
        [q_init, scale_init, zp_init],
        outputs=[(f"{base}_dequantized", ir.DataType.FLOAT, ir.Shape([channels]))],
        attributes=[ir.AttrInt64("axis", 0)],
        name=f"{base}_dequantized_DequantizeLinear",
    )
    builder.graph.insert_before(target.node, dq)
    index = _bias_input(target.node)
    assert index is not None
    target.node.resize_inputs(index + 1)
    target.node.replace_input_with(index, dq.outputs[0])
    slot.value = q_init
    slot.created = True


def _remove_created_bias(graph: ir.Graph, target: Target, slot: BiasSlot) -> None:
    """Undo :func:`_create_bias` (the bias stayed zero)."""
    index = _bias_input(target.node)
    assert index is not None
    bias_value = target.node.inputs[index]
    assert bias_value is not None
    dq = bias_value.producer()
    assert dq is not None
    target.node.resize_inputs(index)
    inputs = [v for v in dq.inputs if v is not None]
    graph.remove(dq, safe=True)
    for value in inputs:
        if value.name in graph.initializers and not value.uses():
            del graph.initializers[value.name]  # type: ignore[arg-type]
    slot.value = None
    slot.created = False


def _apply(slot: BiasSlot, delta: np.ndarray) -> np.ndarray:
    """The slot's initializer plus ``delta`` (int32 saturating, or float32)."""
    assert slot.value is not None and slot.value.const_value is not None
    current = slot.value.const_value.numpy()
    if slot.kind == "int32":
        total = current.astype(np.int64) + delta.reshape(current.shape).astype(np.int64)
        return np.clip(total, _INT32.min, _INT32.max).astype(np.int32)
    return (current + delta.reshape(current.shape).astype(np.float32)).astype(np.float32)


@dataclass
class BiasCorrectionReport:
    """What ``bias-correction`` did.

    Attributes:
        corrected: node -> mean absolute correction relative to the standard deviation of its FP32 input.
        skipped: node -> why it was not corrected.
        seconds: wall time.
        segments: ONNX Runtime sessions run.
    """

    corrected: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    segments: int = 0


@register_pass("bias-correction")
class BiasCorrectionPass(QuantizationPass):
    """``RecoveryConfig.bias_correction``: fold each quantized layer's mean output shift into its bias.

    Records each node's bias change; replaying a recipe applies them without data.
    """

    def call(self, model: ir.Model) -> QuantPassResult:
        if not self.context.recovery.bias_correction or self.context.config.approach is Approach.DYNAMIC:
            return QuantPassResult(model, False)
        started = time.perf_counter()
        assert self.context.fp32_model is not None
        targets, skipped = find_targets(model, ir.serde.deserialize_model(self.context.fp32_model))
        report = BiasCorrectionReport(skipped=skipped)
        slots: dict[str, BiasSlot] = {}
        for target in targets:
            slot = bias_slot(target)
            if slot is None:
                report.skipped[target.name] = "no bias ONNX Runtime fuses (e.g. a MatMul without a bias Add)"
            else:
                slots[target.name] = slot
        replay = self.context.recorded(self.name)
        if replay is not None:
            applied = self._replay(model, targets, slots, replay.get("biases", {}))
            kept = {"biases": applied} if applied else {}
            return QuantPassResult(model, bool(applied), changes=len(applied), record=kept, report=report)
        builder = GraphBuilder(model)
        for target in targets:
            slot = slots.get(target.name)
            if slot is not None and slot.value is None:
                _create_bias(builder, target, slot)
        changed = self._correct(model, [t for t in targets if t.name in slots], slots, report)
        for target in targets:
            slot = slots.get(target.name)
            if slot is not None and slot.created and target.name not in changed:
                _remove_created_bias(model.graph, target, slot)
        report.seconds = time.perf_counter() - started
        record: dict[str, Any] = {"biases": {k: v.to_dict() for k, v in sorted(changed.items())}} if changed else {}
        return QuantPassResult(model, bool(changed), changes=len(changed), record=record, report=report)

    def _correct(
        self, model: ir.Model, targets: list[Target], slots: dict[str, BiasSlot], report: BiasCorrectionReport
    ) -> dict[str, BiasChange]:
        if not targets:
            return {}
        options = self.context.recovery_options
        assert self.context.fp32_model is not None
        feeds = first_samples(self.context.calibration_feeds(), options.samples)
        walk = LayerwiseWalk(model, self.context.fp32_model, feeds, options.threads, targets)
        changed: dict[str, BiasChange] = {}
        with single_threaded_blas():
            for target in targets:
                slot = slots[target.name]
                x_q, x_fp = walk.inputs(target)
                shift, error = mean_shift(target, slot, x_q, x_fp)
                shift = np.where(np.abs(shift) > SIGNIFICANCE * error, shift, 0.0)
                if slot.kind == "int32":
                    steps = np.clip(np.round(shift / _bias_scale(slot)), _INT32.min, _INT32.max)
                    delta: np.ndarray = steps.astype(np.int32)
                else:
                    delta = shift.astype(np.float32)
                if not np.any(delta != 0):
                    continue
                assert slot.value is not None
                walk.write(slot.value, _apply(slot, delta))
                changed[target.name] = BiasChange(slot.kind, delta, slot.created)
                spread = float(np.std(np.concatenate([x.reshape(-1) for x in x_fp]))) or 1.0
                report.corrected[target.name] = float(np.mean(np.abs(shift))) / spread
        report.segments = walk.segments
        logger.info("Bias correction: %d of %d layer(s) corrected (%d segments).", len(changed), len(targets), walk.segments)
        return changed

    def _replay(
        self, model: ir.Model, targets: list[Target], slots: dict[str, BiasSlot], recorded: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply recorded bias changes; return the records of those applied (all of them unless partial)."""
        if self.context.replay_partial:
            recorded = {name: data for name, data in recorded.items() if name in slots}
        changes = {name: BiasChange.from_dict(data) for name, data in recorded.items()}
        missing = sorted(set(changes) - set(slots))
        if missing:
            raise QuantizationError(
                f"The recipe corrects the bias of {missing[:3]}, which are not quantized layers with a bias slot "
                "in this model under the recipe's configuration. Apply the recipe to the FP32 model it was made from."
            )
        builder = GraphBuilder(model)
        for target in targets:
            change = changes.get(target.name)
            slot = slots.get(target.name)
            if change is not None and slot is not None and change.created and slot.value is None:
                _create_bias(builder, target, slot)
        for target in targets:
            change = changes.get(target.name)
            slot = slots.get(target.name)
            if change is not None and slot is not None and slot.value is not None:
                set_constant(slot.value, _apply(slot, change.delta))
        return dict(sorted(recorded.items()))
