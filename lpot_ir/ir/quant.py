"""The quantization vocabulary every layer shares: specs, tuning configurations and annotations.

All of it is typed, frozen data that round-trips to plain dicts (and so to JSON and YAML):

* :class:`QuantSpec` says how one tensor is quantized (dtype, scheme, granularity, algorithm).
* :class:`OpQuantConfig` says how one node is quantized (an activation spec and a weight spec).
* :class:`TuningConfig` says how a whole model is quantized: the approach and format, a global
  setting, and scoped overrides with one precedence: **global < op type < node-name regex < node name**.
  A scope may switch a node to FP32 or change single fields of its specs (field-by-field merge).
  Strategies only ever edit ``TuningConfig`` data.
* :class:`RecoveryConfig` (``TuningConfig.recovery``) turns on the accuracy-recovery passes that keep
  ops in INT8 (cross-layer equalization, SmoothQuant, bias correction, weight rounding, per-tensor
  range search); strategies try them before reverting ops to FP32. :class:`RecoveryOptions` says how
  much work the data-driven ones may do (the same for every configuration of a run).
* :class:`QuantAnnotation` is what annotators write into ``node.meta[ANNOTATION_KEY]`` for the generic
  Q/DQ insertion pass: per input/output index, a :class:`QuantSpec`, a :class:`SharedQuantSpec`
  ("same scale as that value") or a :class:`DerivedBiasSpec` ("int32, scale = act scale x weight scale").
* :class:`Fp32Reason` explains why a node stays FP32 (``node.meta[FP32_REASON_KEY]``).

Mixed precision: a node that is not INT8 (``OpQuantConfig.fp32``) runs in ``OpQuantConfig.float_dtype``,
``fp32`` by default, or ``bf16`` / ``fp16`` (:data:`BF16`, :data:`FP16`); ``TuningConfig.backend`` says where
the model will run, which decides the ops that have kernels in those types (see
:mod:`lpot_ir.backends.precision`). Both fields are left out of ``to_dict`` at their defaults, so the keys
and recipes of INT8/FP32 configurations are unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "ANNOTATION_KEY",
    "FP32_REASON_KEY",
    "RANGE_KEY",
    "DType",
    "Scheme",
    "Granularity",
    "CalibAlgorithm",
    "Approach",
    "QuantFormat",
    "Backend",
    "LOW_PRECISION_FLOATS",
    "ScopeKind",
    "QuantSpec",
    "SpecOverride",
    "OpQuantConfig",
    "OpOverride",
    "ScopedOverride",
    "TuningConfig",
    "WeightRounding",
    "RecoveryConfig",
    "RecoveryOptions",
    "SharedQuantSpec",
    "DerivedBiasSpec",
    "TensorQuantSpec",
    "QuantAnnotation",
    "Fp32Category",
    "Fp32Reason",
    "FP32",
    "BF16",
    "FP16",
    "TensorRange",
]

ANNOTATION_KEY = "lpot_ir.quant"
FP32_REASON_KEY = "lpot_ir.fp32_reason"
RANGE_KEY = "lpot_ir.range"
"""``value.meta`` key: a :class:`TensorRange` a pass chose for this activation (range search); Q/DQ insertion
uses it instead of the calibrated range of the spec's algorithm."""


class DType(str, enum.Enum):
    """Element type of a tensor: the integer types of quantization (``int8``, ``uint8``) and the float types a
    node that is not INT8 runs in (``fp32``, and the 16-bit ``bf16`` / ``fp16`` of mixed precision)."""

    INT8 = "int8"
    UINT8 = "uint8"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

    @property
    def is_float(self) -> bool:
        """True for ``fp32``, ``bf16`` and ``fp16``."""
        return self in (DType.FP32, DType.BF16, DType.FP16)

    @property
    def is_low_precision(self) -> bool:
        """True for the 16-bit float types ``bf16`` and ``fp16``."""
        return self in (DType.BF16, DType.FP16)

    def __str__(self) -> str:
        return self.value


LOW_PRECISION_FLOATS = (DType.BF16, DType.FP16)
"""The 16-bit float types of mixed precision."""


class Backend(str, enum.Enum):
    """Where the model will run. Read by the ``mixed-precision`` step only: which ops have bf16/fp16 kernels
    there (:data:`lpot_ir.backends.precision.FLOAT_KERNELS`); INT8 always follows ONNX Runtime's CPU table."""

    ONNXRUNTIME_CPU = "onnxruntime-cpu"
    ONNXRUNTIME_CUDA = "onnxruntime-cuda"
    PYTORCH_CPU = "pytorch-cpu"

    def __str__(self) -> str:
        return self.value


