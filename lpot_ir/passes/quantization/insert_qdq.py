"""The one generic pass that turns quantization annotations into QuantizeLinear / DequantizeLinear.

:class:`InsertQDQPass` reads ``node.meta[ANNOTATION_KEY]`` (written by
:func:`lpot_ir.passes.quantization.annotate`) and rewrites the main graph:

* **activations**: one ``QuantizeLinear -> DequantizeLinear`` pair per tensor, inserted right after its
  producer and shared by all its consumers. When the producer itself asked for its output to be
  quantized, every consumer reads the dequantized value (ONNX Runtime then fuses ``DQ -> op -> Q`` into
  one integer kernel); otherwise only the consumers that asked for it do. A graph output keeps its name.
  Scales come from calibrated ranges (``range_of(value, algorithm)``, or the range a pass chose and put in
  ``value.meta[RANGE_KEY]``), or from the data for constants.
* :class:`SharedQuantSpec` outputs reuse their source's scale and zero point, so data-movement ops pass
  INT8 through with ``DQ -> op -> Q`` of identical parameters (fused by ONNX Runtime, never requantized).
* **weights** are quantized offline and stored as int8/uint8 initializers feeding ``DequantizeLinear``
  (per channel with ``axis`` when asked); one quantized copy per (weight, parameters), so a weight shared
  by two nodes is stored once.
* **bias** (:class:`DerivedBiasSpec`) is stored int32 with scale = activation scale x weight scale.
* **embeddings**: ``Gather`` reads the int8 table directly and one ``DequantizeLinear`` follows it.

A node whose activation range is missing is left FP32 with reason ``no_range``. No ``DQ -> Q`` pair of
equal parameters is ever produced, because quantization is decided per tensor, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import (
    CAPABILITIES,
    OpCategory,
    constant_value,
    output_channel_axis,
)
from lpot_ir.ir.builder import GraphBuilder, move_graph_output
from lpot_ir.ir.quant import (
    ANNOTATION_KEY,
    FP32_REASON_KEY,
    RANGE_KEY,
    DerivedBiasSpec,
    DType,
    Fp32Category,
    Fp32Reason,
    Granularity,
    QuantAnnotation,
    QuantSpec,
    SharedQuantSpec,
    TensorRange,
)
from lpot_ir.passes.base import register_pass
from lpot_ir.passes.quantization.context import (
    QUANTIZED_WEIGHT_KEY,
    QuantizationPass,
    QuantizedWeight,
    QuantPassResult,
    RangeLookup,
)
from lpot_ir.passes.quantization.qparams import (
    QParams,
    compute_qparams,
    quantize_array,
    quantize_bias,
)
from lpot_ir.passes.quantization.qparams import weight_qparams as compute_weight_qparams

__all__ = ["InsertQDQPass", "RangeLookup", "weight_axis"]

logger = logging.getLogger(__name__)

_IR_DTYPE = {DType.UINT8: ir.DataType.UINT8, DType.INT8: ir.DataType.INT8}


def weight_axis(node: ir.Node, rank: int) -> int | None:
    """The output-channel axis of ``node``'s weight of rank ``rank`` (from the capability table), or ``None``."""
    cap = CAPABILITIES.get(node.op_type)
    axis = output_channel_axis(node)
    if cap is None or axis is None or not cap.per_channel or rank == 0:
        return None
    if node.op_type == "ConvTranspose" and node.attributes.get_int("group", 1) != 1:
        return None  # output channels are split across groups: no single weight axis holds them
    return axis % rank


@dataclass
class _Run:
    """The state of one run of :class:`InsertQDQPass` (what it reports, and the weights it planned)."""

    used_ranges: dict[str, TensorRange] = field(default_factory=dict)
    dropped: dict[str, Fp32Reason] = field(default_factory=dict)
    weight_keys: dict[tuple[ir.Node, int], tuple[object, ...]] = field(default_factory=dict)


@dataclass
class _ActivationPlan:
    params: QParams
    from_producer: bool  # the producer asked: every consumer reads the dequantized value
    direct_int8: bool = False  # the producer already emits int8 (Gather on an int8 table)


