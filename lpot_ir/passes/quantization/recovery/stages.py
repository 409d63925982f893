"""Where the data-driven recovery passes run inside static quantization, and what they need.

``quantize_model`` calls three stages around Q/DQ insertion when ``TuningConfig.recovery`` asks for them:

1. :func:`before_insertion` (after annotation): range search picks each activation's range and scheme;
2. :func:`weight_override` (during insertion): MSE clipping of the weights (also the starting point of AdaRound);
3. :func:`after_insertion`: AdaRound and bias correction, layer by layer on the Q/DQ model.

Each stage either computes its decisions from the :class:`RecoveryContext` (calibration batches, the FP32
model, the four calibrated ranges of every tensor) and writes them to a
:class:`~lpot_ir.passes.quantization.recovery.record.RecoveryRecord`, or, when the context carries a
record to replay (``apply_recipe``), applies that record without data.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from lpot_ir.errors import QuantizationError
from lpot_ir.ir.quant import CalibAlgorithm, TensorRange, TuningConfig, WeightRounding
from lpot_ir.passes.quantization.insert_qdq import RangeLookup, WeightOverride
from lpot_ir.passes.quantization.recovery.layerwise import (
    LayerwiseReport,
    layerwise_recovery,
    replay_layerwise,
)
from lpot_ir.passes.quantization.recovery.options import RecoveryOptions
from lpot_ir.passes.quantization.recovery.range_search import RangeSearchResult, apply_schemes, search_ranges
from lpot_ir.passes.quantization.recovery.record import RecoveryRecord
from lpot_ir.passes.quantization.recovery.weight_rounding import ClipOverride

__all__ = ["RecoveryContext", "RecoveryReport", "before_insertion", "weight_override", "after_insertion", "needs_data"]


@dataclass
class RecoveryContext:
    """What the data-driven recovery passes need beyond the model and the configuration.

    Attributes:
        fp32_model: the FP32 model being quantized (the reference of AdaRound and bias correction; not modified).
        feeds: calibration batches ``{input name: array}`` (at most ``options.samples`` samples).
        candidates: activation name -> its range under each calibration algorithm (range search).
        options: samples and budgets.
        replay: a record to apply instead of computing (``apply_recipe``: no data needed).
        clip_cache: MSE clip ratios per weight, shared across the configurations of one model.
    """

    fp32_model: ir.Model
    feeds: Sequence[Mapping[str, np.ndarray]] = ()
    candidates: Callable[[str], Mapping[CalibAlgorithm, TensorRange]] | None = None
    options: RecoveryOptions = field(default_factory=RecoveryOptions)
    replay: RecoveryRecord | None = None
    clip_cache: dict[tuple[object, ...], np.ndarray] = field(default_factory=dict)


@dataclass
class RecoveryReport:
    """What the recovery stages did for one configuration.

    Attributes:
        record: the decisions (what the recipe stores).
        range_search: range search's choices and estimated errors (``None`` when it did not run).
        layerwise: AdaRound / bias correction per layer (``None`` when they did not run).
    """

    record: RecoveryRecord = field(default_factory=RecoveryRecord)
    range_search: RangeSearchResult | None = None
    layerwise: LayerwiseReport | None = None


def needs_data(config: TuningConfig) -> bool:
    """Whether ``config`` turns on a recovery pass that needs calibration data (all but MSE clipping)."""
    recovery = config.recovery
    return recovery.range_search or recovery.bias_correction or recovery.weight_rounding is WeightRounding.ADAROUND


def _require(context: RecoveryContext | None, config: TuningConfig, what: str) -> RecoveryContext:
    if context is None:
        raise QuantizationError(
            f"The configuration turns on {what} (recovery: {config.recovery.to_dict()}), which needs the FP32 "
            "model and calibration data, but quantize_model got no RecoveryContext. Quantize through "
            "ModelQuantizer / quantize(), which provide them, or turn the recovery pass off."
        )
    if context.replay is None and not context.feeds:
        raise QuantizationError(
            f"{what} needs calibration data, but none was given. Pass calib_dataloader= (Python) or --calib "
            "DATA (CLI), or turn it off in the configuration's recovery settings."
        )
    return context


def before_insertion(
    model: ir.Model,
    config: TuningConfig,
    context: RecoveryContext | None,
    range_of: RangeLookup,
    report: RecoveryReport,
) -> RangeLookup:
    """Range search on the annotated model: edit schemes in the annotations, return the ``range_of`` to use."""
    if not config.recovery.range_search:
        return range_of
    context = _require(context, config, "range search")
    if context.replay is not None:
        report.record.schemes = dict(context.replay.schemes)
        report.record.algorithms = dict(context.replay.algorithms)
        apply_schemes(model, report.record.schemes)
        return range_of  # the recipe's ranges are the searched ones
    if context.candidates is None:
        raise QuantizationError("Range search needs the ranges of every calibration algorithm; none were given.")
    result = search_ranges(
        model,
        context.candidates,
        context.feeds,
        margin=context.options.range_search_margin,
        threads=context.options.threads,
    )
    apply_schemes(model, result.schemes)
    report.range_search = result
    report.record.schemes = dict(result.schemes)
    report.record.algorithms = {name: a.value for name, a in result.algorithms.items()}
    return result.range_of(range_of)


def weight_override(config: TuningConfig, context: RecoveryContext | None, report: RecoveryReport) -> WeightOverride | None:
    """The weight hook of Q/DQ insertion for MSE clipping (``mse`` and ``adaround``), else ``None``."""
    if config.recovery.weight_rounding is WeightRounding.NEAREST:
        return None
    if context is not None and context.replay is not None:
        report.record.clip_ratios = dict(context.replay.clip_ratios)
        return ClipOverride(report.record, replay=True)
    return ClipOverride(report.record, cache=context.clip_cache if context is not None else None)


def after_insertion(
    model: ir.Model,
    config: TuningConfig,
    context: RecoveryContext | None,
    quantized: Collection[str],
    report: RecoveryReport,
) -> None:
    """AdaRound and bias correction on the Q/DQ model (or their replay)."""
    adaround = config.recovery.weight_rounding is WeightRounding.ADAROUND
    if not (adaround or config.recovery.bias_correction):
        return
    context = _require(context, config, "AdaRound" if adaround else "bias correction")
    if context.replay is not None:
        report.record.roundings = dict(context.replay.roundings)
        report.record.biases = dict(context.replay.biases)
        replay_layerwise(model, context.fp32_model, report.record, quantized)
        return
    report.layerwise = layerwise_recovery(
        model,
        context.fp32_model,
        context.feeds,
        quantized,
        adaround=adaround,
        bias_correction=config.recovery.bias_correction,
        options=context.options,
        record=report.record,
    )
