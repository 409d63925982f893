"""Gradual magnitude pruning of a ``torch.nn.Module`` during the user's training loop (LPOT's callbacks).

At each ``on_epoch_begin(epoch)`` every pruned weight gets a new keep-mask for the scheduled sparsity
(weights already pruned have magnitude 0, so they stay pruned). The mask is applied to the weight at
``on_batch_begin`` and again at ``on_batch_end`` (after the optimizer step), so pruned weights stay zero
through fine-tuning whatever the optimizer does (momentum, weight decay). torch is imported lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES
from lpot_ir.pruning.magnitude import LayerSparsity, PruneSchedule, magnitude_mask, select_weights

__all__ = ["TorchMagnitudePruner", "prunable_parameters"]

logger = logging.getLogger(__name__)


def prunable_parameters(module: Any) -> list[str]:
    """The names of the weights of every Linear and Conv module (LPOT's default set)."""
    import torch

    names = []
    for prefix, sub in module.named_modules():
        if isinstance(sub, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and sub.weight is not None:
            names.append(f"{prefix}.weight" if prefix else "weight")
    return names


def _channel_axes(module: Any) -> dict[str, int]:
    """Weights whose output channels are not axis 0: ConvTranspose stores (in, out / groups, ...), like
    ONNX's ConvTranspose (the capability table's axis)."""
    import torch

    axis = CAPABILITIES["ConvTranspose"].channel_axis
    return {
        f"{prefix}.weight" if prefix else "weight": axis
        for prefix, sub in module.named_modules()
        if isinstance(sub, torch.nn.modules.conv._ConvTransposeNd)
    }


class TorchMagnitudePruner:
    """Masks for the selected parameters of one module, updated on the schedules' epochs.

    Args:
        module: the model; its parameters are pruned in place.
        schedules: the resolved pruners.

    Raises:
        ConfigError: a name matches no parameter, or nothing is prunable.
    """

    def __init__(self, module: Any, schedules: Sequence[PruneSchedule]) -> None:
        params = {n: p for n, p in module.named_parameters() if p.is_floating_point()}
        chosen = select_weights(schedules, params, prunable_parameters(module), kind="parameter")
        self._params = {name: params[name] for name, _ in chosen}
        self._channel_axis = _channel_axes(module)
        self._schedules = dict(chosen)
        self._masks: dict[str, Any] = {}
        self._sparsity: dict[str, float] = {}
        self.epoch: int | None = None
        self.epochs_seen = 0

    @property
    def names(self) -> list[str]:
        """The pruned parameters' names."""
        return list(self._params)

    def on_epoch_begin(self, epoch: int) -> None:
        """Recompute the masks whose scheduled sparsity changed at ``epoch`` and apply them."""
        import torch

        self.epoch = int(epoch)
        self.epochs_seen += 1
        for name, param in self._params.items():
            schedule = self._schedules[name]
            sparsity = schedule.sparsity_at(self.epoch)
            if sparsity <= 0.0 or self._sparsity.get(name) == sparsity:
                continue
            weight = param.detach().cpu().numpy()
            axis = self._channel_axis.get(name, 0)
            keep = magnitude_mask(weight, sparsity, method=schedule.method, channel_axis=axis)
            self._masks[name] = torch.from_numpy(keep).to(device=param.device, dtype=param.dtype)
            self._sparsity[name] = sparsity
            logger.debug("epoch %d: %s pruned to %.2f%%", self.epoch, name, 100 * sparsity)
        self.apply_masks()

    def apply_masks(self) -> None:
        """Zero the pruned elements of every masked weight (in place, outside autograd)."""
        import torch

        with torch.no_grad():
            for name, mask in self._masks.items():
                self._params[name].mul_(mask)

    def report(self) -> list[LayerSparsity]:
        """The measured sparsity of every pruned weight."""
        rows = []
        for name, param in self._params.items():
            weight = param.detach().cpu().numpy()
            target = self._schedules[name].target_sparsity
            rows.append(LayerSparsity.measure(name, np.asarray(weight), target))
        return rows
