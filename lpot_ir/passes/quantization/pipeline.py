"""The quantization runner: run the pipeline a :class:`TuningConfig` selects, with one context.

A quantization is two stages of registered steps (``PIPELINES`` in :mod:`lpot_ir.passes.base`):

* :data:`PREPARE_PIPELINE` (``int8-prepare``): FP32 rewrites of the optimized model *before*
  calibration (:func:`prepare_model`); ``ModelQuantizer`` runs it once per prepared-model key and
  calibrates its result.
* the pipeline :func:`select_pipeline` picks from the approach and format (``int8-qdq``,
  ``int8-qoperator``, ``int8-dynamic``, ``int8-dynamic-qoperator``), run by :func:`quantize_model` on the
  prepared model: annotate, insert Q/DQ (or rewrite dynamically), the ``int8-refine`` stage, then
  rewrites and lowering for ONNX Runtime.

Both hand the same :class:`~lpot_ir.passes.quantization.context.QuantizationContext` to every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from lpot_ir.ir.quant import Approach, DType, Fp32Reason, QuantFormat, TensorRange, TuningConfig
from lpot_ir.passes.base import PipelineReport, pipeline_steps, pipeline_version, run_pipeline
from lpot_ir.passes.quantization.context import AnnotationResult, QuantizationContext, QuantPassResult

__all__ = [
    "PREPARE_PIPELINE",
    "PIPELINE_FOR",
    "QuantizationReport",
    "PipelineRecord",
    "select_pipeline",
    "prepare_model",
    "quantize_model",
]

PREPARE_PIPELINE = "int8-prepare"
"""The stage of FP32 rewrites that runs before calibration, for every approach and format."""

PIPELINE_FOR: Mapping[tuple[bool, QuantFormat], str] = {
    (False, QuantFormat.QDQ): "int8-qdq",
    (False, QuantFormat.QOPERATOR): "int8-qoperator",
    (True, QuantFormat.QDQ): "int8-dynamic",
    (True, QuantFormat.QOPERATOR): "int8-dynamic-qoperator",
}
"""(dynamic approach?, format) -> the quantization pipeline's name (the one place that says which)."""


def select_pipeline(config: TuningConfig) -> str:
    """The name of the quantization pipeline ``config`` selects (QAT quantizes like static)."""
    return PIPELINE_FOR[(config.approach is Approach.DYNAMIC, config.format)]


@dataclass(frozen=True)
class PipelineRecord:
    """Which pipeline made a quantized model (recorded in recipes; replayed by ``apply_recipe``).

    Attributes:
        name: the pipeline name (``int8-qdq``, ...).
        version: its version when the model was made.
        prepare: the steps of the prepare stage that ran.
        steps: the steps of the pipeline that ran, nested stages expanded.
    """

    name: str
    version: int
    prepare: tuple[str, ...]
    steps: tuple[str, ...]

    @classmethod
    def current(cls, name: str) -> PipelineRecord:
        """The record of the pipeline ``name`` as registered now."""
        return cls(name, pipeline_version(name), pipeline_steps(PREPARE_PIPELINE), pipeline_steps(name))

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "prepare": list(self.prepare), "steps": list(self.steps)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PipelineRecord:
        return cls(
            str(data["name"]),
            int(data["version"]),  # type: ignore[call-overload]
            tuple(str(s) for s in data.get("prepare", ())),  # type: ignore[attr-defined]
            tuple(str(s) for s in data["steps"]),  # type: ignore[attr-defined]
        )


@dataclass
class QuantizationReport:
    """What :func:`quantize_model` did.

    Attributes:
        annotations: the annotator's decisions (effective configs, FP32 reasons, notes).
        dropped: annotated nodes left FP32 by a later step (e.g. ``no_range``).
        used_ranges: value name -> the activation range used (what a recipe stores).
        pipeline: the name of the pipeline that ran.
        steps: the pass manager's report (changes and time per step and rule).
        records: step name -> the decisions it recorded (:attr:`QuantPassResult.record`; what a recipe stores).
        float_dtypes: node name -> the 16-bit float type it runs in (the ``mixed-precision`` step).
    """

    annotations: AnnotationResult
    dropped: dict[str, Fp32Reason] = field(default_factory=dict)
    used_ranges: dict[str, TensorRange] = field(default_factory=dict)
    pipeline: str = ""
    steps: PipelineReport | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    float_dtypes: dict[str, DType] = field(default_factory=dict)

    @property
    def quantized(self) -> list[str]:
        """Names of the nodes that run in INT8."""
        return [n for n in self.annotations.quantized if n not in self.dropped]


def prepare_model(
    model: ir.Model, context: QuantizationContext, *, steps: tuple[str, ...] | None = None
) -> PipelineReport | None:
    """Run the prepare stage (FP32 rewrites before calibration) on ``model`` in place.

    Args:
        model: a copy of the optimized FP32 model.
        context: the run's context (no ranges yet: ``range_of`` is :func:`no_ranges`).
        steps: the steps to run instead of the registered ``int8-prepare`` (a recipe's record).

    Returns:
        The pass manager's report (``.modified``: whether any step changed the model; each step's
        ``result``, e.g. a recovery pass's report), or ``None`` when the stage has no step.
    """
    steps = pipeline_steps(PREPARE_PIPELINE) if steps is None else steps
    if not steps:
        return None
    return run_pipeline(model, list(steps), context=context)


def quantize_model(
    model: ir.Model, context: QuantizationContext, *, pipeline: str | tuple[str, ...] | None = None
) -> QuantizationReport:
    """Quantize ``model`` in place: run the pipeline ``context.config`` selects, with ``context``.

    Args:
        model: the (prepared) FP32 model, main-graph nodes named; modified in place.
        context: the run's :class:`QuantizationContext` (``QuantizationContext.for_model(model, config)``
            computes the quantizable nodes).
        pipeline: a pipeline name or a list of step names to run instead of :func:`select_pipeline`'s.

    Returns:
        The :class:`QuantizationReport`, merged from the steps' :class:`QuantPassResult`s.
    """
    chosen = select_pipeline(context.config) if pipeline is None else pipeline
    steps = run_pipeline(model, chosen if isinstance(chosen, str) else list(chosen), context=context)
    report = QuantizationReport(AnnotationResult(), pipeline=chosen if isinstance(chosen, str) else "", steps=steps)
    for step in steps.steps:
        result = step.result
        if not isinstance(result, QuantPassResult):
            continue
        if result.annotations is not None:
            report.annotations = result.annotations
        report.dropped.update(result.fp32)
        report.used_ranges.update(result.ranges)
        report.float_dtypes.update(result.float_dtypes)
        if result.record is not None:
            report.records[step.name] = result.record
    return report
