"""Structured pruning on the IR: channel groups (:mod:`.channels`) and the pass that removes dead channels
(:mod:`.shrink`, registered as ``shrink-pruned-channels``)."""

from __future__ import annotations

from lpot_ir.passes.pruning.channels import (
    ChannelGroup,
    ChannelParam,
    GroupAnalysis,
    Segment,
    find_channel_groups,
    weight_channel_axes,
)
from lpot_ir.passes.pruning.shrink import (
    GroupReport,
    ShrinkPrunedChannelsPass,
    ShrinkResult,
    dead_channels,
    shrink_pruned_channels,
)

__all__ = [
    "ChannelGroup",
    "ChannelParam",
    "GroupAnalysis",
    "Segment",
    "find_channel_groups",
    "weight_channel_axes",
    "GroupReport",
    "ShrinkPrunedChannelsPass",
    "ShrinkResult",
    "dead_channels",
    "shrink_pruned_channels",
]
