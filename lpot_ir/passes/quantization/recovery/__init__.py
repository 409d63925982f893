"""Accuracy recovery that keeps ops in INT8: FP32 rewrites run before calibration.

* :class:`CrossLayerEqualizationPass` (``RecoveryConfig.equalization``): per-channel scales that equalize
  the weight ranges of Conv pairs, depthwise pairs included (Nagel et al. 2019).
* :class:`SmoothQuantPass` (``RecoveryConfig.smoothquant_alpha``): per-input-channel scales that move
  activation outliers of MatMul/Gemm inputs into the weights (Xiao et al. 2022).

Each pass records every site it applied or declined (with the reason) in a :class:`RecoveryReport`
and the per-channel factors it used, which recipes store so that a replay needs no data.
"""

from __future__ import annotations

from lpot_ir.passes.quantization.recovery.equalization import (
    CrossLayerEqualizationPass,
    EqualizationPair,
    equalization_statistics,
    find_pairs,
)
from lpot_ir.passes.quantization.recovery.report import RecoveryReport, SiteFactors, SiteRecord
from lpot_ir.passes.quantization.recovery.smoothquant import (
    SmoothGroup,
    SmoothQuantPass,
    find_groups,
    smoothquant_statistics,
)

__all__ = [
    "CrossLayerEqualizationPass",
    "EqualizationPair",
    "RecoveryReport",
    "SiteFactors",
    "SiteRecord",
    "SmoothGroup",
    "SmoothQuantPass",
    "equalization_statistics",
    "find_groups",
    "find_pairs",
    "smoothquant_statistics",
]