class Scheme(str, enum.Enum):
    """Symmetric (zero point 0, or 128 for uint8) or asymmetric (zero point from the range)."""

    SYM = "sym"
    ASYM = "asym"

    def __str__(self) -> str:
        return self.value


class Granularity(str, enum.Enum):
    """One scale per tensor, or one per output channel (weights only; needs opset 13)."""

    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"

    def __str__(self) -> str:
        return self.value


class CalibAlgorithm(str, enum.Enum):
    """How a tensor's range is chosen from calibration statistics."""

    MINMAX = "minmax"
    KL = "kl"
    PERCENTILE = "percentile"
    MSE = "mse"

    def __str__(self) -> str:
        return self.value


class Approach(str, enum.Enum):
    """LPOT's quantization approaches."""

    STATIC = "post_training_static_quant"
    DYNAMIC = "post_training_dynamic_quant"
    QAT = "quant_aware_training"

    def __str__(self) -> str:
        return self.value


class QuantFormat(str, enum.Enum):
    """QDQ (QuantizeLinear/DequantizeLinear around float ops) or QOperator (QLinearConv, ...)."""

    QDQ = "qdq"
    QOPERATOR = "qoperator"

    def __str__(self) -> str:
        return self.value


class ScopeKind(str, enum.Enum):
    """Where a scoped override applies, in increasing precedence."""

    OP_TYPE = "op_type"
    NAME_REGEX = "name_regex"
    NODE_NAME = "node_name"

    def __str__(self) -> str:
        return self.value


_PRECEDENCE = {ScopeKind.OP_TYPE: 0, ScopeKind.NAME_REGEX: 1, ScopeKind.NODE_NAME: 2}


