"""Quantization passes: annotators, the generic Q/DQ insertion, dynamic quantization, QOperator lowering.

* :func:`annotate` turns a :class:`~lpot_ir.ir.quant.TuningConfig` into node annotations.
* :class:`InsertQDQPass` is the one pass that turns annotations into QuantizeLinear/DequantizeLinear.
* :class:`DynamicQuantizePass` rewrites for the dynamic approach (DynamicQuantizeLinear + integer ops).
* :func:`lower_to_qoperator` lowers Q/DQ to QLinearConv, QLinearMatMul, ... (a rule set).
* :func:`avoid_slow_ort_fusions` writes patterns ONNX Runtime would fuse into slower kernels in an equivalent form.
* :func:`quantize_model` runs them in order for one configuration.
"""

from __future__ import annotations

from lpot_ir.passes.quantization.annotate import AnnotationResult, annotate
from lpot_ir.passes.quantization.dynamic import DynamicQuantizePass
from lpot_ir.passes.quantization.insert_qdq import InsertQDQPass
from lpot_ir.passes.quantization.lower_qoperator import lower_to_qoperator, qoperator_rules
from lpot_ir.passes.quantization.ort_fusions import avoid_slow_ort_fusions, slow_fusion_rules
from lpot_ir.passes.quantization.pipeline import QuantizationReport, quantize_model

__all__ = [
    "AnnotationResult",
    "DynamicQuantizePass",
    "InsertQDQPass",
    "QuantizationReport",
    "annotate",
    "avoid_slow_ort_fusions",
    "lower_to_qoperator",
    "qoperator_rules",
    "quantize_model",
    "slow_fusion_rules",
]
