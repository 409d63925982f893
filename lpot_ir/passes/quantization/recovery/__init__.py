"""Accuracy recovery that keeps ops in INT8: FP32 rewrites in the ``int8-prepare`` stage (before calibration).

========================  ====================================  ===========================================
step                      switch                                what it does
========================  ====================================  ===========================================
cross-layer-equalization  ``RecoveryConfig.equalization``       per-channel scales that equalize the weight
                                                                ranges of Conv pairs, depthwise pairs
                                                                included (Nagel et al. 2019)
smoothquant               ``RecoveryConfig.smoothquant_alpha``  per-input-channel scales that move
                                                                activation outliers of MatMul/Gemm inputs
                                                                into the weights (Xiao et al. 2022)
========================  ====================================  ===========================================

Each records every site it applied or declined (with the reason) in a :class:`RecoveryReport` and the
per-channel factors it used, which recipes store so that a replay needs no data. :func:`equalize` and
:func:`smooth` run the algorithms outside a pipeline.
"""

from __future__ import annotations

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

__all__ = [
    "TECHNIQUES",
    "CrossLayerEqualizationPass",
    "EqualizationPair",
    "RecoveryPassResult",
    "RecoveryReport",
    "SiteFactors",
    "SiteRecord",
    "SmoothGroup",
    "SmoothQuantPass",
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
