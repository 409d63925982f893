"""LPOT's ``Pruning`` API: magnitude pruning configured by the YAML's ``pruning`` section.

For a ``torch.nn.Module`` pruning is gradual and happens during your training loop, which calls
LPOT's callbacks::

    prune = Pruning("conf.yaml")
    prune.model = model
    prune.train_func = train          # LPOT 1.x: prune.pruning_func = train
    prune.eval_func = evaluate        # optional
    model = prune.fit()               # or prune()

    def train(model):
        for epoch in range(4):
            prune.on_epoch_begin(epoch)
            for batch_id, (x, y) in enumerate(loader):
                prune.on_batch_begin(batch_id)
                ...  # forward, backward, optimizer.step()
                prune.on_batch_end()
            prune.on_epoch_end()

For an ONNX model (a path, ``onnx.ModelProto``, ``onnx_ir.Model`` or bytes) nothing can be trained:
the selected weight initializers are pruned once to ``target_sparsity`` and ``fit()`` returns the pruned
``onnx.ModelProto``. Either way :attr:`Pruning.sparsity_report` holds the measured sparsity per weight
and :attr:`Pruning.score` the ``eval_func`` result. See docs/pruning.md.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable
from typing import Any

from lpot_ir.config import create_dataloader, load_config
from lpot_ir.errors import ConfigError, EvaluationError, LpotError
from lpot_ir.frontends import is_onnx_model, resolve_model, unwrap_model
from lpot_ir.ir.model import load_model, to_proto
from lpot_ir.passes import PIPELINES, run_pipeline
from lpot_ir.passes.pruning import ShrinkResult, shrink_pruned_channels
from lpot_ir.pruning.magnitude import LayerSparsity, PruneSchedule, format_sparsity_table, resolve_schedules
from lpot_ir.pruning.onnx_pruner import prune_channels, prune_initializers
from lpot_ir.pruning.structured import ChannelSparsity, format_channel_table
from lpot_ir.pruning.torch_pruner import TorchChannelPruner, TorchMagnitudePruner
from lpot_ir.training import batch_loss, make_criterion, to_torch, train_model

__all__ = [
    "Pruning",
    "LayerSparsity",
    "ChannelSparsity",
    "PruneSchedule",
    "format_sparsity_table",
    "format_channel_table",
]

logger = logging.getLogger(__name__)

_SPARSITY_TOLERANCE = 0.01


def _optimize_and_shrink(model: Any) -> tuple[Any, Any]:
    """Run ``fp32-optimize`` on ``model``; return (the ``shrink-pruned-channels`` result, the optimized model)."""
    steps = list(PIPELINES["fp32-optimize"])
    at = steps.index("shrink-pruned-channels") if "shrink-pruned-channels" in steps else len(steps)
    model = run_pipeline(model, steps[:at]).model
    result: ShrinkResult = shrink_pruned_channels(model)
    if steps[at + 1 :]:
        model = run_pipeline(model, steps[at + 1 :]).model
    return result, model


def _frozen_copy(module: Any) -> Any:
    """A deep copy of ``module`` in eval mode with no trainable parameters (the distillation teacher)."""
    teacher = copy.deepcopy(module)
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


class Pruning:
    """Magnitude pruning, LPOT style.

    Args:
        conf_fname_or_obj: a YAML file path, YAML text, a dict, or a :class:`~lpot_ir.config.Config`;
            it must have a ``pruning`` section.

    Raises:
        ConfigError: the configuration does not fit the schema, has no ``pruning`` section, or asks
            for a pruning type lpot-ir does not implement.
    """

    def __init__(self, conf_fname_or_obj: Any) -> None:
        self.conf = load_config(conf_fname_or_obj)
        if self.conf.pruning is None:
            raise ConfigError(
                "The configuration has no pruning section, so there is nothing to prune. Add one, e.g. "
                "'pruning: {approach: {weight_compression: {target_sparsity: 0.5, start_epoch: 0, end_epoch: 2}}}', "
                "or start from the template lpot_ir/config/templates/pruning.yaml."
            )
        self.schedules: tuple[PruneSchedule, ...] = resolve_schedules(
            self.conf.pruning.approach.weight_compression
        )
        self._model: Any = None
        self._train_func: Callable[[Any], Any] | None = None
        self._eval_func: Callable[[Any], Any] | None = None
        self._pruner: Any = None
        self._channel_pruner: Any = None
        self._train_dataloader: Any = None
        self._example_inputs: Any = None
        self.sparsity_report: list[LayerSparsity] = []
        self.channel_report: list[ChannelSparsity] = []
        self.shrink_report: Any = None
        self._shrunk: Any = None
        self._dense: Any = None  # the model before pruning: a torch state_dict copy, or the ONNX model
        self._teacher: Any = None  # pruning.train.distillation: a frozen copy of the torch model before pruning
        self._teacher_given = False  # prune.teacher was set by the user
        self._criterion: Any = None
        self.score: Any = None

    # -- LPOT's properties -----------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The model: a ``torch.nn.Module`` (pruned during training, in place) or an ONNX model."""
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = unwrap_model(value)  # LPOT's common.Model wrapper
        self._pruner = None
        self._channel_pruner = None
        if not self._teacher_given:
            self._teacher = None
        self.sparsity_report = []
        self.channel_report = []

    @property
    def train_func(self) -> Callable[[Any], Any] | None:
        """``f(model)``: your training loop, calling the ``on_*`` callbacks (torch models only)."""
        return self._train_func

    @train_func.setter
    def train_func(self, value: Callable[[Any], Any] | None) -> None:
        if value is not None and not callable(value):
            raise ConfigError(f"train_func must be callable (model -> None), got {type(value).__name__}.")
        self._train_func = value

    pruning_func = train_func
    """LPOT 1.x's name of :attr:`train_func`."""

    @property
    def eval_func(self) -> Callable[[Any], Any] | None:
        """``f(model) -> score`` run on the pruned model (an ``onnx.ModelProto`` for ONNX models)."""
        return self._eval_func

    @eval_func.setter
    def eval_func(self, value: Callable[[Any], Any] | None) -> None:
        if value is not None and not callable(value):
            raise ConfigError(f"eval_func must be callable (model -> score), got {type(value).__name__}.")
        self._eval_func = value

    @property
    def train_dataloader(self) -> Any:
        """``(inputs, labels)`` batches for the built-in loop (default: ``pruning.train.dataloader``)."""
        return self._train_dataloader

    @train_dataloader.setter
    def train_dataloader(self, value: Any) -> None:
        if value is not None and not hasattr(value, "__iter__"):
            raise ConfigError(f"train_dataloader must be an iterable of (inputs, labels) batches, got {type(value).__name__}.")
        self._train_dataloader = value

    @property
    def example_inputs(self) -> Any:
        """One batch the model accepts (a tensor, tuple or dict): structured pruning exports the model with it
        to find its channel groups. Default: the first training batch."""
        return self._example_inputs

    @example_inputs.setter
    def example_inputs(self, value: Any) -> None:
        self._example_inputs = value

    # -- LPOT's training callbacks (torch models) --------------------------------------------------

    def on_epoch_begin(self, epoch: int) -> None:
        """Update the masks to ``epoch``'s scheduled sparsity and apply them."""
        for pruner in self._torch_pruners("on_epoch_begin"):
            pruner.on_epoch_begin(epoch)

    def on_batch_begin(self, batch_id: int) -> None:
        """Apply the masks before the forward pass."""
        for pruner in self._torch_pruners("on_batch_begin"):
            pruner.apply_masks()

    def on_post_grad(self) -> None:
        """LPOT's hook after the backward pass: gradient_sensitivity accumulates |weight x gradient| here."""
        for pruner in self._torch_pruners("on_post_grad"):
            if hasattr(pruner, "on_post_grad"):
                pruner.on_post_grad()

    def on_batch_end(self) -> None:
        """Apply the masks again after the optimizer step, so pruned weights stay zero."""
        for pruner in self._torch_pruners("on_batch_end"):
            pruner.apply_masks()

    def on_epoch_end(self) -> None:
        """Apply the masks and log the epoch's sparsity."""
        pruners = self._torch_pruners("on_epoch_end")
        for pruner in pruners:
            pruner.apply_masks()
        epoch = pruners[0].epoch if pruners else None
        if self._pruner is not None:
            report = self._pruner.report()
            total = sum(r.size for r in report)
            zeros = sum(r.zeros for r in report)
            logger.info("epoch %s: %d weights pruned, overall sparsity %.2f%%", epoch, len(report), 100 * zeros / max(total, 1))
        if self._channel_pruner is not None and self._channel_pruner.prepared:
            rows = self._channel_pruner.report()
            total = sum(r.channels for r in rows)
            pruned = sum(r.pruned for r in rows)
            logger.info("epoch %s: %d channel group(s), %.2f%% of channels pruned", epoch, len(rows), 100 * pruned / max(total, 1))

    def _torch_pruners(self, caller: str) -> list[Any]:
        """The unstructured and structured pruners of the torch model (created on first use)."""
        if self._pruner is None and self._channel_pruner is None:
            if not _is_torch_module(self._model):
                raise ConfigError(
                    f"prune.{caller}() is a training callback for a torch.nn.Module, but prune.model is "
                    f"{type(self._model).__name__}. Set prune.model to the torch model before training; ONNX models "
                    "are pruned one-shot by prune.fit() without callbacks."
                )
            if self._distillation() is not None and self._teacher is None:
                self._teacher = _frozen_copy(self._model)  # before the first mask and the pruners' hooks
            if any(not s.structured for s in self.schedules):
                self._pruner = TorchMagnitudePruner(self._model, self.schedules)
            if any(s.structured for s in self.schedules):
                self._channel_pruner = TorchChannelPruner(self._model, self.schedules, self._example())
        return [p for p in (self._pruner, self._channel_pruner) if p is not None]

    # -- knowledge distillation (pruning.train.distillation) --------------------------------------

    def _distillation(self) -> Any:
        train = self.conf.pruning.train if self.conf.pruning is not None else None
        return train.distillation if train is not None else None

    @property
    def teacher(self) -> Any:
        """The model that teaches the pruned one (``pruning.train.distillation``): by default a frozen copy of
        the torch model taken at the first callback or ``fit()``, before anything is pruned; ``None`` without
        distillation. Set it to use another ``torch.nn.Module`` (e.g. a better-trained dense model) instead: it
        runs in eval mode without gradients and must take the same inputs and give logits of the same shape."""
        return self._teacher

    @teacher.setter
    def teacher(self, value: Any) -> None:
        if self._distillation() is None:
            raise ConfigError(
                "prune.teacher is used by knowledge distillation only, and the configuration has no "
                "pruning.train.distillation. Add e.g. 'distillation: {weight: 0.5, temperature: 2.0}' to pruning.train."
            )
        if value is not None and not _is_torch_module(value):
            raise ConfigError(f"prune.teacher must be a torch.nn.Module, got {type(value).__name__}.")
        self._teacher = value
        self._teacher_given = value is not None

    def distillation_loss(self, outputs: Any, labels: Any, inputs: Any) -> Any:
        """The training loss with knowledge distillation, for your own loop (the built-in loop uses it already).

        ``(1 - weight) * criterion(outputs, labels) + weight * T^2 * KL(teacher || student)`` with the YAML's
        ``pruning.train.distillation`` weight and temperature and ``pruning.train.criterion`` (default
        cross-entropy); the teacher runs on ``inputs`` without gradients. See
        :func:`lpot_ir.training.distillation_loss`.

        Args:
            outputs: the model's logits for ``inputs``.
            labels: the batch's labels.
            inputs: the batch's inputs (a tensor, tuple or dict, as the model takes them).

        Raises:
            ConfigError: no ``pruning.train.distillation`` in the configuration, or prune.model is not a torch module.
        """
        settings = self._distillation()
        if settings is None:
            raise ConfigError(
                "prune.distillation_loss() needs pruning.train.distillation in the configuration (e.g. "
                "'distillation: {weight: 0.5, temperature: 2.0}'); without it use your own loss."
            )
        if self._teacher is None:
            self._torch_pruners("distillation_loss")
        if self._criterion is None:
            self._criterion = make_criterion(self.conf.pruning.train.criterion, where="pruning.train.criterion")  # type: ignore[union-attr]
        return batch_loss(
            outputs, to_torch(labels), to_torch(inputs), self._criterion, teacher=self._teacher, distillation=settings
        )

    def _example(self) -> Any:
        if self._example_inputs is not None:
            return self._example_inputs
        loader = self._train_dataloader
        if loader is None:
            return None  # captured from the first forward pass
        batch = next(iter(loader))
        return batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch

    # -- running ---------------------------------------------------------------------------------

    def fit(self) -> Any:
        """Prune the model and return it (the same ``nn.Module``, or a new ``onnx.ModelProto``).

        Raises:
            ConfigError: no model, a model that is neither torch nor ONNX, a torch model without
                ``train_func`` (or one that never called ``on_epoch_begin``), an ONNX model with a
                ``train_func``, or ``names`` that match no weight.
            ModelLoadError: the ONNX model cannot be loaded.
            EvaluationError: ``eval_func`` raised.
        """
        model = self._model
        if model is None:
            raise ConfigError(
                "Pruning has no model. Set prune.model = model (a torch.nn.Module or an ONNX model) first."
            )
        if _is_torch_module(model):
            self._dense = {k: v.detach().clone() for k, v in model.state_dict().items()}
            pruned = self._fit_torch(model)
        elif is_onnx_model(model):
            self._dense = model
            pruned = self._fit_onnx(model)
        else:
            raise ConfigError(
                f"Pruning supports a torch.nn.Module (gradual pruning while training) or an ONNX model (one-shot), "
                f"but prune.model is {type(model).__name__}. Convert the model, or pass a path ending in .onnx."
            )
        if self.sparsity_report:
            logger.info("sparsity per weight:\n%s", format_sparsity_table(self.sparsity_report))
        if self.channel_report:
            logger.info("channel sparsity per group:\n%s", format_channel_table(self.channel_report))
        if self._eval_func is not None:
            try:
                self.score = self._eval_func(pruned)
            except LpotError:
                raise
            except Exception as exc:  # the user's function may raise anything
                raise EvaluationError(
                    f"eval_func raised {type(exc).__name__}: {exc} while evaluating the pruned model. Fix eval_func; "
                    "the pruned model is still available as the result of the pruning (prune.model for torch)."
                ) from exc
            logger.info("pruned model score: %s", self.score)
        return pruned

    __call__ = fit

    def _fit_torch(self, model: Any) -> Any:
        train = self.conf.pruning.train if self.conf.pruning is not None else None
        if self._train_func is None and self._train_dataloader is None and (train is None or train.dataloader is None):
            raise ConfigError(
                "Pruning a torch model is gradual and happens while it trains: set prune.train_func = train (your loop, "
                "calling prune.on_epoch_begin(epoch), on_batch_begin(i), on_post_grad(), on_batch_end() and "
                "on_epoch_end(); LPOT 1.x: prune.pruning_func), or give the built-in loop its data with "
                "pruning.train.dataloader in the YAML or prune.train_dataloader in Python."
            )
        if self._train_dataloader is None and train is not None and train.dataloader is not None and self._train_func is None:
            self._train_dataloader = create_dataloader(train.dataloader)
        pruners = self._torch_pruners("fit")  # checks the names before any training
        if self._channel_pruner is not None and self._channel_pruner.example is not None:
            self._channel_pruner.prepare()
        if self._train_func is not None:
            self._train_func(model)
        else:
            train_model(model, train, self._train_dataloader, callbacks=self, teacher=self._teacher, where="pruning.train")
        if all(p.epochs_seen == 0 for p in pruners):
            raise ConfigError(
                "train_func returned without calling prune.on_epoch_begin(epoch), so nothing was pruned. Call "
                "prune.on_epoch_begin(epoch) at the start of every epoch and prune.on_batch_end() after every "
                "optimizer step."
            )
        for pruner in pruners:
            pruner.apply_masks()
        last = max((p.epoch for p in pruners if p.epoch is not None), default=None)
        if self._pruner is not None:
            self.sparsity_report = self._pruner.report()
            logger.info(
                "unstructured sparsity makes the model smaller once compressed (zeros compress well), not faster: "
                "ONNX Runtime's CPU kernels are dense. Prune whole channels (method: filter or channel) for speed."
            )
        if self._channel_pruner is not None:
            self.channel_report = self._channel_pruner.report()
        short = [(r.name, r.sparsity, r.target) for r in self.sparsity_report if r.sparsity < r.target - _SPARSITY_TOLERANCE]
        short += [(r.name, r.sparsity, r.target) for r in self.channel_report if r.sparsity < r.target - 0.5 / max(r.channels, 1) - _SPARSITY_TOLERANCE]
        if short:
            logger.warning(
                "%d pruned weight(s) or channel group(s) are below their target sparsity (e.g. %s: %.2f%% of %.0f%%): "
                "training stopped at epoch %s, before the pruners' end_epoch. Train up to end_epoch, or lower end_epoch.",
                len(short), short[0][0], 100 * short[0][1], 100 * short[0][2], last,
            )
        return model

    def shrunk_model(self, example_inputs: Any = None) -> Any:
        """The pruned model as ONNX with the pruned channels removed (``fp32-optimize``, which runs
        ``shrink-pruned-channels``): the model that runs faster. :attr:`shrink_report` says what was removed.

        Args:
            example_inputs: one batch for exporting a torch model (default: :attr:`example_inputs` or the
                first training batch).

        Returns:
            An ``onnx.ModelProto``.
        """
        model = self._model
        if model is None:
            raise ConfigError("Pruning has no model. Set prune.model and call prune.fit() first.")
        if _is_torch_module(model):
            example = example_inputs if example_inputs is not None else self._example_batch()
            proto = resolve_model(model, calib_dataloader=[(example, None)]).model
        else:
            proto = model if self._shrunk is None else self._shrunk
        self.shrink_report, optimized = _optimize_and_shrink(load_model(proto))
        return to_proto(optimized)

    def dense_model(self, example_inputs: Any = None) -> Any:
        """The model as it was before ``fit()``, as optimized ONNX (``fp32-optimize``): the baseline of the
        compression stages (see :func:`lpot_ir.pruning.stages.compare_stages`)."""
        if self._dense is None:
            raise ConfigError("dense_model() is the model before pruning: call prune.fit() first.")
        if _is_torch_module(self._model):
            dense = copy.deepcopy(self._model)
            dense.load_state_dict(self._dense)
            example = example_inputs if example_inputs is not None else self._example_batch()
            proto = resolve_model(dense, calib_dataloader=[(example, None)]).model
        else:
            proto = self._dense
        return to_proto(run_pipeline(load_model(proto), "fp32-optimize").model)

    def _example_batch(self) -> Any:
        example = self._example()
        captured = self._channel_pruner.example if self._channel_pruner is not None else None
        if example is None and captured is not None:
            args, kwargs = captured
            example = kwargs or (args[0] if len(args) == 1 else tuple(args))
        if example is None:
            raise ConfigError("Exporting the torch model needs example_inputs (one batch it accepts): set prune.example_inputs.")
        return example

    def _fit_onnx(self, model: Any) -> Any:
        if self._train_func is not None:
            raise ConfigError(
                "An ONNX model cannot be trained by lpot-ir, so train_func would never run: ONNX models are pruned "
                "one-shot to target_sparsity. Remove prune.train_func, or set prune.model to the torch model."
            )
        ir_model = load_model(model, target_opset=None)
        # Old exporters compute weights with Constant/ConstantOfShape nodes; fold them into initializers.
        ir_model = run_pipeline(ir_model, ["constant-folding"]).model
        unstructured = [s for s in self.schedules if not s.structured]
        structured = [s for s in self.schedules if s.structured]
        if any(s.prune_type == "gradient_sensitivity" for s in structured):
            raise ConfigError(
                "prune_type gradient_sensitivity ranks channels by gradients, which need training; an ONNX model is "
                "pruned one-shot without training. Use basic_magnitude, or prune the torch model."
            )
        if unstructured:
            self.sparsity_report = prune_initializers(ir_model, unstructured)
            logger.info(
                "unstructured sparsity makes the model smaller once compressed, not faster on ONNX Runtime's CPU "
                "kernels; prune whole channels (method: filter or channel) for speed."
            )
        if structured:
            self.channel_report = prune_channels(ir_model, structured)
            self.shrink_report = shrink_pruned_channels(ir_model)
            ir_model = run_pipeline(ir_model, ["remove-unused"]).model
        self._shrunk = to_proto(ir_model)
        return self._shrunk
