"""Batching: :class:`DataLoader` collates ``(input, label)`` samples into numpy batches.

Iterating a :class:`DataLoader` yields ``(inputs, labels)`` per batch. ``inputs`` is a stacked array,
or a tuple / dict of stacked arrays when the samples' inputs are tuples / dicts (models with several
inputs). ``labels`` is a stacked array, ``None`` when every label is ``None``, or a list when the
labels cannot be stacked (e.g. detection ground truth with a different number of boxes per image).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lpot_ir.errors import DataError, paragraph

__all__ = ["LastBatch", "DataLoader", "collate"]

logger = logging.getLogger(__name__)


class LastBatch(str, enum.Enum):
    """What to do with a last batch smaller than ``batch_size``.

    * ``keep``: yield it (every sample is seen once per pass; the default).
    * ``discard``: drop it.
    * ``rollover``: hold its samples back and put them first in the next pass (MXNet's meaning); every
      batch is full, but consecutive passes see different samples. LPOT's own ONNX Runtime dataloader
      treats ``rollover`` like ``keep``; lpot-ir implements the real rollover, so choose ``keep`` for
      evaluation data.
    """

    KEEP = "keep"
    DISCARD = "discard"
    ROLLOVER = "rollover"

    def __str__(self) -> str:
        return self.value


def _describe(item: Any) -> str:
    """A short, one-line description of a sample for an error message."""
    shape = getattr(item, "shape", None)
    if shape is not None:
        return f"a {type(item).__name__} of shape {tuple(shape)}"
    if isinstance(item, Mapping):
        return f"a {type(item).__name__} with the keys {list(item)[:8]}"
    return f"a {type(item).__name__} ({paragraph(repr(item))[:60]})"


def _stack(values: Sequence[Any], what: str) -> np.ndarray:
    arrays = []
    for index, value in enumerate(values):
        try:
            arrays.append(np.asarray(value))
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"Cannot batch {what}: sample {index} of the batch, {_describe(value)}, is not an array "
                f"({paragraph(exc)}). Give each sample's input as a numpy array (nested lists of "
                "equal length work too)."
            ) from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        bad = next(i for i, a in enumerate(arrays) if a.shape != first)
        raise DataError(
            f"Cannot batch {what}: sample 0 has shape {first} but sample {bad} of the batch has shape "
            f"{arrays[bad].shape}. Resize the samples to one shape (e.g. a Resize/CenterCrop transform) or use batch_size 1."
        )
    try:
        return np.stack(arrays)
    except (ValueError, TypeError) as exc:  # no common dtype (e.g. float32 beside datetime64)
        dtypes = sorted({str(a.dtype) for a in arrays})
        raise DataError(
            f"Cannot batch {what}: the samples' dtypes {dtypes} have no common type ({paragraph(exc)[:120]}). "
            "Give every sample's input the dtype the model expects."
        ) from None


def _collate_inputs(inputs: Sequence[Any]) -> Any:
    first = inputs[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for item in inputs:
            if not isinstance(item, Mapping) or list(item) != keys:
                raise DataError(
                    f"Cannot batch inputs: every sample must be a dict with the keys {keys[:8]} (as the first "
                    f"one), got {_describe(item)}. Give every sample the same input names."
                )
        return {k: _stack([item[k] for item in inputs], f"input '{k}'") for k in keys}
    if isinstance(first, (tuple, list)):
        n = len(first)
        for item in inputs:
            if not isinstance(item, (tuple, list)) or len(item) != n:
                raise DataError(
                    f"Cannot batch inputs: every sample must be a tuple of {n} arrays (as the first one), got "
                    f"{_describe(item)}. Give every sample the same number of inputs."
                )
        return tuple(_stack([item[i] for item in inputs], f"input {i}") for i in range(n))
    return _stack(inputs, "inputs")


def _collate_labels(labels: Sequence[Any]) -> Any:
    if all(label is None for label in labels):
        return None
    try:
        arrays = [np.asarray(label) for label in labels]
    except (ValueError, TypeError):
        return list(labels)
    if any(a.dtype == object for a in arrays) or len({a.shape for a in arrays}) > 1:
        return list(labels)
    try:
        return np.stack(arrays)
    except (ValueError, TypeError):  # no common dtype: the metric gets them as they are
        return list(labels)


def collate(samples: Sequence[Any]) -> tuple[Any, Any]:
    """Turn a list of ``(input, label)`` samples into one ``(inputs, labels)`` batch."""
    inputs, labels = [], []
    for sample in samples:
        if isinstance(sample, (tuple, list)) and len(sample) == 2:
            inputs.append(sample[0])
            labels.append(sample[1])
        else:
            inputs.append(sample)
            labels.append(None)
    return _collate_inputs(inputs), _collate_labels(labels)


class DataLoader:
    """Batches a dataset that has ``__getitem__`` and ``__len__`` (or is just iterable).

    Args:
        dataset: items are ``(input, label)`` pairs, as tuples or two-element lists (as in LPOT); any
            other item is an input with no label.
        batch_size: samples per batch.
        shuffle: visit samples in a random order, a new order each pass (reproducible from ``seed``).
        last_batch: ``keep``, ``discard`` or ``rollover`` (see :class:`LastBatch`).
        seed: the random seed of ``shuffle``.
        collate_fn: turns a list of samples into a batch (default :func:`collate`).

    ``len(loader)`` is the number of batches the next pass yields.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        last_batch: LastBatch | str = LastBatch.KEEP,
        seed: int | None = None,
        collate_fn: Callable[[Sequence[Any]], Any] | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise DataError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}.")
        try:
            self.last_batch = LastBatch(last_batch)
        except ValueError:
            raise DataError(
                f"DataLoader: last_batch {last_batch!r} is not one of {', '.join(m.value for m in LastBatch)}."
            ) from None
        has_getitem = hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
        if not has_getitem and not hasattr(dataset, "__iter__"):
            raise DataError(
                f"DataLoader: the dataset ({type(dataset).__name__}) needs __getitem__ and __len__ (or __iter__)."
            )
        if shuffle and not has_getitem:
            raise DataError("DataLoader: shuffle needs a dataset with __getitem__ and __len__.")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.collate_fn = collate_fn or collate
        self._rng = np.random.default_rng(seed)
        self._carry: list[Any] = []

    def _samples(self) -> Iterator[Any]:
        if hasattr(self.dataset, "__getitem__") and hasattr(self.dataset, "__len__"):
            order = self._rng.permutation(len(self.dataset)) if self.shuffle else range(len(self.dataset))
            for index in order:
                yield self.dataset[int(index)]
        else:
            yield from self.dataset

    def __iter__(self) -> Iterator[Any]:
        batch: list[Any] = list(self._carry) if self.last_batch is LastBatch.ROLLOVER else []
        self._carry = []
        for sample in self._samples():
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch:
            if self.last_batch is LastBatch.KEEP:
                yield self.collate_fn(batch)
            elif self.last_batch is LastBatch.ROLLOVER:
                self._carry = batch

    def __len__(self) -> int:
        if not hasattr(self.dataset, "__len__"):
            raise TypeError("This DataLoader reads an iterable dataset without __len__, so its length is unknown.")
        n = len(self.dataset)
        if self.last_batch is LastBatch.KEEP:
            return math.ceil(n / self.batch_size)
        if self.last_batch is LastBatch.ROLLOVER:
            return (n + len(self._carry)) // self.batch_size
        return n // self.batch_size
