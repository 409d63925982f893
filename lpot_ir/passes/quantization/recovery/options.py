""":class:`RecoveryOptions`: the knobs of the data-driven recovery passes (samples, AdaRound's budget).

:class:`~lpot_ir.ir.quant.RecoveryConfig` says *which* recovery passes run (the tuning strategy switches
them per trial); these options say *how much work* they may do, and are the same for every trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RecoveryOptions", "REFERENCE_FLOPS"]

REFERENCE_FLOPS = 20e9
"""Floating-point operations per second of the reference core that converts AdaRound's budgets (seconds)
into a fixed amount of work, so results do not depend on the machine's speed or load. Measured on the
development machine (one AVX-512 core, numpy with OpenBLAS): float32 matrix products of AdaRound's sizes
run at 20-40 GFLOP/s there, so a budget of N seconds takes about N seconds or less on one such core."""


@dataclass(frozen=True)
class RecoveryOptions:
    """How much work the data-driven recovery passes may do.

    Attributes:
        samples: calibration samples used by bias correction, AdaRound and range search (the first ones
            of the calibration data; fewer if it holds fewer).
        threads: ONNX Runtime intra-op threads for their model runs (``None``: all cores).
        adaround_iterations: Adam steps per layer (fewer when the budget says so).
        adaround_batch: output positions (input rows of im2col) per step.
        adaround_positions: at most this many output positions kept per layer (sampled uniformly from the
            calibration samples); a layer with ``K`` inputs per output channel keeps ``max(512, 32 K)`` of them.
        adaround_seconds: AdaRound's total budget, in seconds of the reference core (:data:`REFERENCE_FLOPS`).
        adaround_layer_seconds: the budget of one layer, same unit.
        adaround_min_iterations: a layer that cannot get this many steps within the budgets keeps the
            rounding it had (nearest, or MSE clipping).
        adaround_regularization: weight of the rounding regularizer relative to the normalized output error.
        adaround_learning_rate: Adam's step size on the rounding variables.
        range_search_margin: range search keeps the configured algorithm and scheme unless another one
            lowers the estimated error by more than this fraction.
        seed: seed of the position sampling (results are deterministic for a given seed).
    """

    samples: int = 32
    threads: int | None = None
    adaround_iterations: int = 300
    adaround_batch: int = 128
    adaround_positions: int = 2048
    adaround_seconds: float = 30.0
    adaround_layer_seconds: float = 3.0
    adaround_min_iterations: int = 50
    adaround_regularization: float = 10.0
    adaround_learning_rate: float = 0.1
    range_search_margin: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "adaround_iterations", "adaround_batch", "adaround_positions", "adaround_min_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"RecoveryOptions.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("adaround_seconds", "adaround_layer_seconds", "adaround_regularization", "range_search_margin"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"RecoveryOptions.{name} must not be negative, got {getattr(self, name)}")
        if not float(self.adaround_learning_rate) > 0:
            raise ValueError(f"RecoveryOptions.adaround_learning_rate must be positive, got {self.adaround_learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecoveryOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown recovery option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))
