"""Gradual magnitude pruning of a ``torch.nn.Module`` during the user's training loop (LPOT's callbacks).

At each ``on_epoch_begin(epoch)`` every pruned weight gets a new keep-mask for the scheduled sparsity
(weights already pruned have magnitude 0, so they stay pruned). The mask is applied to the weight at
``on_batch_begin`` and again at ``on_batch_end`` (after the optimizer step), so pruned weights stay zero
through fine-tuning whatever the optimizer does (momentum, weight decay). torch is imported lazily.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES
from lpot_ir.errors import ConfigError, ConversionError
from lpot_ir.ir.model import load_model
from lpot_ir.passes import run_pipeline
from lpot_ir.passes.pruning.channels import find_channel_groups
from lpot_ir.pruning.magnitude import LayerSparsity, PruneSchedule, magnitude_mask, select_weights
from lpot_ir.pruning.structured import (
    ChannelSparsity,
    channel_scores,
    choose_channels,
    group_name,
    mask_params,
    per_channel_sum,
    structured_targets,
)

__all__ = ["TorchMagnitudePruner", "TorchChannelPruner", "prunable_parameters"]

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
        schedules = [s for s in schedules if not s.structured]
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


def _analysis_model(module: Any, example: tuple[list[Any], dict[str, Any]]) -> Any:
    """The module exported as ONNX for channel analysis: eval mode, BatchNorm kept, parameter names kept."""
    import torch


    args, kwargs = example
    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(args),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to files too
                kwargs=kwargs or None,
                dynamo=False,
                opset_version=17,
                do_constant_folding=False,
                training=torch.onnx.TrainingMode.EVAL,
            )
    except Exception as exc:
        raise ConversionError(
            f"Structured pruning finds channel groups in the model's ONNX export, and torch.onnx could not export "
            f"{type(module).__qualname__}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}. "
            "Use method per_tensor / per_channel, or make forward() traceable."
        ) from None
    finally:
        module.train(was_training)
    # shapes are static here, so padding and reshape arguments computed from Shape fold into constants
    return run_pipeline(load_model(buffer.getvalue(), target_opset=None), ["constant-folding"]).model


class TorchChannelPruner:
    """Structured (filter / channel) pruning of a ``torch.nn.Module`` on the pruners' schedules.

    The channel groups come from the module's ONNX export (taken at the first pruning step, with the
    example inputs given or the first batch the module sees). At each scheduled step the lowest-ranked
    channels of each group are chosen (magnitude, or the |w x grad| accumulated since the last step for
    ``gradient_sensitivity``); their slices are zeroed at every ``apply_masks``.

    Args:
        module: the model; pruned in place.
        schedules: the structured pruners.
        example_inputs: ``(args, kwargs)`` for the export; ``None``: captured from the first forward.
    """

    def __init__(self, module: Any, schedules: Sequence[PruneSchedule], example_inputs: Any = None) -> None:
        self.module = module
        self.schedules = [s for s in schedules if s.structured]
        self._example = _as_example(example_inputs) if example_inputs is not None else None
        self._hook: Any = None
        if self._example is None:
            self._hook = module.register_forward_pre_hook(self._capture, with_kwargs=True)
        self._targets: list[tuple[Any, PruneSchedule]] | None = None
        self._params: dict[str, Any] = {}
        self._masks: dict[int, list[int]] = {}
        self._sparsity: dict[int, float] = {}
        self._taylor: dict[int, np.ndarray] = {}
        self.epoch: int | None = None
        self.epochs_seen = 0

    def _capture(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        def detach(x: Any) -> Any:
            return x.detach().clone() if isinstance(x, torch.Tensor) else x

        self._example = ([detach(a) for a in args], {k: detach(v) for k, v in kwargs.items()})
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def prepare(self) -> list[tuple[Any, PruneSchedule]]:
        """Find the channel groups and assign them to the pruners (once).

        Raises:
            ConfigError: no example input yet, or names that match no prunable group.
        """
        if self._targets is not None:
            return self._targets
        if self._example is None:
            raise ConfigError(
                "Structured pruning needs the model's channel groups before the first batch: set prune.example_inputs "
                "(one batch the model accepts) or prune.train_dataloader, or start pruning after epoch 0 "
                "(initial_sparsity 0 at start_epoch)."
            )
        analysis = find_channel_groups(_analysis_model(self.module, self._example))
        params = dict(self.module.named_parameters())
        self._targets = structured_targets(analysis, self.schedules, available=params, kind="parameter")
        self._params = params
        logger.info("structured pruning: %d channel group(s) selected", len(self._targets))
        return self._targets

    @property
    def groups(self) -> list[tuple[Any, PruneSchedule]]:
        """The (channel group, pruner) pairs."""
        return self.prepare()

    @property
    def prepared(self) -> bool:
        """Whether the channel groups are known yet."""
        return self._targets is not None

    @property
    def example(self) -> tuple[list[Any], dict[str, Any]] | None:
        """``(args, kwargs)`` of the example input (given, or captured from the first forward), or ``None``."""
        return self._example

    @property
    def scores(self) -> dict[int, np.ndarray]:
        """Group id -> |w x grad| accumulated since the group's last pruning step (gradient_sensitivity)."""
        return {gid: score.copy() for gid, score in self._taylor.items()}

    @property
    def masks(self) -> dict[int, list[int]]:
        """Group id -> its pruned channels."""
        return {gid: list(channels) for gid, channels in self._masks.items()}

    def on_epoch_begin(self, epoch: int) -> None:
        """Choose the channels of every group whose scheduled sparsity changed at ``epoch``; apply the masks."""
        self.epoch = int(epoch)
        self.epochs_seen += 1
        due = [(s, s.sparsity_at(self.epoch)) for s in self.schedules]
        if all(sparsity <= 0.0 for _s, sparsity in due):
            return
        for group, schedule in self.prepare():
            sparsity = schedule.sparsity_at(self.epoch)
            if sparsity <= 0.0 or self._sparsity.get(group.id) == sparsity:
                continue
            method = schedule.method
            score = self._taylor.get(group.id) if schedule.prune_type == "gradient_sensitivity" else None
            if score is None:
                if schedule.prune_type == "gradient_sensitivity":
                    logger.info("gradient_sensitivity: no gradients seen yet for %s; ranking by magnitude", group.id)
                arrays = {n: p.detach().cpu().numpy() for n, p in self._params.items()}
                score = channel_scores(group, method, arrays)
            else:
                score = score.copy()
                already = self._masks.get(group.id, [])
                score[already] = -1.0  # pruned channels stay pruned
            self._masks[group.id] = choose_channels(score, sparsity)
            self._sparsity[group.id] = sparsity
            self._taylor.pop(group.id, None)
        self.apply_masks()

    def on_post_grad(self) -> None:
        """Accumulate |sum(w x grad)| per channel for the gradient_sensitivity pruners."""
        if not any(s.prune_type == "gradient_sensitivity" for s in self.schedules):
            return
        for group, schedule in self.prepare():
            if schedule.prune_type != "gradient_sensitivity":
                continue
            total = np.zeros(group.channels)
            for param in mask_params(group, schedule.method):
                tensor = self._params[param.value]
                if tensor.grad is None:
                    continue
                product = (tensor.detach() * tensor.grad.detach()).cpu().numpy()
                total += per_channel_sum(product, param, group.channels)
            self._taylor[group.id] = self._taylor.get(group.id, 0.0) + np.abs(total)

    def apply_masks(self) -> None:
        """Zero the pruned channels' slices (in place, outside autograd)."""
        import torch

        if not self._masks or self._targets is None:
            return
        with torch.no_grad():
            for group, schedule in self._targets:
                chosen = self._masks.get(group.id)
                if not chosen:
                    continue
                for param in mask_params(group, schedule.method):
                    tensor = self._params[param.value]
                    index = torch.as_tensor(param.segment.indices(chosen), device=tensor.device)
                    tensor.index_fill_(param.axis, index, 0.0)

    def report(self) -> list[Any]:
        """The measured channel sparsity of every group (a channel counts when all its slices are zero)."""
        rows = []
        for group, schedule in self._targets or []:
            nonzero = np.zeros(group.channels)
            for param in mask_params(group, schedule.method):
                array = self._params[param.value].detach().cpu().numpy()
                nonzero += per_channel_sum(np.abs(array), param, group.channels)
            pruned = int(np.sum(nonzero == 0))
            rows.append(ChannelSparsity(group_name(group, schedule.method), group.channels, pruned,
                                        schedule.target_sparsity, schedule.method))  # fmt: skip
        return rows


def _as_example(example: Any) -> tuple[list[Any], dict[str, Any]]:
    import torch

    def to_torch(x: Any) -> Any:
        return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x

    if isinstance(example, dict):
        return [], {k: to_torch(v) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return [to_torch(x) for x in example], {}
    return [to_torch(example)], {}