@register_pass("insert-qdq")
class InsertQDQPass(QuantizationPass):
    """Insert Q/DQ (and quantized weights and biases) from the annotations of the main graph.

    Reads ``context.range_of`` (the calibrated activation ranges) and ``context.weight_cache`` (quantized
    weights reused across configurations of the same model). The result's ``ranges`` are the ranges
    used (for recipes), its ``fp32`` the annotated nodes left FP32 after all (e.g. ``no_range``).
    Each weight ``DequantizeLinear`` carries a :class:`QuantizedWeight` in ``node.meta``.
    """

    def call(self, model: ir.Model) -> QuantPassResult:
        graph = model.graph
        nodes = list(graph)
        run = _Run()
        plans: dict[ir.Value, _ActivationPlan] = {}
        requests: dict[ir.Value, list[tuple[ir.Node, int]]] = {}
        weight_params: dict[tuple[ir.Node, int], QParams] = {}
        active: list[tuple[ir.Node, QuantAnnotation]] = []

        for node in nodes:
            annotation = node.meta.get(ANNOTATION_KEY)
            if not isinstance(annotation, QuantAnnotation) or annotation.dynamic:
                continue
            planned = self._plan_node(run, node, annotation, plans, weight_params)
            if isinstance(planned, Fp32Reason):
                node.meta.pop(ANNOTATION_KEY, None)
                node.meta[FP32_REASON_KEY] = planned
                run.dropped[node.name or ""] = planned
                continue
            new_plans, new_ranges = planned
            plans.update(new_plans)
            run.used_ranges.update(new_ranges)
            for index, spec in annotation.inputs:
                value = node.inputs[index]
                if isinstance(spec, QuantSpec) and value is not None and value in plans:
                    requests.setdefault(value, []).append((node, index))
            active.append((node, annotation))

        if not active:
            return QuantPassResult(model, False, fp32=run.dropped, ranges=run.used_ranges)
        builder = GraphBuilder(model)
        self._quantize_weights(run, model, builder, active, plans, weight_params)
        self._insert_activation_qdq(builder, plans, requests)
        return QuantPassResult(model, True, changes=len(active), fp32=run.dropped, ranges=run.used_ranges)

    # -- planning ----------------------------------------------------------------------------------

    def _plan_node(
        self,
        run: _Run,
        node: ir.Node,
        annotation: QuantAnnotation,
        plans: dict[ir.Value, _ActivationPlan],
        weight_params: dict[tuple[ir.Node, int], QParams],
    ) -> tuple[dict[ir.Value, _ActivationPlan], dict[str, TensorRange]] | Fp32Reason:
        cap = CAPABILITIES.get(node.op_type)
        weight_inputs = cap.weight_inputs if cap is not None else ()
        embedding = cap is not None and cap.category is OpCategory.EMBEDDING
        new: dict[ir.Value, _ActivationPlan] = {}
        ranges: dict[str, TensorRange] = {}
        node_weights: dict[int, QParams] = {}
        node_weight_keys: dict[int, tuple[object, ...]] = {}

        for index, spec in annotation.inputs:
            value = node.inputs[index] if index < len(node.inputs) else None
            if value is None or not isinstance(spec, QuantSpec):
                continue
            const = constant_value(value)
            if index in weight_inputs and const is not None:
                shape = tuple(const.shape)
                axis = weight_axis(node, len(shape)) if spec.granularity is Granularity.PER_CHANNEL else None
                key = (value.name, spec, axis, shape, const.dtype)
                weight_cache = self.context.weight_cache
                if key not in weight_cache:
                    data = const.numpy()
                    params = compute_weight_qparams(data, spec, axis)
                    weight_cache[key] = (params, quantize_array(data, params))
                node_weights[index] = weight_cache[key][0]
                node_weight_keys[index] = key
                continue
            if value in plans or value in new:
                continue
            if const is not None:
                data = const.numpy().astype(np.float32)
                lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
                new[value] = _ActivationPlan(compute_qparams(lo, hi, spec), from_producer=False)
                continue
            rng = self._range(value, spec)
            if rng is None:
                return _no_range(value)
            ranges[value.name or ""] = rng
            new[value] = _ActivationPlan(compute_qparams(rng.lo, rng.hi, spec), from_producer=False)

        for index, spec in annotation.outputs:
            value = node.outputs[index] if index < len(node.outputs) else None
            if value is None:
                continue
            if isinstance(spec, SharedQuantSpec):
                if embedding and 0 in node_weights:
                    new[value] = _ActivationPlan(node_weights[0], from_producer=True, direct_int8=True)
                    continue
                source = _find_input(node, spec.value_name)
                plan = new.get(source) if source is not None else None
                plan = plan or (plans.get(source) if source is not None else None)
                if plan is None:
                    return Fp32Reason(
                        Fp32Category.NO_RANGE, f"its input {spec.value_name!r} is not quantized, so no scale to share"
                    )
                new[value] = _ActivationPlan(plan.params, from_producer=True)
            elif isinstance(spec, QuantSpec):
                rng = self._range(value, spec)
                if rng is None:
                    return _no_range(value)
                ranges[value.name or ""] = rng
                new[value] = _ActivationPlan(compute_qparams(rng.lo, rng.hi, spec), from_producer=True)

        for _index, spec in annotation.inputs:
            if isinstance(spec, DerivedBiasSpec) and 1 not in node_weights:
                return Fp32Reason(Fp32Category.UNSUPPORTED, "bias needs a quantized weight")
        for index, params in node_weights.items():
            weight_params[(node, index)] = params
            run.weight_keys[(node, index)] = node_weight_keys[index]
        return new, ranges

    def _range(self, value: ir.Value, spec: QuantSpec) -> TensorRange | None:
        chosen = value.meta.get(RANGE_KEY)  # a pass chose this tensor's range (range search)
        rng = chosen if isinstance(chosen, TensorRange) else self.context.range_of(value.name or "", spec.algorithm)
        if rng is None or not (np.isfinite(rng.lo) and np.isfinite(rng.hi)):
            return None
        return rng

    # -- rewriting ---------------------------------------------------------------------------------

    def _quantize_weights(
        self,
        run: _Run,
        model: ir.Model,
        builder: GraphBuilder,
        active: list[tuple[ir.Node, QuantAnnotation]],
        plans: dict[ir.Value, _ActivationPlan],
        weight_params: dict[tuple[ir.Node, int], QParams],
    ) -> None:
        graph = model.graph
        cache: dict[tuple[int, tuple[object, ...]], ir.Value] = {}
        originals: set[ir.Value] = set()
        for node, annotation in active:
            cap = CAPABILITIES.get(node.op_type)
            embedding = cap is not None and cap.category is OpCategory.EMBEDDING
            for index, spec in annotation.inputs:
                if (node, index) in weight_params:
                    value = node.inputs[index]
                    assert value is not None
                    params = weight_params[(node, index)]
                    originals.add(value)
                    key = (id(value), (embedding, *params.key()))
                    replacement = cache.get(key)
                    if replacement is None:
                        weight_key = run.weight_keys[(node, index)]
                        qdata = self.context.weight_cache[weight_key][1]
                        base = value.name or "weight"
                        q_init = builder.initializer(f"{base}_quantized", qdata)
                        if embedding:
                            replacement = q_init
                        else:
                            dq = self._dequantize(builder, q_init, params, f"{base}_dequantized", qdata.shape)
                            assert isinstance(spec, QuantSpec)
                            dq.meta[QUANTIZED_WEIGHT_KEY] = QuantizedWeight(base, spec, params.axis)
                            graph.insert_before(node, dq)
                            replacement = dq.outputs[0]
                        cache[key] = replacement
                    node.replace_input_with(index, replacement)
                elif isinstance(spec, DerivedBiasSpec):
                    self._quantize_bias(builder, graph, node, index, plans, weight_params[(node, 1)], originals)
        for value in originals:
            name = value.name
            if name is not None and not value.uses() and name in graph.initializers and not value.is_graph_output():
                del graph.initializers[name]

    def _quantize_bias(
        self,
        builder: GraphBuilder,
        graph: ir.Graph,
        node: ir.Node,
        index: int,
        plans: dict[ir.Value, _ActivationPlan],
        wparams: QParams,
        originals: set[ir.Value],
    ) -> None:
        bias = node.inputs[index]
        act = node.inputs[0]
        plan = plans.get(act) if act is not None else None
        if bias is None or plan is None:
            return
        data = constant_value(bias).numpy()  # type: ignore[union-attr]
        qbias, scale = quantize_bias(data, plan.params.scale, wparams.scale)
        base = bias.name or "bias"
        q_init = builder.initializer(f"{base}_quantized", qbias)
        axis = 0 if scale.ndim == 1 else None
        params = QParams(scale, np.zeros(scale.shape, dtype=np.int32), DType.INT8, axis)
        dq = self._dequantize(builder, q_init, params, f"{base}_dequantized", data.shape, zp_dtype=np.int32)
        graph.insert_before(node, dq)
        node.replace_input_with(index, dq.outputs[0])
        originals.add(bias)

    def _dequantize(
        self,
        builder: GraphBuilder,
        qvalue: ir.Value,
        params: QParams,
        out_name: str,
        shape: tuple[int, ...] | ir.Shape | None,
        zp_dtype: type[np.integer] | None = None,
    ) -> ir.Node:
        scale = builder.initializer(f"{qvalue.name}_scale", params.scale)
        zp = builder.initializer(
            f"{qvalue.name}_zero_point", params.zero_point.astype(zp_dtype) if zp_dtype else params.zero_point
        )
        attrs = [ir.AttrInt64("axis", params.axis)] if params.axis is not None and params.scale.ndim == 1 else []
        return builder.node(
            "DequantizeLinear",
            [qvalue, scale, zp],
            outputs=[(out_name, ir.DataType.FLOAT, ir.Shape(shape) if shape is not None else None)],
            attributes=attrs,
            name=f"{out_name}_DequantizeLinear",
        )

    def _insert_activation_qdq(
        self,
        builder: GraphBuilder,
        plans: dict[ir.Value, _ActivationPlan],
        requests: dict[ir.Value, list[tuple[ir.Node, int]]],
    ) -> None:
        graph = builder.graph
        for value, plan in plans.items():
            if constant_value(value) is not None and value.producer() is None:
                self._quantize_constant_operand(builder, value, plan, requests)
                continue
            base = value.name or "x"
            shape = value.shape
            params = plan.params
            if plan.direct_int8:
                value.type = ir.TensorType(_IR_DTYPE[params.dtype])
                dq = self._dequantize(builder, value, params, f"{base}_dequantized", shape)
                new_nodes = [dq]
            else:
                scale = builder.initializer(f"{base}_scale", params.scale)
                zp = builder.initializer(f"{base}_zero_point", params.zero_point)
                q = builder.node(
                    "QuantizeLinear",
                    [value, scale, zp],
                    outputs=[(f"{base}_quantized", _IR_DTYPE[params.dtype], shape)],
                    name=f"{base}_QuantizeLinear",
                )
                dq = builder.node(
                    "DequantizeLinear",
                    [q.outputs[0], scale, zp],
                    outputs=[(f"{base}_dequantized", ir.DataType.FLOAT, shape)],
                    name=f"{base}_DequantizeLinear",
                )
                new_nodes = [q, dq]
            dq_out = dq.outputs[0]
            if plan.from_producer:
                uses = [(u.node, u.idx) for u in value.uses() if u.node not in new_nodes]
            else:
                uses = list(dict.fromkeys(requests.get(value, [])))
            builder.insert_after_producer(value, new_nodes)
            for user, idx in uses:
                user.replace_input_with(idx, dq_out)
            if plan.from_producer or plan.direct_int8:
                move_graph_output(value, dq_out, graph, builder.scope)

    def _quantize_constant_operand(
        self,
        builder: GraphBuilder,
        value: ir.Value,
        plan: _ActivationPlan,
        requests: dict[ir.Value, list[tuple[ir.Node, int]]],
    ) -> None:
        """A constant input of Add/Mul/Concat: stored quantized, dequantized for the requesting nodes."""
        data = constant_value(value).numpy()  # type: ignore[union-attr]
        base = value.name or "const"
        q_init = builder.initializer(f"{base}_quantized", quantize_array(data, plan.params))
        dq = self._dequantize(builder, q_init, plan.params, f"{base}_dequantized", data.shape)
        users = list(dict.fromkeys(requests.get(value, [])))
        if not users:
            return
        builder.graph.insert_before(users[0][0], dq)
        for user, idx in users:
            user.replace_input_with(idx, dq.outputs[0])
        name = value.name
        if name is not None and not value.uses() and name in builder.graph.initializers and not value.is_graph_output():
            del builder.graph.initializers[name]


def _find_input(node: ir.Node, name: str) -> ir.Value | None:
    for value in node.inputs:
        if value is not None and value.name == name:
            return value
    return None


def _no_range(value: ir.Value) -> Fp32Reason:
    return Fp32Reason(
        Fp32Category.NO_RANGE,
        f"calibration recorded no finite range for {value.name!r} (the calibration data never reached it)",
    )
