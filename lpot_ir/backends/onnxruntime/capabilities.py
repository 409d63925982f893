"""What ONNX Runtime can run in INT8: one declarative table, and which nodes of a model it covers.

:data:`CAPABILITIES` maps an ONNX op type to an :class:`OpCapability`: its category (which annotator
handles it), which approaches it supports, which inputs are weights / bias, the weight's output-channel
axis, and the kernels ONNX Runtime runs it with (QOperator, float-output, dynamic). Everything else in
lpot-ir (annotators, the Q/DQ and dynamic passes, the QOperator lowering, the tuning space, pruning,
reports) reads this table; nothing else lists quantizable op types.

:func:`quantizable_nodes` answers, for one model, which nodes can be quantized and with which choices
(:class:`QuantizableNode`), and why the others that the table covers cannot (:class:`Fp32Reason`).

:func:`default_op_config` picks safe defaults from the CPU's features, as ONNX Runtime documents them:
with VNNI (or on ARM), u8 activations x s8 weights; on x86 without VNNI, u8 x s8 products can saturate
the 16-bit intermediate of ``vpmaddubsw``, so weights are quantized with ``reduce_range`` (7 bits).
"""

from __future__ import annotations

import enum
import functools
import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import onnx_ir as ir

from lpot_ir.ir.control_flow import Location, graph_locations
from lpot_ir.ir.model import all_nodes
from lpot_ir.ir.quant import (
    Approach,
    CalibAlgorithm,
    DType,
    Fp32Category,
    Fp32Reason,
    Granularity,
    OpQuantConfig,
    QuantSpec,
    Scheme,
)

__all__ = [
    "MS_DOMAIN",
    "Kernel",
    "OpCategory",
    "OpCapability",
    "SpecChoices",
    "QuantizableNode",
    "CpuFeatures",
    "CAPABILITIES",
    "SLOW_ORT_FUSIONS",
    "PER_CHANNEL_MIN_OPSET",
    "cpu_features",
    "features_from_cpuinfo",
    "default_op_config",
    "quantizable_nodes",
    "constant_value",
    "output_channel_axis",
    "op_types",
]

logger = logging.getLogger(__name__)

PER_CHANNEL_MIN_OPSET = 13
"""QuantizeLinear/DequantizeLinear got the ``axis`` attribute (per-channel) in opset 13."""


class OpCategory(str, enum.Enum):
    """Which annotator handles an op (one annotator per category)."""

    COMPUTE = "compute"  # activation x weight (+ int32 bias): Conv, ConvTranspose, MatMul, Gemm
    EMBEDDING = "embedding"  # Gather from a constant table: the table is stored int8
    BINARY = "binary"  # Add, Mul: each input and the output with its own scale
    DATA_MOVEMENT = "data_movement"  # outputs share input 0's scale: INT8 flows through unchanged
    FUSED_ACTIVATION = "fused_activation"  # Relu, Clip: absorbed by the producer's requantization
    ACTIVATION = "activation"  # LeakyRelu, Sigmoid, Softmax: own output scale (table-lookup kernels)
    POOL = "pool"  # AveragePool, GlobalAveragePool: own output scale
    CONCAT = "concat"  # inputs requantized to the output's scale
    RECURRENT = "recurrent"  # LSTM, GRU: weights int8 (dynamic approach)

    def __str__(self) -> str:
        return self.value


_STATIC = frozenset({Approach.STATIC, Approach.QAT})
_BOTH = frozenset({Approach.STATIC, Approach.QAT, Approach.DYNAMIC})
_DYNAMIC = frozenset({Approach.DYNAMIC})


MS_DOMAIN = "com.microsoft"
"""ONNX Runtime's contrib-op domain."""


@dataclass(frozen=True)
class Kernel:
    """An op ONNX Runtime runs, as the lowering or the dynamic rewrite emits it.

    Attributes:
        op_type: the op type.
        domain: ``""`` (standard ONNX) or :data:`MS_DOMAIN` (an ONNX Runtime contrib op).
        attributes: attributes the kernel needs that the source op does not have.
        keep_attributes: forward the source op's attributes to the kernel.
    """

    op_type: str
    domain: str = ""
    attributes: tuple[tuple[str, int], ...] = ()
    keep_attributes: bool = True


