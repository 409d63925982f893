"""What the quantization passes get besides the model: one typed context object, and their result type.

Every step of a quantization pipeline (``int8-prepare``, ``int8-qdq``, ``int8-qoperator``,
``int8-dynamic``, ...) that needs more than the model is a :class:`QuantizationPass`: the pipeline
runner (:func:`~lpot_ir.passes.quantization.quantize_model`, or ``ModelQuantizer``) builds it with the
run's :class:`QuantizationContext`. A pass returns a :class:`QuantPassResult`; the runner merges the
results of all steps into the :class:`~lpot_ir.passes.quantization.QuantizationReport`.

A recovery pass looks like this (see docs/architecture.md, *Contracts*)::

    @register_pass("bias-correction")
    class BiasCorrectionPass(QuantizationPass):
        def call(self, model):
            if not self.context.recovery.bias_correction:
                return QuantPassResult(model, False)          # switched off: do nothing
            feeds = self.context.calibration_feeds()          # calibration inputs
            fp32 = self.context.fp32_model                    # the FP32 model being quantized
            ...
            return QuantPassResult(model, changes > 0, changes=changes)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import QuantizableNode, quantizable_nodes
from lpot_ir.calibration import ChannelRange, calibrate
from lpot_ir.errors import QuantizationError
from lpot_ir.ir.quant import (
    CalibAlgorithm,
    DType,
    Fp32Reason,
    OpQuantConfig,
    QuantSpec,
    RecoveryConfig,
    RecoveryOptions,
    TensorRange,
    TuningConfig,
)
from lpot_ir.passes.base import ContextPass, PassResult
from lpot_ir.passes.quantization.qparams import QParams

__all__ = [
    "RangeLookup",
    "ChannelLookup",
    "WeightCache",
    "Feeds",
    "QuantizationContext",
    "QuantizationPass",
    "QuantPassResult",
    "AnnotationResult",
    "QuantizedWeight",
    "QUANTIZED_WEIGHT_KEY",
    "no_ranges",
]

RangeLookup = Callable[[str, CalibAlgorithm], "TensorRange | None"]
"""``range_of(value_name, algorithm)``: the calibrated range of an activation, or ``None``."""

ChannelLookup = Callable[[Mapping[str, int]], "Mapping[str, ChannelRange]"]
"""``channel_ranges({value name: channel axis})``: per-channel ranges of the optimized FP32 model's activations."""


WeightCache = dict[tuple[object, ...], tuple[QParams, np.ndarray]]
"""(weight name, spec, axis, shape, dtype) -> (parameters, quantized data), shared by the configurations
applied to one (prepared) FP32 model. Entries are never modified: a pass that changes a quantized weight
replaces the initializer's tensor instead."""

Feeds = Sequence[Mapping[str, np.ndarray]]
"""Model input batches: ``{input name: array}``, as ONNX Runtime takes them."""

QUANTIZED_WEIGHT_KEY = "lpot_ir.quantized_weight"
"""``node.meta`` key on each weight ``DequantizeLinear`` written by ``insert-qdq``: a :class:`QuantizedWeight`."""


