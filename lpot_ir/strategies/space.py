"""Building blocks of the tuning space: model-wise candidates, their expected speed, per-node choices.

Everything here is pure data manipulation on :mod:`lpot_ir.ir.quant` types; nothing runs a model.

* :func:`model_wise_combinations` turns the lists of a YAML ``model_wise`` section into global
  :class:`OpQuantConfig` candidates (their product), fastest expected first.
* :func:`expected_cost` is the cheap static score that orders them: u8 activations x s8 weights are
  ONNX Runtime's fastest integer kernels (VNNI); ties prefer what is usually more accurate
  (per-channel weights, min/max ranges, 8-bit weights).
* :func:`node_choices` lists, for one node, the distinct configurations the model-wise candidates
  give it (resolved through the user's base configuration, so user settings still win), then the 16-bit
  float types it may run in (mixed precision: bf16/fp16), then FP32.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lpot_ir.ir.quant import (
    FP32,
    LOW_PRECISION_FLOATS,
    CalibAlgorithm,
    DType,
    Granularity,
    OpQuantConfig,
    QuantSpec,
    Scheme,
    TuningConfig,
)

__all__ = [
    "SpaceNode",
    "NodeChoices",
    "model_wise_combinations",
    "expected_cost",
    "order_fastest_first",
    "node_choices",
    "node_has_weights",
    "float_option",
]

logger = logging.getLogger(__name__)


class SpaceNode(Protocol):
    """What the tuning space needs to know about a node (``QuantizableNode`` satisfies it).

    ``aliases``, ``weight_inputs`` and ``weight_choices`` are read with ``getattr`` when present:
    a node with neither weight inputs nor weight choices ignores the weight spec, so configurations
    that differ only in the weight spec are one choice for it.
    """

    @property
    def name(self) -> str: ...

    @property
    def op_type(self) -> str: ...


def node_has_weights(node: SpaceNode) -> bool:
    """True if the weight spec matters for ``node`` (it has weight inputs or weight choices)."""
    return bool(getattr(node, "weight_inputs", ())) or getattr(node, "weight_choices", None) is not None


def node_aliases(node: SpaceNode) -> tuple[str, ...]:
    """The node's other names (``()`` if the node type has none)."""
    return tuple(getattr(node, "aliases", ()) or ())


_ALGORITHM_RANK = {
    CalibAlgorithm.MINMAX: 0,
    CalibAlgorithm.PERCENTILE: 1,
    CalibAlgorithm.KL: 2,
    CalibAlgorithm.MSE: 3,
}


def expected_cost(config: OpQuantConfig) -> tuple[int, int]:
    """A cheap static score of a global candidate: smaller is expected faster (then more accurate).

    The first element estimates speed on ONNX Runtime's CPU kernels: u8 activations x s8 weights is
    the fast path (VNNI ``vpdpbusd``); s8 activations or u8 weights need conversions (+1 each).
    The second element breaks ties by expected accuracy: per-channel weights before per-tensor,
    8-bit weights before ``reduce_range``, min/max ranges before percentile, KL and MSE (min/max is
    also the cheapest to calibrate).

    Args:
        config: a global (model-wise) configuration.

    A bf16/fp16 candidate (mixed precision without INT8) comes after every INT8 one, bf16 first (same range
    as FP32), and FP32 last.

    Returns:
        ``(speed_cost, accuracy_rank)``; sort ascending.
    """
    if config.fp32:
        if config.low_precision_float:
            return (10, LOW_PRECISION_FLOATS.index(config.float_dtype))
        return (100, 0)
    speed = 0
    if config.activation.dtype is not DType.UINT8:
        speed += 1
    if config.weight.dtype is not DType.INT8:
        speed += 1
    accuracy = 0
    if config.weight.granularity is not Granularity.PER_CHANNEL:
        accuracy += 8
    if config.weight.reduce_range or config.activation.reduce_range:
        accuracy += 4
    accuracy += _ALGORITHM_RANK[config.activation.algorithm]
    return (speed, accuracy)


def order_fastest_first(configs: Iterable[OpQuantConfig]) -> tuple[OpQuantConfig, ...]:
    """Sort global candidates by :func:`expected_cost` (stable: ties keep their given order)."""
    return tuple(sorted(configs, key=expected_cost))


