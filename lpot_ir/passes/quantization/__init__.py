"""Quantization passes and the quantization pipelines (importing this package registers them).

Every step is a registered pass or rule set; the pipelines are data in
:data:`lpot_ir.passes.base.PIPELINES`:

========================  =========  ==========================================================================
step                      kind       what it does
========================  =========  ==========================================================================
cross-layer-equalization  pass       ``int8-prepare``: equalize Conv pairs' weight ranges (``recovery.equalization``)
smoothquant               pass       ``int8-prepare``: move MatMul input outliers into weights (``recovery.smoothquant_alpha``)
annotate                  pass       ``TuningConfig`` -> :class:`~lpot_ir.ir.quant.QuantAnnotation` node metadata
insert-qdq                pass       QuantizeLinear/DequantizeLinear, quantized weights and int32 biases
dynamic-quantize          pass       DynamicQuantizeLinear + integer ops (dynamic approach)
range-search              pass       per-tensor calibration algorithm and scheme by consumer-weighted error
weight-rounding           pass       MSE clipping / AdaRound of the quantized weights (``int8-refine``)
bias-correction           pass       per-channel mean output shift folded into the biases (``int8-refine``)
space-to-depth-stems      rule set   quantized 7x7/2 stems as stride-1 convolutions on SpaceToDepth
qoperator                 rule set   Q/DQ -> QLinearConv, QLinearMatMul, com.microsoft QLinear* ...
avoid-slow-ort-fusions    rule set   equivalent forms ONNX Runtime does not fuse into slower kernels
mixed-precision           pass       bf16/fp16 nodes with casts at the edges (:mod:`lpot_ir.passes.mixed_precision`)
========================  =========  ==========================================================================

:func:`quantize_model` runs the pipeline a configuration selects (:func:`select_pipeline`) with one
:class:`QuantizationContext`; :func:`prepare_model` runs the ``int8-prepare`` stage (FP32, before
calibration).
"""

from __future__ import annotations

from lpot_ir.passes.quantization.annotate import AnnotatePass, annotate
from lpot_ir.passes.quantization.context import (
    QUANTIZED_WEIGHT_KEY,
    AnnotationResult,
    QuantizationContext,
    QuantizationPass,
    QuantizedWeight,
    QuantPassResult,
    no_ranges,
)
from lpot_ir.passes.quantization.dynamic import DynamicQuantizePass
from lpot_ir.passes.quantization.insert_qdq import InsertQDQPass
from lpot_ir.passes.quantization.lower_qoperator import lower_to_qoperator, qoperator_rules
from lpot_ir.passes.quantization.ort_fusions import avoid_slow_ort_fusions, slow_fusion_rules
from lpot_ir.passes.quantization.pipeline import (
    PIPELINE_FOR,
    PREPARE_PIPELINE,
    PipelineRecord,
    QuantizationReport,
    prepare_model,
    quantize_model,
    select_pipeline,
)
from lpot_ir.passes.quantization.recovery import CrossLayerEqualizationPass, SmoothQuantPass
from lpot_ir.passes.quantization.recovery.bias_correction import BiasCorrectionPass
from lpot_ir.passes.quantization.recovery.range_search import RangeSearchPass
from lpot_ir.passes.quantization.recovery.weight_rounding import WeightRoundingPass
from lpot_ir.passes.quantization.space_to_depth import space_to_depth_rules

__all__ = [
    "PIPELINE_FOR",
    "PREPARE_PIPELINE",
    "QUANTIZED_WEIGHT_KEY",
    "AnnotatePass",
    "CrossLayerEqualizationPass",
    "SmoothQuantPass",
    "AnnotationResult",
    "BiasCorrectionPass",
    "DynamicQuantizePass",
    "InsertQDQPass",
    "PipelineRecord",
    "QuantPassResult",
    "QuantizationContext",
    "QuantizationPass",
    "QuantizationReport",
    "QuantizedWeight",
    "RangeSearchPass",
    "WeightRoundingPass",
    "annotate",
    "avoid_slow_ort_fusions",
    "lower_to_qoperator",
    "no_ranges",
    "prepare_model",
    "qoperator_rules",
    "quantize_model",
    "select_pipeline",
    "slow_fusion_rules",
    "space_to_depth_rules",
]
