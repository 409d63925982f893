"""The ``mixed-precision`` step: run the nodes a configuration puts in bf16/fp16 in that type, casts at the edges.

It runs in every quantization pipeline after the INT8 steps (``insert-qdq`` / ``dynamic-quantize`` and
``int8-refine``), so one configuration can have INT8 nodes, bf16/fp16 nodes and FP32 nodes. It does nothing
unless the configuration asks for a 16-bit type somewhere (``TuningConfig.uses_low_precision_float``), so
INT8/FP32 models are unchanged.

**Plan.** Which nodes run in which type, from the configuration and the two declared tables of
:mod:`lpot_ir.backends.precision`:

* a *compute* node (MatMul, Gemm, Conv, ConvTranspose) whose configuration says bf16/fp16 runs in that type
  when the backend (``TuningConfig.backend``) has a kernel for it; for fp16 also when its weights and its
  calibrated output fit in fp16 (|x| <= 65504); otherwise it stays FP32 with the reason;
* a *follow* node (element-wise, activations, data movement) runs in a 16-bit type when every float input
  arrives in that type (from a planned node, or a constant), some consumer reads it in that type, the backend
  has a kernel and the configuration does not pin it to FP32: it then adds no cast (fixpoint, bounded);
* an *fp32* node (reductions, Softmax, normalizations, Exp, ...) never changes; asked for a 16-bit type it
  stays FP32 with the rule's reason (``numerics``). INT8 nodes and the Q/DQ nodes are not touched.

**Rewrite.** Planned nodes get their typed float inputs in their type: a constant is stored converted (a new
initializer, shared by the nodes that read it in that type), any other value gets one ``Cast`` shared by its
readers in that type. Their float outputs take the type; a node that is not planned and reads one gets a
``Cast`` back to float32 (one per value), and a graph output keeps its name and float32 type. The model's
interface never changes.

Data-driven decisions (fp16 outputs that overflowed on the calibration data) are recorded, so a recipe
replays the model without data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import constant_value
from lpot_ir.backends.precision import (
    BACKEND_NAMES,
    FP16_MAX,
    FloatRole,
    kernel_for,
    precision_blocker,
    rule_for,
    supported,
)
from lpot_ir.ir.builder import GraphBuilder, move_graph_output
from lpot_ir.ir.model import all_nodes
from lpot_ir.ir.quant import (
    ANNOTATION_KEY,
    FP32_REASON_KEY,
    CalibAlgorithm,
    DType,
    Fp32Category,
    Fp32Reason,
    OpQuantConfig,
)
from lpot_ir.passes.base import register_pass
from lpot_ir.passes.quantization.context import QuantizationContext, QuantizationPass, QuantPassResult

__all__ = [
    "STEP",
    "FLOAT_DTYPE_KEY",
    "ONNX_TYPES",
    "PrecisionPlan",
    "MixedPrecisionPass",
    "plan_precisions",
    "apply_precisions",
    "to_low_precision",
]

logger = logging.getLogger(__name__)

STEP = "mixed-precision"
"""The step's registered name (also the key of its record in recipes)."""

FLOAT_DTYPE_KEY = "lpot_ir.float_dtype"
"""``node.meta`` key: the 16-bit :class:`DType` a node runs in after this step."""

ONNX_TYPES: Mapping[DType, ir.DataType] = {
    DType.FP32: ir.DataType.FLOAT,
    DType.BF16: ir.DataType.BFLOAT16,
    DType.FP16: ir.DataType.FLOAT16,
}
"""lpot-ir's float types -> ONNX element types."""

_FLOAT = ir.DataType.FLOAT
_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


@dataclass
class PrecisionPlan:
    """Which nodes run in a 16-bit type, and why the others that were asked to stay FP32.

    Attributes:
        dtypes: node name -> the 16-bit type it runs in.
        reasons: node name -> why a node the configuration put in bf16/fp16 stays FP32.
        overflow: names of fp16 nodes kept FP32 because their calibrated output passed 65504 (the record).
        upcast: names of planned nodes the backend runs by casting to float32 and back (storage savings only).
    """

    dtypes: dict[str, DType] = field(default_factory=dict)
    reasons: dict[str, Fp32Reason] = field(default_factory=dict)
    overflow: list[str] = field(default_factory=list)
    upcast: list[str] = field(default_factory=list)


