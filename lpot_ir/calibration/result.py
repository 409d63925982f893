""":class:`CalibrationResult`: the calibrated ranges of a model's tensors, per algorithm.

A result is frozen data. It holds, for each requested algorithm, the ``[lo, hi]`` range of every
calibrated activation tensor, the minmax range of the weights (initializers) that were asked for, the
per-channel minmax of the tensors asked for by channel (:class:`ChannelRange`), the number of samples
seen, and the tensors that could not be calibrated with the reason. It round-trips
through :meth:`CalibrationResult.to_dict` / :meth:`CalibrationResult.from_dict` (recipes, the cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from lpot_ir.ir.quant import CalibAlgorithm, TensorRange

__all__ = ["CalibrationResult", "ChannelRange"]


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ChannelRange:
    """The observed per-channel ``[lo, hi]`` of one activation tensor along ``axis``.

    A channel that never held a finite value has ``lo = +inf`` and ``hi = -inf``.

    Attributes:
        axis: the channel axis, as requested (negative counts from the end).
        lo: per-channel minimum.
        hi: per-channel maximum.
    """

    axis: int
    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @classmethod
    def from_arrays(cls, axis: int, lo: np.ndarray, hi: np.ndarray) -> ChannelRange:
        return cls(int(axis), tuple(float(v) for v in lo), tuple(float(v) for v in hi))

    @property
    def channels(self) -> int:
        return len(self.hi)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` as float64 arrays."""
        return np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)

    def absmax(self) -> np.ndarray:
        """Per-channel ``max(|lo|, |hi|)`` (float64; 0 for a channel that held no finite value)."""
        lo, hi = self.arrays()
        out = np.maximum(np.abs(lo), np.abs(hi))
        return np.where(np.isfinite(out), out, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "lo": list(self.lo), "hi": list(self.hi)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelRange:
        return cls(int(data["axis"]), tuple(float(v) for v in data["lo"]), tuple(float(v) for v in data["hi"]))


@dataclass(frozen=True)
class CalibrationResult:
    """Calibrated ranges.

    Attributes:
        num_samples: how many calibration samples were run (0 when only weights were asked for).
        activations: algorithm -> tensor name -> range, for the activation tensors (graph inputs and
            node outputs, in every graph: values inside If branches and Loop/Scan bodies too).
        weights: initializer name -> minmax range (weights always use minmax).
        skipped: tensor name -> why it has no range (e.g. no calibration feed took the If branch it lives in, or it is not float).
        options: the options the ranges were computed with (e.g. ``{"percentile": 99.999}``).
        channels: tensor name -> per-channel minmax, for the tensors calibrated with a channel axis.
    """

    num_samples: int
    activations: Mapping[CalibAlgorithm, Mapping[str, TensorRange]]
    weights: Mapping[str, TensorRange] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    channels: Mapping[str, ChannelRange] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "activations",
            _frozen({CalibAlgorithm(a): _frozen(r) for a, r in self.activations.items()}),
        )
        object.__setattr__(self, "weights", _frozen(self.weights))
        object.__setattr__(self, "skipped", _frozen(self.skipped))
        object.__setattr__(self, "options", _frozen(self.options))
        object.__setattr__(self, "channels", _frozen(self.channels))

    @property
    def algorithms(self) -> tuple[CalibAlgorithm, ...]:
        """The algorithms with activation ranges."""
        return tuple(self.activations)

    @property
    def tensors(self) -> tuple[str, ...]:
        """Every tensor with a range: activations (in calibration order), then weights."""
        names: dict[str, None] = {}
        for ranges in self.activations.values():
            names.update(dict.fromkeys(ranges))
        names.update(dict.fromkeys(self.weights))
        return tuple(names)

    def range(self, value_name: str, algorithm: CalibAlgorithm | str) -> TensorRange:
        """The range of one tensor under ``algorithm`` (a weight's range is its minmax for every algorithm).

        Raises:
            KeyError: the tensor was not calibrated (see :attr:`skipped`) or ``algorithm`` was not requested.
        """
        if value_name in self.weights:
            return self.weights[value_name]
        algorithm = CalibAlgorithm(algorithm)
        if algorithm not in self.activations:
            requested = ", ".join(a.value for a in self.activations) or "none"
            raise KeyError(
                f"Calibration did not compute {algorithm.value!r} ranges (computed: {requested}); "
                f"calibrate again with algorithms including {algorithm.value!r}."
            )
        ranges = self.activations[algorithm]
        if value_name not in ranges:
            why = self.skipped.get(value_name, "it was not among the calibrated tensors")
            raise KeyError(f"No calibrated range for tensor {value_name!r}: {why}.")
        return ranges[value_name]

    def channel_range(self, value_name: str) -> ChannelRange:
        """The per-channel minmax of one activation tensor.

        Raises:
            KeyError: the tensor was not calibrated with a channel axis.
        """
        if value_name not in self.channels:
            why = self.skipped.get(value_name, "it was not calibrated with a channel axis (calibrate(channel_axes=...))")
            raise KeyError(f"No per-channel range for tensor {value_name!r}: {why}.")
        return self.channels[value_name]

    def ranges(self, algorithm: CalibAlgorithm | str) -> dict[str, TensorRange]:
        """Every activation tensor's range under ``algorithm`` (weights: see :attr:`weights`)."""
        algorithm = CalibAlgorithm(algorithm)
        if algorithm not in self.activations:
            self.range("", algorithm)  # raises the explanatory KeyError
        return dict(self.activations[algorithm])

    def to_dict(self) -> dict[str, Any]:
        out = {
            "num_samples": self.num_samples,
            "activations": {
                a.value: {name: r.to_list() for name, r in ranges.items()} for a, ranges in self.activations.items()
            },
            "weights": {name: r.to_list() for name, r in self.weights.items()},
            "skipped": dict(self.skipped),
            "options": dict(self.options),
        }
        if self.channels:  # omitted when empty: results without channel statistics serialize as before
            out["channels"] = {name: c.to_dict() for name, c in self.channels.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationResult:
        return cls(
            num_samples=int(data["num_samples"]),
            activations={
                CalibAlgorithm(a): {name: TensorRange.from_list(r) for name, r in ranges.items()}
                for a, ranges in data.get("activations", {}).items()
            },
            weights={name: TensorRange.from_list(r) for name, r in data.get("weights", {}).items()},
            skipped=dict(data.get("skipped", {})),
            options=dict(data.get("options", {})),
            channels={name: ChannelRange.from_dict(c) for name, c in data.get("channels", {}).items()},
        )
