""":class:`CalibrationResult`: the calibrated ranges of a model's tensors, per algorithm.

A result is frozen data. It holds, for each requested algorithm, the ``[lo, hi]`` range of every
calibrated activation tensor, the minmax range of the weights (initializers) that were asked for, the
number of samples seen, and the tensors that could not be calibrated with the reason. It round-trips
through :meth:`CalibrationResult.to_dict` / :meth:`CalibrationResult.from_dict` (recipes, the cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lpot_ir.ir.quant import CalibAlgorithm, TensorRange

__all__ = ["CalibrationResult"]


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class CalibrationResult:
    """Calibrated ranges.

    Attributes:
        num_samples: how many calibration samples were run (0 when only weights were asked for).
        activations: algorithm -> tensor name -> range, for the activation tensors (graph inputs and
            node outputs of the main graph).
        weights: initializer name -> minmax range (weights always use minmax).
        skipped: tensor name -> why it has no range (e.g. it lives inside an If/Loop body, or is not float).
        options: the options the ranges were computed with (e.g. ``{"percentile": 99.999}``).
    """

    num_samples: int
    activations: Mapping[CalibAlgorithm, Mapping[str, TensorRange]]
    weights: Mapping[str, TensorRange] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "activations",
            _frozen({CalibAlgorithm(a): _frozen(r) for a, r in self.activations.items()}),
        )
        object.__setattr__(self, "weights", _frozen(self.weights))
        object.__setattr__(self, "skipped", _frozen(self.skipped))
        object.__setattr__(self, "options", _frozen(self.options))

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

    def ranges(self, algorithm: CalibAlgorithm | str) -> dict[str, TensorRange]:
        """Every activation tensor's range under ``algorithm`` (weights: see :attr:`weights`)."""
        algorithm = CalibAlgorithm(algorithm)
        if algorithm not in self.activations:
            self.range("", algorithm)  # raises the explanatory KeyError
        return dict(self.activations[algorithm])

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "activations": {
                a.value: {name: r.to_list() for name, r in ranges.items()} for a, ranges in self.activations.items()
            },
            "weights": {name: r.to_list() for name, r in self.weights.items()},
            "skipped": dict(self.skipped),
            "options": dict(self.options),
        }

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
        )
