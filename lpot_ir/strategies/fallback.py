"""Fallback steps: which ops to revert to FP32 together, most sensitive first.

Shared by the strategies that revert ops in a measured order (basic, mse). A *fallback group* is a
compute node with the followers that cannot stay INT8 without it (``TuningSpace.fallback_groups``). A
*step* is one or more groups reverted together: with ``context.tensor_sensitivity`` (the tuning loop
has it), one step per quantized tensor, largest per-channel error first, holding every group that
makes that tensor quantized (its producer and its quantized readers: reverting only one side leaves
the tensor quantized); then the remaining groups one by one in ``context.op_sensitivity`` order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lpot_ir.ir.quant import TuningConfig
from lpot_ir.strategies.base import StrategyContext, TuningSpace, group_sensitivity

__all__ = ["Group", "Step", "rank_steps", "extend"]

logger = logging.getLogger(__name__)

Group = tuple[str, ...]
Step = tuple[Group, ...]


def rank_steps(
    space: TuningSpace, context: StrategyContext, config: TuningConfig, groups: Sequence[Group]
) -> tuple[list[Step], dict[Group, float]]:
    """Fallback steps among ``groups``, most sensitive first under ``config`` (ties: model order).

    Returns:
        ``(steps, score of each group)``; a measurement that fails leaves model order (logged).
    """
    try:
        sensitivity = context.op_sensitivity(config)
    except Exception as exc:  # the instrumented run failing must not end tuning
        logger.warning("measuring op sensitivity failed (%s); falling back in model order", exc)
        sensitivity = {}
    scores = group_sensitivity(groups, sensitivity)
    order = sorted(range(len(groups)), key=lambda i: (-scores[i], i))
    group_scores = {groups[i]: scores[i] for i in order}
    steps: list[Step] = []
    measure = getattr(context, "tensor_sensitivity", None)
    if measure is not None:
        wanted = set(groups)
        group_of = {n: g for g in space.fallback_groups for n in g}
        position = {g: i for i, g in enumerate(space.fallback_groups)}
        try:
            tensors = list(measure(config))
        except Exception as exc:
            logger.warning("measuring tensor sensitivity failed (%s); ranking ops alone", exc)
            tensors = []
        for tensor in sorted(tensors, key=lambda t: -float(t.error)):
            step = tuple(
                sorted({group_of[n] for n in tensor.nodes if n in group_of} & wanted, key=position.__getitem__)
            )
            if step and step not in steps:
                steps.append(step)
                for g in step:
                    group_scores[g] = max(group_scores.get(g, 0.0), float(tensor.error))
    steps.extend((groups[i],) for i in order if (groups[i],) not in steps)
    return steps, group_scores


def extend(reverted: Sequence[Group], steps: Sequence[Step]) -> list[Group]:
    """``reverted`` plus the groups of ``steps`` not in it yet, in order."""
    out = list(reverted)
    for step in steps:
        out.extend(g for g in step if g not in out)
    return out
