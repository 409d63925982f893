"""Mixed precision: the ``mixed-precision`` step (importing this package registers it).

It runs in every quantization pipeline after the INT8 steps and puts the nodes a configuration asks for in
bf16/fp16 (``OpQuantConfig.float_dtype``), by the declared tables of :mod:`lpot_ir.backends.precision`
(which ops may, which stay FP32 and why, which kernels each backend has). See docs/mixed_precision.md.
"""

from __future__ import annotations

from lpot_ir.passes.mixed_precision.convert import (
    FLOAT_DTYPE_KEY,
    ONNX_TYPES,
    STEP,
    MixedPrecisionPass,
    PrecisionPlan,
    apply_precisions,
    plan_precisions,
    to_low_precision,
)

__all__ = [
    "STEP",
    "FLOAT_DTYPE_KEY",
    "ONNX_TYPES",
    "PrecisionPlan",
    "MixedPrecisionPass",
    "plan_precisions",
    "apply_precisions",
    "to_low_precision",
]
