"""Structured pruning, framework-free: which channel groups a pruner prunes, how channels are ranked, and
which parameter slices a pruned channel zeroes.

The channel groups come from the IR (:func:`lpot_ir.passes.pruning.find_channel_groups`), so the torch
pruner, the one-shot ONNX pruner and the ``shrink-pruned-channels`` rewrite agree on what a channel is:

* ``method: filter`` prunes a group's channels where they are produced: the sources' output channels
  (weights and biases) and the per-channel parameters along the way (BatchNorm scale and shift,
  depthwise Conv weights and bias). The channel is then exactly zero everywhere.
* ``method: channel`` prunes them where they are read: the sinks' input channels. Nothing reads the
  channel any more.

Either way the rewrite removes the channel from every tensor of the group. Ranking:
``basic_magnitude`` uses the L2 norm of each channel's slices (each weight's norms divided by their
mean, so weights of different sizes count alike, summed over the group's weights);
``gradient_sensitivity`` uses the first-order Taylor estimate of the loss change ``|sum(w * dL/dw)|``
over the channel's slices, accumulated over training batches (torch only).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lpot_ir.errors import ConfigError
from lpot_ir.passes.pruning.channels import ChannelGroup, ChannelParam, GroupAnalysis
from lpot_ir.pruning.magnitude import PruneSchedule

__all__ = [
    "ChannelSparsity",
    "format_channel_table",
    "group_name",
    "structured_targets",
    "mask_params",
    "score_params",
    "channel_scores",
    "choose_channels",
    "per_channel_sum",
    "zero_channels",
]

_FILTER_ROLES = ("weight", "bias", "depthwise", "depthwise_bias", "bn_scale", "bn_shift")


@dataclass(frozen=True)
class ChannelSparsity:
    """The measured channel sparsity of one pruned channel group.

    Attributes:
        name: the group's weights (its sources' for ``filter``, its sinks' for ``channel``).
        channels: channels in the group.
        pruned: channels pruned (all their slices zero).
        target: the pruner's target sparsity.
        method: ``filter`` or ``channel``.
    """

    name: str
    channels: int
    pruned: int
    target: float
    method: str = "filter"

    @property
    def sparsity(self) -> float:
        return self.pruned / max(self.channels, 1)


def format_channel_table(report: Sequence[ChannelSparsity]) -> str:
    """A plain-text table: one row per channel group and a total row."""
    width = max([len("channels of"), *(len(r.name) for r in report)])
    lines = [f"{'channels of':<{width}}  {'method':<8} {'channels':>8} {'pruned':>7} {'sparsity':>9} {'target':>7}"]
    for r in report:
        lines.append(
            f"{r.name:<{width}}  {r.method:<8} {r.channels:>8} {r.pruned:>7} {r.sparsity:>9.2%} {r.target:>7.0%}"
        )
    total = sum(r.channels for r in report)
    pruned = sum(r.pruned for r in report)
    lines.append(f"{'total':<{width}}  {'':<8} {total:>8} {pruned:>7} {pruned / max(total, 1):>9.2%}")
    return "\n".join(lines)


def _weights(group: ChannelGroup, method: str) -> list[str]:
    params = group.sources if method == "filter" else group.sinks
    role = "weight" if method == "filter" else "input_weight"
    return list(dict.fromkeys(p.value for p in params if p.role == role))


def group_name(group: ChannelGroup, method: str) -> str:
    """A readable name: the group's first weight, and how many more it has."""
    names = _weights(group, method)
    return names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "") if names else f"group {group.id}"


def mask_params(group: ChannelGroup, method: str) -> list[ChannelParam]:
    """The slices that pruning a channel of ``group`` zeroes (see the module docstring)."""
    if method == "filter":
        return [p for p in (*group.sources, *group.members) if p.role in _FILTER_ROLES]
    return list(group.sinks)


def score_params(group: ChannelGroup, method: str) -> list[ChannelParam]:
    """The weights whose slices rank the channels: the sources' (filter) or the sinks' (channel)."""
    role = "weight" if method == "filter" else "input_weight"
    return [p for p in (group.sources if method == "filter" else group.sinks) if p.role == role]


