"""Annotators: turn a :class:`TuningConfig` into :class:`QuantAnnotation` node metadata.

One annotator per op category of the capability table
(:data:`lpot_ir.backends.onnxruntime.capabilities.CAPABILITIES`), registered in :data:`ANNOTATORS` with
``@annotates(category)``:

* **compute** (Conv, ConvTranspose, MatMul, Gemm): activation input, weight input (the node's weight
  spec, per channel along the table's channel axis), bias as :class:`DerivedBiasSpec`, and the output
  (unless a fused activation takes it over).
* **embedding** (Gather from a constant table): the table is stored int8; the gathered rows keep its scale.
* **recurrent** (LSTM, GRU, RNN; dynamic approach): weights W and R stored int8.
* **fused activation** (Relu, Clip right after a quantized compute/binary/pool node that has no other
  consumer): the producer's output is not quantized; the activation's output is, so ONNX Runtime folds
  the activation into the producer's requantization (``Conv -> Relu -> Q`` becomes one QLinearConv).
* **binary** (Add, Mul), **pool** (AveragePool, GlobalAveragePool), **activation** (LeakyRelu, Sigmoid,
  Softmax), **concat**: every float input and the output with its own scale.
* **data movement** (MaxPool, Reshape, Transpose, Slice, Split, Resize, ...): input 0 quantized, every
  output :class:`SharedQuantSpec` of input 0, so INT8 flows through without requantization.

Compute, embedding and recurrent nodes are *anchors*: quantized whenever the configuration says so. The
other categories *follow*: they are quantized only where it removes work, i.e. when every float
non-constant input already arrives quantized (from an anchor or another follower) and some consumer of
the output is quantized. A follower that would only add a Q/DQ pair stays FP32 with reason
``not_beneficial``. Both checks run to a fixpoint bounded by the number of nodes.

Nodes not annotated carry ``node.meta[FP32_REASON_KEY]``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import (
    CAPABILITIES,
    OpCategory,
    QuantizableNode,
    SpecChoices,
    constant_value,
)
from lpot_ir.ir.model import all_nodes
from lpot_ir.ir.quant import (
    ANNOTATION_KEY,
    FP32_REASON_KEY,
    Approach,
    DerivedBiasSpec,
    Fp32Category,
    Fp32Reason,
    Granularity,
    OpQuantConfig,
    QuantAnnotation,
    QuantSpec,
    Scheme,
    SharedQuantSpec,
    TensorQuantSpec,
    TuningConfig,
)
from lpot_ir.passes.base import at_node, register_pass
from lpot_ir.passes.quantization.context import AnnotationResult, QuantizationPass, QuantPassResult
from lpot_ir.registry import add_to_registry

__all__ = ["ANNOTATORS", "AnnotatePass", "AnnotationResult", "Annotator", "annotates", "annotate", "fit_spec", "clear_annotations"]

logger = logging.getLogger(__name__)

_ANCHORS = (OpCategory.COMPUTE, OpCategory.EMBEDDING, OpCategory.RECURRENT)
_DYNAMIC_CATEGORIES = (OpCategory.COMPUTE, OpCategory.EMBEDDING, OpCategory.RECURRENT)


def fit_spec(spec: QuantSpec, choices: SpecChoices) -> tuple[QuantSpec, list[str]]:
    """Replace each field of ``spec`` that ``choices`` does not allow by the first allowed value."""
    changes: dict[str, Any] = {}  # field name -> new value; the fields differ in type
    notes: list[str] = []
    for name, allowed in (
        ("dtype", choices.dtypes),
        ("scheme", choices.schemes),
        ("granularity", choices.granularities),
        ("algorithm", choices.algorithms),
        ("reduce_range", choices.reduce_range),
    ):
        value = getattr(spec, name)
        if value not in allowed:
            changes[name] = allowed[0]
            notes.append(f"{name} {value} -> {allowed[0]}")
    return (dataclasses.replace(spec, **changes) if changes else spec), notes


def clear_annotations(model: ir.Model) -> None:
    """Remove every annotation and FP32 reason from the model's nodes (subgraphs included)."""
    for node in all_nodes(model):
        node.meta.pop(ANNOTATION_KEY, None)
        node.meta.pop(FP32_REASON_KEY, None)


