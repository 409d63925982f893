"""What an accuracy-recovery rewrite did: one record per site (applied or declined, with the reason),
and the per-channel factors it used (stored in the recipe, so a replay needs no calibration data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from lpot_ir.errors import QuantizationError
from lpot_ir.passes.quantization.context import QuantPassResult

__all__ = [
    "SiteRecord",
    "RecoveryReport",
    "RecoveryPassResult",
    "SiteFactors",
    "float32_list",
    "constant_array",
    "set_constant",
]


@dataclass(frozen=True)
class SiteRecord:
    """One place a recovery rewrite looked at.

    Attributes:
        technique: ``"equalization"`` or ``"smoothquant"``.
        site: what the site is, e.g. ``"conv1 -> conv2"`` or a MatMul input's value name.
        applied: whether the rewrite changed the model there.
        reason: why it declined (empty when applied).
        detail: what it did (channels scaled, folded into which producer ...).
    """

    technique: str
    site: str
    applied: bool
    reason: str = ""
    detail: str = ""

    def __str__(self) -> str:
        verdict = f"applied: {self.detail}" if self.applied else f"declined: {self.reason}"
        return f"{self.technique} {self.site}: {verdict}"


@dataclass(frozen=True)
class SiteFactors:
    """The per-channel factors one site used: ``scale`` (and, for bias absorption, ``shift``), float32.

    They are stored rather than recomputed on replay: recomputing would need the calibration data, and
    float powers (SmoothQuant's ``alpha``) may round differently on another CPU.
    """

    scale: tuple[float, ...]
    shift: tuple[float, ...] | None = None

    @classmethod
    def from_arrays(cls, scale: np.ndarray, shift: np.ndarray | None = None) -> SiteFactors:
        return cls(float32_list(scale), float32_list(shift) if shift is not None else None)

    def scale_array(self) -> np.ndarray:
        return np.asarray(self.scale, dtype=np.float32)

    def shift_array(self) -> np.ndarray | None:
        return None if self.shift is None else np.asarray(self.shift, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scale": list(self.scale)}
        if self.shift is not None:
            out["shift"] = list(self.shift)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SiteFactors:
        shift = data.get("shift")
        return cls(
            tuple(float(np.float32(v)) for v in data["scale"]),
            tuple(float(np.float32(v)) for v in shift) if shift is not None else None,
        )


@dataclass
class RecoveryReport:
    """Sites a recovery pass applied and declined, and the factors it used (site key -> factors)."""

    technique: str
    sites: list[SiteRecord] = field(default_factory=list)
    factors: dict[str, SiteFactors] = field(default_factory=dict)
    iterations: int = 0

    @property
    def applied(self) -> list[SiteRecord]:
        return [s for s in self.sites if s.applied]

    @property
    def declined(self) -> list[SiteRecord]:
        return [s for s in self.sites if not s.applied]

    def apply(self, site: str, detail: str) -> None:
        self.sites.append(SiteRecord(self.technique, site, True, detail=detail))

    def decline(self, site: str, reason: str) -> None:
        self.sites.append(SiteRecord(self.technique, site, False, reason=reason))

    def __str__(self) -> str:
        lines = [f"{self.technique}: {len(self.applied)} applied, {len(self.declined)} declined"]
        lines += [f"  {s}" for s in self.sites]
        return "\n".join(lines)


@dataclass
class RecoveryPassResult(QuantPassResult):
    """A recovery pass's result: the common one plus its :class:`RecoveryReport` (``None`` when it was off)."""

    report: RecoveryReport | None = None


def float32_list(array: np.ndarray | Sequence[float]) -> tuple[float, ...]:
    """A float32 vector as exact Python floats (they round-trip through JSON bit for bit)."""
    return tuple(float(v) for v in np.asarray(array, dtype=np.float32).reshape(-1))


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The array of an initializer that is not a graph input (``None`` otherwise)."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """Replace an initializer's content (same name, dtype and shape)."""
    old = value.const_value
    if old is None:
        raise QuantizationError(f"'{value.name}' is not a constant; a recovery rewrite cannot change it.")
    array = np.ascontiguousarray(array, dtype=old.numpy().dtype).reshape(old.numpy().shape)
    value.const_value = ir.Tensor(array, name=value.name)