def _mapping(data: Any, what: str) -> Mapping[str, Any]:
    """``data`` as a mapping, else a ``TypeError`` naming ``what`` (these documents come from YAML and JSON)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(data).__name__} {str(data)[:40]!r}")
    return data


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    Attributes:
        dtype: ``int8`` or ``uint8``.
        scheme: ``sym`` or ``asym``.
        granularity: ``per_tensor`` or ``per_channel`` (weights; activations are per tensor).
        algorithm: how the range is chosen (activations: any; weights: ``minmax``).
        reduce_range: use 7 bits, for CPUs without VNNI where u8 x s8 products can saturate.
    """

    dtype: DType = DType.UINT8
    scheme: Scheme = Scheme.ASYM
    granularity: Granularity = Granularity.PER_TENSOR
    algorithm: CalibAlgorithm = CalibAlgorithm.MINMAX
    reduce_range: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DType(self.dtype))
        object.__setattr__(self, "scheme", Scheme(self.scheme))
        object.__setattr__(self, "granularity", Granularity(self.granularity))
        object.__setattr__(self, "algorithm", CalibAlgorithm(self.algorithm))
        if self.dtype.is_float:
            raise ValueError(
                f"QuantSpec.dtype is int8 or uint8, not {self.dtype}; a float node is OpQuantConfig(fp32=True, "
                "float_dtype=...)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype.value,
            "scheme": self.scheme.value,
            "granularity": self.granularity.value,
            "algorithm": self.algorithm.value,
            "reduce_range": self.reduce_range,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantSpec:
        return cls(**dict(_mapping(data, "a quantization spec (activation/weight)")))

    def merged(self, override: SpecOverride | None) -> QuantSpec:
        """Return this spec with the fields set in ``override`` replaced."""
        if override is None:
            return self
        changes = {k: v for k, v in override.to_dict().items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self


@dataclass(frozen=True)
class SpecOverride:
    """A partial :class:`QuantSpec`: only the fields that are not ``None`` override."""

    dtype: DType | None = None
    scheme: Scheme | None = None
    granularity: Granularity | None = None
    algorithm: CalibAlgorithm | None = None
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        for name, enum_type in (
            ("dtype", DType),
            ("scheme", Scheme),
            ("granularity", Granularity),
            ("algorithm", CalibAlgorithm),
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, enum_type(value))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpecOverride:
        return cls(**dict(_mapping(data, "an activation/weight override")))


@dataclass(frozen=True)
class OpQuantConfig:
    """How one node is quantized.

    Attributes:
        activation: the activation spec (INT8 nodes).
        weight: the weight spec (INT8 nodes with weights).
        fp32: the node is not quantized to an integer type: it runs in floating point, in ``float_dtype``.
        float_dtype: the float type of a node that is not INT8: ``fp32`` (the default), or ``bf16`` / ``fp16``
            (mixed precision; a 16-bit type implies ``fp32=True``, and the INT8 specs are then unused).
    """

    activation: QuantSpec = field(default_factory=QuantSpec)
    weight: QuantSpec = field(
        default_factory=lambda: QuantSpec(DType.INT8, Scheme.SYM, Granularity.PER_CHANNEL, CalibAlgorithm.MINMAX)
    )
    fp32: bool = False
    float_dtype: DType = DType.FP32

    def __post_init__(self) -> None:
        dtype = DType(self.float_dtype)
        if not dtype.is_float:
            raise ValueError(f"OpQuantConfig.float_dtype is fp32, bf16 or fp16, not {dtype}")
        object.__setattr__(self, "float_dtype", dtype)
        if dtype is not DType.FP32:
            object.__setattr__(self, "fp32", True)

    @property
    def runs_in(self) -> DType:
        """The type the node computes in: its activation dtype when INT8, else its float type."""
        return self.float_dtype if self.fp32 else self.activation.dtype

    @property
    def low_precision_float(self) -> bool:
        """True when the node runs in bf16 or fp16."""
        return self.float_dtype is not DType.FP32

    def to_dict(self) -> dict[str, Any]:
        if self.fp32:
            if self.low_precision_float:
                return {"fp32": True, "float_dtype": self.float_dtype.value}
            return {"fp32": True}
        return {"activation": self.activation.to_dict(), "weight": self.weight.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpQuantConfig:
        data = _mapping(data, "an op configuration ('global')")
        float_dtype = DType(data.get("float_dtype", DType.FP32.value))
        if data.get("fp32") or float_dtype is not DType.FP32:
            return cls(fp32=True, float_dtype=float_dtype)
        return cls(
            activation=QuantSpec.from_dict(data.get("activation", {})),
            weight=QuantSpec.from_dict(data.get("weight", {})),
        )


FP32 = OpQuantConfig(fp32=True)
BF16 = OpQuantConfig(fp32=True, float_dtype=DType.BF16)
FP16 = OpQuantConfig(fp32=True, float_dtype=DType.FP16)


@dataclass(frozen=True)
class OpOverride:
    """A partial :class:`OpQuantConfig`: ``fp32`` and ``float_dtype`` (if not None) and per-field spec overrides.

    ``fp32=True`` without ``float_dtype`` means FP32 (whatever float type the node had), ``fp32=False`` means
    INT8, and a ``float_dtype`` of ``bf16`` / ``fp16`` means that float type (not INT8).
    """

    fp32: bool | None = None
    activation: SpecOverride | None = None
    weight: SpecOverride | None = None
    float_dtype: DType | None = None

    def __post_init__(self) -> None:
        if self.float_dtype is not None:
            dtype = DType(self.float_dtype)
            if not dtype.is_float:
                raise ValueError(f"OpOverride.float_dtype is fp32, bf16 or fp16, not {dtype}")
            object.__setattr__(self, "float_dtype", dtype)

    def apply(self, config: OpQuantConfig) -> OpQuantConfig:
        """Return ``config`` with this override applied field by field."""
        fp32, float_dtype = config.fp32, config.float_dtype
        if self.fp32 is not None:
            fp32, float_dtype = self.fp32, DType.FP32
        if self.float_dtype is not None:
            float_dtype = self.float_dtype
            fp32 = fp32 or float_dtype is not DType.FP32
        return OpQuantConfig(
            activation=config.activation.merged(self.activation),
            weight=config.weight.merged(self.weight),
            fp32=fp32,
            float_dtype=float_dtype if fp32 else DType.FP32,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.fp32 is not None:
            out["fp32"] = self.fp32
        if self.float_dtype is not None:
            out["float_dtype"] = self.float_dtype.value
        if self.activation is not None:
            out["activation"] = self.activation.to_dict()
        if self.weight is not None:
            out["weight"] = self.weight.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpOverride:
        data = _mapping(data, "an override")
        return cls(
            fp32=data.get("fp32"),
            activation=SpecOverride.from_dict(data["activation"]) if data.get("activation") is not None else None,
            weight=SpecOverride.from_dict(data["weight"]) if data.get("weight") is not None else None,
            float_dtype=DType(data["float_dtype"]) if data.get("float_dtype") is not None else None,
        )

    @classmethod
    def from_config(cls, config: OpQuantConfig) -> OpOverride:
        """A full override that sets every field of ``config``."""
        if config.fp32:
            return cls(fp32=True, float_dtype=config.float_dtype if config.low_precision_float else None)
        return cls(
            fp32=False,
            activation=SpecOverride(**config.activation.to_dict()),
            weight=SpecOverride(**config.weight.to_dict()),
        )


@dataclass(frozen=True)
class ScopedOverride:
    """An :class:`OpOverride` that applies to the nodes a scope selects."""

    kind: ScopeKind
    key: str
    override: OpOverride

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ScopeKind(self.kind))
        if self.kind is ScopeKind.NAME_REGEX:
            try:
                re.compile(self.key)
            except re.error as exc:
                raise ValueError(f"Invalid node-name regex {self.key!r}: {exc}") from None

    def selects(self, node_name: str, op_type: str, aliases: tuple[str, ...] = ()) -> bool:
        names = (node_name, *aliases)
        if self.kind is ScopeKind.OP_TYPE:
            return op_type == self.key
        if self.kind is ScopeKind.NODE_NAME:
            return self.key in names
        pattern = re.compile(self.key)
        return any(pattern.fullmatch(n) for n in names)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "key": self.key, "override": self.override.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScopedOverride:
        data = _mapping(data, "each entry of 'overrides'")
        missing = [k for k in ("kind", "key", "override") if k not in data]
        if missing:
            raise ValueError(f"an entry of 'overrides' has no {', '.join(repr(k) for k in missing)}: {str(dict(data))[:60]}")
        return cls(ScopeKind(data["kind"]), str(data["key"]), OpOverride.from_dict(data["override"]))


class WeightRounding(str, enum.Enum):
    """How FP32 weights become integers: nearest, MSE-optimal clipping, or learned rounding (AdaRound)."""

    NEAREST = "nearest"
    MSE = "mse"
    ADAROUND = "adaround"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RecoveryConfig:
    """Accuracy-recovery passes that keep ops in INT8 (all off by default: plain post-training quantization).

    Attributes:
        equalization: cross-layer equalization of Conv -> (Relu/Relu6/Clip) -> Conv chains, depthwise
            pairs included (an FP32 rewrite applied before calibration).
        smoothquant_alpha: SmoothQuant migration strength for MatMul/Gemm inputs, in [0, 1]; ``None`` is off
            (an FP32 rewrite applied before calibration).
        bias_correction: correct each quantized Conv/Gemm/MatMul bias by the mean output shift measured on
            calibration data.
        weight_rounding: how weights are rounded (``nearest``, ``mse`` clipping, ``adaround``).
        range_search: choose each activation's calibration algorithm and scheme by the output error it
            causes, instead of one global algorithm.
    """

    equalization: bool = False
    smoothquant_alpha: float | None = None
    bias_correction: bool = False
    weight_rounding: WeightRounding = WeightRounding.NEAREST
    range_search: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_rounding", WeightRounding(self.weight_rounding))
        alpha = self.smoothquant_alpha
        if alpha is not None:
            alpha = float(alpha)
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"smoothquant_alpha must be in [0, 1] or None, got {alpha}")
            object.__setattr__(self, "smoothquant_alpha", alpha)

    @property
    def enabled(self) -> bool:
        """Whether any recovery pass is on."""
        return self != RecoveryConfig()

    def to_dict(self) -> dict[str, Any]:
        return {
            "equalization": self.equalization,
            "smoothquant_alpha": self.smoothquant_alpha,
            "bias_correction": self.bias_correction,
            "weight_rounding": self.weight_rounding.value,
            "range_search": self.range_search,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecoveryConfig:
        data = _mapping(data, "'recovery'")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown recovery setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class RecoveryOptions:
    """How much work the data-driven recovery passes may do.

    Attributes:
        samples: calibration samples used by bias correction, AdaRound and range search (the first ones
            of the calibration data; fewer if it holds fewer).
        threads: ONNX Runtime intra-op threads for their model runs (``None``: all cores).
        adaround_iterations: Adam steps per layer (fewer when the budget says so).
        adaround_batch: output positions (input rows of im2col) per step.
        adaround_positions: at most this many output positions kept per layer (sampled uniformly from the
            calibration samples); a layer with ``K`` inputs per output channel keeps ``max(512, 32 K)`` of them.
        adaround_seconds: AdaRound's total budget, in seconds of a reference core (a fixed amount of work,
            so results do not depend on the machine's speed or load; see
            :data:`lpot_ir.passes.quantization.recovery.weight_rounding.REFERENCE_FLOPS`).
        adaround_layer_seconds: the budget of one layer, same unit.
        adaround_min_iterations: a layer that cannot get this many steps within the budgets keeps the
            rounding it had (nearest, or MSE clipping).
        adaround_regularization: weight of the rounding regularizer relative to the normalized output error.
        adaround_learning_rate: Adam's step size on the rounding variables.
        range_search_margin: range search keeps the configured algorithm and scheme unless another one
            lowers the estimated error by more than this fraction.
        seed: seed of the position sampling (results are deterministic for a given seed).
    """

    samples: int = 32
    threads: int | None = None
    adaround_iterations: int = 300
    adaround_batch: int = 128
    adaround_positions: int = 2048
    adaround_seconds: float = 30.0
    adaround_layer_seconds: float = 3.0
    adaround_min_iterations: int = 50
    adaround_regularization: float = 10.0
    adaround_learning_rate: float = 0.1
    range_search_margin: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "adaround_iterations", "adaround_batch", "adaround_positions", "adaround_min_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"RecoveryOptions.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("adaround_seconds", "adaround_layer_seconds", "adaround_regularization", "range_search_margin"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"RecoveryOptions.{name} must not be negative, got {getattr(self, name)}")
        if not float(self.adaround_learning_rate) > 0:
            raise ValueError(f"RecoveryOptions.adaround_learning_rate must be positive, got {self.adaround_learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecoveryOptions:
        data = _mapping(data, "the recovery options")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown recovery option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class TuningConfig:
    """How a whole model is quantized: approach, format, a global setting and scoped overrides.

    Precedence (documented, the only one): global < op type < node-name regex < node name. Within one
    kind, later overrides win. ``aliases`` passed to :meth:`resolve` are other names of the node (for
    example the framework's module path), so scopes can be written with the names users know.

    Attributes:
        approach: static or dynamic post-training quantization (QAT shares static's format).
        format: ``qdq`` (standard ops, portable) or ``qoperator`` (QLinearConv and friends).
        global_config: the default for every quantizable node.
        overrides: scoped overrides; build them with :meth:`with_override` / :meth:`with_node`.
        calib_sampling_size: how many calibration samples (static approach).
        recovery: accuracy-recovery passes (:class:`RecoveryConfig`); off by default.
        backend: where the model will run (:class:`Backend`); decides which ops have bf16/fp16 kernels for
            the nodes the configuration puts in those types (read by the ``mixed-precision`` step only).
    """

    approach: Approach = Approach.STATIC
    format: QuantFormat = QuantFormat.QDQ
    global_config: OpQuantConfig = field(default_factory=OpQuantConfig)
    overrides: tuple[ScopedOverride, ...] = ()
    calib_sampling_size: int = 100
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    backend: Backend = Backend.ONNXRUNTIME_CPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "approach", Approach(self.approach))
        object.__setattr__(self, "format", QuantFormat(self.format))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "backend", Backend(self.backend))

    @property
    def uses_low_precision_float(self) -> bool:
        """True when the global setting or some scope asks for bf16 or fp16."""
        if self.global_config.low_precision_float:
            return True
        return any(
            o.override.float_dtype is not None and o.override.float_dtype is not DType.FP32 for o in self.overrides
        )

    def resolve(self, node_name: str, op_type: str, aliases: tuple[str, ...] = ()) -> OpQuantConfig:
        """Return the effective configuration of one node."""
        config = self.global_config
        ordered = sorted(
            (o for o in self.overrides if o.selects(node_name, op_type, aliases)),
            key=lambda o: _PRECEDENCE[o.kind],
        )  # sorted() is stable: within one kind, later overrides still win
        for scoped in ordered:
            config = scoped.override.apply(config)
        return config

    def with_override(self, kind: ScopeKind | str, key: str, override: OpOverride) -> TuningConfig:
        """Return a copy with one more scoped override (replacing an identical scope's previous one)."""
        kind = ScopeKind(kind)
        kept = tuple(o for o in self.overrides if not (o.kind is kind and o.key == key))
        return dataclasses.replace(self, overrides=(*kept, ScopedOverride(kind, key, override)))

    def with_node(self, node_name: str, config: OpQuantConfig) -> TuningConfig:
        """Return a copy where ``node_name`` uses exactly ``config`` (``FP32`` to fall back)."""
        return self.with_override(ScopeKind.NODE_NAME, node_name, OpOverride.from_config(config))

    def with_nodes_fp32(self, node_names: tuple[str, ...] | list[str]) -> TuningConfig:
        """Return a copy with each of ``node_names`` kept in FP32."""
        config = self
        for name in node_names:
            config = config.with_node(name, FP32)
        return config

    def to_dict(self) -> dict[str, Any]:
        data = {
            "approach": self.approach.value,
            "format": self.format.value,
            "global": self.global_config.to_dict(),
            "overrides": [o.to_dict() for o in self.overrides],
            "calib_sampling_size": self.calib_sampling_size,
        }
        if self.recovery.enabled:  # omitted when off: keys and recipes of plain configurations stay as they were
            data["recovery"] = self.recovery.to_dict()
        if self.backend is not Backend.ONNXRUNTIME_CPU:  # omitted at the default, likewise
            data["backend"] = self.backend.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuningConfig:
        data = _mapping(data, "a tuning configuration")
        overrides = data.get("overrides", ())
        if not isinstance(overrides, (list, tuple)):
            raise TypeError(f"'overrides' must be a list, got {type(overrides).__name__}")
        return cls(
            approach=Approach(data.get("approach", Approach.STATIC.value)),
            format=QuantFormat(data.get("format", QuantFormat.QDQ.value)),
            global_config=OpQuantConfig.from_dict(data.get("global", {})),
            overrides=tuple(ScopedOverride.from_dict(o) for o in overrides),
            calib_sampling_size=int(data.get("calib_sampling_size", 100)),
            recovery=RecoveryConfig.from_dict(data.get("recovery") or {}),
            backend=Backend(data.get("backend", Backend.ONNXRUNTIME_CPU.value)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TuningConfig:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> TuningConfig:
        return cls.from_dict(yaml.safe_load(text))

    def key(self) -> str:
        """A content hash: equal configurations have equal keys (for caches and 'never evaluate twice')."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TensorRange:
    """The calibrated real-valued range [lo, hi] of one tensor (always contains 0 once quantized)."""

    lo: float
    hi: float

    def to_list(self) -> list[float]:
        return [float(self.lo), float(self.hi)]

    @classmethod
    def from_list(cls, data: list[float] | tuple[float, float]) -> TensorRange:
        return cls(float(data[0]), float(data[1]))


@dataclass(frozen=True)
class SharedQuantSpec:
    """Quantize with the same scale and zero point as ``value_name`` (data-movement ops)."""

    value_name: str


@dataclass(frozen=True)
class DerivedBiasSpec:
    """Bias as int32, zero point 0, scale = scale(activation) x scale(weight) (per channel if the weight is)."""

    activation_value: str
    weight_value: str


TensorQuantSpec = QuantSpec | SharedQuantSpec | DerivedBiasSpec


@dataclass(frozen=True)
class QuantAnnotation:
    """What an annotator decided for one node; consumed by the generic Q/DQ insertion pass.

    Attributes:
        inputs: (input index, spec) pairs for the inputs to quantize.
        outputs: (output index, spec) pairs for the outputs to quantize.
        dynamic: activations are quantized at run time (dynamic approach), not from calibration.
    """

    inputs: tuple[tuple[int, TensorQuantSpec], ...] = ()
    outputs: tuple[tuple[int, TensorQuantSpec], ...] = ()
    dynamic: bool = False

    def input_spec(self, index: int) -> TensorQuantSpec | None:
        return dict(self.inputs).get(index)

    def output_spec(self, index: int) -> TensorQuantSpec | None:
        return dict(self.outputs).get(index)


class Fp32Category(str, enum.Enum):
    """Why a node stays in FP32."""

    UNSUPPORTED = "unsupported"  # no integer kernel / Q/DQ fusion for this op or these inputs
    USER_EXCLUDED = "user_excluded"  # the configuration says fp32 for it
    TUNING_FALLBACK = "tuning_fallback"  # a strategy reverted it to meet the accuracy goal
    NOT_BENEFICIAL = "not_beneficial"  # quantizing it would only add Q/DQ pairs (e.g. isolated data movement)
    NO_RANGE = "no_range"  # calibration saw no values for an input
    NUMERICS = "numerics"  # mixed precision: the declared rule keeps it in FP32 (reductions, Softmax, Exp, ...)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Fp32Reason:
    """Why one node stays FP32, for reports (``node.meta[FP32_REASON_KEY]``)."""

    category: Fp32Category
    detail: str

    def __str__(self) -> str:
        return f"{self.category.value}: {self.detail}"
