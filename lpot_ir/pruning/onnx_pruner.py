"""One-shot magnitude pruning of an ONNX model's weight initializers (no training is possible here).

Every selected initializer is pruned to its pruner's ``target_sparsity`` at once; the epochs of the
schedule do not apply. By default the weights are the initializers read as the weight of a Conv,
ConvTranspose, Gemm or MatMul (input 1); ``names`` may name any floating-point initializer.
Structured pruners (``method: filter`` / ``channel``) zero whole channels of the model's channel groups
(:func:`prune_channels`), which the ``shrink-pruned-channels`` pass then removes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, OpCategory, output_channel_axis
from lpot_ir.ir.model import all_graphs, all_nodes
from lpot_ir.passes.pruning.channels import constant_array, find_channel_groups
from lpot_ir.pruning.magnitude import LayerSparsity, PruneSchedule, magnitude_mask, select_weights
from lpot_ir.pruning.structured import (
    ChannelSparsity,
    channel_scores,
    choose_channels,
    group_name,
    mask_params,
    structured_targets,
    zero_channels,
)

__all__ = ["prune_initializers", "prunable_initializers", "prune_channels"]

logger = logging.getLogger(__name__)

_WEIGHT_OPS = tuple(c.op_type for c in CAPABILITIES.values() if c.category is OpCategory.COMPUTE and c.weight_inputs == (1,))
"""Conv, ConvTranspose, MatMul, Gemm: the compute ops of the capability table (weight = input 1)."""


def _initializers(model: ir.Model) -> dict[str, tuple[ir.Value, np.ndarray]]:
    """Floating-point initializers of every graph: name -> (value, its array)."""
    found: dict[str, tuple[ir.Value, np.ndarray]] = {}
    for graph in all_graphs(model):
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if tensor is not None and name not in found:
                array = tensor.numpy()
                if np.issubdtype(array.dtype, np.floating):
                    found[name] = (value, array)
    return found


def prunable_initializers(model: ir.Model) -> dict[str, int]:
    """Weight initializers of Conv/ConvTranspose/Gemm/MatMul nodes with ≥ 2 dims -> their output-channel axis."""
    inits = _initializers(model)
    found: dict[str, int] = {}
    for node in all_nodes(model):
        if node.domain not in ("", "ai.onnx") or node.op_type not in _WEIGHT_OPS or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if weight is not None and weight.name in inits and inits[weight.name][1].ndim >= 2:
            found.setdefault(weight.name, (output_channel_axis(node) or 0) % inits[weight.name][1].ndim)
    return found


def prune_initializers(model: ir.Model, schedules: Sequence[PruneSchedule]) -> list[LayerSparsity]:
    """Prune ``model``'s weights in place to their targets and return the measured sparsity per weight.

    Raises:
        ConfigError: a name matches no floating-point initializer, or nothing is prunable.
    """
    inits = _initializers(model)
    axes = prunable_initializers(model)
    chosen = select_weights(schedules, inits, list(axes), kind="initializer")
    report = []
    for name, schedule in chosen:
        value, weight = inits[name]
        keep = magnitude_mask(
            weight, schedule.target_sparsity, method=schedule.method, channel_axis=axes.get(name, 0)
        )
        pruned = np.where(keep, weight, np.zeros((), dtype=weight.dtype)).astype(weight.dtype)
        value.const_value = ir.tensor(pruned, name=name)
        report.append(LayerSparsity.measure(name, pruned, schedule.target_sparsity))
    return report


def prune_channels(model: ir.Model, schedules: Sequence[PruneSchedule]) -> list[ChannelSparsity]:
    """Zero the lowest-magnitude channels of every channel group a structured pruner selects (in place).

    ``filter`` zeroes the channels' sources and BatchNorm/depthwise parameters, ``channel`` their sinks'
    input slices; the ``shrink-pruned-channels`` pass then removes them. Returns one row per group.

    Raises:
        ConfigError: a name matches no channel group's weight, or names a group that cannot shrink.
    """
    analysis = find_channel_groups(model)
    nodes = {n.name or "": n for n in model.graph}
    report: list[ChannelSparsity] = []
    for group, schedule in structured_targets(analysis, schedules):
        method = schedule.method
        arrays = {}
        for p in group.params:
            data = constant_array(nodes[p.node].inputs[p.input])
            if data is not None:
                arrays[p.value] = data
        chosen = choose_channels(channel_scores(group, method, arrays), schedule.target_sparsity)
        for p in mask_params(group, method):
            value = nodes[p.node].inputs[p.input]
            data = constant_array(value)
            if value is None or data is None:
                continue
            value.const_value = ir.tensor(zero_channels(data, p, chosen), name=value.name)
        report.append(ChannelSparsity(group_name(group, method), group.channels, len(chosen), schedule.target_sparsity, method))
    return report
