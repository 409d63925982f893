"""The built-in training loop of quantization-aware training and pruning (LPOT's ``train`` section).

When no training function is given (``q_func`` for QAT, ``train_func`` for pruning), lpot-ir trains the
torch model itself from the YAML's ``quantization.train`` / ``pruning.train`` section::

    train:
      epoch: 2                 # or start_epoch / end_epoch
      iteration: 100           # batches per epoch (default: the whole dataloader)
      dataloader: {batch_size: 32, shuffle: true, seed: 1978, dataset: {...}}
      criterion: {CrossEntropyLoss: {reduction: mean}}
      optimizer: {SGD: {learning_rate: 0.01, momentum: 0.9, weight_decay: 0.0001}}
      lr_schedule: {type: cosine, min_learning_rate: 0.0}   # or {type: step, step_epochs: 2, gamma: 0.1}
      distillation: {weight: 0.5, temperature: 2.0}        # pruning.train: the dense model teaches

The dataloader may also be given in Python (``train_dataloader``); it yields ``(inputs, labels)``
batches of numpy arrays or torch tensors. Callbacks (an object with LPOT's ``on_epoch_begin(epoch)``,
``on_batch_begin(batch_id)``, ``on_post_grad()``, ``on_batch_end()``, ``on_epoch_end()``) are called in
LPOT's order, so pruning schedules run inside the built-in loop exactly as in a user's loop. With a
``teacher`` (pruning passes the dense model) and ``train.distillation`` the loss is
:func:`distillation_loss`.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from lpot_ir.config import create_dataloader
from lpot_ir.errors import ConfigError, DataError

__all__ = [
    "TrainingCallbacks",
    "OPTIMIZERS",
    "CRITERIA",
    "make_optimizer",
    "make_criterion",
    "train_model",
    "epochs_of",
    "distillation_loss",
    "batch_loss",
    "learning_rate_factor",
    "to_torch",
    "call_model",
]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("SGD", "Adam", "AdamW")
"""Optimizers the built-in loop builds (``optimizer: {name: parameters}``)."""

CRITERIA = ("CrossEntropyLoss", "MSELoss", "L1Loss")
"""Losses the built-in loop builds (``criterion: {name: parameters}``)."""

_OPTIMIZER_KEYS = {
    "learning_rate": "lr",
    "lr": "lr",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "weight_decay": "weight_decay",
    "dampening": "dampening",
    "beta_1": "beta1",
    "beta_2": "beta2",
    "epsilon": "eps",
    "eps": "eps",
    "amsgrad": "amsgrad",
}
_CRITERION_KEYS = {"reduction", "label_smoothing"}


class TrainingCallbacks(Protocol):
    """LPOT's training hooks (``Pruning`` implements them)."""

    def on_epoch_begin(self, epoch: int) -> None: ...

    def on_batch_begin(self, batch_id: int) -> None: ...

    def on_post_grad(self) -> None: ...

    def on_batch_end(self) -> None: ...

    def on_epoch_end(self) -> None: ...


def _one(spec: Mapping[str, Any], where: str, known: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    if len(spec) != 1:
        raise ConfigError(
            f"{where} must have exactly one key, the name (e.g. {{{known[0]}: {{...}}}}); got {sorted(spec) or 'none'}. "
            f"Available: {', '.join(known)}."
        )
    name, params = next(iter(spec.items()))
    if name not in known:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where} names '{name}', which the built-in loop does not know.{hint} Available: {', '.join(known)}.")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}.{name} must be a mapping of parameters, got {type(params).__name__}.")
    return str(name), dict(params)