@dataclass(frozen=True)
class OpCapability:
    """What ONNX Runtime can do with one op type in INT8.

    Attributes:
        op_type: the ONNX op type (default domain).
        category: the annotator that handles it (one annotator per category).
        approaches: the approaches with an integer kernel or Q/DQ fusion.
        weight_inputs: input indices that must be constants and are stored quantized.
        bias_input: input index of a bias stored as int32 (scale = activation x weight), if any.
        channel_axis: the weight's output-channel axis (negative: from the end); read by per-channel
            quantization and by pruning.
        transposed_channel_axis: the axis when ``transB=1`` (Gemm), else unused.
        per_channel: per-channel weights are supported.
        qoperator: what the ``qoperator`` lowering makes of ``Q(op(DQ(x), ...))`` (``QLinearConv``, the op
            itself for data movement, ...); ``None``: the op stays in Q/DQ form in QOperator models.
        float_output: the integer kernel with a float output that ONNX Runtime fuses ``DQ -> op`` into
            (``MatMulIntegerToFloat``, ``QGemm``); the output is then quantized only when a quantized
            consumer reads it, and the lowering emits this kernel when nothing quantizes the output.
        dynamic: the integer op the ``dynamic-quantize`` pass emits (``ConvInteger``, ``MatMulInteger``).
        dynamic_qoperator: what the ``qoperator`` lowering makes of the dynamic form
            (``DynamicQuantizeMatMul``, ``DynamicQuantizeLSTM``).
    """

    op_type: str
    category: OpCategory
    approaches: frozenset[Approach] = _STATIC
    weight_inputs: tuple[int, ...] = ()
    bias_input: int | None = None
    channel_axis: int = 0
    transposed_channel_axis: int | None = None
    per_channel: bool = False
    qoperator: Kernel | None = None
    float_output: Kernel | None = None
    dynamic: Kernel | None = None
    dynamic_qoperator: Kernel | None = None


def _cap(op_type: str, category: OpCategory, **kw: object) -> tuple[str, OpCapability]:
    return op_type, OpCapability(op_type, category, **kw)  # type: ignore[arg-type]


def _same(op_type: str, category: OpCategory, **kw: object) -> tuple[str, OpCapability]:
    """A data-movement op that ONNX Runtime runs on INT8 as it is (its QOperator form is itself)."""
    return _cap(op_type, category, qoperator=Kernel(op_type), **kw)