def _float_inputs(node: ir.Node) -> list[tuple[int, ir.Value]]:
    """Inputs that carry float activations (non-constant, float or of unknown type)."""
    out = []
    for i, value in enumerate(node.inputs):
        if value is None or constant_value(value) is not None:
            continue
        if value.dtype is not None and value.dtype != ir.DataType.FLOAT:
            continue
        out.append((i, value))
    return out


def _movement_inputs(node: ir.Node) -> list[tuple[int, ir.Value]]:
    """The data inputs of a data-movement / fused-activation node: input 0 only."""
    return [(0, node.inputs[0])] if node.inputs and node.inputs[0] is not None else []


def _data_inputs(node: ir.Node, category: OpCategory) -> list[tuple[int, ir.Value]]:
    if category in (OpCategory.DATA_MOVEMENT, OpCategory.FUSED_ACTIVATION, OpCategory.POOL, OpCategory.ACTIVATION):
        return [(i, v) for i, v in _movement_inputs(node) if constant_value(v) is None]
    return _float_inputs(node)


def annotate(
    model: ir.Model,
    config: TuningConfig,
    nodes: Iterable[QuantizableNode],
    unsupported: Mapping[str, Fp32Reason] | None = None,
) -> AnnotationResult:
    """Write quantization annotations for ``config`` into the node metadata of every graph.

    Nodes inside If branches and Loop/Scan bodies are annotated like main-graph nodes (their ranges come
    from :mod:`lpot_ir.calibration.control_flow`); a value read from an outer scope is one value, so a
    follower inside a branch sees whether the outer producer is quantized.

    Args:
        model: the model to annotate (a fresh clone of the FP32 optimized model; annotated in place).
        config: the tuning configuration.
        nodes: the quantizable nodes (from :func:`~lpot_ir.backends.onnxruntime.capabilities.quantizable_nodes`).
        unsupported: covered nodes that cannot be quantized; their reasons are written too.

    Returns:
        An :class:`AnnotationResult` (effective configs, quantized nodes, FP32 reasons, notes).
    """
    clear_annotations(model)
    result = AnnotationResult()
    by_name = {n.name: n for n in nodes}
    graph_nodes = {node.name: node for node in all_nodes(model)}
    dynamic = config.approach is Approach.DYNAMIC

    for name, reason in (unsupported or {}).items():
        result.fp32[name] = reason
        node = graph_nodes.get(name)
        if node is not None:
            node.meta[FP32_REASON_KEY] = reason

    # 1. effective configuration of every quantizable node, fitted to its choices
    active: dict[str, tuple[ir.Node, QuantizableNode, OpQuantConfig]] = {}
    for node in all_nodes(model):
        qnode = by_name.get(node.name or "")
        if qnode is None:
            continue
        op_config = config.resolve(qnode.name, qnode.op_type, qnode.aliases)
        if op_config.fp32:
            result.configs[qnode.name] = op_config
            detail = (
                f"the configuration runs it in {op_config.float_dtype}, not INT8 (the mixed-precision step)"
                if op_config.low_precision_float else "the configuration keeps it in FP32"
            )
            _set_fp32(node, result, Fp32Category.USER_EXCLUDED, detail)
            continue
        activation, notes = fit_spec(op_config.activation, qnode.activation_choices)
        weight = op_config.weight
        if qnode.weight_choices is not None:
            weight, wnotes = fit_spec(weight, qnode.weight_choices)
            notes += [f"weight {n}" for n in wnotes]
        op_config = OpQuantConfig(activation=activation, weight=weight)
        result.configs[qnode.name] = op_config
        if notes:
            result.notes[qnode.name] = "; ".join(notes)
        if dynamic and qnode.category not in _DYNAMIC_CATEGORIES:
            _set_fp32(node, result, Fp32Category.UNSUPPORTED, "no dynamic INT8 kernel for this op")
            continue
        costly = _not_beneficial(node, qnode, dynamic)
        if costly:
            _set_fp32(node, result, Fp32Category.NOT_BENEFICIAL, costly)
            continue
        active[qnode.name] = (node, qnode, op_config)

    # 2. which followers remove work (fixpoint over the graph, bounded by the node count)
    selected = _select(model, active, dynamic)
    for name, (node, _qnode, _cfg) in active.items():
        if name not in selected:
            _set_fp32(
                node,
                result,
                Fp32Category.NOT_BENEFICIAL,
                "its neighbours stay FP32, so quantizing it would only add Quantize/Dequantize pairs",
            )

    # 3. write the annotations
    fused_producers = _fused_activations(model, active, selected)
    for node in all_nodes(model):
        name = node.name or ""
        if name not in selected:
            continue
        _node, qnode, op_config = active[name]
        with at_node(node):
            annotation = _annotation(_Site(node, qnode, op_config, dynamic, fused_producers, selected))
        node.meta[ANNOTATION_KEY] = annotation
        result.quantized.append(name)
    return result


