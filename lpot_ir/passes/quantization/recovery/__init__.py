"""Accuracy recovery that keeps ops in INT8: FP32 rewrites before calibration, and passes on the Q/DQ model.

========================  ====================================  ===========================================
step                      switch                                what it does
========================  ====================================  ===========================================
cross-layer-equalization  ``RecoveryConfig.equalization``       ``int8-prepare``: per-channel scales that
                                                                equalize the weight ranges of Conv pairs,
                                                                depthwise pairs included (Nagel et al. 2019)
smoothquant               ``RecoveryConfig.smoothquant_alpha``  ``int8-prepare``: per-input-channel scales
                                                                that move activation outliers of MatMul/Gemm
                                                                inputs into the weights (Xiao et al. 2022)
range-search              ``RecoveryConfig.range_search``       between ``annotate`` and ``insert-qdq``: each
                                                                activation's calibration algorithm and
                                                                scheme by consumer-weighted error
weight-rounding           ``RecoveryConfig.weight_rounding``    ``int8-refine``: MSE clipping of the weights,
                                                                then AdaRound (Nagel et al. 2020)
bias-correction           ``RecoveryConfig.bias_correction``    ``int8-refine``: each quantized layer's mean
                                                                output shift folded into its bias
========================  ====================================  ===========================================

The prepare-stage rewrites record every site they applied or declined (with the reason) in a
:class:`RecoveryReport` and the per-channel factors they used, which recipes store so that a replay needs
no data; :func:`equalize` and :func:`smooth` run the algorithms outside a pipeline. The quantization-stage
passes record their decisions as ``QuantPassResult.record`` (recipe ``records``; encoders in ``record``);
AdaRound and bias correction share the layer-wise engine (``layerwise``, ``segments``, ``layers``).
"""

from __future__ import annotations

from lpot_ir.passes.quantization.recovery.bias_correction import BiasCorrectionPass
from lpot_ir.passes.quantization.recovery.equalization import (
    CrossLayerEqualizationPass,
    EqualizationPair,
    equalization_statistics,
    equalize,
    find_pairs,
)
from lpot_ir.passes.quantization.recovery.prepare import (
    TECHNIQUES,
    factors_from_dict,
    factors_of,
    factors_to_dict,
    recovery_statistics,
)
from lpot_ir.passes.quantization.recovery.range_search import RangeSearchPass
from lpot_ir.passes.quantization.recovery.report import (
    RecoveryPassResult,
    RecoveryReport,
    SiteFactors,
    SiteRecord,
)
from lpot_ir.passes.quantization.recovery.smoothquant import (
    SmoothGroup,
    SmoothQuantPass,
    find_groups,
    smooth,
    smoothquant_statistics,
)
from lpot_ir.passes.quantization.recovery.weight_rounding import WeightRoundingPass

__all__ = [
    "TECHNIQUES",
    "BiasCorrectionPass",
    "CrossLayerEqualizationPass",
    "EqualizationPair",
    "RangeSearchPass",
    "RecoveryPassResult",
    "RecoveryReport",
    "SiteFactors",
    "SiteRecord",
    "SmoothGroup",
    "SmoothQuantPass",
    "WeightRoundingPass",
    "equalization_statistics",
    "equalize",
    "factors_from_dict",
    "factors_of",
    "factors_to_dict",
    "find_groups",
    "find_pairs",
    "recovery_statistics",
    "smooth",
    "smoothquant_statistics",
]
