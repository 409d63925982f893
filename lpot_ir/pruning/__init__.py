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

import logging
import sys
from collections.abc import Callable
from typing import Any

from lpot_ir.config import load_config
from lpot_ir.errors import ConfigError, EvaluationError, LpotError
from lpot_ir.frontends import is_onnx_model, unwrap_model
from lpot_ir.ir.model import load_model, to_proto
from lpot_ir.passes import run_pipeline
from lpot_ir.pruning.magnitude import LayerSparsity, PruneSchedule, format_sparsity_table, resolve_schedules
from lpot_ir.pruning.onnx_pruner import prune_initializers
from lpot_ir.pruning.torch_pruner import TorchMagnitudePruner

__all__ = ["Pruning", "LayerSparsity", "PruneSchedule", "format_sparsity_table"]

logger = logging.getLogger(__name__)

_SPARSITY_TOLERANCE = 0.01


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
        self.sparsity_report: list[LayerSparsity] = []
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
        self.sparsity_report = []

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

    # -- LPOT's training callbacks (torch models) --------------------------------------------------

    def on_epoch_begin(self, epoch: int) -> None:
        """Update the masks to ``epoch``'s scheduled sparsity and apply them."""
        self._torch_pruner("on_epoch_begin").on_epoch_begin(epoch)

    def on_batch_begin(self, batch_id: int) -> None:
        """Apply the masks before the forward pass."""
        self._torch_pruner("on_batch_begin").apply_masks()

    def on_post_grad(self) -> None:
        """LPOT's hook after the backward pass; magnitude pruning needs nothing there."""
        self._torch_pruner("on_post_grad")

    def on_batch_end(self) -> None:
        """Apply the masks again after the optimizer step, so pruned weights stay zero."""
        self._torch_pruner("on_batch_end").apply_masks()

    def on_epoch_end(self) -> None:
        """Apply the masks and log the epoch's sparsity."""
        pruner = self._torch_pruner("on_epoch_end")
        pruner.apply_masks()
        report = pruner.report()
        total = sum(r.size for r in report)
        zeros = sum(r.zeros for r in report)
        logger.info(
            "epoch %s: %d weights pruned, overall sparsity %.2f%%",
            pruner.epoch,
            len(report),
            100 * zeros / total,
        )

    def _torch_pruner(self, caller: str) -> Any:
        if self._pruner is None:
            if not _is_torch_module(self._model):
                raise ConfigError(
                    f"prune.{caller}() is a training callback for a torch.nn.Module, but prune.model is "
                    f"{type(self._model).__name__}. Set prune.model to the torch model before training; ONNX models "
                    "are pruned one-shot by prune.fit() without callbacks."
                )

            self._pruner = TorchMagnitudePruner(self._model, self.schedules)
        return self._pruner

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
            pruned = self._fit_torch(model)
        elif is_onnx_model(model):
            pruned = self._fit_onnx(model)
        else:
            raise ConfigError(
                f"Pruning supports a torch.nn.Module (gradual pruning while training) or an ONNX model (one-shot), "
                f"but prune.model is {type(model).__name__}. Convert the model, or pass a path ending in .onnx."
            )
        logger.info("sparsity per weight:\n%s", format_sparsity_table(self.sparsity_report))
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
        if self._train_func is None:
            raise ConfigError(
                "Pruning a torch model is gradual and happens while it trains, so it needs your training loop: set "
                "prune.train_func = train (LPOT 1.x: prune.pruning_func), a function train(model) that calls "
                "prune.on_epoch_begin(epoch), prune.on_batch_begin(i), prune.on_batch_end() and prune.on_epoch_end(). "
                "lpot-ir has no built-in trainer for pruning.train."
            )
        pruner = self._torch_pruner("fit")  # checks the names before any training
        self._train_func(model)
        if pruner.epochs_seen == 0:
            raise ConfigError(
                "train_func returned without calling prune.on_epoch_begin(epoch), so nothing was pruned. Call "
                "prune.on_epoch_begin(epoch) at the start of every epoch and prune.on_batch_end() after every "
                "optimizer step."
            )
        pruner.apply_masks()
        self.sparsity_report = pruner.report()
        short = [r for r in self.sparsity_report if r.sparsity < r.target - _SPARSITY_TOLERANCE]
        if short:
            logger.warning(
                "%d of %d weights are below their target sparsity (e.g. %s: %.2f%% of %.0f%%): training stopped at epoch "
                "%s, before the pruners' end_epoch. Train up to end_epoch, or lower end_epoch.",
                len(short),
                len(self.sparsity_report),
                short[0].name,
                100 * short[0].sparsity,
                100 * short[0].target,
                pruner.epoch,
            )
        return model

    def _fit_onnx(self, model: Any) -> Any:
        if self._train_func is not None:
            raise ConfigError(
                "An ONNX model cannot be trained by lpot-ir, so train_func would never run: ONNX models are pruned "
                "one-shot to target_sparsity. Remove prune.train_func, or set prune.model to the torch model."
            )
        ir_model = load_model(model, target_opset=None)
        # Old exporters compute weights with Constant/ConstantOfShape nodes; fold them into initializers.
        ir_model = run_pipeline(ir_model, ["constant-folding"]).model
        self.sparsity_report = prune_initializers(ir_model, self.schedules)
        return to_proto(ir_model)
