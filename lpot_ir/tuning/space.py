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
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import OpCategory, QuantizableNode, default_op_config
from lpot_ir.errors import ConfigError
from lpot_ir.ir.model import all_nodes
from lpot_ir.ir.quant import (
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
from lpot_ir.strategies.space import model_wise_combinations

__all__ = ["SpaceBuild", "build_space", "fallback_groups"]

logger = logging.getLogger(__name__)

_ANCHORS = (OpCategory.COMPUTE, OpCategory.EMBEDDING, OpCategory.RECURRENT)


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
    kept = tuple(v for v in values if v is not DType.FP32)
    return kept or (default,)


def _override(entry: object) -> OpOverride:
    """An :class:`OpOverride` from an ``op_wise`` / ``optype_wise`` entry (first value of each field)."""
    if entry.fp32:  # type: ignore[attr-defined]
        return OpOverride(fp32=True)

    def spec(tensor: object) -> SpecOverride | None:
        fields = {}
        for name in ("dtype", "scheme", "granularity", "algorithm"):
            values = [v for v in getattr(tensor, name) if v is not DType.FP32]
            if len(values) > 1:
                logger.info("op_wise lists several %s values %s; using the first (%s)", name, values, values[0])
            if values:
                fields[name] = values[0]
        return SpecOverride(**fields) if fields else None

    return OpOverride(activation=spec(entry.activation), weight=spec(entry.weight))  # type: ignore[attr-defined]


def _pins(entry: object) -> bool | None:
    """``True``: the entry keeps nodes FP32; ``False``: it pins them quantized; ``None``: tunable."""
    dtypes = tuple(entry.activation.dtype) + tuple(entry.weight.dtype)  # type: ignore[attr-defined]
    if entry.fp32:  # type: ignore[attr-defined]
        return True
    if dtypes and DType.FP32 not in dtypes:
        return False
    return None


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
    if act.fp32_only or weight.fp32_only:
        raise ConfigError(
            "quantization.model_wise allows only dtype fp32, which quantizes nothing. Remove fp32 from "
            "model_wise; to keep single nodes in FP32 use op_wise (or optype_wise) with dtype fp32."
        )
    weight_algorithms = [a for a in weight.algorithm if a is not CalibAlgorithm.MINMAX]
    if weight_algorithms:
        logger.info("weights are quantized with minmax (their values are known exactly); ignoring %s", weight_algorithms)
    candidates = model_wise_combinations(
        activation_dtypes=_values(act.dtype, default.activation.dtype),  # type: ignore[arg-type]
        activation_schemes=_values(act.scheme, default.activation.scheme),  # type: ignore[arg-type]
        activation_algorithms=_values(act.algorithm, default.activation.algorithm),  # type: ignore[arg-type]
        weight_dtypes=_values(weight.dtype, default.weight.dtype),  # type: ignore[arg-type]
        weight_schemes=_values(weight.scheme, default.weight.scheme),  # type: ignore[arg-type]
        weight_granularities=_values(weight.granularity, default.weight.granularity),  # type: ignore[arg-type]
        weight_reduce_range=(default.weight.reduce_range,),
    )
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
                pinned[node.name] = _pin_reason(pin, f"optype_wise {op_type}")
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
                pinned[node.name] = _pin_reason(pin, f"op_wise {key}")
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
    )
    return SpaceBuild(space, pinned)


def _pin_reason(fp32: bool, where: str) -> Fp32Reason:
    if fp32:
        return Fp32Reason(Fp32Category.USER_EXCLUDED, f"the configuration's {where} keeps it in FP32")
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
