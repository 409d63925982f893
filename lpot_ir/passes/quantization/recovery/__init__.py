"""Accuracy-recovery passes that keep ops in INT8 (turned on by :class:`~lpot_ir.ir.quant.RecoveryConfig`).

Each technique is a self-contained module of this package, imported by its full path:

* ``range_search``: per-tensor choice of the calibration algorithm and scheme by the error it causes;
* ``weight_rounding``: MSE-optimal per-channel weight clipping, and AdaRound (learned rounding);
* ``bias_correction``: the mean output shift of each quantized layer, folded into its int32 bias;
* ``layerwise`` (the engine AdaRound and bias correction share), ``layers`` (Conv/Gemm/MatMul as matrix
  products), ``record`` (what a recipe stores so the model is rebuilt bit for bit without data);
* ``equalization``, ``smoothquant``: FP32 rewrites applied before calibration.
"""

from __future__ import annotations

__all__: list[str] = []
