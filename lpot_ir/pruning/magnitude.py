"""LPOT's basic magnitude pruning, framework-free: schedules, masks, name matching and the sparsity report.

A :class:`PruneSchedule` is one resolved pruner of ``pruning.approach.weight_compression``: which weights
it prunes and how their sparsity grows from ``initial_sparsity`` at ``start_epoch`` to ``target_sparsity``
at ``end_epoch`` (LPOT's ``BasicMagnitudePruner`` schedule, stepped every ``update_frequency`` epochs).
:func:`magnitude_mask` keeps the largest-magnitude weights; it prunes exactly ``round(n * sparsity)``
elements (ties broken by position), so the measured sparsity is the scheduled one.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lpot_ir.config.schema import Pruner, WeightCompression
from lpot_ir.errors import ConfigError

__all__ = [
    "SUPPORTED_PRUNE_TYPES",
    "UNSTRUCTURED_METHODS",
    "STRUCTURED_METHODS",
    "PruneSchedule",
    "resolve_schedules",
    "magnitude_mask",
    "select_weights",
    "LayerSparsity",
    "format_sparsity_table",
]

logger = logging.getLogger(__name__)

SUPPORTED_PRUNE_TYPES = ("basic_magnitude", "gradient_sensitivity")
UNSTRUCTURED_METHODS = ("per_tensor", "per_channel")
STRUCTURED_METHODS = ("filter", "channel")
_METHODS = UNSTRUCTURED_METHODS + STRUCTURED_METHODS


@dataclass(frozen=True)
class PruneSchedule:
    """One pruner with every field resolved (a pruner's ``None`` fields take ``weight_compression``'s).

    Attributes:
        names: the weights it prunes (empty: every Conv/Linear (Gemm/MatMul) weight).
        initial_sparsity: sparsity at ``start_epoch``.
        target_sparsity: sparsity from ``end_epoch`` on.
        start_epoch: the first epoch that prunes.
        end_epoch: the epoch at which ``target_sparsity`` is reached.
        update_frequency: epochs between sparsity steps.
        method: ``per_tensor`` (one threshold per weight) or ``per_channel`` (per output channel): single
            weights; ``filter`` (output channels) or ``channel`` (input channels): whole channels.
        prune_type: ``basic_magnitude`` or ``gradient_sensitivity`` (structured methods only).
    """

    names: tuple[str, ...]
    initial_sparsity: float
    target_sparsity: float
    start_epoch: int
    end_epoch: int
    update_frequency: float
    method: str = "per_tensor"
    prune_type: str = "basic_magnitude"

    @property
    def structured(self) -> bool:
        """Whether whole channels are pruned (``filter`` / ``channel``)."""
        return self.method in STRUCTURED_METHODS

    def sparsity_at(self, epoch: int) -> float:
        """The scheduled sparsity of ``epoch`` (0 before ``start_epoch``: nothing is pruned yet)."""
        if epoch < self.start_epoch:
            return 0.0
        if epoch >= self.end_epoch:
            return self.target_sparsity
        span = self.end_epoch - self.start_epoch
        steps = math.floor((epoch - self.start_epoch) / self.update_frequency) * self.update_frequency
        return self.initial_sparsity + (self.target_sparsity - self.initial_sparsity) * min(steps / span, 1.0)


def resolve_schedules(weight_compression: WeightCompression) -> tuple[PruneSchedule, ...]:
    """The pruners of a ``WeightCompression`` section, resolved; one pruner from its own fields if it lists none.

    Raises:
        ConfigError: an unsupported ``prune_type`` or ``method``, or a bad merged schedule.
    """
    wc = weight_compression
    pruners: tuple[Pruner | None, ...] = wc.pruners or (None,)
    schedules = []
    for index, pruner in enumerate(pruners):
        where = "pruning.approach.weight_compression" + (f".pruners[{index}]" if pruner is not None else "")
        own = pruner or Pruner()
        prune_type = own.prune_type or wc.prune_type
        method = own.method or wc.method
        if prune_type not in SUPPORTED_PRUNE_TYPES:
            at = where if own.prune_type else "pruning.approach.weight_compression"
            raise ConfigError(
                f"{at}.prune_type is '{prune_type}', which lpot-ir does not implement. Use prune_type: "
                f"{' or '.join(SUPPORTED_PRUNE_TYPES)}."
            )
        if method not in _METHODS:
            at = where if own.method else "pruning.approach.weight_compression"
            raise ConfigError(
                f"{at}.method is '{method}'; use one of {', '.join(_METHODS)} (per_tensor / per_channel prune single "
                "weights; filter / channel prune whole output / input channels)."
            )
        if prune_type == "gradient_sensitivity" and method not in STRUCTURED_METHODS:
            raise ConfigError(
                f"{where}: prune_type gradient_sensitivity ranks whole channels by |weight x gradient|; use it with "
                f"method filter or channel (method is '{method}'), or use basic_magnitude for single weights."
            )
        schedule = PruneSchedule(
            names=tuple(own.names) or tuple(wc.names),
            initial_sparsity=float(_first(own.initial_sparsity, wc.initial_sparsity)),
            target_sparsity=float(_first(own.target_sparsity, wc.target_sparsity)),
            start_epoch=int(_first(own.start_epoch, wc.start_epoch)),
            end_epoch=int(_first(own.end_epoch, wc.end_epoch)),
            update_frequency=float(_first(own.update_frequency, wc.update_frequency)),
            method=method,
            prune_type=prune_type,
        )
        _check_schedule(schedule, where)
        schedules.append(schedule)
    return tuple(schedules)


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _check_schedule(s: PruneSchedule, where: str) -> None:
    problem = None
    if not 0.0 <= s.initial_sparsity < 1.0 or not 0.0 <= s.target_sparsity < 1.0:
        problem = (
            f"sparsities must be in [0, 1), got initial {s.initial_sparsity} and target {s.target_sparsity}"
        )
    elif s.initial_sparsity > s.target_sparsity:
        problem = f"initial_sparsity {s.initial_sparsity} is above target_sparsity {s.target_sparsity}"
    elif s.start_epoch > s.end_epoch:
        problem = f"start_epoch {s.start_epoch} is after end_epoch {s.end_epoch}"
    elif s.update_frequency <= 0:
        problem = f"update_frequency must be positive, got {s.update_frequency}"
    if problem:
        raise ConfigError(
            f"{where}: {problem} (after merging the pruner with weight_compression's values). Fix the YAML values."
        )


def magnitude_mask(
    weight: np.ndarray, sparsity: float, *, method: str = "per_tensor", channel_axis: int = 0
) -> np.ndarray:
    """A boolean keep-mask that zeroes the ``round(n * sparsity)`` smallest-magnitude elements.

    Args:
        weight: the weight tensor.
        sparsity: the fraction to prune, in [0, 1).
        method: ``per_tensor`` ranks the whole tensor; ``per_channel`` ranks each slice along ``channel_axis``.
        channel_axis: the output-channel axis for ``per_channel``.
    """
    magnitude = np.abs(np.asarray(weight, dtype=np.float64))
    if method == "per_channel" and magnitude.ndim >= 2:
        rows = np.moveaxis(magnitude, channel_axis, 0).reshape(magnitude.shape[channel_axis], -1)
    else:
        rows = magnitude.reshape(1, -1)
    keep = np.ones(rows.shape, dtype=bool)
    k = int(round(rows.shape[1] * sparsity))
    if k > 0:
        order = np.argsort(rows, axis=1, kind="stable")[:, :k]
        np.put_along_axis(keep, order, False, axis=1)
    if method == "per_channel" and magnitude.ndim >= 2:
        moved = list(np.moveaxis(magnitude, channel_axis, 0).shape)
        return np.moveaxis(keep.reshape(moved), 0, channel_axis)
    return keep.reshape(magnitude.shape)


def select_weights(
    schedules: Sequence[PruneSchedule], available: Iterable[str], default: Sequence[str], *, kind: str
) -> list[tuple[str, PruneSchedule]]:
    """Assign weights to schedules: named ones must exist; a schedule without names takes ``default``.

    Args:
        schedules: the resolved pruners.
        available: every weight name that may be named (for the error's suggestion).
        default: the weights an unnamed pruner prunes (Conv/Linear weights).
        kind: ``"parameter"`` or ``"initializer"``, for messages.

    Raises:
        ConfigError: a name matches no weight (the closest is named), a weight is claimed by two
            pruners, or nothing is left to prune.
    """
    available = list(available)
    known = set(available)
    owner: dict[str, int] = {}
    chosen: list[tuple[str, PruneSchedule]] = []
    for index, schedule in enumerate(schedules):
        for name in schedule.names or tuple(default):
            if name not in known:
                close = difflib.get_close_matches(name, available, n=1, cutoff=0.0)
                hint = f" The closest {kind} is '{close[0]}'." if close else ""
                raise ConfigError(
                    f"pruning.approach.weight_compression names '{name}', but the model has no {kind} of that name."
                    f"{hint} Names are the model's {kind} names exactly (e.g. 'fc1.weight'); leave names empty to "
                    "prune every Conv/Linear weight."
                )
            if name in owner:
                raise ConfigError(
                    f"The weight '{name}' is claimed by pruner {owner[name]} and pruner {index} of "
                    "pruning.approach.weight_compression.pruners; give each pruner its own names."
                )
            owner[name] = index
            chosen.append((name, schedule))
    if not chosen:
        hint = (
            " Weights computed by nodes are folded into initializers first, so the model has no constant weight "
            "feeding a Conv, ConvTranspose, Gemm or MatMul."
            if kind == "initializer"
            else ""
        )
        raise ConfigError(
            f"Nothing to prune: the model has no Conv/Linear (Gemm/MatMul) weight stored as a {kind} and "
            f"pruning.approach.weight_compression names none. List the weights to prune under names.{hint}"
        )
    return chosen


@dataclass(frozen=True)
class LayerSparsity:
    """The measured sparsity of one pruned weight.

    Attributes:
        name: the parameter / initializer name.
        shape: its shape.
        zeros: how many elements are zero.
        sparsity: ``zeros / size``.
        target: the pruner's target sparsity.
    """

    name: str
    shape: tuple[int, ...]
    zeros: int
    sparsity: float
    target: float

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(np.prod(self.shape)) if self.shape else 1

    @classmethod
    def measure(cls, name: str, weight: np.ndarray, target: float) -> LayerSparsity:
        """Measure ``weight``'s sparsity."""
        weight = np.asarray(weight)
        zeros = int(weight.size - np.count_nonzero(weight))
        return cls(
            name, tuple(int(d) for d in weight.shape), zeros, zeros / max(weight.size, 1), float(target)
        )


def format_sparsity_table(report: Sequence[LayerSparsity]) -> str:
    """A plain-text table: one row per weight and a total row."""
    width = max([len("weight"), *(len(r.name) for r in report)])
    lines = [f"{'weight':<{width}}  {'shape':<18} {'elements':>9} {'sparsity':>9} {'target':>7}"]
    for r in report:
        shape = "x".join(str(d) for d in r.shape)
        lines.append(f"{r.name:<{width}}  {shape:<18} {r.size:>9} {r.sparsity:>9.2%} {r.target:>7.0%}")
    total = sum(r.size for r in report)
    zeros = sum(r.zeros for r in report)
    lines.append(f"{'total':<{width}}  {'':<18} {total:>9} {zeros / max(total, 1):>9.2%}")
    return "\n".join(lines)
