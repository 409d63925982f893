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

A node whose activation range is missing is left FP32 with reason ``no_range`` (with calibration's
explanation when it gave one, e.g. that no calibration feed took the If branch the node is in). No
``DQ -> Q`` pair of equal parameters is ever produced, because quantization is decided per tensor, once.

**Subgraphs** (If branches, Loop/Scan bodies) are rewritten like the main graph. ONNX Runtime fuses
``DQ -> op -> Q`` only within one graph, so every ``DequantizeLinear`` goes into the graph of the node
reading it: a tensor's ``QuantizeLinear`` sits after its producer (in the graph that defines it), and a
subgraph that reads the tensor from an outer scope gets its own ``DequantizeLinear`` of that outer
``QuantizeLinear``, at its start. Quantized weights, biases and their scales go into the graph of the
node that uses them.
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
from lpot_ir.ir.control_flow import Location, graph_locations
from lpot_ir.ir.model import all_nodes
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
from lpot_ir.passes.base import at_node, register_pass
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
    locations: dict[int, Location] | None = None  # graph_locations of the model, when a reason needs them


@dataclass
class _ActivationPlan:
    params: QParams
    from_producer: bool  # the producer asked: every consumer reads the dequantized value
    direct_int8: bool = False  # the producer already emits int8 (Gather on an int8 table)