@register_pass("annotate")
class AnnotatePass(QuantizationPass):
    """Write the annotations for ``context.config`` (see :func:`annotate`); the result carries the decisions."""

    def call(self, model: ir.Model) -> QuantPassResult:
        ctx = self.context
        result = annotate(model, ctx.config, ctx.nodes, ctx.unsupported)
        modified = bool(result.quantized or result.fp32)
        return QuantPassResult(model, modified, changes=len(result.quantized), annotations=result)


def _not_beneficial(node: ir.Node, qnode: QuantizableNode, dynamic: bool) -> str | None:
    """Why quantizing this node would cost more than it saves (measured in benchmarks/quantize.py), or None."""
    if dynamic and qnode.category is OpCategory.COMPUTE and not qnode.weight_inputs:
        return (
            "a MatMul of two activations would quantize both at run time (two DynamicQuantizeLinear), which "
            "costs more than the integer MatMul saves"
        )
    if not dynamic and qnode.category is OpCategory.BINARY and len(node.inputs) == 2:
        consts = [constant_value(v) is not None for v in node.inputs]
        if sum(consts) == 1:
            other = node.inputs[consts.index(False)]
            producer = other.producer() if other is not None else None
            cap = CAPABILITIES.get(producer.op_type) if producer is not None else None
            if cap is not None and cap.float_output is not None and len(other.consumers()) == 1:  # type: ignore[union-attr]
                return (
                    f"a bias {node.op_type} after {producer.op_type}: ONNX Runtime applies it in float after its "  # type: ignore[union-attr]
                    "integer MatMul (MatMulIntegerToFloat); an INT8 op would add a requantization"
                )
    return None


def _set_fp32(node: ir.Node, result: AnnotationResult, category: Fp32Category, detail: str) -> None:
    reason = Fp32Reason(category, detail)
    node.meta[FP32_REASON_KEY] = reason
    result.fp32[node.name or ""] = reason


def _select(
    model: ir.Model, active: Mapping[str, tuple[ir.Node, QuantizableNode, OpQuantConfig]], dynamic: bool
) -> set[str]:
    """Anchors, plus the followers that have every data input quantized and a quantized consumer."""
    selected = {name for name, (_n, q, _c) in active.items() if q.category in _ANCHORS}
    if dynamic:
        return selected
    followers = [(name, node, q) for name, (node, q, _c) in active.items() if q.category not in _ANCHORS]
    order = {node: i for i, node in enumerate(all_nodes(model))}
    followers.sort(key=lambda item: order[item[1]])

    def quantized_output(value: ir.Value) -> bool:
        producer = value.producer()
        return producer is not None and (producer.name or "") in selected

    # forward: followers whose data inputs all arrive quantized (graph order is topological)
    for _round in range(len(followers) + 1):
        changed = False
        for name, node, qnode in followers:
            if name in selected:
                continue
            inputs = _data_inputs(node, qnode.category)
            if inputs and all(quantized_output(v) for _i, v in inputs):
                selected.add(name)
                changed = True
        if not changed:
            break

    # backward: drop followers none of whose consumers is quantized (they would only add Q/DQ)
    follower_names = {name for name, _node, _q in followers}
    for _round in range(len(followers) + 1):
        changed = False
        for name, node, qnode in reversed(followers):
            if name not in selected:
                continue
            if qnode.category is OpCategory.FUSED_ACTIVATION and _is_fusable(node, selected, active):
                continue  # folding it into the producer is what makes the producer fast
            consumers = {c.name or "" for out in node.outputs for c in out.consumers()}
            if not consumers & selected:
                selected.discard(name)
                changed = True
        if not changed:
            break
    # a follower whose input producer was dropped in the backward pass no longer has quantized inputs
    for _round in range(len(followers) + 1):
        changed = False
        for name, node, qnode in followers:
            if name in selected and name in follower_names:
                inputs = _data_inputs(node, qnode.category)
                if not all(quantized_output(v) for _i, v in inputs):
                    selected.discard(name)
                    changed = True
        if not changed:
            break
    return selected