def model_wise_combinations(
    *,
    activation_dtypes: Sequence[DType | str] = (DType.UINT8,),
    activation_schemes: Sequence[Scheme | str] = (Scheme.ASYM,),
    activation_algorithms: Sequence[CalibAlgorithm | str] = (CalibAlgorithm.MINMAX,),
    weight_dtypes: Sequence[DType | str] = (DType.INT8,),
    weight_schemes: Sequence[Scheme | str] = (Scheme.SYM,),
    weight_granularities: Sequence[Granularity | str] = (Granularity.PER_CHANNEL,),
    weight_reduce_range: Sequence[bool] = (False,),
) -> tuple[OpQuantConfig, ...]:
    """All global candidates from the lists of a ``model_wise`` section, fastest expected first.

    Activations are per tensor; weights use min/max (their values are known exactly).

    Returns:
        The product of the lists as :class:`OpQuantConfig`, without duplicates, ordered by
        :func:`expected_cost` (then by the order of the lists).
    """
    seen: set[OpQuantConfig] = set()
    out: list[OpQuantConfig] = []
    for a_dtype, a_scheme, a_algo, w_dtype, w_scheme, w_gran, w_rr in itertools.product(
        activation_dtypes,
        activation_schemes,
        activation_algorithms,
        weight_dtypes,
        weight_schemes,
        weight_granularities,
        weight_reduce_range,
    ):
        config = OpQuantConfig(
            activation=QuantSpec(
                DType(a_dtype), Scheme(a_scheme), Granularity.PER_TENSOR, CalibAlgorithm(a_algo)
            ),
            weight=QuantSpec(
                DType(w_dtype), Scheme(w_scheme), Granularity(w_gran), CalibAlgorithm.MINMAX, bool(w_rr)
            ),
        )
        if config not in seen:
            seen.add(config)
            out.append(config)
    return order_fastest_first(out)


@dataclass(frozen=True)
class NodeChoices:
    """The configurations one node may take in the search.

    Attributes:
        name: the node's name.
        options: distinct INT8 configurations (in model-wise order), then the 16-bit float types it may run
            in (:func:`float_option`, bf16 before fp16), then :data:`FP32` last.
        by_global: for each model-wise candidate (by index), the option it gives this node.
    """

    name: str
    options: tuple[OpQuantConfig, ...]
    by_global: tuple[int, ...]

    @property
    def fp32_index(self) -> int:
        """Index of the FP32 option (always the last)."""
        return len(self.options) - 1

    @property
    def float_indices(self) -> dict[DType, int]:
        """16-bit float type -> the index of its option (mixed precision), for the types the node may take."""
        return {o.float_dtype: i for i, o in enumerate(self.options) if o.fp32 and o.low_precision_float}

    def is_int8(self, index: int) -> bool:
        """True when option ``index`` quantizes the node to INT8."""
        return not self.options[index].fp32


def float_option(dtype: DType) -> OpQuantConfig:
    """The option "not INT8, run in ``dtype``" (``FP32`` for fp32)."""
    return FP32 if dtype is DType.FP32 else OpQuantConfig(fp32=True, float_dtype=dtype)


def _relevant(config: OpQuantConfig, has_weights: bool) -> OpQuantConfig:
    if config.fp32:
        return float_option(config.float_dtype)
    return config if has_weights else OpQuantConfig(activation=config.activation)


def node_choices(
    node: SpaceNode, globals_: Sequence[TuningConfig], float_dtypes: Sequence[DType] = ()
) -> NodeChoices:
    """The choices of ``node`` given one full configuration per model-wise candidate.

    Each configuration in ``globals_`` is the user's base configuration with one candidate as its
    global setting; resolving the node through it keeps the user's scoped settings (op type, regex)
    on top. Configurations that only differ where the node does not care (the weight spec of a node
    without weights) count as one option. A candidate that resolves to FP32 (a user op-type scope
    said so) maps to the FP32 option, one that resolves to bf16/fp16 to that float option.

    Args:
        node: the node.
        globals_: one configuration per model-wise candidate.
        float_dtypes: the 16-bit float types the node may also run in (mixed precision), ``()`` for none.
    """
    has_weights = node_has_weights(node)
    aliases = node_aliases(node)
    options: list[OpQuantConfig] = []
    index_of: dict[OpQuantConfig, int] = {}
    resolved = [g.resolve(node.name, node.op_type, aliases) for g in globals_]
    for config in resolved:
        if config.fp32:
            continue
        relevant = _relevant(config, has_weights)
        if relevant not in index_of:
            index_of[relevant] = len(options)
            options.append(config)
    wanted = {*(DType(d) for d in float_dtypes), *(c.float_dtype for c in resolved if c.fp32 and c.low_precision_float)}
    for dtype in LOW_PRECISION_FLOATS:
        if dtype in wanted:
            index_of[float_option(dtype)] = len(options)
            options.append(float_option(dtype))
    index_of[FP32] = len(options)
    options.append(FP32)
    by_global = tuple(index_of[_relevant(config, has_weights)] for config in resolved)
    return NodeChoices(node.name, tuple(options), by_global)