_C = OpCategory
_MS = MS_DOMAIN
CAPABILITIES: Mapping[str, OpCapability] = MappingProxyType(dict(
    [
        _cap("Conv", _C.COMPUTE, approaches=_BOTH, weight_inputs=(1,), bias_input=2, channel_axis=0,
             per_channel=True, qoperator=Kernel("QLinearConv"), dynamic=Kernel("ConvInteger")),
        _cap("ConvTranspose", _C.COMPUTE, weight_inputs=(1,), bias_input=2, channel_axis=1, per_channel=True),
        _cap("MatMul", _C.COMPUTE, approaches=_BOTH, weight_inputs=(1,), channel_axis=-1, per_channel=True,
             qoperator=Kernel("QLinearMatMul"), float_output=Kernel("MatMulIntegerToFloat", _MS),
             dynamic=Kernel("MatMulInteger"), dynamic_qoperator=Kernel("DynamicQuantizeMatMul", _MS)),
        _cap("Gemm", _C.COMPUTE, approaches=_BOTH, weight_inputs=(1,), bias_input=2, channel_axis=1,
             transposed_channel_axis=0, per_channel=True, qoperator=Kernel("QGemm", _MS),
             float_output=Kernel("QGemm", _MS), dynamic=Kernel("MatMulInteger"),
             dynamic_qoperator=Kernel("DynamicQuantizeMatMul", _MS)),
        _cap("Gather", _C.EMBEDDING, approaches=_BOTH, weight_inputs=(0,)),
        _cap("Add", _C.BINARY, qoperator=Kernel("QLinearAdd", _MS)),
        _cap("Mul", _C.BINARY, qoperator=Kernel("QLinearMul", _MS)),
        _cap("Concat", _C.CONCAT),
        _same("MaxPool", _C.DATA_MOVEMENT),
        _cap("AveragePool", _C.POOL, qoperator=Kernel("QLinearAveragePool", _MS)),
        _cap("GlobalAveragePool", _C.POOL, qoperator=Kernel(
            "QLinearGlobalAveragePool", _MS, attributes=(("channels_last", 0),), keep_attributes=False)),
        _cap("Relu", _C.FUSED_ACTIVATION),
        _cap("Clip", _C.FUSED_ACTIVATION),
        _cap("LeakyRelu", _C.ACTIVATION, qoperator=Kernel("QLinearLeakyRelu", _MS)),
        _cap("Sigmoid", _C.ACTIVATION, qoperator=Kernel("QLinearSigmoid", _MS)),
        _cap("Softmax", _C.ACTIVATION),
        _same("Resize", _C.DATA_MOVEMENT),
        _same("Pad", _C.DATA_MOVEMENT),
        _same("Reshape", _C.DATA_MOVEMENT),
        _same("Transpose", _C.DATA_MOVEMENT),
        _same("Squeeze", _C.DATA_MOVEMENT),
        _same("Unsqueeze", _C.DATA_MOVEMENT),
        _same("Flatten", _C.DATA_MOVEMENT),
        _same("Slice", _C.DATA_MOVEMENT),
        _cap("Split", _C.DATA_MOVEMENT),  # several outputs: stays Q/DQ in QOperator models
        _same("Expand", _C.DATA_MOVEMENT),
        _same("DepthToSpace", _C.DATA_MOVEMENT),
        _same("SpaceToDepth", _C.DATA_MOVEMENT),
        _same("Tile", _C.DATA_MOVEMENT),
        _cap("LSTM", _C.RECURRENT, approaches=_DYNAMIC, weight_inputs=(1, 2),
             dynamic_qoperator=Kernel("DynamicQuantizeLSTM", _MS)),
        _cap("GRU", _C.RECURRENT, approaches=_DYNAMIC, weight_inputs=(1, 2)),
        _cap("RNN", _C.RECURRENT, approaches=_DYNAMIC, weight_inputs=(1, 2)),
    ]
))
"""op_type -> what ONNX Runtime can do with it in INT8 (the one table: annotators, the Q/DQ and dynamic
passes, the QOperator lowering and pruning read it)."""

_OP_TYPES_BY_CATEGORY: Mapping[OpCategory, frozenset[str]] = MappingProxyType({
    category: frozenset(op for op, cap in CAPABILITIES.items() if cap.category is category) for category in OpCategory
})


def op_types(category: OpCategory) -> frozenset[str]:
    """The op types of the table in ``category`` (e.g. :attr:`OpCategory.COMPUTE`: the ops with a weight
    input and an output-channel axis, which layer-wise recovery works on)."""
    return _OP_TYPES_BY_CATEGORY.get(category, frozenset())


def output_channel_axis(node: ir.Node) -> int | None:
    """The output-channel axis of ``node``'s weight (input 1 or the table's weight input), from the table.

    Gemm with ``transB=1`` uses the transposed axis. ``None`` when the op is not in the table.
    """
    cap = CAPABILITIES.get(node.op_type)
    if cap is None:
        return None
    if cap.transposed_channel_axis is not None and node.attributes.get_int("transB", 0) != 0:
        return cap.transposed_channel_axis
    return cap.channel_axis


SLOW_ORT_FUSIONS: Mapping[str, str] = MappingProxyType(
    {
        "SkipLayerNormalization": (
            "Add(a, b) -> LayerNormalization, fused when both Add inputs have the same static 3-D shape. "
            "The CPU kernel is a scalar per-row loop with a division per element: 0.25 ms against 0.04 ms "
            "for Add + LayerNormalization at [1, 128, 384] (6x; same at batch 8, hidden 768 and 2 threads; "
            "ONNX Runtime 1.32)."
        ),
    }
)
"""Fusions ONNX Runtime's optimizer makes (level ``all``) whose CPU kernel is slower than the ops it replaces:
fused op -> the pattern and the measurement. Quantized models are written in an equivalent form the fusion
does not match (:mod:`lpot_ir.passes.quantization.ort_fusions`); delete an entry when ORT's kernel catches up."""