def _is_fusable(
    node: ir.Node, selected: set[str], active: Mapping[str, tuple[ir.Node, QuantizableNode, OpQuantConfig]]
) -> bool:
    """A Relu/Clip whose producer is a selected compute/binary/pool node with this as its only consumer."""
    if not node.inputs or node.inputs[0] is None:
        return False
    value = node.inputs[0]
    producer = value.producer()
    if producer is None or (producer.name or "") not in selected or value.is_graph_output():
        return False
    _p, pq, pcfg = active[producer.name or ""]
    if pq.category not in (OpCategory.COMPUTE, OpCategory.BINARY, OpCategory.POOL):
        return False
    if pcfg.activation.scheme is not Scheme.ASYM:
        return False  # ORT folds Relu into Q only when the zero point is the type's minimum
    if node.op_type == "Clip" and _clip_min(node) is None:
        return False
    return len(value.consumers()) == 1


def _clip_min(node: ir.Node) -> float | None:
    """Clip's lower bound when it is a constant >= 0 (ReLU6-like), else ``None``."""
    lo = node.inputs[1] if len(node.inputs) > 1 else None
    tensor = constant_value(lo) if lo is not None else None
    if tensor is None:
        return None
    value = float(tensor.numpy().reshape(-1)[0]) if tensor.numpy().size else None
    return value if value is not None and value >= 0 else None


def _fused_activations(
    model: ir.Model, active: Mapping[str, tuple[ir.Node, QuantizableNode, OpQuantConfig]], selected: set[str]
) -> set[str]:
    """Names of producers whose output a fused Relu/Clip takes over."""
    out: set[str] = set()
    for name in selected:
        node, qnode, _cfg = active[name]
        if qnode.category is OpCategory.FUSED_ACTIVATION and _is_fusable(node, selected, active):
            producer = node.inputs[0].producer()  # type: ignore[union-attr]
            out.add(producer.name or "")  # type: ignore[union-attr]
    return out


@dataclass(frozen=True)
class _Site:
    """What an annotator sees of one selected node."""

    node: ir.Node
    qnode: QuantizableNode
    config: OpQuantConfig
    dynamic: bool
    fused_producers: set[str]
    selected: set[str]


_Specs = list[tuple[int, TensorQuantSpec]]
Annotator = Callable[[_Site], tuple[_Specs, _Specs]]
"""An annotator: (the node in context) -> (input specs, output specs)."""

ANNOTATORS: dict[OpCategory, Annotator] = {}
"""One annotator per category of the capability table (``annotates`` registers them)."""


def annotates(*categories: OpCategory, replace: bool = False) -> Callable[[Annotator], Annotator]:
    """Register the decorated function as the annotator of ``categories`` (one annotator per category).

    Registering a category again follows the one duplicate-name policy (:func:`lpot_ir.registry.add_to_registry`):
    it raises :class:`~lpot_ir.registry.DuplicateNameError` unless ``replace`` is true.
    """

    def decorator(annotator: Annotator) -> Annotator:
        for category in categories:
            add_to_registry(ANNOTATORS, category, annotator, kind="quantization annotator", replace=replace)
        return annotator

    return decorator


def _annotation(site: _Site) -> QuantAnnotation:
    inputs, outputs = ANNOTATORS[site.qnode.category](site)
    return QuantAnnotation(inputs=tuple(inputs), outputs=tuple(outputs), dynamic=site.dynamic)