@register_pass("insert-qdq")
class InsertQDQPass(QuantizationPass):
    """Insert Q/DQ (and quantized weights and biases) from the annotations of every graph of the model.

    Reads ``context.range_of`` (the calibrated activation ranges) and ``context.weight_cache`` (quantized
    weights reused across configurations of the same model). The result's ``ranges`` are the ranges
    used (for recipes), its ``fp32`` the annotated nodes left FP32 after all (e.g. ``no_range``).
    Each weight ``DequantizeLinear`` carries a :class:`QuantizedWeight` in ``node.meta``.
    """

    def call(self, model: ir.Model) -> QuantPassResult:
        nodes = list(all_nodes(model))
        run = _Run()
        plans: dict[ir.Value, _ActivationPlan] = {}
        requests: dict[ir.Value, list[tuple[ir.Node, int]]] = {}
        weight_params: dict[tuple[ir.Node, int], QParams] = {}
        active: list[tuple[ir.Node, QuantAnnotation]] = []

        for node in nodes:
            annotation = node.meta.get(ANNOTATION_KEY)
            if not isinstance(annotation, QuantAnnotation) or annotation.dynamic:
                continue
            with at_node(node):
                planned = self._plan_node(run, node, annotation, plans, weight_params)
                if isinstance(planned, _Missing):
                    planned = self._no_range(run, model, planned.value)
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
    ) -> tuple[dict[ir.Value, _ActivationPlan], dict[str, TensorRange]] | Fp32Reason | _Missing:
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
                return _Missing(value)
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
                    return _Missing(value)
                ranges[value.name or ""] = rng
                new[value] = _ActivationPlan(compute_qparams(rng.lo, rng.hi, spec), from_producer=True)

        for _index, spec in annotation.inputs:
            if isinstance(spec, DerivedBiasSpec) and 1 not in node_weights:
                return Fp32Reason(Fp32Category.UNSUPPORTED, "bias needs a quantized weight")
        for index, params in node_weights.items():
            weight_params[(node, index)] = params
            run.weight_keys[(node, index)] = node_weight_keys[index]
        return new, ranges

    def _no_range(self, run: _Run, model: ir.Model, value: ir.Value) -> Fp32Reason:
        """Why ``value`` has no range: calibration's explanation when it gave one, else where the value is."""
        note = self.context.range_notes.get(value.name or "")
        if note is None and value.graph is not model.graph and value.graph is not None:
            if run.locations is None:
                run.locations = graph_locations(model)
            location = run.locations.get(id(value.graph))
            where = location.describe() if location is not None else "a subgraph"
            note = f"the calibration data never reached it (it is inside {where})"
        detail = f"calibration recorded no finite range for {value.name!r}: " + (
            note or "the calibration data never reached it"
        )
        return Fp32Reason(Fp32Category.NO_RANGE, detail)

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
        cache: dict[tuple[int, int, tuple[object, ...]], ir.Value] = {}
        originals: set[ir.Value] = set()
        for node, annotation in active:
            cap = CAPABILITIES.get(node.op_type)
            embedding = cap is not None and cap.category is OpCategory.EMBEDDING
            local = builder.for_graph(node.graph)  # the weight's DQ goes into the node's own graph
            graph = local.graph
            for index, spec in annotation.inputs:
                if (node, index) in weight_params:
                    value = node.inputs[index]
                    assert value is not None
                    params = weight_params[(node, index)]
                    originals.add(value)
                    key = (id(graph), id(value), (embedding, *params.key()))
                    replacement = cache.get(key)
                    if replacement is None:
                        weight_key = run.weight_keys[(node, index)]
                        qdata = self.context.weight_cache[weight_key][1]
                        base = value.name or "weight"
                        q_init = local.initializer(f"{base}_quantized", qdata)
                        if embedding:
                            replacement = q_init
                        else:
                            dq = self._dequantize(local, q_init, params, f"{base}_dequantized", qdata.shape)
                            assert isinstance(spec, QuantSpec)
                            dq.meta[QUANTIZED_WEIGHT_KEY] = QuantizedWeight(base, spec, params.axis)
                            graph.insert_before(node, dq)
                            replacement = dq.outputs[0]
                        cache[key] = replacement
                    node.replace_input_with(index, replacement)
                elif isinstance(spec, DerivedBiasSpec):
                    self._quantize_bias(local, graph, node, index, plans, weight_params[(node, 1)], originals)
        for value in originals:
            _drop_if_unused(value, model)

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
        for value, plan in plans.items():
            if constant_value(value) is not None and value.producer() is None:
                self._quantize_constant_operand(builder, value, plan, requests)
                continue
            producer = value.producer()
            home = builder.for_graph(producer.graph if producer is not None else value.graph)
            base = value.name or "x"
            shape = value.shape
            params = plan.params
            created: list[ir.Node] = []
            if plan.direct_int8:
                value.type = ir.TensorType(_IR_DTYPE[params.dtype])
                source = value  # the producer already emits int8
                scale = zp = None
            else:
                scale = home.initializer(f"{base}_scale", params.scale)
                zp = home.initializer(f"{base}_zero_point", params.zero_point)
                q = home.node(
                    "QuantizeLinear",
                    [value, scale, zp],
                    outputs=[(f"{base}_quantized", _IR_DTYPE[params.dtype], shape)],
                    name=f"{base}_QuantizeLinear",
                )
                home.insert_after_producer(value, [q])
                created.append(q)
                source = q.outputs[0]
            if plan.from_producer:
                uses = [(u.node, u.idx) for u in value.uses() if u.node not in created]
            else:
                uses = list(dict.fromkeys(requests.get(value, [])))
            by_graph: dict[int, tuple[ir.Graph, list[tuple[ir.Node, int]]]] = {}
            for user, idx in uses:
                graph = user.graph if user.graph is not None else home.graph
                by_graph.setdefault(id(graph), (graph, []))[1].append((user, idx))
            if (plan.from_producer or plan.direct_int8) and value.is_graph_output():
                by_graph.setdefault(id(home.graph), (home.graph, []))  # the output is taken over by a DQ
            for graph, users in by_graph.values():
                local = home.for_graph(graph)
                dq = self._activation_dequantize(local, source, params, base, shape, scale, zp)
                if graph is home.graph:
                    if created:
                        graph.insert_after(created[-1], dq)
                    else:
                        local.insert_after_producer(value, [dq])
                    created.append(dq)
                else:  # read from an outer scope: dequantized at the start of the reading graph
                    local.insert_after_producer(source, [dq])
                for user, idx in users:
                    user.replace_input_with(idx, dq.outputs[0])
                if graph is home.graph and (plan.from_producer or plan.direct_int8):
                    move_graph_output(value, dq.outputs[0], graph, builder.scope)

    def _activation_dequantize(
        self,
        builder: GraphBuilder,
        source: ir.Value,
        params: QParams,
        base: str,
        shape: ir.Shape | None,
        scale: ir.Value | None,
        zp: ir.Value | None,
    ) -> ir.Node:
        """The ``DequantizeLinear`` of an activation's int8 ``source`` (scale and zero point given or new)."""
        if scale is None or zp is None:
            return self._dequantize(builder, source, params, f"{base}_dequantized", shape)
        return builder.node(
            "DequantizeLinear",
            [source, scale, zp],
            outputs=[(f"{base}_dequantized", ir.DataType.FLOAT, shape)],
            name=f"{base}_DequantizeLinear",
        )

    def _quantize_constant_operand(
        self,
        builder: GraphBuilder,
        value: ir.Value,
        plan: _ActivationPlan,
        requests: dict[ir.Value, list[tuple[ir.Node, int]]],
    ) -> None:
        """A constant input of Add/Mul/Concat: stored quantized, dequantized for the requesting nodes (in the
        graph of each)."""
        data = constant_value(value).numpy()  # type: ignore[union-attr]
        base = value.name or "const"
        users = list(dict.fromkeys(requests.get(value, [])))
        by_graph: dict[int, list[tuple[ir.Node, int]]] = {}
        for user, idx in users:
            by_graph.setdefault(id(user.graph), []).append((user, idx))
        for group in by_graph.values():
            local = builder.for_graph(group[0][0].graph)
            q_init = local.initializer(f"{base}_quantized", quantize_array(data, plan.params))
            dq = self._dequantize(local, q_init, plan.params, f"{base}_dequantized", data.shape)
            local.graph.insert_before(group[0][0], dq)
            for user, idx in group:
                user.replace_input_with(idx, dq.outputs[0])
        _drop_if_unused(value, builder.model)


def _drop_if_unused(value: ir.Value, model: ir.Model) -> None:
    """Remove an initializer nothing reads any more from the graph that holds it."""
    name = value.name
    graph = value.graph if value.graph is not None else model.graph
    if name is not None and not value.uses() and name in graph.initializers and not value.is_graph_output():
        del graph.initializers[name]


def _find_input(node: ir.Node, name: str) -> ir.Value | None:
    for value in node.inputs:
        if value is not None and value.name == name:
            return value
    return None


@dataclass(frozen=True, eq=False)
class _Missing:
    """A value without a calibrated range (the node stays FP32: :meth:`InsertQDQPass._no_range` says why)."""

    value: ir.Value

