"""What the ``int8-prepare`` stage's recovery rewrites share with their runner: the statistics they read
(one calibration of the FP32 model serves every setting) and their factors as recipe data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

from lpot_ir.passes.quantization.recovery import equalization, smoothquant
from lpot_ir.passes.quantization.recovery.report import RecoveryReport, SiteFactors

__all__ = ["TECHNIQUES", "recovery_statistics", "factors_of", "factors_to_dict", "factors_from_dict"]

TECHNIQUES = (equalization.TECHNIQUE, smoothquant.TECHNIQUE)
"""The prepare-stage techniques, in the order the stage runs them."""


def recovery_statistics(model: ir.Model) -> dict[str, int]:
    """Activation name -> channel axis, for every prepare rewrite any setting could run (one calibration for all)."""
    wanted = dict(equalization.equalization_statistics(model))
    wanted.update(smoothquant.smoothquant_statistics(model))
    return wanted


def factors_of(reports: Mapping[str, RecoveryReport]) -> dict[str, dict[str, SiteFactors]]:
    """Technique -> site -> factors of the reports that used any (what a recipe stores)."""
    return {name: dict(report.factors) for name, report in reports.items() if report.factors}


def factors_to_dict(factors: Mapping[str, Mapping[str, SiteFactors]]) -> dict[str, dict[str, Any]]:
    """Technique -> site -> factors as JSON-able data (sorted, so equal factors give equal text)."""
    return {
        technique: {site: f.to_dict() for site, f in sorted(sites.items())}
        for technique, sites in sorted(factors.items())
        if sites
    }


def factors_from_dict(data: Mapping[str, Any]) -> dict[str, dict[str, SiteFactors]]:
    """The inverse of :func:`factors_to_dict` (``ValueError``/``KeyError`` on malformed data)."""
    unknown = sorted(set(data) - set(TECHNIQUES))
    if unknown:
        raise ValueError(f"unknown recovery technique(s) {unknown}; known: {list(TECHNIQUES)}")
    return {
        technique: {str(site): SiteFactors.from_dict(f) for site, f in dict(sites).items()}
        for technique, sites in data.items()
    }