def to_low_precision(array: np.ndarray, dtype: DType) -> np.ndarray:
    """``array`` rounded to ``dtype`` (round to nearest even), as numpy (``ml_dtypes.bfloat16`` for bf16)."""
    if dtype is DType.FP16:
        return np.asarray(array, dtype=np.float32).astype(np.float16)
    if dtype is DType.BF16:
        return np.asarray(array, dtype=np.float32).astype(ml_dtypes.bfloat16)
    raise ValueError(f"{dtype} is not a 16-bit float type")


def _is_float(value: ir.Value | None) -> bool:
    if value is None:
        return False
    if value.dtype is not None:
        return value.dtype == _FLOAT
    tensor = constant_value(value)
    return tensor is not None and tensor.dtype == _FLOAT


def _typed_inputs(node: ir.Node, typed: tuple[int, ...] | None) -> list[tuple[int, ir.Value]]:
    """The float inputs that take the node's type (all float inputs unless the rule lists them)."""
    indices = range(len(node.inputs)) if typed is None else [i for i in typed if i < len(node.inputs)]
    return [(i, node.inputs[i]) for i in indices if _is_float(node.inputs[i])]  # type: ignore[misc]


def _float_outputs(node: ir.Node) -> list[ir.Value]:
    return [v for v in node.outputs if v.dtype == _FLOAT]


def _is_converted_node(node: ir.Node) -> bool:
    """INT8 nodes and Q/DQ nodes are not touched."""
    return ANNOTATION_KEY in node.meta or node.op_type in _QDQ or node.domain not in ("", "ai.onnx")


def _requested(config: OpQuantConfig) -> DType | None:
    return config.float_dtype if config.fp32 and config.low_precision_float else None


def _pinned_fp32(config: OpQuantConfig) -> bool:
    """The configuration says FP32 for it (not INT8, not a 16-bit type)."""
    return config.fp32 and not config.low_precision_float


def _constant_overflow(node: ir.Node, typed: list[tuple[int, ir.Value]]) -> str | None:
    for _i, value in typed:
        tensor = constant_value(value)
        if tensor is None:
            continue
        array = tensor.numpy()
        if array.size and float(np.max(np.abs(array[np.isfinite(array)]), initial=0.0)) > FP16_MAX:
            return f"constant {value.name!r} holds values beyond fp16's range ({FP16_MAX:g})"
    return None


def plan_precisions(model: ir.Model, context: QuantizationContext) -> PrecisionPlan:
    """Decide which main-graph nodes run in bf16/fp16 (see the module docstring); the model is not changed."""
    config = context.config
    backend = config.backend
    opset = model.opset_imports.get("", 0)
    aliases = {n.name: n.aliases for n in context.nodes}
    replayed = context.recorded(STEP)
    plan = PrecisionPlan()
    followers: dict[str, tuple[ir.Node, DType | None]] = {}
    nodes = [n for n in model.graph if not _is_converted_node(n)]

    for node in nodes:
        name = node.name or ""
        typed_all = [(i, v) for i, v in enumerate(node.inputs) if _is_float(v)]
        if not typed_all and not _float_outputs(node):
            continue  # no float data: nothing to convert
        op_config = config.resolve(name, node.op_type, aliases.get(name, ()))
        wanted = _requested(op_config)
        rule = rule_for(node.op_type, node.domain)
        if rule is not None and rule.role is FloatRole.FOLLOW:
            if not _pinned_fp32(op_config):
                followers[name] = (node, wanted)
            continue
        if wanted is None:
            continue
        blocker = precision_blocker(node.op_type, wanted, backend, opset, node.domain)
        if blocker is None and wanted is DType.FP16:
            blocker = _fp16_blocker(node, rule.typed_inputs if rule else None, context, replayed, plan)
        if blocker is not None:
            plan.reasons[name] = blocker
            continue
        plan.dtypes[name] = wanted

    _select_followers(model, followers, plan, backend, opset)
    for node in all_nodes(model):  # If branches and loop bodies: this step rewrites the main graph only
        if node.graph is model.graph or _is_converted_node(node):
            continue
        name = node.name or ""
        wanted = _requested(config.resolve(name, node.op_type, aliases.get(name, ())))
        if wanted is not None:
            plan.reasons[name] = Fp32Reason(
                Fp32Category.UNSUPPORTED,
                f"it is inside a control-flow subgraph (If/Loop/Scan body); the mixed-precision step runs {wanted} "
                "in the main graph only",
            )
    op_types = {n.name or "": n.op_type for n in nodes}
    for name, dtype in plan.dtypes.items():
        kernel = kernel_for(backend, dtype, op_types[name], opset)
        if kernel is not None and kernel.fp32_arithmetic:
            plan.upcast.append(name)
    return plan


