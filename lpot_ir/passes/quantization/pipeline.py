"""``quantize_model``: annotate a model for a TuningConfig, then rewrite it (Q/DQ, dynamic, QOperator),
then keep ONNX Runtime from fusing it into slower kernels (:mod:`~lpot_ir.passes.quantization.ort_fusions`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import QuantizableNode, quantizable_nodes
from lpot_ir.ir.quant import Approach, CalibAlgorithm, Fp32Reason, QuantFormat, TensorRange, TuningConfig
from lpot_ir.passes.quantization.annotate import AnnotationResult, annotate
from lpot_ir.passes.quantization.dynamic import DynamicQuantizePass
from lpot_ir.passes.quantization.insert_qdq import InsertQDQPass
from lpot_ir.passes.quantization.ort_fusions import avoid_slow_ort_fusions
from lpot_ir.passes.quantization.space_to_depth import space_to_depth_stems

if TYPE_CHECKING:
    from lpot_ir.passes.quantization.recovery.stages import RecoveryContext, RecoveryReport

__all__ = ["QuantizationReport", "quantize_model"]


@dataclass
class QuantizationReport:
    """What :func:`quantize_model` did.

    Attributes:
        annotations: the annotators' decisions (effective configs, FP32 reasons, notes).
        dropped: annotated nodes left FP32 by the rewrite (e.g. ``no_range``).
        used_ranges: value name -> the activation range used (what a recipe stores).
        recovery: what the accuracy-recovery passes did (``None`` when none ran).
        quantized: names of the nodes that run in INT8.
    """

    annotations: AnnotationResult
    dropped: dict[str, Fp32Reason] = field(default_factory=dict)
    used_ranges: dict[str, TensorRange] = field(default_factory=dict)
    recovery: RecoveryReport | None = None

    @property
    def quantized(self) -> list[str]:
        return [n for n in self.annotations.quantized if n not in self.dropped]


def _no_ranges(_name: str, _algorithm: CalibAlgorithm) -> TensorRange | None:
    return None


def quantize_model(
    model: ir.Model,
    config: TuningConfig,
    range_of: Callable[[str, CalibAlgorithm], TensorRange | None] | None = None,
    *,
    nodes: list[QuantizableNode] | None = None,
    unsupported: Mapping[str, Fp32Reason] | None = None,
    weight_cache: dict[tuple[object, ...], Any] | None = None,
    recovery: RecoveryContext | None = None,
) -> QuantizationReport:
    """Quantize ``model`` in place under ``config``.

    Args:
        model: an FP32 model (main-graph nodes named); modified in place.
        config: the tuning configuration.
        range_of: ``(value_name, algorithm) -> TensorRange | None`` (static approach).
        nodes: quantizable nodes; computed from the capability table when ``None``.
        unsupported: covered nodes that cannot be quantized (computed with ``nodes`` when ``None``).
        weight_cache: see :class:`InsertQDQPass` (reuse across configurations of one model).
        recovery: what the accuracy-recovery passes of ``config.recovery`` need (FP32 model, calibration
            batches, candidate ranges), or a record to replay; see :mod:`lpot_ir.passes.quantization.recovery.stages`.
    """
    if nodes is None:
        nodes, unsupported = quantizable_nodes(model, config.approach)
    annotations = annotate(model, config, nodes, unsupported)
    report = QuantizationReport(annotations)
    if config.approach is Approach.DYNAMIC:
        dynamic = DynamicQuantizePass()
        dynamic(model)
        report.dropped = dynamic.dropped
    else:
        lookup = range_of or _no_ranges
        override = None
        if config.recovery.enabled:
            from lpot_ir.passes.quantization.recovery import stages

            report.recovery = stages.RecoveryReport()
            lookup = stages.before_insertion(model, config, recovery, lookup, report.recovery)
            override = stages.weight_override(config, recovery, report.recovery)
        insert = InsertQDQPass(lookup, weight_cache, override)
        insert(model)
        report.dropped, report.used_ranges = insert.dropped, insert.used_ranges
        if report.recovery is not None:
            stages.after_insertion(model, config, recovery, report.quantized, report.recovery)
        space_to_depth_stems(model)  # quantized 7x7/2 stems: QLinearConv is slow on 3 channels
    if config.format is QuantFormat.QOPERATOR:
        from lpot_ir.passes.quantization.lower_qoperator import lower_to_qoperator

        lower_to_qoperator(model)
    avoid_slow_ort_fusions(model)
    return report