def no_ranges(_name: str, _algorithm: CalibAlgorithm) -> TensorRange | None:
    """The range lookup when nothing is calibrated (dynamic approach, or before calibration)."""
    return None


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """Where a quantized weight came from (on its ``DequantizeLinear`` node, for post-insertion passes).

    Attributes:
        source: the float initializer's name in the FP32 model (``QuantizationContext.fp32_model``).
        spec: the weight's quantization spec.
        axis: the per-channel axis, or ``None`` per tensor.
    """

    source: str
    spec: QuantSpec
    axis: int | None


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizationContext:
    """Everything a quantization pass may read besides the model. Built by the runner, one per run.

    Attributes:
        config: the tuning configuration being applied (``config.recovery`` switches recovery passes).
        nodes: the quantizable nodes of the model the pipeline starts from.
        unsupported: covered nodes that cannot be quantized, with reasons.
        range_of: ``(value name, algorithm) -> TensorRange | None``; :func:`no_ranges` before calibration
            and for the dynamic approach.
        weight_cache: quantized weights shared across configurations of the same FP32 model.
        fp32_model: the FP32 model this run starts from (the prepared model in the quantization
            stage, the optimized model in the prepare stage); never modify it.
        feeds: returns the calibration batches (at most ``config.calib_sampling_size`` samples);
            ``None`` when the run has no calibration data (use :meth:`calibration_feeds`).
        channel_ranges: per-channel ranges of the optimized FP32 model's activations, computed (and
            cached) by the runner from the calibration data; ``None``: :meth:`channel_statistics`
            calibrates ``fp32_model`` on :meth:`calibration_feeds` itself.
        recovery_factors: per-channel factors of the prepare stage's rewrites to replay instead of
            computing them (technique -> site -> factors, from a recipe); ``None`` when not replaying.
        replay: ``None`` when quantizing; when rebuilding a model from its recipe, step name -> the record
            the step returned then (:attr:`QuantPassResult.record`, ``{}`` if none). A step that finds
            itself in replay mode applies its record and never reads calibration data.
        replay_partial: the replayed records were taken on another configuration of the same model (the
            one a fallback candidate falls back from): a step applies the decisions that concern nodes
            this model quantizes, skips the others, and records only what it applied. A recipe's replay
            is strict (``False``): a decision about a node the model does not quantize is an error.
        recovery_options: samples and work budgets of the data-driven recovery passes.
        range_notes: value name -> why calibration has no range for it (``CalibrationResult.skipped``, e.g.
            "no calibration feed took the else_branch of If 'X'"); ``insert-qdq`` quotes it in the reason of
            a node left FP32 for want of a range.
    """

    config: TuningConfig
    nodes: tuple[QuantizableNode, ...] = ()
    unsupported: Mapping[str, Fp32Reason] = dataclasses.field(default_factory=dict)
    range_of: RangeLookup = no_ranges
    weight_cache: WeightCache = dataclasses.field(default_factory=dict)
    fp32_model: onnx.ModelProto | None = None
    feeds: Callable[[], Feeds] | None = None
    channel_ranges: ChannelLookup | None = None
    recovery_factors: Mapping[str, Mapping[str, Any]] | None = None
    replay: Mapping[str, Mapping[str, Any]] | None = None
    replay_partial: bool = False
    recovery_options: RecoveryOptions = dataclasses.field(default_factory=RecoveryOptions)
    range_notes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def recovery(self) -> RecoveryConfig:
        """The accuracy-recovery switches of the configuration."""
        return self.config.recovery

    def recorded(self, step: str) -> Mapping[str, Any] | None:
        """In replay mode, the record of ``step`` (``{}`` when it recorded nothing); ``None`` when quantizing."""
        if self.replay is None:
            return None
        return self.replay.get(step, {})

    def calibration_feeds(self) -> Feeds:
        """The calibration batches.

        Raises:
            QuantizationError: the run has no calibration data.
        """
        if self.feeds is None:
            raise QuantizationError(
                "An accuracy-recovery pass needs calibration data, but this quantization has none. Pass "
                "calib_dataloader= (Python) or --calib DATA (CLI), or switch the recovery setting off."
            )
        return self.feeds()

    @property
    def has_data(self) -> bool:
        """Whether calibration data (or per-channel ranges computed from it) is available."""
        return self.feeds is not None or self.channel_ranges is not None

    def channel_statistics(self, wanted: Mapping[str, int]) -> Mapping[str, ChannelRange]:
        """Per-channel ranges of ``wanted`` activations (name -> channel axis) of the optimized FP32 model.

        Raises:
            QuantizationError: the run has no calibration data.
        """
        if self.channel_ranges is not None:
            return self.channel_ranges(wanted)
        if self.fp32_model is None:
            raise QuantizationError("Per-channel statistics need the FP32 model in the quantization context.")
        result = calibrate(
            self.fp32_model, self.calibration_feeds(), tensors=[], channel_axes=wanted,
            sampling_size=self.config.calib_sampling_size, progress=False,
        )
        return result.channels

    @classmethod
    def for_model(cls, model: ir.Model, config: TuningConfig, **fields: object) -> QuantizationContext:
        """A context for ``model`` with its quantizable nodes computed from the capability table."""
        if "nodes" not in fields:
            nodes, unsupported = quantizable_nodes(model, config.approach)
            fields["nodes"] = tuple(nodes)
            fields.setdefault("unsupported", unsupported)
        return cls(config, **fields)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> QuantizationContext:
        """A copy with some fields changed (the context itself is frozen)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclasses.dataclass
class AnnotationResult:
    """What the annotator decided.

    Attributes:
        configs: node name -> the effective :class:`OpQuantConfig` of every quantizable node.
        quantized: names of annotated nodes, in graph order.
        fp32: node name -> why it stays FP32 (every covered node that is not annotated).
        notes: node name -> adjustments made to fit the node's choices (e.g. per-channel -> per-tensor).
    """

    configs: dict[str, OpQuantConfig] = dataclasses.field(default_factory=dict)
    quantized: list[str] = dataclasses.field(default_factory=list)
    fp32: dict[str, Fp32Reason] = dataclasses.field(default_factory=dict)
    notes: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class QuantPassResult(PassResult):
    """The common :class:`~lpot_ir.passes.PassResult` plus what a quantization step decided.

    Attributes:
        fp32: node name -> why a node this step was asked to quantize stays FP32 after all.
        ranges: value name -> the activation range used (recorded in recipes).
        annotations: the annotator's decisions (``annotate`` only).
        record: JSON-able decisions the step took from data, stored in the recipe under the step's name
            and handed back through :attr:`QuantizationContext.replay` by ``apply_recipe`` (``None``: nothing).
        report: what the step did, for people (not stored).
        float_dtypes: node name -> the 16-bit float type it runs in (``mixed-precision`` only).
    """

    fp32: dict[str, Fp32Reason] = dataclasses.field(default_factory=dict)
    ranges: dict[str, TensorRange] = dataclasses.field(default_factory=dict)
    annotations: AnnotationResult | None = None
    record: dict[str, Any] | None = None
    report: object = None
    float_dtypes: dict[str, DType] = dataclasses.field(default_factory=dict)


class QuantizationPass(ContextPass[QuantizationContext]):
    """Base class of passes in the quantization pipelines: ``self.context`` is the run's context."""

    context_type: ClassVar[type] = QuantizationContext