@annotates(OpCategory.COMPUTE)
def _compute(site: _Site) -> tuple[_Specs, _Specs]:
    """Activation input, weight, int32 bias (static), and the output unless a fused activation or a
    float-output kernel takes it."""
    node, act, dynamic = site.node, site.config.activation, site.dynamic
    ins = node.inputs
    cap = CAPABILITIES[node.op_type]
    inputs: _Specs = [(0, act)]
    outputs: _Specs = []
    if site.qnode.weight_inputs:
        inputs.append((1, site.config.weight))
        bias = cap.bias_input
        if (
            not dynamic
            and bias is not None
            and bias < len(ins)
            and ins[bias] is not None
            and constant_value(ins[bias]) is not None
            and _bias_is_per_channel_vector(node)
        ):
            inputs.append((bias, DerivedBiasSpec(ins[0].name or "", ins[1].name or "")))  # type: ignore[union-attr]
    else:
        inputs.append((1, act))  # MatMul of two activations
    if not dynamic and (node.name or "") not in site.fused_producers and (
        cap.float_output is None or _has_quantized_reader(node, site.selected)
    ):
        outputs.append((0, act))
    return inputs, outputs


@annotates(OpCategory.EMBEDDING)
def _embedding(site: _Site) -> tuple[_Specs, _Specs]:
    """The table stored int8 (per tensor); the gathered rows keep its scale."""
    weight = dataclasses.replace(site.config.weight, granularity=Granularity.PER_TENSOR)
    return [(0, weight)], [(0, SharedQuantSpec(site.node.inputs[0].name or ""))]  # type: ignore[union-attr]


@annotates(OpCategory.RECURRENT)
def _recurrent(site: _Site) -> tuple[_Specs, _Specs]:
    """Weights W and R stored int8 (per tensor)."""
    weight = dataclasses.replace(site.config.weight, granularity=Granularity.PER_TENSOR)
    return [(i, weight) for i in site.qnode.weight_inputs], []


@annotates(OpCategory.DATA_MOVEMENT)
def _data_movement(site: _Site) -> tuple[_Specs, _Specs]:
    """Input 0 quantized; every output shares its scale, so INT8 flows through."""
    node = site.node
    source = node.inputs[0].name or ""  # type: ignore[union-attr]
    return [(0, site.config.activation)], [(i, SharedQuantSpec(source)) for i in range(len(node.outputs))]


@annotates(OpCategory.FUSED_ACTIVATION)
def _fused_activation(site: _Site) -> tuple[_Specs, _Specs]:
    """After a fused producer: only the output (the producer's requantization absorbs the activation);
    otherwise input quantized and the output sharing its scale."""
    ins, act = site.node.inputs, site.config.activation
    producer = ins[0].producer() if ins and ins[0] is not None else None
    if producer is not None and (producer.name or "") in site.fused_producers:
        return [], [(0, act)]
    return [(0, act)], [(0, SharedQuantSpec(ins[0].name or ""))]  # type: ignore[union-attr]


@annotates(OpCategory.BINARY, OpCategory.POOL, OpCategory.ACTIVATION, OpCategory.CONCAT)
def _own_scale(site: _Site) -> tuple[_Specs, _Specs]:
    """Every float data input, and the output, with its own scale; constant operands of binary ops and
    Concat are stored quantized too."""
    node, category, act = site.node, site.qnode.category, site.config.activation
    ins = node.inputs
    inputs: _Specs = [(i, act) for i, _v in _data_inputs(node, category)]
    if category in (OpCategory.BINARY, OpCategory.CONCAT):
        for i, value in enumerate(ins):  # constant operands are stored quantized too
            if value is not None and constant_value(value) is not None and i not in dict(inputs):
                if category is OpCategory.BINARY or value.dtype in (None, ir.DataType.FLOAT):
                    inputs.append((i, act))
        inputs.sort(key=lambda item: item[0])
    outputs: _Specs = [] if (node.name or "") in site.fused_producers else [(0, act)]
    return inputs, outputs


def _has_quantized_reader(node: ir.Node, selected: set[str]) -> bool:
    """Some selected node reads output 0 (so it should arrive as INT8)."""
    return any((c.name or "") in selected for c in node.outputs[0].consumers())


def _bias_is_per_channel_vector(node: ir.Node) -> bool:
    """Bias can be int32 only when it is a 1-D vector over the output channels (Conv, Gemm with 1-D C)."""
    bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 else None
    if bias is None or bias.dtype != ir.DataType.FLOAT:
        return False
    if node.op_type == "Gemm":
        if len(bias.shape) != 1:
            return False
        alpha = node.attributes.get_float("alpha", 1.0)
        beta = node.attributes.get_float("beta", 1.0)
        return alpha == 1.0 and beta == 1.0
    return len(bias.shape) == 1
