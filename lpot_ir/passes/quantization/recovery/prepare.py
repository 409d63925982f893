"""The FP32 rewrites a :class:`~lpot_ir.ir.quant.RecoveryConfig` asks for, run in order on a copy of the
optimized FP32 model before it is calibrated: cross-layer equalization, then SmoothQuant.

:func:`recovery_statistics` names the activations whose per-channel ranges the rewrites read (one
calibration of the FP32 model serves every setting); :func:`prepare_model` applies them and returns
what each did, with the factors a recipe stores. Given ``factors`` (from a recipe) it replays exactly
those, without statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from lpot_ir.calibration.result import ChannelRange
from lpot_ir.errors import QuantizationError
from lpot_ir.ir.quant import RecoveryConfig
from lpot_ir.passes.quantization.recovery.equalization import (
    CrossLayerEqualizationPass,
    equalization_statistics,
)
from lpot_ir.passes.quantization.recovery.report import RecoveryReport, SiteFactors
from lpot_ir.passes.quantization.recovery.smoothquant import SmoothQuantPass, smoothquant_statistics

__all__ = [
    "PrepareSettings",
    "PrepareResult",
    "recovery_statistics",
    "prepare_model",
    "factors_from_dict",
    "factors_to_dict",
]

EQUALIZATION = "equalization"
SMOOTHQUANT = "smoothquant"


@dataclass(frozen=True)
class PrepareSettings:
    """The part of a :class:`RecoveryConfig` that rewrites the FP32 model (the key of a prepared model)."""

    equalization: bool = False
    smoothquant_alpha: float | None = None

    @classmethod
    def from_recovery(cls, recovery: RecoveryConfig) -> PrepareSettings:
        return cls(recovery.equalization, recovery.smoothquant_alpha)

    @property
    def active(self) -> bool:
        return self.equalization or self.smoothquant_alpha is not None


@dataclass
class PrepareResult:
    """What :func:`prepare_model` did: one report per technique that ran, and the factors it used."""

    reports: dict[str, RecoveryReport] = field(default_factory=dict)

    @property
    def factors(self) -> dict[str, dict[str, SiteFactors]]:
        return {name: dict(r.factors) for name, r in self.reports.items() if r.factors}

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.reports.values()) or "no recovery rewrite"


def recovery_statistics(model: ir.Model) -> dict[str, int]:
    """Activation name -> channel axis, for every rewrite any setting could run (one calibration for all)."""
    wanted = dict(equalization_statistics(model))
    wanted.update(smoothquant_statistics(model))
    return wanted


def prepare_model(
    model: ir.Model,
    settings: PrepareSettings,
    channel_ranges: Mapping[str, ChannelRange] | None = None,
    *,
    factors: Mapping[str, Mapping[str, SiteFactors]] | None = None,
) -> PrepareResult:
    """Rewrite ``model`` in place for ``settings``.

    Args:
        model: a copy of the optimized FP32 model.
        settings: which rewrites to run.
        channel_ranges: per-channel ranges of the values :func:`recovery_statistics` names.
        factors: replay these factors (technique -> site -> factors, from a recipe) instead of computing
            them; a technique that is on but has no entry changes nothing.

    Raises:
        QuantizationError: SmoothQuant is on, no factors are given, and there are no statistics.
    """
    result = PrepareResult()
    if settings.equalization:
        replay = dict(factors.get(EQUALIZATION, {})) if factors is not None else None
        cle = CrossLayerEqualizationPass(channel_ranges=channel_ranges, factors=replay)
        cle(model)
        result.reports[EQUALIZATION] = cle.report
    if settings.smoothquant_alpha is not None:
        replay = dict(factors.get(SMOOTHQUANT, {})) if factors is not None else None
        if replay is None and channel_ranges is None:
            raise QuantizationError(
                "SmoothQuant needs the per-channel ranges of the MatMul/Gemm inputs from calibration data, but "
                "none was given. Pass calib_dataloader= (Python) or --calib DATA (CLI), or set "
                "recovery.smoothquant_alpha to null."
            )
        sq = SmoothQuantPass(settings.smoothquant_alpha, channel_ranges=channel_ranges, factors=replay)
        sq(model)
        result.reports[SMOOTHQUANT] = sq.report
    return result


def factors_to_dict(factors: Mapping[str, Mapping[str, SiteFactors]]) -> dict[str, dict[str, Any]]:
    """Technique -> site -> factors as JSON-able data (sorted, so equal factors give equal text)."""
    return {
        technique: {site: f.to_dict() for site, f in sorted(sites.items())}
        for technique, sites in sorted(factors.items())
        if sites
    }


def factors_from_dict(data: Mapping[str, Any]) -> dict[str, dict[str, SiteFactors]]:
    """The inverse of :func:`factors_to_dict` (``ValueError``/``KeyError`` on malformed data)."""
    known = {EQUALIZATION, SMOOTHQUANT}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown recovery technique(s) {unknown}; known: {sorted(known)}")
    return {
        technique: {str(site): SiteFactors.from_dict(f) for site, f in dict(sites).items()}
        for technique, sites in data.items()
    }
