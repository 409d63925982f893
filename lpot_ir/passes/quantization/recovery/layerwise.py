"""Layer-wise recovery on a Q/DQ model: AdaRound and bias correction, one layer at a time.

Both techniques correct a quantized Conv/Gemm/MatMul (a *target*) from its input in the quantized
model, in topological order, so that every layer is corrected against inputs that already carry the
corrections of the layers before it (Nagel et al.'s empirical bias correction; AdaRound's asymmetric
reconstruction). :class:`~lpot_ir.passes.quantization.recovery.segments.SegmentRunner` runs the
quantized and the FP32 model in lock step, each up to the target's input and no further, so the whole
pass costs about one inference of each model over the samples (plus one small ONNX Runtime session per
target), not one per layer. The quantized model is cut at the target's *integer* input (the output of
its activation's QuantizeLinear), so ONNX Runtime runs every segment with its fused integer kernels, as
the deployed model does.

Per target, with ``x_q`` its input in the quantized model and ``x`` in the FP32 model:

1. **AdaRound** (:func:`~lpot_ir.passes.quantization.recovery.weight_rounding.adaround_matrix`): the
   im2col rows of ``x_q`` at sampled output positions, the FP32 outputs ``W x`` at the same positions; the
   learned integers replace the weight's. Skipped when the samples give fewer than three times as many
   positions as a weight row has inputs (a classifier over 32 samples: it would fit the samples, not the
   layer), when the weight is shared, or when the work budget is spent.
2. **Bias correction**: the per-channel mean output shift ``E[W x + b] - E[W_q x_q + b_q]``, computed
   exactly from per-tap means of the inputs (the mean commutes with the linear op), is added to the
   int32 bias (scale = activation scale x weight scale). A Conv/Gemm without a bias gets one (ONNX
   Runtime fuses an int32 bias into QLinearConv/QGemm at no cost); a MatMul's correction goes into the
   float bias ``Add`` that follows it (ONNX Runtime applies it after MatMulIntegerToFloat); a MatMul
   without one is left alone, since a new ``Add`` would cost time.

The target's corrected weights and bias are written to the model before the next segment runs it.
Everything decided is written to a :class:`~lpot_ir.passes.quantization.recovery.record.RecoveryRecord`;
:func:`replay_layerwise` applies a record without data.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import constant_value
from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import ANNOTATION_KEY, QuantAnnotation, QuantSpec
from lpot_ir.passes.quantization.graph_edit import GraphBuilder
from lpot_ir.passes.quantization.qparams import qrange, quantize_bias
from lpot_ir.passes.quantization.recovery.layers import LinearLayer, linear_layer
from lpot_ir.passes.quantization.recovery.options import REFERENCE_FLOPS, RecoveryOptions
from lpot_ir.passes.quantization.recovery.record import BiasChange, RecoveryRecord
from lpot_ir.passes.quantization.recovery.segments import SegmentRunner
from lpot_ir.passes.quantization.recovery.weight_rounding import adaround_matrix, adaround_work

__all__ = ["LayerwiseReport", "layerwise_recovery", "replay_layerwise"]

logger = logging.getLogger(__name__)

_TARGET_OPS = ("Conv", "Gemm", "MatMul")
_INT32_MAX = np.iinfo(np.int32).max
_INT32_MIN = np.iinfo(np.int32).min


@dataclass
class _Bias:
    kind: str  # "int32": the node's int32 bias (DequantizeLinear input) | "add": the float Add constant after a MatMul
    value: ir.Value | None  # the initializer (None until a missing int32 bias is created)
    fp32: np.ndarray  # the FP32 model's bias, per output channel
    output: ir.Value  # the tensor whose mean is corrected
    created: bool = False


@dataclass
class _Target:
    node: ir.Node
    fp_node: ir.Node
    layer: LinearLayer
    act_dq: ir.Node
    weight_dq: ir.Node
    weight_fp32: np.ndarray
    bias: _Bias | None
    exclusive: bool  # the int8 weight feeds only this node (AdaRound may change it)

    @property
    def name(self) -> str:
        return self.node.name or ""


@dataclass
class LayerwiseReport:
    """What :func:`layerwise_recovery` did.

    Attributes:
        adarounded: node -> (output error with the previous rounding, with the learned one) on the calibration positions.
        corrected: node -> mean absolute bias correction relative to the output's standard deviation.
        skipped: node -> why a technique was not applied to it.
        seconds: wall time.
        segments: ONNX Runtime sessions run.
    """

    adarounded: dict[str, tuple[float, float]]
    corrected: dict[str, float]
    skipped: dict[str, str]
    seconds: float = 0.0
    segments: int = 0


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = constant_value(value)
    return None if tensor is None else tensor.numpy()


def _is_dq(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx")


def _dq_params(dq: ir.Node) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale, zero point, axis) of a DequantizeLinear with constant parameters."""
    scale = _const(dq.inputs[1])
    zp = _const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if scale is None:
        raise ValueError("non-constant scale")
    zp = np.zeros(scale.shape, dtype=np.int32) if zp is None else zp
    return scale.astype(np.float32), zp, dq.attributes.get_int("axis", 1)