def _fp16_blocker(
    node: ir.Node,
    typed: tuple[int, ...] | None,
    context: QuantizationContext,
    replayed: Mapping[str, Any] | None,
    plan: PrecisionPlan,
) -> Fp32Reason | None:
    """Why a compute node cannot run in fp16: a weight or (on the calibration data) an output beyond 65504."""
    name = node.name or ""
    detail = _constant_overflow(node, _typed_inputs(node, typed))
    if detail is not None:
        return Fp32Reason(Fp32Category.NUMERICS, detail)
    if replayed is not None:
        overflowed = name in replayed.get("fp16_overflow", ())
    else:
        overflowed = False
        for value in _float_outputs(node):
            found = context.range_of(value.name or "", CalibAlgorithm.MINMAX)
            if found is not None and max(abs(found.lo), abs(found.hi)) > FP16_MAX:
                overflowed = True
                break
    if overflowed:
        plan.overflow.append(name)
        return Fp32Reason(
            Fp32Category.NUMERICS,
            f"its output passed fp16's largest value ({FP16_MAX:g}) on the calibration data: it would be inf in fp16",
        )
    return None


def _select_followers(
    model: ir.Model,
    followers: Mapping[str, tuple[ir.Node, DType | None]],
    plan: PrecisionPlan,
    backend: Any,
    opset: int,
) -> None:
    """Add the follow nodes that extend a 16-bit region without a cast (fixpoint, bounded by the node count)."""
    chosen: dict[str, DType] = {}

    def arriving(node: ir.Node) -> DType | None:
        """The one 16-bit type every typed non-constant input arrives in, else ``None``."""
        rule = rule_for(node.op_type, node.domain)
        typed = _typed_inputs(node, rule.typed_inputs if rule else None)
        kinds: set[DType] = set()
        for _i, value in typed:
            if constant_value(value) is not None:
                continue
            producer = value.producer()
            pname = producer.name if producer is not None else None
            dtype = plan.dtypes.get(pname or "") or chosen.get(pname or "")
            if dtype is None:
                return None
            kinds.add(dtype)
        return kinds.pop() if len(kinds) == 1 else None

    def eligible(node: ir.Node, dtype: DType) -> bool:
        rule = rule_for(node.op_type, node.domain)
        if not supported(node.op_type, dtype, backend, opset):
            return False
        if dtype is DType.FP16 and _constant_overflow(node, _typed_inputs(node, rule.typed_inputs if rule else None)):
            return False
        return True

    ordered = [(name, node) for name, (node, _w) in followers.items()]
    for _round in range(len(ordered) + 1):  # forward: inputs all arrive in one 16-bit type
        changed = False
        for name, node in ordered:
            if name in chosen:
                continue
            dtype = arriving(node)
            if dtype is not None and eligible(node, dtype):
                chosen[name] = dtype
                changed = True
        if not changed:
            break
    for _round in range(len(ordered) + 1):  # backward: some consumer must read it in that type
        changed = False
        for name, node in reversed(ordered):
            if name not in chosen:
                continue
            readers = {c.name or "" for out in node.outputs for c in out.consumers()}
            if not any(plan.dtypes.get(r) == chosen[name] or chosen.get(r) == chosen[name] for r in readers):
                del chosen[name]
                changed = True
        if not changed:
            break
    for _round in range(len(ordered) + 1):  # a follower whose producer was dropped no longer qualifies
        changed = False
        for name, node in ordered:
            if name in chosen and arriving(node) != chosen[name]:
                del chosen[name]
                changed = True
        if not changed:
            break
    plan.dtypes.update(chosen)
    for name, (node, wanted) in followers.items():
        if wanted is None or name in chosen:
            continue
        blocker = precision_blocker(node.op_type, wanted, backend, opset, node.domain)
        plan.reasons[name] = blocker or Fp32Reason(
            Fp32Category.NOT_BENEFICIAL,
            f"its inputs or readers are not {wanted}, so running it in {wanted} would only move a Cast",
        )