def structured_targets(
    analysis: GroupAnalysis,
    schedules: Sequence[PruneSchedule],
    *,
    available: Iterable[str] | None = None,
    kind: str = "initializer",
) -> list[tuple[ChannelGroup, PruneSchedule]]:
    """Assign channel groups to the structured pruners.

    Args:
        analysis: the model's channel groups.
        schedules: the resolved pruners (the unstructured ones are ignored).
        available: names that can be masked (a torch module's parameters); ``None``: every initializer.
        kind: ``"parameter"`` or ``"initializer"``, for messages.

    Raises:
        ConfigError: a name is no weight of a channel group (closest given), names a group the rewrite
            cannot shrink (its reason given), or a group is claimed by two pruners.
    """
    can_mask = set(available) if available is not None else None
    owner: dict[int, int] = {}
    chosen: list[tuple[ChannelGroup, PruneSchedule]] = []
    for index, schedule in enumerate(schedules):
        if not schedule.structured:
            continue
        method = schedule.method
        by_name: dict[str, list[ChannelGroup]] = {}
        for group in analysis.groups.values():
            for name in _weights(group, method):
                by_name.setdefault(name, []).append(group)
        if schedule.names:
            picked: list[ChannelGroup] = []
            for name in schedule.names:
                groups = by_name.get(name)
                if not groups:
                    close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.0)
                    hint = f" The closest is '{close[0]}'." if close else ""
                    role = "produces" if method == "filter" else "reads"
                    raise ConfigError(
                        f"pruning.approach.weight_compression names '{name}' for method {method}, but no Conv, Gemm or "
                        f"MatMul weight of that name {role} a channel group of the model.{hint}"
                    )
                for group in groups:
                    reason = _unusable(group, method, can_mask, kind)
                    if reason:
                        raise ConfigError(
                            f"The channels of '{name}' cannot be pruned with method {method}: {reason}. Remove it from "
                            "names, or prune it with method per_tensor / per_channel (single weights)."
                        )
                    picked.append(group)
        else:
            picked = [g for g in analysis.groups.values() if _weights(g, method) and not _unusable(g, method, can_mask, kind)]
        for group in {g.id: g for g in picked}.values():
            if group.id in owner:
                if schedule.names:
                    raise ConfigError(
                        f"The channels of '{group_name(group, method)}' are claimed by pruner {owner[group.id]} and "
                        f"pruner {index} of pruning.approach.weight_compression.pruners; give each pruner its own names."
                    )
                continue
            owner[group.id] = index
            chosen.append((group, schedule))
    if any(s.structured for s in schedules) and not chosen:
        declined = [g for g in analysis.groups.values() if g.sources and g.decline]
        why = f" (e.g. the channels of '{group_name(declined[0], 'filter')}': {declined[0].decline})" if declined else ""
        raise ConfigError(
            "Nothing to prune structurally: the model has no channel group the rewrite can shrink" + why + ". "
            "Use method per_tensor / per_channel for single weights."
        )
    return chosen


def _unusable(group: ChannelGroup, method: str, available: set[str] | None, kind: str) -> str | None:
    if not group.prunable:
        return group.decline or "no compute node reads the channels"
    if available is not None:
        missing = [p.value for p in mask_params(group, method) if p.value not in available]
        if missing:
            return f"'{missing[0]}' is not a {kind} of the model (a computed or folded tensor)"
    return None


def per_channel_sum(array: np.ndarray, param: ChannelParam, channels: int) -> np.ndarray:
    """Sum ``array`` (shaped like the param) over everything but the param's channels: one value per channel."""
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), param.axis, 0)
    flat = moved.reshape(moved.shape[0], -1).sum(axis=1)
    index = param.segment.indices(np.arange(channels)).reshape(channels, param.segment.repeat)
    return flat[index].sum(axis=1)


def channel_scores(group: ChannelGroup, method: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Magnitude score of each channel: the L2 norms of its weight slices, each weight's norms divided by
    their mean (weights of different sizes count alike), summed over the group's weights."""
    score = np.zeros(group.channels)
    for param in score_params(group, method):
        norms = np.sqrt(per_channel_sum(np.square(arrays[param.value]), param, group.channels))
        mean = norms.mean()
        score += norms / mean if mean > 0 else norms
    return score


def choose_channels(score: np.ndarray, sparsity: float) -> list[int]:
    """The ``round(C * sparsity)`` lowest-scoring channels (ties by position), keeping at least one."""
    count = min(int(round(len(score) * sparsity)), len(score) - 1)
    if count <= 0:
        return []
    return sorted(int(i) for i in np.argsort(score, kind="stable")[:count])


def zero_channels(array: np.ndarray, param: ChannelParam, channels: Sequence[int]) -> np.ndarray:
    """A copy of ``array`` with the slices of ``channels`` zeroed."""
    out = np.array(array, copy=True)
    if channels:
        index = [slice(None)] * out.ndim
        index[param.axis] = param.segment.indices(list(channels))  # type: ignore[call-overload]
        out[tuple(index)] = 0
    return out