def _broadcast_channel(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    if values.ndim == 0:
        return values
    shape = [1] * rank
    shape[axis % rank] = -1
    return values.reshape(shape)


def _find_targets(model: ir.Model, fp32_model: ir.Model, names: Collection[str]) -> tuple[list[_Target], dict[str, str]]:
    fp_nodes = {n.name: n for n in fp32_model.graph}
    targets: list[_Target] = []
    skipped: dict[str, str] = {}
    for node in model.graph:
        name = node.name or ""
        if name not in names or node.op_type not in _TARGET_OPS or len(node.inputs) < 2:
            continue
        fp_node = fp_nodes.get(name)
        x, w = node.inputs[0], node.inputs[1]
        act_dq = x.producer() if x is not None else None
        weight_dq = w.producer() if w is not None else None
        if fp_node is None or not _is_dq(act_dq) or not _is_dq(weight_dq):
            skipped[name] = "not a quantized activation x quantized weight product"
            continue
        assert act_dq is not None and weight_dq is not None
        q_weight = weight_dq.inputs[0]
        weight = _const(fp_node.inputs[1]) if len(fp_node.inputs) > 1 else None
        if q_weight is None or q_weight.const_value is None or weight is None or _const(act_dq.inputs[1]) is None:
            skipped[name] = "its weight or activation parameters are not constants"
            continue
        layer = linear_layer(node, weight.shape)
        if layer is None:
            skipped[name] = "not a plain matrix product over its input (e.g. a batched-weight MatMul)"
            continue
        exclusive = len(q_weight.uses()) == 1 and len(w.uses()) == 1  # type: ignore[union-attr]
        bias = _bias_slot(node, fp_node, layer)
        targets.append(_Target(node, fp_node, layer, act_dq, weight_dq, weight.astype(np.float32), bias, exclusive))
    return targets, skipped


def _bias_slot(node: ir.Node, fp_node: ir.Node, layer: LinearLayer) -> _Bias | None:
    channels = layer.out_channels
    if node.op_type in ("Conv", "Gemm"):
        if node.op_type == "Gemm" and node.attributes.get_float("beta", 1.0) != 1.0:
            return None
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            dq = node.inputs[2].producer()
            fp_bias = _const(fp_node.inputs[2]) if len(fp_node.inputs) > 2 else None
            if not _is_dq(dq) or fp_bias is None or fp_bias.size != channels:
                return None
            assert dq is not None
            q_bias = dq.inputs[0]
            if q_bias is None or q_bias.const_value is None or len(q_bias.uses()) != 1:
                return None
            return _Bias("int32", q_bias, fp_bias.reshape(-1).astype(np.float32), node.outputs[0])
        return _Bias("int32", None, np.zeros(channels, dtype=np.float32), node.outputs[0])
    out = node.outputs[0]  # MatMul: a float bias Add right after it
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None
    add = uses[0].node
    if add.op_type != "Add" or len(add.inputs) != 2:
        return None
    other = add.inputs[1 - uses[0].idx]
    bias = _const(other)
    if other is None or bias is None or not other.is_initializer() or bias.dtype != np.float32:
        return None
    if bias.size != channels or (bias.ndim and bias.shape[-1] != channels):
        return None
    fp_uses = list(fp_node.outputs[0].uses())
    if len(fp_uses) != 1 or fp_uses[0].node.name != add.name:
        return None
    fp_bias = _const(fp_uses[0].node.inputs[1 - fp_uses[0].idx])
    if fp_bias is None or fp_bias.size != channels:
        return None
    return _Bias("add", other, fp_bias.reshape(-1).astype(np.float32), add.outputs[0])


# -- edits ------------------------------------------------------------------------------------------


def _set_const(value: ir.Value, array: np.ndarray) -> None:
    value.const_value = ir.Tensor(np.ascontiguousarray(array), name=value.name)


def _create_bias(builder: GraphBuilder, target: _Target) -> None:
    """Give a Conv/Gemm without bias a zero int32 bias (scale = activation scale x weight scale)."""
    assert target.bias is not None
    act_scale = _const(target.act_dq.inputs[1])
    weight_scale, _zp, _axis = _dq_params(target.weight_dq)
    channels = target.layer.out_channels
    qbias, scale = quantize_bias(np.zeros(channels, dtype=np.float32), act_scale, weight_scale)  # type: ignore[arg-type]
    if scale.ndim == 0:
        scale = np.full(channels, scale, dtype=np.float32)
    base = f"{target.name}_bias"
    q_init = builder.initializer(f"{base}_quantized", qbias)
    scale_init = builder.initializer(f"{base}_quantized_scale", scale.astype(np.float32))
    zp_init = builder.initializer(f"{base}_quantized_zero_point", np.zeros(scale.shape, dtype=np.int32))
    dq = builder.node(
        "DequantizeLinear",
        [q_init, scale_init, zp_init],
        outputs=[(f"{base}_dequantized", ir.DataType.FLOAT, ir.Shape([channels]))],
        attributes=[ir.AttrInt64("axis", 0)],
        name=f"{base}_dequantized_DequantizeLinear",
    )
    builder.graph.insert_before(target.node, dq)
    target.node.resize_inputs(3)
    target.node.replace_input_with(2, dq.outputs[0])
    target.bias.value = q_init
    target.bias.created = True


def _remove_created_bias(graph: ir.Graph, target: _Target) -> None:
    """Undo :func:`_create_bias` (the bias stayed zero)."""
    bias_value = target.node.inputs[2]
    assert bias_value is not None
    dq = bias_value.producer()
    target.node.resize_inputs(2)
    assert dq is not None
    inputs = [v for v in dq.inputs if v is not None]
    graph.remove(dq, safe=True)
    for value in inputs:
        if value.name in graph.initializers and not value.uses():
            del graph.initializers[value.name]  # type: ignore[arg-type]
    assert target.bias is not None
    target.bias.value = None
    target.bias.created = False


def _bias_scale(target: _Target) -> np.ndarray:
    assert target.bias is not None and target.bias.value is not None
    dq = next(iter(target.bias.value.uses())).node
    scale, _zp, _axis = _dq_params(dq)
    return scale


def _apply_bias_delta(target: _Target, delta: np.ndarray) -> np.ndarray:
    """Add ``delta`` (int32 or float32) to the target's bias initializer; return the new array."""
    assert target.bias is not None and target.bias.value is not None
    current = target.bias.value.const_value.numpy()  # type: ignore[union-attr]
    if target.bias.kind == "int32":
        new = np.clip(current.astype(np.int64) + delta.reshape(current.shape).astype(np.int64), _INT32_MIN, _INT32_MAX)
        new = new.astype(np.int32)
    else:
        new = (current + delta.reshape(current.shape).astype(np.float32)).astype(np.float32)
    _set_const(target.bias.value, new)
    return new


def _flip(target: _Target, mask: np.ndarray) -> np.ndarray:
    """Move the masked integers of the target's weight one step towards the other neighbour of w/s."""
    q_value = target.weight_dq.inputs[0]
    assert q_value is not None and q_value.const_value is not None
    current = q_value.const_value.numpy()
    scale, zp, axis = _dq_params(target.weight_dq)
    rank = current.ndim
    s = _broadcast_channel(scale, axis, rank)
    z = _broadcast_channel(zp.astype(np.float32), axis, rank)
    base = np.floor(target.weight_fp32 / s) + z
    cur = current.astype(np.float32)
    moved = np.where(cur == base, cur + 1, cur - 1)
    new = np.where(mask.reshape(current.shape), moved, cur).astype(current.dtype)
    _set_const(q_value, new)
    return new


# -- the pass ---------------------------------------------------------------------------------------


def _plan_iterations(targets: Sequence[_Target], options: RecoveryOptions) -> dict[str, int]:
    """Adam steps per layer within the per-layer and total work budgets (deterministic: no clock)."""
    per_step = {
        t.name: adaround_work(t.weight_fp32.size, options.adaround_batch, t.layer.out_channels // t.layer.groups)
        for t in targets
        if t.exclusive
    }
    plan = {
        name: min(options.adaround_iterations, int(options.adaround_layer_seconds * REFERENCE_FLOPS / work))
        for name, work in per_step.items()
    }
    total = sum(plan[name] * per_step[name] for name in plan)
    budget = options.adaround_seconds * REFERENCE_FLOPS
    if total > budget > 0:
        factor = budget / total
        plan = {name: int(math.floor(steps * factor)) for name, steps in plan.items()}
    return {name: steps for name, steps in plan.items() if steps >= options.adaround_min_iterations}


def _dequantized(batches: list[np.ndarray], dq: ir.Node) -> list[np.ndarray]:
    scale, zp, _axis = _dq_params(dq)
    if scale.ndim:
        raise ValueError("per-channel activation")
    s = np.float32(scale)
    return [((b.astype(np.int32) - zp.astype(np.int32)).astype(np.float32) * s) for b in batches]


def _sample_rows(
    target: _Target, x_q: list[np.ndarray], x_fp: list[np.ndarray], limit: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Input rows in the quantized model and FP32 outputs (no bias) at up to ``limit`` sampled positions."""
    layer = target.layer
    quota = max(1, math.ceil(limit / max(len(x_q), 1)))
    weight_t = layer.weight_matrix(target.weight_fp32).transpose(0, 2, 1)
    inputs, outputs = [], []
    for xq, xf in zip(x_q, x_fp, strict=True):
        count = layer.num_positions(xq.shape)
        pick = np.arange(count) if count <= quota else np.sort(rng.choice(count, size=quota, replace=False))
        inputs.append(layer.rows(xq, pick))
        outputs.append(np.matmul(layer.rows(xf, pick), weight_t))
    return np.concatenate(inputs, axis=1), np.concatenate(outputs, axis=1)


def _adaround(
    target: _Target, x_q: list[np.ndarray], x_fp: list[np.ndarray], steps: int, options: RecoveryOptions,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, float, float, str]:
    """(mask of moved weights or None, error before, error after, reason when skipped)."""
    layer = target.layer
    k = target.weight_fp32.size // layer.out_channels
    rows, outputs = _sample_rows(target, x_q, x_fp, min(options.adaround_positions, max(512, 32 * k)), rng)
    if rows.shape[1] < 3 * k:  # too few equations per unknown of a channel: it would fit the samples
        return None, 0.0, 0.0, f"AdaRound: {rows.shape[1]} output positions for {k} inputs per channel (too few samples)"
    q_value = target.weight_dq.inputs[0]
    assert q_value is not None and q_value.const_value is not None
    current = q_value.const_value.numpy()
    scale, zp, _axis = _dq_params(target.weight_dq)
    qmin, qmax = _weight_qrange(target, current)
    result = adaround_matrix(
        layer.weight_matrix(target.weight_fp32),
        layer.weight_matrix(current),
        layer.channel_vector(scale),
        layer.channel_vector(zp),
        qmin,
        qmax,
        rows,
        outputs,
        iterations=steps,
        batch=options.adaround_batch,
        regularization=options.adaround_regularization,
        learning_rate=options.adaround_learning_rate,
        rng=rng,
    )
    if result.integers is None:
        return None, result.error_nearest, result.error_learned, "AdaRound did not lower the output error"
    new = layer.weight_from_matrix(result.integers).astype(current.dtype)
    return new != current, result.error_nearest, result.error_learned, ""


def _weight_qrange(target: _Target, stored: np.ndarray) -> tuple[int, int]:
    """The integer range the weight was quantized to: its annotation's spec, else the stored type's range."""
    annotation = target.node.meta.get(ANNOTATION_KEY)
    spec = annotation.input_spec(1) if isinstance(annotation, QuantAnnotation) else None
    if isinstance(spec, QuantSpec):
        return qrange(spec.dtype, spec.scheme, spec.reduce_range)
    info = np.iinfo(stored.dtype)
    return int(info.min), int(info.max)


def _mean_shift(target: _Target, x_q: list[np.ndarray], x_fp: list[np.ndarray]) -> np.ndarray:
    """E[y_fp] - E[y_q] per output channel (float64), from the per-tap input means."""
    layer = target.layer
    assert target.bias is not None
    positions = sum(layer.num_positions(x.shape) for x in x_q)
    mean_q = np.sum([layer.row_sum(x) for x in x_q], axis=0) / positions
    mean_fp = np.sum([layer.row_sum(x) for x in x_fp], axis=0) / positions
    q_value = target.weight_dq.inputs[0]
    assert q_value is not None and q_value.const_value is not None
    scale, zp, axis = _dq_params(target.weight_dq)
    current = q_value.const_value.numpy()
    rank = current.ndim
    deq = (current.astype(np.float64) - _broadcast_channel(zp.astype(np.float64), axis, rank)) * _broadcast_channel(
        scale.astype(np.float64), axis, rank
    )
    out_fp = np.matmul(layer.weight_matrix(target.weight_fp32.astype(np.float64)), mean_fp[..., None]).reshape(-1)
    out_q = np.matmul(layer.weight_matrix(deq), mean_q[..., None]).reshape(-1)
    bias_value = target.bias.value
    if bias_value is None:
        bias_q = np.zeros_like(out_q)
    elif target.bias.kind == "int32":
        bias_q = bias_value.const_value.numpy().astype(np.float64).reshape(-1) * _bias_scale(target).astype(np.float64)  # type: ignore[union-attr]
    else:
        bias_q = bias_value.const_value.numpy().astype(np.float64).reshape(-1)  # type: ignore[union-attr]
    return (out_fp + target.bias.fp32.astype(np.float64)) - (out_q + bias_q)


def layerwise_recovery(
    model: ir.Model,
    fp32_model: ir.Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    quantized: Collection[str],
    *,
    adaround: bool,
    bias_correction: bool,
    options: RecoveryOptions | None = None,
    record: RecoveryRecord | None = None,
) -> LayerwiseReport:
    """Apply AdaRound and/or bias correction to the quantized layers of ``model`` (in place).

    Args:
        model: the model after Q/DQ insertion (annotations still on its nodes).
        fp32_model: the FP32 model it was quantized from (the reference; not modified).
        feeds: calibration batches ``{input name: array}``.
        quantized: names of the nodes that run in INT8.
        adaround: learn the weights' rounding.
        bias_correction: correct the biases.
        options: samples, budgets (defaults: :class:`RecoveryOptions`).
        record: where the decisions are written (for the recipe).
    """
    options = options or RecoveryOptions()
    record = record if record is not None else RecoveryRecord()
    started = time.perf_counter()
    targets, skipped = _find_targets(model, fp32_model, set(quantized))
    report = LayerwiseReport({}, {}, dict(skipped))
    if not targets or not (adaround or bias_correction):
        return report
    builder = GraphBuilder(model)
    if bias_correction:
        for target in targets:
            if target.bias is not None and target.bias.value is None:
                _create_bias(builder, target)
    plan = _plan_iterations(targets, options) if adaround else {}
    rng = np.random.default_rng(options.seed)
    runner_q = SegmentRunner(to_proto(model), feeds, threads=options.threads)
    runner_fp = SegmentRunner(to_proto(fp32_model), feeds, threads=options.threads)
    with _single_threaded_blas():
        for target in targets:
            name = target.name
            q_input = target.act_dq.inputs[0]
            x_input = target.fp_node.inputs[0]
            assert q_input is not None and x_input is not None
            x_q = _dequantized(runner_q.run_to([q_input.name or ""])[0], target.act_dq)
            x_fp = runner_fp.run_to([x_input.name or ""])[0]
            if adaround:
                if name in plan:
                    mask, before, after, why = _adaround(target, x_q, x_fp, plan[name], options, rng)
                    if mask is not None:
                        new = _flip(target, mask)
                        runner_q.set_initializer(target.weight_dq.inputs[0].name or "", new)  # type: ignore[union-attr]
                        record.roundings[name] = mask
                        report.adarounded[name] = (before, after)
                    elif why:
                        report.skipped[name] = why
                elif not target.exclusive:
                    report.skipped[name] = "AdaRound: the quantized weight is shared with another node"
                else:
                    report.skipped[name] = "AdaRound: no work budget left for this layer"
            if bias_correction and target.bias is not None and target.bias.value is not None:
                shift = _mean_shift(target, x_q, x_fp)
                if target.bias.kind == "int32":
                    delta = np.round(shift / _bias_scale(target).astype(np.float64)).astype(np.int64)
                    delta = np.clip(delta, _INT32_MIN, _INT32_MAX).astype(np.int32)
                else:
                    delta = shift.astype(np.float32)
                if np.any(delta != 0):
                    new = _apply_bias_delta(target, delta)
                    runner_q.set_initializer(target.bias.value.name or "", new)
                    record.biases[name] = BiasChange(target.bias.kind, delta, target.bias.created)
                    spread = float(np.std(np.concatenate([x.reshape(-1) for x in x_fp]))) or 1.0
                    report.corrected[name] = float(np.mean(np.abs(shift))) / spread
            elif bias_correction and target.bias is None:
                report.skipped.setdefault(name, "bias correction: no bias slot ONNX Runtime fuses (e.g. a MatMul without bias Add)")
    for target in targets:
        if target.bias is not None and target.bias.created and target.name not in record.biases:
            _remove_created_bias(model.graph, target)
    report.seconds = time.perf_counter() - started
    report.segments = runner_q.segments + runner_fp.segments
    logger.info(
        "Layer-wise recovery: %d layer(s) AdaRounded, %d bias(es) corrected, in %.1f s (%d segments).",
        len(report.adarounded), len(report.corrected), report.seconds, report.segments,
    )
    return report


def replay_layerwise(model: ir.Model, fp32_model: ir.Model, record: RecoveryRecord, quantized: Collection[str]) -> None:
    """Apply the AdaRound and bias-correction decisions of ``record`` to ``model`` (in place, no data)."""
    if not (record.roundings or record.biases):
        return
    targets, _skipped = _find_targets(model, fp32_model, set(quantized))
    by_name = {t.name: t for t in targets}
    missing = sorted((set(record.roundings) | set(record.biases)) - set(by_name))
    if missing:
        from lpot_ir.errors import QuantizationError

        raise QuantizationError(
            f"The recipe's recovery record names layer(s) {missing[:3]} that are not quantized layers of this "
            "model under the recipe's configuration. Apply the recipe to the FP32 model it was made from."
        )
    builder = GraphBuilder(model)
    for target in targets:
        change = record.biases.get(target.name)
        if change is not None and change.created and target.bias is not None and target.bias.value is None:
            _create_bias(builder, target)
    for target in targets:
        mask = record.roundings.get(target.name)
        if mask is not None:
            _flip(target, mask)
        change = record.biases.get(target.name)
        if change is not None and target.bias is not None and target.bias.value is not None:
            _apply_bias_delta(target, change.delta)


class _single_threaded_blas:
    """Limit numpy's BLAS to one thread (small products run faster, and results are reproducible)."""

    def __enter__(self) -> None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # optional: without it numpy keeps its own threads
            self._limits = None
            return
        self._limits = threadpool_limits(limits=1, user_api="blas")

    def __exit__(self, *exc: object) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