def apply_precisions(model: ir.Model, plan: PrecisionPlan) -> int:
    """Rewrite ``model`` (main graph, in place) so the planned nodes run in their types; returns the number of
    Cast nodes and converted constants added."""
    if not plan.dtypes:
        return 0
    builder = GraphBuilder(model)
    graph = model.graph
    nodes = {n.name: n for n in graph if (n.name or "") in plan.dtypes}
    produced_in: dict[ir.Value, DType] = {}
    for name, node in nodes.items():
        for value in _float_outputs(node):
            produced_in[value] = plan.dtypes[name or ""]
    casts: dict[tuple[ir.Value, DType], ir.Value] = {}
    constants: dict[tuple[ir.Value, DType], ir.Value] = {}
    changes = 0

    def cast(value: ir.Value, dtype: DType) -> ir.Value:
        nonlocal changes
        key = (value, dtype)
        if key not in casts:
            node = builder.node(
                "Cast", [value], outputs=[(f"{value.name}_{dtype}", ONNX_TYPES[dtype], value.shape)],
                attributes=[ir.AttrInt64("to", ONNX_TYPES[dtype].value)], name=f"{value.name}_to_{dtype}",
            )
            builder.insert_after_producer(value, [node])
            casts[key] = node.outputs[0]
            changes += 1
        return casts[key]

    def converted(value: ir.Value, tensor: ir.TensorProtocol, dtype: DType) -> ir.Value:
        nonlocal changes
        key = (value, dtype)
        if key not in constants:
            constants[key] = builder.initializer(f"{value.name}_{dtype}", to_low_precision(tensor.numpy(), dtype))
            changes += 1
        return constants[key]

    # 1. planned nodes read their typed inputs in their type
    for name, node in nodes.items():
        dtype = plan.dtypes[name or ""]
        rule = rule_for(node.op_type, node.domain)
        for i, value in _typed_inputs(node, rule.typed_inputs if rule else None):
            tensor = constant_value(value)
            if tensor is not None:
                node.replace_input_with(i, converted(value, tensor, dtype))
            elif produced_in.get(value) != dtype:
                source = value
                if value in produced_in:  # another 16-bit type: go through float32
                    source = cast(value, DType.FP32)
                node.replace_input_with(i, cast(source, dtype))
    # 2. their outputs take the type; readers that are not planned (and graph outputs) get float32 back
    for value, dtype in produced_in.items():
        value.dtype = ONNX_TYPES[dtype]
    for value, dtype in produced_in.items():
        readers = [
            (consumer, i)
            for consumer in list(value.consumers())
            for i, v in enumerate(consumer.inputs)
            if v is value and not (consumer.name in nodes and plan.dtypes[consumer.name or ""] == dtype and _reads_typed(consumer, i))
            and not (consumer.op_type == "Cast" and consumer.outputs[0] in casts.values())
        ]
        if readers or value.is_graph_output():
            back = cast(value, DType.FP32)
            for consumer, i in readers:
                consumer.replace_input_with(i, back)
            move_graph_output(value, back, graph, builder.scope)
    # 3. constants nobody reads any more
    for value, _dtype in constants:
        if not value.uses() and value.name in graph.initializers and not value.is_graph_input() and not value.is_graph_output():
            del graph.initializers[value.name]  # type: ignore[arg-type]
    for name, node in nodes.items():
        node.meta[FLOAT_DTYPE_KEY] = plan.dtypes[name or ""]
        node.meta.pop(FP32_REASON_KEY, None)
    return changes


def _reads_typed(node: ir.Node, index: int) -> bool:
    rule = rule_for(node.op_type, node.domain)
    return rule is None or rule.typed_inputs is None or index in rule.typed_inputs


@register_pass(STEP)
class MixedPrecisionPass(QuantizationPass):
    """Run the nodes the configuration puts in bf16/fp16 in that type (see the module docstring)."""

    def call(self, model: ir.Model) -> QuantPassResult:
        ctx = self.context
        if not ctx.config.uses_low_precision_float:
            return QuantPassResult(model, False)
        plan = plan_precisions(model, ctx)
        changes = apply_precisions(model, plan)
        for node in all_nodes(model):
            reason = plan.reasons.get(node.name or "")
            if reason is not None:
                node.meta[FP32_REASON_KEY] = reason
        if plan.upcast:
            logger.info(
                "%s runs %d of the %d bf16/fp16 nodes by casting them to float32 and back: the model is smaller, "
                "not faster (docs/mixed_precision.md)", BACKEND_NAMES[ctx.config.backend], len(plan.upcast),
                len(plan.dtypes),
            )
        details = {str(d): sum(1 for v in plan.dtypes.values() if v is d) for d in set(plan.dtypes.values())}
        return QuantPassResult(
            model,
            changes > 0,
            changes=changes,
            details=details,
            fp32=dict(plan.reasons),
            float_dtypes=dict(plan.dtypes),
            record={"fp16_overflow": sorted(plan.overflow)} if plan.overflow else None,
            report=plan,
        )