def make_optimizer(spec: Mapping[str, Any] | None, parameters: Iterable[Any], *, where: str = "train.optimizer") -> Any:
    """A torch optimizer from ``{name: parameters}`` (LPOT's keys: ``learning_rate``, ``momentum`` ...).

    An empty spec means ``SGD: {learning_rate: 0.01, momentum: 0.9}``.
    """
    import torch

    name, params = _one(spec or {"SGD": {"learning_rate": 0.01, "momentum": 0.9}}, where, OPTIMIZERS)
    kwargs: dict[str, Any] = {}
    betas = [0.9, 0.999]
    for key, value in params.items():
        mapped = _OPTIMIZER_KEYS.get(key)
        if mapped is None:
            raise ConfigError(
                f"{where}.{name}.{key} is not a parameter the built-in loop passes on; use one of "
                f"{', '.join(sorted(_OPTIMIZER_KEYS))}."
            )
        if mapped in ("beta1", "beta2"):
            betas[0 if mapped == "beta1" else 1] = float(value)
            continue
        kwargs[mapped] = value
    if name != "SGD":
        kwargs["betas"] = tuple(betas)
        kwargs.pop("momentum", None)
        kwargs.pop("nesterov", None)
        kwargs.pop("dampening", None)
    cls = getattr(torch.optim, name)
    try:
        return cls(list(parameters), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.{name}: {exc}. Check the parameter values.") from None


def make_criterion(spec: Mapping[str, Any] | None, *, where: str = "train.criterion") -> Any:
    """A torch loss from ``{name: parameters}``; an empty spec means ``CrossEntropyLoss``."""
    import torch

    name, params = _one(spec or {"CrossEntropyLoss": {}}, where, CRITERIA)
    unknown = sorted(set(params) - _CRITERION_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{name} has unknown parameter(s) {unknown}; use {sorted(_CRITERION_KEYS)}.")
    try:
        return getattr(torch.nn, name)(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.{name}: {exc}. Check the parameter values.") from None


def epochs_of(train: Any) -> range:
    """The epochs a ``train`` section runs: ``start_epoch`` up to ``end_epoch`` (or ``start_epoch + epoch``)."""
    start = int(train.start_epoch) if train is not None else 0
    end = train.end_epoch if train is not None and train.end_epoch is not None else start + int(train.epoch if train is not None else 1)
    return range(start, int(end))


def learning_rate_factor(schedule: Any, progress: float, epoch_index: int) -> float:
    """The factor of the optimizer's learning rate under ``schedule`` (an ``LrSchedule`` or ``None``).

    Args:
        schedule: the ``train.lr_schedule`` section.
        progress: the fraction of the training done, in [0, 1) (cosine).
        epoch_index: epochs done since the first (step).

    Returns:
        ``lr / base_lr``; for cosine, ``min_learning_rate`` is applied by :func:`train_model` (it needs the base rate).
    """
    if schedule is None or str(schedule.type) == "constant":
        return 1.0
    if str(schedule.type) == "step":
        return float(schedule.gamma) ** (epoch_index // int(schedule.step_epochs))
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def distillation_loss(
    student: Any, teacher: Any, labels: Any, criterion: Any, *, weight: float, temperature: float
) -> Any:
    """Knowledge distillation: ``(1 - weight) * criterion(student, labels) + weight * T^2 * KL(teacher || student)``.

    Both distributions are the softmax of the logits divided by ``T = temperature``; the ``T^2`` keeps the
    distillation term's gradients on the task loss's scale (Hinton et al., 2015). The KL divergence is
    averaged over the batch (``batchmean``), over the last axis (the classes).

    Args:
        student: the trained model's logits ``(batch, classes)``.
        teacher: the teacher's logits, same shape (no gradient flows into them).
        labels: the task labels for ``criterion``.
        criterion: the task loss (e.g. ``torch.nn.CrossEntropyLoss()``).
        weight: the distillation share, in [0, 1].
        temperature: > 0.

    Returns:
        The scalar loss tensor.
    """
    import torch

    soft_student = torch.nn.functional.log_softmax(student / temperature, dim=-1)
    soft_teacher = torch.nn.functional.log_softmax(teacher.detach() / temperature, dim=-1)
    kd = torch.nn.functional.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True)
    kd = kd * (temperature * temperature)
    if weight >= 1.0:
        return kd
    return (1.0 - weight) * criterion(student, labels) + weight * kd


def batch_loss(
    output: Any, labels: Any, inputs: Any, criterion: Any, *, teacher: Any = None, distillation: Any = None
) -> Any:
    """The training loss of one batch: ``criterion(output, labels)``, or with ``distillation`` (the
    ``train.distillation`` section) :func:`distillation_loss` against ``teacher``'s logits for ``inputs``.

    Labels are cast as the criterion needs them: class indices (``long``) for cross-entropy, the output's
    dtype otherwise.
    """
    import torch

    if isinstance(criterion, torch.nn.CrossEntropyLoss) and isinstance(labels, torch.Tensor):
        labels = labels.long()
    elif isinstance(labels, torch.Tensor):
        labels = labels.to(output.dtype)
    if distillation is None:
        return criterion(output, labels)
    with torch.no_grad():
        target = call_model(teacher, inputs)
    return distillation_loss(
        output, target, labels, criterion, weight=distillation.weight, temperature=distillation.temperature
    )


def to_torch(x: Any) -> Any:
    """``x`` with numpy arrays turned into torch tensors (inside tuples, lists and dicts too)."""
    import torch

    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (tuple, list)):
        return type(x)(to_torch(v) for v in x)
    if isinstance(x, Mapping):
        return {k: to_torch(v) for k, v in x.items()}
    return x


def call_model(model: Any, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def train_model(
    model: Any,
    train: Any,
    dataloader: Iterable[Any] | None = None,
    *,
    callbacks: TrainingCallbacks | None = None,
    teacher: Any = None,
    where: str = "train",
) -> dict[str, float]:
    """Train ``model`` in place with the built-in loop.

    Args:
        model: a ``torch.nn.Module``.
        train: the ``TrainSection`` (``None``: one epoch, SGD, cross-entropy).
        dataloader: the training batches; default: ``train.dataloader`` built from the YAML.
        callbacks: LPOT's hooks, called around every epoch and batch.
        teacher: the model that teaches when ``train.distillation`` is set (run in eval mode, no gradients).
        where: the YAML path of the section, for messages.

    Returns:
        ``{"loss": mean loss of the last epoch, "batches": batches run}``.

    Raises:
        ConfigError: no training data, an unknown optimizer / criterion, or ``distillation`` without a teacher.
        DataError: a batch is not ``(inputs, labels)``.
    """
    if dataloader is None and train is not None and train.dataloader is not None:
        dataloader = create_dataloader(train.dataloader)
    if dataloader is None:
        raise ConfigError(
            f"The built-in training loop has no data: give {where}.dataloader in the YAML or set train_dataloader "
            "in Python (an iterable of (inputs, labels) batches), or pass your own training function."
        )
    optimizer = make_optimizer(train.optimizer if train is not None else None, model.parameters(), where=f"{where}.optimizer")
    criterion = make_criterion(train.criterion if train is not None else None, where=f"{where}.criterion")
    distillation = train.distillation if train is not None else None
    if distillation is not None and teacher is None:
        raise ConfigError(
            f"{where}.distillation needs a teacher model, and this training loop has none: distillation is "
            "available in pruning.train (the dense model teaches the pruned one). Remove the distillation key here."
        )
    if teacher is not None:
        teacher.eval()
    iterations = train.iteration if train is not None else None
    schedule = train.lr_schedule if train is not None else None
    epochs = epochs_of(train)
    per_epoch = iterations
    if per_epoch is None and hasattr(dataloader, "__len__"):
        per_epoch = len(dataloader)  # type: ignore[arg-type]
    base_rates = [group["lr"] for group in optimizer.param_groups]
    minimum = float(schedule.min_learning_rate) if schedule is not None and str(schedule.type) == "cosine" else 0.0

    def set_rate(epoch_index: int, batch_id: int) -> None:
        if schedule is None:
            return
        steps = per_epoch if per_epoch else 1
        progress = (epoch_index * steps + (min(batch_id, steps - 1) if per_epoch else 0)) / max(len(epochs) * steps, 1)
        factor = learning_rate_factor(schedule, progress, epoch_index)
        for group, base in zip(optimizer.param_groups, base_rates, strict=True):
            group["lr"] = minimum + (base - minimum) * factor if str(schedule.type) == "cosine" else base * factor

    last_loss = float("nan")
    batches = 0
    for epoch_index, epoch in enumerate(epochs):
        model.train()
        if callbacks is not None:
            callbacks.on_epoch_begin(epoch)
        total, count = 0.0, 0
        for batch_id, batch in enumerate(dataloader):
            if iterations is not None and batch_id >= iterations:
                break
            set_rate(epoch_index, batch_id)
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise DataError(
                    f"The training dataloader must yield (inputs, labels) batches; batch {batch_id} is a "
                    f"{type(batch).__name__}{f' of {len(batch)} items' if isinstance(batch, (tuple, list)) else ''}."
                )
            inputs, labels = to_torch(batch[0]), to_torch(batch[1])
            if callbacks is not None:
                callbacks.on_batch_begin(batch_id)
            optimizer.zero_grad()
            output = call_model(model, inputs)
            loss = batch_loss(output, labels, inputs, criterion, teacher=teacher, distillation=distillation)
            loss.backward()
            if callbacks is not None:
                callbacks.on_post_grad()
            optimizer.step()
            if callbacks is not None:
                callbacks.on_batch_end()
            total += float(loss.detach())
            count += 1
        batches += count
        if callbacks is not None:
            callbacks.on_epoch_end()
        last_loss = total / max(count, 1)
        logger.info(
            "%s: epoch %d, mean loss %.4f over %d batch(es), learning rate %.3g",
            where, epoch, last_loss, count, optimizer.param_groups[0]["lr"],
        )  # fmt: skip
    model.eval()
    return {"loss": last_loss, "batches": float(batches)}