@dataclass(frozen=True)
class SpecChoices:
    """The values each field of a :class:`QuantSpec` may take for one tensor of one node."""

    dtypes: tuple[DType, ...]
    schemes: tuple[Scheme, ...]
    granularities: tuple[Granularity, ...]
    algorithms: tuple[CalibAlgorithm, ...]
    reduce_range: tuple[bool, ...] = (False, True)

    def allows(self, spec: QuantSpec) -> bool:
        """True if every field of ``spec`` is one of the choices."""
        return (
            spec.dtype in self.dtypes
            and spec.scheme in self.schemes
            and spec.granularity in self.granularities
            and spec.algorithm in self.algorithms
            and spec.reduce_range in self.reduce_range
        )


_ALL_ALGORITHMS = tuple(CalibAlgorithm)
_STATIC_ACTIVATION = SpecChoices(
    (DType.UINT8, DType.INT8), (Scheme.ASYM, Scheme.SYM), (Granularity.PER_TENSOR,), _ALL_ALGORITHMS, (False,)
)
_DYNAMIC_ACTIVATION = SpecChoices(  # DynamicQuantizeLinear produces uint8 from the run-time min/max
    (DType.UINT8,), (Scheme.ASYM,), (Granularity.PER_TENSOR,), (CalibAlgorithm.MINMAX,), (False,)
)


def _weight_choices(per_channel: bool) -> SpecChoices:
    granularities = (Granularity.PER_CHANNEL, Granularity.PER_TENSOR) if per_channel else (Granularity.PER_TENSOR,)
    return SpecChoices((DType.INT8, DType.UINT8), (Scheme.SYM, Scheme.ASYM), granularities, (CalibAlgorithm.MINMAX,))


