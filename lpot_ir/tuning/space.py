"""Build the strategy's :class:`~lpot_ir.strategies.TuningSpace` from the YAML ``quantization`` section.

* ``model_wise`` lists become the global candidates (their product). A field left empty takes this
  CPU's default value (``default_op_config``: u8 asymmetric min/max activations, s8 symmetric
  per-channel weights), so an omitted ``model_wise`` means one candidate; list several values of a
  field to tune over them. ``fp32`` in a ``model_wise`` dtype list is ignored (every node may fall back).
* ``calibration.sampling_size`` values become the sampling sizes to try.
* ``recipes`` (SmoothQuant, cross-layer equalization) set the base configuration's ``recovery``.
* ``optype_wise`` entries become op-type scopes and ``op_wise`` entries node-name scopes of the base
  configuration (a node may be named by its ONNX name or its framework name). An entry sets the first
  value of each field it lists. An entry whose dtype is only ``fp32`` keeps the node(s) in FP32; an
  entry whose dtype does not allow ``fp32`` pins the node quantized. Pinned nodes are left out of the
  space, so no strategy changes them.
* Fallback groups: a node that only follows another (a fused Relu/Clip, a data-movement op, a pool)
  falls back together with the compute node that feeds it, since it cannot stay INT8 without it.
* Mixed precision (LPOT's ``bf16`` dtype, and ``fp16``): a 16-bit type in a ``model_wise`` dtype list
  (``dtype: [int8, bf16, fp32]``) gives each compute node that may run in it (the declared tables of
  :mod:`lpot_ir.backends.precision`, for the backend tuning evaluates on: ONNX Runtime's CPU provider) that
  type as an option between INT8 and FP32 (``TuningSpace.float_choices``). ``model_wise`` lists with 16-bit
  types and no integer type (``dtype: [bf16, fp32]``: mixed precision without INT8, LPOT's
  ``precisions: bf16``) make the global candidates bf16/fp16 instead. An ``op_wise`` / ``optype_wise`` entry
  whose first dtype is ``bf16``/``fp16`` puts its node(s) in that type; without ``fp32`` in its list it pins them.
  The ``mixed_precision`` (or LPOT 1.x ``graph_optimization``) section's ``precisions`` adds its 16-bit types to
  the model_wise lists.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import OpCategory, QuantizableNode, default_op_config
from lpot_ir.backends.precision import FloatRole, rule_for, supported
from lpot_ir.errors import ConfigError
from lpot_ir.ir.model import DEFAULT_OPSET, all_nodes
from lpot_ir.ir.quant import (
    LOW_PRECISION_FLOATS,
    Backend,
    CalibAlgorithm,
    DType,
    Fp32Category,
    Fp32Reason,
    OpOverride,
    ScopeKind,
    SpecOverride,
    TuningConfig,
)
from lpot_ir.strategies.base import TuningSpace
from lpot_ir.strategies.space import float_option, model_wise_combinations, order_fastest_first

__all__ = ["SpaceBuild", "build_space", "fallback_groups", "float_choices", "TUNING_BACKEND"]

logger = logging.getLogger(__name__)

_ANCHORS = (OpCategory.COMPUTE, OpCategory.EMBEDDING, OpCategory.RECURRENT)

TUNING_BACKEND = Backend.ONNXRUNTIME_CPU
"""Where tuning runs its candidates (the sessions are ONNX Runtime CPU sessions), so the backend whose
bf16/fp16 kernels decide the mixed-precision options."""


@dataclass(frozen=True)
class SpaceBuild:
    """The tuning space and what the user pinned.

    Attributes:
        space: what strategies may change.
        pinned: node name -> why it is not in the space (user op_wise / optype_wise entries).
    """

    space: TuningSpace
    pinned: dict[str, Fp32Reason] = field(default_factory=dict)


def _values(values: Sequence[object], default: object) -> tuple[object, ...]:
    kept = tuple(v for v in values if not (isinstance(v, DType) and v.is_float))  # INT8 values only
    return kept or (default,)


def _ints(values: Sequence[DType]) -> tuple[DType, ...]:
    return tuple(v for v in values if not v.is_float)


def _floats(*lists: Sequence[DType]) -> tuple[DType, ...]:
    """The 16-bit float types the lists name, bf16 first."""
    named = {v for values in lists for v in values}
    return tuple(d for d in LOW_PRECISION_FLOATS if d in named)


def _override(entry: object) -> OpOverride:
    """An :class:`OpOverride` from an ``op_wise`` / ``optype_wise`` entry (first value of each field)."""
    if entry.fp32:  # type: ignore[attr-defined]
        return OpOverride(fp32=True)
    first = _first_dtype(entry)
    if first is not None and first.is_float and first is not DType.FP32:
        return OpOverride(float_dtype=first)  # mixed precision: the node runs in bf16/fp16

    def spec(tensor: object) -> SpecOverride | None:
        fields = {}
        for name in ("dtype", "scheme", "granularity", "algorithm"):
            values = [v for v in getattr(tensor, name) if not (name == "dtype" and v.is_float)]
            if len(values) > 1:
                logger.info("op_wise lists several %s values %s; using the first (%s)", name, values, values[0])
            if values:
                fields[name] = values[0]
        return SpecOverride(**fields) if fields else None

    return OpOverride(activation=spec(entry.activation), weight=spec(entry.weight))  # type: ignore[attr-defined]


def _first_dtype(entry: object) -> DType | None:
    """The first dtype an entry lists (activation first, then weight), or ``None``."""
    for tensor in (entry.activation, entry.weight):  # type: ignore[attr-defined]
        if tensor.dtype:
            return tensor.dtype[0]  # type: ignore[no-any-return]
    return None


def _pins(entry: object) -> bool | None:
    """``True``: the entry keeps nodes FP32; ``False``: it pins them (INT8, or the 16-bit type it names);
    ``None``: tunable."""
    dtypes = tuple(entry.activation.dtype) + tuple(entry.weight.dtype)  # type: ignore[attr-defined]
    if entry.fp32:  # type: ignore[attr-defined]
        return True
    if dtypes and DType.FP32 not in dtypes:
        return False
    return None


def float_choices(
    nodes: Sequence[QuantizableNode], dtypes: Sequence[DType], *, backend: Backend = TUNING_BACKEND,
    opset: int = DEFAULT_OPSET,
) -> dict[str, tuple[DType, ...]]:
    """Node name -> the 16-bit types of ``dtypes`` it may run in: compute nodes (the declared rule) that ONNX
    allows in that type at ``opset`` and the backend has a kernel for. Followers are left out: they follow their compute node into a 16-bit region."""
    out: dict[str, tuple[DType, ...]] = {}
    for node in nodes:
        rule = rule_for(node.op_type)
        if rule is None or rule.role is not FloatRole.COMPUTE:
            continue
        allowed = tuple(d for d in dtypes if supported(node.op_type, d, backend, opset))
        if allowed:
            out[node.name] = allowed
    return out


def build_space(config: object, nodes: Sequence[QuantizableNode], model: ir.Model | None = None) -> SpaceBuild:
    """Build the tuning space from a :class:`~lpot_ir.config.Config` and the quantizable nodes.

    Args:
        config: the configuration.
        nodes: ``ModelQuantizer.nodes``.
        model: the FP32 model the nodes belong to (for fallback groups); ``None``: no groups.

    Raises:
        ConfigError: ``model_wise`` allows only fp32, or an ``op_wise`` key names no node.
    """
    quant = config.quantization  # type: ignore[attr-defined]
    default = default_op_config()
    act, weight = quant.model_wise.activation, quant.model_wise.weight
    section = getattr(config, "precisions", None)  # mixed_precision / graph_optimization: precisions
    floats = _floats(act.dtype, weight.dtype, section.precisions if section is not None else ())
    float_only = bool(floats) and not _ints(act.dtype) and not _ints(weight.dtype)
    if act.fp32_only or weight.fp32_only:
        raise ConfigError(
            "quantization.model_wise allows only dtype fp32, which quantizes nothing. Remove fp32 from "
            "model_wise; to keep single nodes in FP32 use op_wise (or optype_wise) with dtype fp32."
        )
    weight_algorithms = [a for a in weight.algorithm if a is not CalibAlgorithm.MINMAX]
    if weight_algorithms:
        logger.info("weights are quantized with minmax (their values are known exactly); ignoring %s", weight_algorithms)
    int8_candidates = model_wise_combinations(
        activation_dtypes=_values(act.dtype, default.activation.dtype),  # type: ignore[arg-type]
        activation_schemes=_values(act.scheme, default.activation.scheme),  # type: ignore[arg-type]
        activation_algorithms=_values(act.algorithm, default.activation.algorithm),  # type: ignore[arg-type]
        weight_dtypes=_values(weight.dtype, default.weight.dtype),  # type: ignore[arg-type]
        weight_schemes=_values(weight.scheme, default.weight.scheme),  # type: ignore[arg-type]
        weight_granularities=_values(weight.granularity, default.weight.granularity),  # type: ignore[arg-type]
        weight_reduce_range=(default.weight.reduce_range,),
    )
    # mixed precision without INT8 (dtype lists of 16-bit types only): the candidates are those types
    candidates = order_fastest_first(float_option(d) for d in floats) if float_only else int8_candidates
    opset = model.opset_imports.get("", DEFAULT_OPSET) if model is not None else DEFAULT_OPSET
    main = {n.name for n in model.graph} if model is not None else None
    sizes = tuple(int(s) for s in quant.calibration.sampling_size)
    base = TuningConfig(
        approach=quant.approach,
        format=quant.format,
        global_config=candidates[0],
        calib_sampling_size=sizes[0],
        recovery=quant.recipes.recovery(),
    )
    pinned: dict[str, Fp32Reason] = {}
    for op_type, entry in quant.optype_wise.items():
        base = base.with_override(ScopeKind.OP_TYPE, op_type, _override(entry))
        pin = _pins(entry)
        for node in nodes:
            if node.op_type == op_type and pin is not None:
                pinned[node.name] = _pin_reason(pin, f"optype_wise {op_type}", _first_dtype(entry))
    names = {n.name for n in nodes} | {a for n in nodes for a in n.aliases}
    for key, entry in quant.op_wise.items():
        matched = [n for n in nodes if key == n.name or key in n.aliases]
        if not matched:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"quantization.op_wise names '{key}', which is not a quantizable node of the model.{hint} "
                f"Use an ONNX node name or the framework's name for it (`lpot inspect MODEL` lists them)."
            )
        base = base.with_override(ScopeKind.NODE_NAME, key, _override(entry))
        pin = _pins(entry)
        for node in matched:
            if pin is not None:
                pinned[node.name] = _pin_reason(pin, f"op_wise {key}", _first_dtype(entry))
            else:
                pinned.pop(node.name, None)
    space_nodes = tuple(n for n in nodes if n.name not in pinned)
    groups = fallback_groups(model, space_nodes) if model is not None else ()
    space = TuningSpace(
        nodes=space_nodes,
        model_wise=candidates,
        sampling_sizes=sizes,
        approach=quant.approach,
        format=quant.format,
        base=base,
        groups=groups,
        # the mixed-precision step rewrites the main graph: nodes in If/Loop/Scan bodies get no 16-bit option
        float_choices=float_choices([n for n in space_nodes if main is None or n.name in main], floats, opset=opset),
    )
    if floats and not space.float_choices and not float_only:
        logger.warning(
            "quantization.model_wise lists %s, but %s has no %s kernel for any compute node of this model: no node "
            "gets that option (docs/mixed_precision.md)", [str(d) for d in floats], TUNING_BACKEND,
            "/".join(str(d) for d in floats),
        )
    return SpaceBuild(space, pinned)


def _pin_reason(fp32: bool, where: str, dtype: DType | None = None) -> Fp32Reason:
    if fp32:
        return Fp32Reason(Fp32Category.USER_EXCLUDED, f"the configuration's {where} keeps it in FP32")
    if dtype is not None and dtype.is_float:
        return Fp32Reason(Fp32Category.USER_EXCLUDED, f"the configuration's {where} pins it to {dtype} (no fallback)")
    return Fp32Reason(Fp32Category.USER_EXCLUDED, f"the configuration's {where} pins it quantized (no fallback)")


def fallback_groups(model: ir.Model, nodes: Iterable[QuantizableNode]) -> tuple[tuple[str, ...], ...]:
    """Groups of nodes that fall back together: each compute node with the followers it alone feeds.

    A follower (fused activation, data movement, pool) with exactly one float input joins the group of
    the node producing that input, transitively (Conv -> Relu -> MaxPool is one group).
    """
    by_name = {n.name: n for n in nodes}
    owner: dict[str, str] = {}
    for node in all_nodes(model):  # If branches and loop bodies too: their nodes are in the space
        name = node.name or ""
        qnode = by_name.get(name)
        if qnode is None or qnode.category in _ANCHORS:
            continue
        sources = [v.producer() for v in node.inputs if v is not None and v.const_value is None]
        producers = {p.name for p in sources if p is not None}
        if len(producers) != 1:
            continue
        (producer,) = producers
        if producer in by_name:
            owner[name] = owner.get(producer, producer)
    groups: dict[str, list[str]] = {}
    for name in by_name:
        root = owner.get(name, name)
        groups.setdefault(root, []).append(name)
    return tuple(tuple(members) for members in groups.values() if len(members) > 1)
