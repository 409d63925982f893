"""Accuracy-recovery passes that keep ops in INT8 (turned on by :class:`~lpot_ir.ir.quant.RecoveryConfig`).

Each technique is a self-contained module of this package, imported by its full path:

* ``range_search`` (step ``range-search``): per-tensor calibration algorithm and scheme by the error it causes;
* ``weight_rounding`` (step ``weight-rounding``): MSE-optimal per-channel weight clipping, and AdaRound;
* ``bias_correction`` (step ``bias-correction``): each quantized layer's mean output shift, folded into its bias;
* ``layerwise`` (the engine AdaRound and bias correction share), ``segments`` (running a model piece by
  piece), ``layers`` (Conv/Gemm/MatMul as matrix products), ``record`` (how recipes store the decisions);
* ``equalization``, ``smoothquant``: FP32 rewrites applied before calibration.
"""

from __future__ import annotations

__all__: list[str] = []