@dataclass(frozen=True)
class QuantizableNode:
    """One node of a model that can be quantized, and the choices it allows.

    Attributes:
        name: the node's name (unique in the model).
        op_type: its op type.
        aliases: other names of the node (the framework's module or op names).
        weight_inputs: input indices holding constant weights.
        activation_choices: allowed activation spec values.
        weight_choices: allowed weight spec values (``None``: the node has no weights).
        category: the annotator category.
    """

    name: str
    op_type: str
    aliases: tuple[str, ...] = ()
    weight_inputs: tuple[int, ...] = ()
    activation_choices: SpecChoices = _STATIC_ACTIVATION
    weight_choices: SpecChoices | None = None
    category: OpCategory = OpCategory.COMPUTE


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU features that decide ONNX Runtime's fastest safe INT8 format, and which INT8 kernels it runs.

    Attributes:
        arch: ``platform.machine()``.
        vnni: 8-bit dot products in one instruction (AVX-512 VNNI, AVX-VNNI or AMX on x86).
        avx512: AVX-512F.
        avx2: AVX2.
        amx: AMX-INT8 tile instructions.
        avx512_vnni: AVX-512 VNNI (``vpdpbusd`` on 512-bit registers).
        avx_vnni: AVX-VNNI (the same on 256-bit registers).
        arm_dot: ARM's 8-bit dot product (``asimddp``) or matrix multiply (``i8mm``).
        name: the CPU's model name, when the OS tells it.
    """

    arch: str = field(default_factory=platform.machine)
    vnni: bool = False
    avx512: bool = False
    avx2: bool = False
    amx: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    arm_dot: bool = False
    name: str = ""

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i386", "i686", "x86")

    @property
    def needs_reduce_range(self) -> bool:
        """u8 x s8 without VNNI can saturate on x86 (``vpmaddubsw``); VNNI and ARM cannot."""
        return self.is_x86 and not self.vnni

    @property
    def int8_extensions(self) -> tuple[str, ...]:
        """The instruction-set extensions ONNX Runtime's INT8 kernels can use here, fastest first."""
        found = [
            ("AMX-INT8", self.amx),
            ("AVX-512 VNNI", self.avx512_vnni),
            ("AVX-VNNI", self.avx_vnni),
            ("AVX-512", self.avx512),
            ("AVX2", self.avx2),
            ("ARM dot product", self.arm_dot),
        ]
        return tuple(label for label, present in found if present)

    def describe(self) -> str:
        """One line: the CPU, its INT8 extensions and the default weight format they imply."""
        extensions = ", ".join(self.int8_extensions) or "none of AMX, VNNI, AVX-512, AVX2"
        weights = "7-bit weights (reduce_range: no VNNI)" if self.needs_reduce_range else "8-bit weights"
        cpu = f"{self.name} ({self.arch})" if self.name else self.arch
        return f"{cpu}; INT8 extensions: {extensions}; default: {weights}"


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """Return this machine's CPU features (from ``/proc/cpuinfo`` on Linux; conservative elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return features_from_cpuinfo(text, platform.machine())


def features_from_cpuinfo(text: str, arch: str) -> CpuFeatures:
    """The :class:`CpuFeatures` that a ``/proc/cpuinfo`` text (first processor's flags) describes."""
    flags: set[str] = set()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not flags:
            flags.update(value.split())
        elif key in ("model name", "Model name", "Hardware") and not name:
            name = value.strip()
    return CpuFeatures(
        arch=arch,
        vnni=bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
        avx512="avx512f" in flags,
        avx2="avx2" in flags,
        amx="amx_int8" in flags,
        avx512_vnni="avx512_vnni" in flags,
        avx_vnni="avx_vnni" in flags,
        arm_dot=bool(flags & {"asimddp", "i8mm"}),
        name=name,
    )


def default_op_config(features: CpuFeatures | None = None) -> OpQuantConfig:
    """The safe default per-node configuration for ``features`` (this CPU's when ``None``).

    u8 asymmetric activations (min/max) and s8 symmetric per-channel weights; without VNNI on x86 the
    weights use 7 bits (``reduce_range``), as ONNX Runtime's quantization guide recommends.
    """
    features = features or cpu_features()
    weight = QuantSpec(
        DType.INT8, Scheme.SYM, Granularity.PER_CHANNEL, CalibAlgorithm.MINMAX, reduce_range=features.needs_reduce_range
    )
    return OpQuantConfig(activation=QuantSpec(DType.UINT8, Scheme.ASYM), weight=weight)


def constant_value(value: ir.Value | None) -> ir.TensorProtocol | None:
    """Return the constant tensor behind ``value`` (an initializer or a ``Constant`` node), else ``None``."""
    if value is None:
        return None
    if value.const_value is not None and not value.is_graph_input():
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"):
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor()
    return None


_FLOAT = ir.DataType.FLOAT


def _is_float(value: ir.Value | None) -> bool | None:
    """True/False when the element type is known, ``None`` when it is not."""
    if value is None:
        return None
    if value.dtype is not None:
        return value.dtype == _FLOAT
    tensor = constant_value(value)
    if tensor is not None:
        return tensor.dtype == _FLOAT
    return None


def _unsupported(detail: str) -> Fp32Reason:
    return Fp32Reason(Fp32Category.UNSUPPORTED, detail)


def _check_node(
    node: ir.Node, name: str, cap: OpCapability, approach: Approach, opset: int
) -> QuantizableNode | Fp32Reason:
    """Return the choices of ``node`` (called ``name``), or why it cannot be quantized."""
    dynamic = approach is Approach.DYNAMIC
    if approach not in cap.approaches:
        kind = "dynamic" if dynamic else "static"
        return _unsupported(f"ONNX Runtime has no {kind} INT8 kernel or Q/DQ fusion for {node.op_type}")
    inputs = node.inputs
    activation_choices = _DYNAMIC_ACTIVATION if dynamic else _STATIC_ACTIVATION
    category = cap.category
    weight_inputs = tuple(i for i in cap.weight_inputs if i < len(inputs) and inputs[i] is not None)

    if category is OpCategory.EMBEDDING:
        table = constant_value(inputs[0]) if inputs else None
        if table is None or table.dtype != _FLOAT:
            if dynamic or _is_float(inputs[0] if inputs else None) is False:
                return _unsupported("Gather of a non-constant or non-float table has nothing to quantize")
            # a Gather on float activations moves data: INT8 flows through it
            return QuantizableNode(name, node.op_type, (), (), activation_choices, None, OpCategory.DATA_MOVEMENT)
        return QuantizableNode(name, node.op_type, (), (0,), activation_choices, _weight_choices(False), category)

    if category is OpCategory.COMPUTE:
        if node.op_type == "Gemm" and dynamic and node.attributes.get_int("transA", 0) != 0:
            return _unsupported("dynamic Gemm with transA=1 has no integer kernel")
        w = inputs[1] if len(inputs) > 1 else None
        w_const = constant_value(w)
        x = inputs[0]
        if x is not None and _is_float(x) is False:
            return _unsupported(f"input {x.name!r} is not float32")
        if w is None or w_const is None:
            if node.op_type != "MatMul":
                return _unsupported(f"weight input {w.name if w else '?'!r} is not a constant")
            if _is_float(w) is False:
                return _unsupported(f"input {w.name if w else '?'!r} is not float32")
            # MatMul of two activations (attention scores): both inputs are activations
            return QuantizableNode(name, node.op_type, (), (), activation_choices, None, category)
        if w_const.dtype != _FLOAT:
            return _unsupported(f"weight {w.name!r} is {w_const.dtype}, not float32")
        per_channel = cap.per_channel and opset >= PER_CHANNEL_MIN_OPSET and not (dynamic and node.op_type == "Conv")
        if node.op_type == "MatMul" and len(w_const.shape) != 2:
            per_channel = False
        return QuantizableNode(
            name, node.op_type, (), (1,), activation_choices, _weight_choices(per_channel), category
        )

    if category is OpCategory.RECURRENT:
        if any(constant_value(inputs[i]) is None for i in weight_inputs):
            return _unsupported(f"{node.op_type} weights W and R must be constants to be stored int8")
        return QuantizableNode(
            name, node.op_type, (), weight_inputs, activation_choices, _weight_choices(False), category
        )

    # activation-only categories: every float input/output
    first = inputs[0] if inputs else None
    if first is None or _is_float(first) is False:
        return _unsupported(f"input {first.name if first else '?'!r} is not float32")
    if category is OpCategory.BINARY:
        if len(inputs) < 2 or _is_float(inputs[1]) is False:
            return _unsupported("second input is not float32")
    if category is OpCategory.CONCAT and any(_is_float(v) is False for v in inputs):
        return _unsupported("an input is not float32")
    return QuantizableNode(name, node.op_type, (), (), activation_choices, None, category)


def quantizable_nodes(
    model: ir.Model,
    approach: Approach | str = Approach.STATIC,
    *,
    name_map: Mapping[str, str | Sequence[str]] | None = None,
) -> tuple[list[QuantizableNode], dict[str, Fp32Reason]]:
    """Return the nodes of ``model`` that can be quantized, and why each other covered node cannot.

    Args:
        model: the (FP32 optimized) model.
        approach: static or dynamic.
        name_map: optional node name -> framework name(s), recorded as :attr:`QuantizableNode.aliases`.

    Returns:
        ``(nodes, unsupported)``: quantizable nodes in graph order (the main graph first, then each
        subgraph: If branches and Loop/Scan bodies are quantized like the main graph), and node name ->
        :class:`Fp32Reason` for every node whose op type is in :data:`CAPABILITIES` but that cannot be
        quantized (in the static approach, also nodes whose values calibration cannot reach: those of an
        If or a loop nested inside a Loop/Scan body).
    """
    approach = Approach(approach)
    opset = model.opset_imports.get("", 0)
    nodes: list[QuantizableNode] = []
    unsupported: dict[str, Fp32Reason] = {}
    locations: dict[int, Location] | None = None
    for node in all_nodes(model):
        if node.domain not in ("", "ai.onnx"):
            continue
        cap = CAPABILITIES.get(node.op_type)
        if cap is None:
            continue
        name = node.name or ""
        if node.graph is not model.graph and approach is not Approach.DYNAMIC:
            if locations is None:
                locations = graph_locations(model)
            location = locations.get(id(node.graph))
            why = location.unreachable() if location is not None else "it is in a graph outside the model"
            if why is not None:  # static needs calibrated ranges, which calibration cannot collect there
                unsupported[name] = _unsupported(f"calibration cannot reach it: {why}")
                continue
        result = _check_node(node, name, cap, approach, opset)
        if isinstance(result, Fp32Reason):
            unsupported[name] = result
            continue
        aliases: tuple[str, ...] = ()
        if name_map is not None and name in name_map:
            alias = name_map[name]
            aliases = (alias,) if isinstance(alias, str) else tuple(alias)
        if aliases:
            result = QuantizableNode(
                result.name, result.op_type, aliases, result.weight_inputs, result.activation_choices,
                result.weight_choices, result.category,
            )
        nodes.append(result)
    return nodes, unsupported
