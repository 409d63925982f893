"""Where each model input keeps its samples: THE batching rules of calibration, sensitivity and the proxy.

Calibration data comes as people have it: one ``.npz`` holding exactly the inputs of one real run, a
dataloader that yields whole feeds, a dataloader whose batches stack several such feeds, a recurrent
state whose batch axis is not the first, a scalar sample rate, a model whose batch is fixed. A
:class:`BatchLayout` knows, for each input, its *batch axis* (or that it has none) and the model's
*fixed batch size* (if any), and every consumer that counts, splits, slices or concatenates samples
(:func:`lpot_ir.calibration.calibrate`, :func:`lpot_ir.calibration.load_calibration_files`, the
sensitivity meter and the accuracy proxy of the tuning loop) asks it rather than assuming axis 0.

How the batch axis of an input is found, first rule that applies:

1. the user's setting (``batch_axes={"state": 1}``; ``None`` = not batched), from ``--batch-axis
   state=1`` on the command line or ``model.batch_axes`` in the YAML;
2. a 0-d input (a scalar such as a sample rate) is not batched: it goes with every batch unchanged;
3. *named*: a symbolic dimension shared by several inputs is the batch dimension (``batch`` in
   ``input [batch, samples]`` and ``state [2, batch, 128]``) if its name contains "batch" or it is the
   first axis of an input; an input without it is not batched;
4. *unnamed*: axis 0, unless axis 0 disagrees with the model's batch (the first input's axis 0: dynamic,
   or a fixed size): then the input's one dynamic axis (resp. the one axis of the fixed size), or none
   (not batched). Several such axes are resolved with the data (the axis whose length equals the
   other inputs' sample count); if the data cannot tell, a :class:`~lpot_ir.errors.DataError` names
   the choices and the setting that settles it.

Dimensions declared ``-1`` or ``0`` are dynamic (see :class:`~.session.InputSpec`). A batch axis with a
static size makes the model's batch *fixed*: batches are never cut below it nor concatenated
(a feed with a multiple of it is split into whole batches), and calibration's ``sampling_size`` is
rounded up to whole batches.

:meth:`BatchLayout.feeds` turns one dataloader batch into checked feeds: arrays in the model's layout
form one feed; arrays with one more (leading) axis than the model's inputs are a stack of feeds (what
``DataLoader(feeds, batch_size=k)`` yields) and become one feed each; a non-batched input given once
per sample with equal values (a collated scalar) is reduced to one value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lpot_ir.backends.onnxruntime.session import (
    InputSpec,
    batch_inputs,
    feed_values,
    input_specs,
    make_feed,
)
from lpot_ir.errors import ConfigError, DataError

__all__ = ["BatchLayout", "BatchAxes", "feeds_from_batches", "parse_batch_axes", "BATCH_AXES_HELP"]

logger = logging.getLogger(__name__)

BatchAxes = Mapping[str, int | None]
"""``{input name: batch axis}``; ``None`` marks an input that is not batched."""

BATCH_AXES_HELP = (
    "--batch-axis NAME=AXIS on the command line (NAME=none: not batched), model.batch_axes: {NAME: AXIS} in "
    "the YAML, or batch_axes={'NAME': AXIS} in Python"
)
"""Where users set batch axes; quoted by every error that asks for one."""

_UNRESOLVED = -999  # placeholder while an input's batch axis waits for data


def _dynamic(dim: Any) -> bool:
    return not isinstance(dim, int)


def _shape_text(shape: Sequence[Any]) -> str:
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def parse_batch_axes(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, int | None]:
    """Parse ``NAME=AXIS`` strings (``NAME=none``: not batched), or check a mapping, into batch axes.

    Raises:
        ConfigError: an item that is not ``NAME=AXIS`` with an integer (or ``none``) axis.
    """
    if items is None:
        return {}
    pairs: list[tuple[str, Any]]
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        pairs = []
        for item in items:
            name, sep, axis = str(item).rpartition("=")
            if not sep or not name:
                raise ConfigError(
                    f"Batch axis {item!r} is not NAME=AXIS. Write e.g. --batch-axis state=1 (the batch is axis 1 "
                    "of input 'state'), or --batch-axis sr=none (input 'sr' is not batched)."
                )
            pairs.append((name, axis))
    result: dict[str, int | None] = {}
    for name, axis in pairs:
        if axis is None or (isinstance(axis, str) and axis.strip().lower() in ("none", "null", "")):
            result[name] = None
            continue
        try:
            if isinstance(axis, bool):
                raise ValueError
            result[name] = int(axis)
        except (TypeError, ValueError):
            raise ConfigError(
                f"The batch axis of input '{name}' is {axis!r}; it must be an integer axis (negative counts from "
                "the end) or none (the input is not batched)."
            ) from None
    return result


class BatchLayout:
    """The batch axis of every model input and the model's fixed batch size (see the module docstring).

    Args:
        model_inputs: a session, a model, or its :func:`~.session.input_specs`.
        batch_axes: the user's batch axes (``{name: axis or None}``); they win over every rule.

    Raises:
        ConfigError: ``batch_axes`` names an input the model does not have, or an axis out of range.
    """

    def __init__(self, model_inputs: Any, batch_axes: BatchAxes | None = None) -> None:
        self.specs: list[InputSpec] = input_specs(model_inputs)
        self._by_name = {s.name: s for s in self.specs}
        overrides = self._check_overrides(dict(batch_axes or {}))
        self._choices: dict[str, tuple[int, ...]] = {}
        self._axes: dict[str, int | None] = {}
        batch_name = self._batch_name()
        reference = self._reference()
        for spec in self.specs:
            if spec.name in overrides:
                self._axes[spec.name] = overrides[spec.name]
                continue
            choices = self._candidates(spec, batch_name, reference)
            if len(choices) == 1:
                self._axes[spec.name] = choices[0]
            else:
                self._axes[spec.name] = _UNRESOLVED
                self._choices[spec.name] = tuple(c for c in choices if c is not None)
        self.overrides = overrides
        self._feeds_made = 0
        self.fixed: int | None = self._fixed_size()

    # -- construction ------------------------------------------------------------------------------

    def _check_overrides(self, overrides: dict[str, int | None]) -> dict[str, int | None]:
        unknown = [n for n in overrides if n not in self._by_name]
        if unknown:
            raise ConfigError(
                f"Batch axes are set for {', '.join(repr(n) for n in unknown)}, which the model does not have; its "
                f"inputs are {', '.join(f'{s.name!r} {s.shape_text()}' for s in self.specs) or 'none'}."
            )
        checked: dict[str, int | None] = {}
        for name, axis in overrides.items():
            shape = self._by_name[name].shape
            if axis is not None and shape is not None:
                if not -len(shape) <= axis < len(shape):
                    raise ConfigError(
                        f"The batch axis of input '{name}' is set to {axis}, but the input has rank {len(shape)} "
                        f"(shape {_shape_text(shape)}); use an axis from 0 to {len(shape) - 1}, or none."
                    )
                axis %= len(shape)
            checked[name] = axis
        return checked

    def _batch_name(self) -> str | None:
        """The symbolic dimension shared by several inputs that names the batch, if there is one."""
        counts: dict[str, int] = {}
        front: set[str] = set()
        for spec in self.specs:
            if not spec.shape:
                continue
            if isinstance(spec.shape[0], str):
                front.add(spec.shape[0])
            for dim in {d for d in spec.shape if isinstance(d, str)}:
                counts[dim] = counts.get(dim, 0) + 1
        shared = [n for n, c in counts.items() if c >= 2 and ("batch" in n.lower() or n in front)]
        if len(shared) > 1:
            shared = [n for n in shared if "batch" in n.lower()]
        return shared[0] if len(shared) == 1 else None

    def _reference(self) -> tuple[bool, int | None]:
        """``(known, fixed size)`` of the model's batch in the unnamed rule: the first input's axis 0."""
        for spec in self.specs:
            if spec.shape:
                dim = spec.shape[0]
                return True, (None if _dynamic(dim) else int(dim))  # type: ignore[arg-type]
        return False, None

    def _candidates(self, spec: InputSpec, batch_name: str | None, reference: tuple[bool, int | None]) -> list[int | None]:
        shape = spec.shape
        if shape is None:
            return [0]  # unknown rank: axis 0 (a 0-d array is not batched, see _axis_for)
        if not shape:
            return [None]
        if batch_name is not None:
            found: list[int | None] = [a for a, d in enumerate(shape) if d == batch_name]
            return found or [None]
        known, size = reference
        dim0 = shape[0]
        if not known or (size is None and _dynamic(dim0)) or (size is not None and dim0 == size):
            return [0]
        if size is None:
            matches: list[int | None] = [a for a, d in enumerate(shape) if _dynamic(d)]
        else:
            matches = [a for a, d in enumerate(shape) if d == size]
        return matches or [None]

    def _fixed_size(self) -> int | None:
        sizes = set()
        for spec in self.specs:
            axis = self._axes[spec.name]
            if spec.shape is None:
                continue
            options = self._choices.get(spec.name, ()) if axis == _UNRESOLVED else (axis,)
            dims = {spec.shape[a] for a in options if a is not None}
            if len(dims) == 1 and not _dynamic(next(iter(dims))):
                sizes.add(int(next(iter(dims))))  # type: ignore[arg-type]
        if len(sizes) > 1:
            detail = ", ".join(
                f"'{s.name}' {s.shape_text()} axis {self._axes[s.name]}" for s in self.specs
                if self._axes[s.name] not in (None, _UNRESOLVED)
            )
            raise ConfigError(
                f"The model's inputs disagree about a fixed batch size ({', '.join(map(str, sorted(sizes)))}): {detail}. "
                f"Say which axis holds the batch of each input: {BATCH_AXES_HELP}."
            )
        return sizes.pop() if sizes else None

    # -- the axes ----------------------------------------------------------------------------------

    @property
    def resolved(self) -> bool:
        """Whether every input's batch axis is known (else the first feed decides)."""
        return not self._choices

    def axes(self) -> dict[str, int | None]:
        """``{input name: batch axis or None}``; inputs still waiting for data are left out."""
        return {n: a for n, a in self._axes.items() if a != _UNRESOLVED}

    def describe(self) -> str:
        """One line per input: name, shape and batch axis (for logs and errors)."""
        parts = []
        for spec in self.specs:
            axis = self._axes[spec.name]
            where = (
                "not batched" if axis is None
                else f"batch axis one of {', '.join(map(str, self._choices[spec.name]))}" if axis == _UNRESOLVED
                else f"batch axis {axis}"
            )
            parts.append(f"'{spec.name}' {spec.shape_text()} {where}")
        return "; ".join(parts) + (f"; fixed batch size {self.fixed}" if self.fixed else "")

    def _resolve(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Settle inputs with several candidate batch axes from one feed's shapes."""
        if not self._choices:
            return
        counts = {
            shapes[n][a] for n, a in self._axes.items()
            if a not in (None, _UNRESOLVED) and n in shapes and len(shapes[n]) > a  # type: ignore[operator]
        }
        for name, choices in list(self._choices.items()):
            shape = shapes.get(name)
            fitting = [a for a in choices if shape is not None and a < len(shape) and (not counts or shape[a] in counts)]
            spec = self._by_name[name]
            if len(fitting) > 1 and self.fixed and spec.shape is not None and tuple(spec.shape) == tuple(shape or ()):
                fitting = fitting[:1]  # exactly one fixed-size batch: it is never cut or joined, any choice holds
            if len(fitting) != 1 or len(counts) > 1:
                seen = "no array" if shape is None else f"an array of shape {_shape_text(shape)}"
                raise DataError(
                    f"Cannot tell which axis of model input '{name}' (shape {spec.shape_text()}) holds the batch: it "
                    f"could be axis {' or '.join(map(str, choices))}, and the data ({seen}; other inputs hold "
                    f"{' or '.join(map(str, sorted(counts))) or 'no'} sample(s)) "
                    f"{'fits more than one' if fitting else 'fits none'}. Say which: {BATCH_AXES_HELP} "
                    f"(e.g. --batch-axis {name}={choices[-1]}); none means the input is not batched."
                )
            self._axes[name] = fitting[0]
            del self._choices[name]
            logger.info("Input %r: batch axis %d (chosen from the data's shapes).", name, fitting[0])

    def _axis(self, name: str, ndim: int | None = None) -> int | None:
        """The batch axis of ``name`` for data of rank ``ndim`` (a 0-d value is never batched)."""
        axis = self._axes.get(name)
        if axis == _UNRESOLVED:
            raise AssertionError(f"the batch axis of {name!r} is settled by the first data seen")  # internal
        if axis is not None and ndim is not None and (ndim == 0 or axis >= ndim):
            return None
        return axis

    # -- feeds ---------------------------------------------------------------------------------------

    def feeds(self, batch: Any, *, where: str = "the batch") -> list[dict[str, np.ndarray]]:
        """The checked feeds in one batch (bare inputs, or ``(inputs, labels)``; see the module docstring).

        Raises:
            DataError: the batch does not fit the model; the message names the input, the shapes seen and
                expected, and the fix.
        """
        values = feed_values(self.specs, batch_inputs(batch, len(self.specs)))
        arrays = {name: self._as_array(name, value, where) for name, value in values.items()}
        stack, _ = self.plan({n: a.shape for n, a in arrays.items()}, where=where)
        pieces = [arrays] if stack is None else [self.unstack(arrays, i) for i in range(stack)]
        result: list[dict[str, np.ndarray]] = []
        for piece in pieces:
            piece = {n: self._one_value(n, a, where) for n, a in piece.items()}
            result.extend(make_feed(self.specs, part) for part in self._whole_batches(piece, where))
        self._feeds_made += len(result)
        return result

    def plan(self, shapes: Mapping[str, tuple[int, ...]], *, where: str = "the batch") -> tuple[int | None, int]:
        """``(feeds stacked on a new axis 0 or None, samples per feed)`` of data with these shapes.

        The first data seen settles batch axes the model leaves open. Dtypes and static dimensions are
        :func:`~.session.make_feed`'s to check.

        Raises:
            DataError: a rank that fits neither one feed nor a stack of feeds, inputs that disagree about
                the number of samples, or a batch axis the data cannot settle.
        """
        stack = self._stack_length(shapes)
        feed_shapes = {n: tuple(s[1:]) if stack is not None and self._stacked(n, s) else tuple(s) for n, s in shapes.items()}
        self._resolve(feed_shapes)
        feed_shapes = {n: self._one_value_shape(n, s) for n, s in feed_shapes.items()}
        self._check_ranks(feed_shapes, where, stacked=stack is not None)
        counts = {
            n: s[ax] for n, s in feed_shapes.items()
            if (ax := self._axis(n, len(s))) is not None and len(s) > ax
        }
        if len(set(counts.values())) > 1:
            detail = ", ".join(
                f"'{n}' {_shape_text(feed_shapes[n])} holds {c} sample(s) on axis {self._axes[n]}" for n, c in counts.items()
            )
            raise DataError(
                f"The inputs in {where}{' (each feed of the stack)' if stack is not None else ''} disagree about "
                f"the number of samples: {detail}. Every batched input needs the same number of "
                f"samples; if an axis is not the batch, say which is: {BATCH_AXES_HELP}."
            )
        return stack, next(iter(counts.values()), 1)

    def unstack(self, arrays: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        """Feed ``index`` of a stack of feeds (inputs given once for the whole stack are shared)."""
        return {n: a[index] if self._stacked(n, a.shape) else a for n, a in arrays.items()}

    def _as_array(self, name: str, value: Any, where: str) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        try:
            return np.asarray(value)
        except Exception as exc:
            spec = self._by_name[name]
            raise DataError(
                f"The value for model input '{name}' in {where} is a {type(value).__name__} that cannot be turned "
                f"into a numpy array ({exc}). Yield numpy arrays of shape {spec.shape_text()} and dtype {spec.dtype}."
            ) from None

    def rank(self, name: str) -> int | None:
        """The rank of model input ``name`` (``None``: unknown)."""
        shape = self._by_name[name].shape if name in self._by_name else None
        return None if shape is None else len(shape)

    def _stacked(self, name: str, shape: Sequence[int]) -> bool:
        rank = self.rank(name)
        return rank is not None and len(shape) == rank + 1

    def _stack_length(self, shapes: Mapping[str, Sequence[int]]) -> int | None:
        """The number of feeds if the shapes stack whole feeds on a new axis 0, else ``None``: every batched
        input has one axis more than the model's, every other input one more or none more, lengths agree."""
        lengths = set()
        batched_seen = False
        for name, shape in shapes.items():
            rank = self.rank(name)
            if rank is None:
                return None
            batched = self._axes.get(name) is not None
            if len(shape) == rank + 1:
                lengths.add(shape[0])
                batched_seen = batched_seen or batched
            elif batched or len(shape) != rank:
                return None
        if len(lengths) != 1 or (not batched_seen and any(a is not None for a in self._axes.values())):
            return None
        return lengths.pop()

    def _one_value_shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        rank = self.rank(name)
        if self._axes.get(name) is None and rank is not None and len(shape) == rank + 1:
            return shape[1:]  # a value per sample of a non-batched input: checked to be one value in _one_value
        return shape

    def _one_value(self, name: str, array: np.ndarray, where: str) -> np.ndarray:
        """A non-batched input given once per sample (collated by a dataloader): its one value."""
        rank = self.rank(name)
        if self._axes.get(name) is not None or rank is None or array.ndim != rank + 1 or array.shape[0] < 1:
            return array
        if all(np.array_equal(array[0], array[i]) for i in range(1, array.shape[0])):
            return array[0]
        spec = self._by_name[name]
        raise DataError(
            f"Model input '{name}' is not batched (shape {spec.shape_text()}: one value for the whole batch), but "
            f"{where} gives {array.shape[0]} different values (shape {_shape_text(array.shape)}). Feed samples with "
            f"different '{name}' in separate batches, or, if '{name}' does hold a batch, say on which axis: "
            f"{BATCH_AXES_HELP}."
        )

    def _check_ranks(self, shapes: Mapping[str, tuple[int, ...]], where: str, *, stacked: bool) -> None:
        for spec in self.specs:
            shape = shapes.get(spec.name)
            if shape is None or spec.shape is None or len(shape) == len(spec.shape):
                continue
            axis = self._axes[spec.name]
            seen = ", ".join(f"'{n}' {_shape_text(s)}" for n, s in shapes.items())
            hint = (
                f"Its batch is axis {axis}" if axis is not None else "It is not batched (one value for the whole batch)"
            )
            raise DataError(
                f"Model input '{spec.name}' expects rank {len(spec.shape)} (shape {spec.shape_text()}), but "
                f"{where}{' (one feed of a stack)' if stacked else ''} gives rank {len(shape)}, shape "
                f"{_shape_text(shape)} (all inputs: {seen}). {hint}. Give each input in the model's layout (one "
                "feed), or stack whole feeds on a new first axis; if the batch is on another axis, say so: "
                + BATCH_AXES_HELP + "."
            )

    def _whole_batches(self, piece: dict[str, np.ndarray], where: str) -> list[dict[str, np.ndarray]]:
        """A feed of a fixed-batch model holding several whole batches, split into them."""
        if not self.fixed:
            return [piece]
        n = self.count(piece)
        if n == self.fixed or not any(self._axis(k, a.ndim) is not None for k, a in piece.items()):
            return [piece]
        if n % self.fixed == 0:
            return [self.take(piece, i, i + self.fixed) for i in range(0, n, self.fixed)]
        if n < self.fixed and self._feeds_made:
            logger.warning(
                "%s holds %d sample(s), fewer than the model's fixed batch of %d; it is skipped (a short last batch).",
                where[0].upper() + where[1:], n, self.fixed,
            )
            return []
        name = next(k for k, a in piece.items() if self._axis(k, a.ndim) is not None)
        raise DataError(
            f"The model's batch is fixed at {self.fixed} (input '{name}' has shape "
            f"{self._by_name[name].shape_text()}, batch axis {self._axes[name]}), but {where} gives shape "
            f"{_shape_text(piece[name].shape)}: {n} sample(s) (all inputs: "
            f"{', '.join(f'{k!r} {_shape_text(a.shape)}' for k, a in piece.items())}). Give batches of "
            f"{self.fixed} sample(s), or a multiple (e.g. batch_size={self.fixed} in the dataloader); calibration "
            "files are cut into whole batches by lpot-ir itself."
        )

    # -- counting, splitting, joining ---------------------------------------------------------------

    def count(self, feed: Mapping[str, np.ndarray]) -> int:
        """Samples in a feed: the length of the first batched input's batch axis (1 if nothing is batched)."""
        for spec in self.specs:
            array = feed.get(spec.name)
            if array is None or self._axes.get(spec.name) == _UNRESOLVED:
                continue
            axis = self._axis(spec.name, np.ndim(array))
            if axis is not None:
                return int(np.shape(array)[axis])
        return 1

    @property
    def splittable(self) -> bool:
        """Whether feeds may be cut into fewer samples and joined for a run (a dynamic batch, axes known)."""
        return self.fixed is None and not self._choices and any(a is not None for a in self._axes.values())

    def take(self, feed: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start:stop`` of ``feed`` on each input's batch axis (non-batched inputs unchanged)."""
        result = {}
        for name, array in feed.items():
            axis = self._axis(name, array.ndim)
            if axis is None:
                result[name] = array
                continue
            index: list[slice] = [slice(None)] * array.ndim
            index[axis] = slice(start, stop)
            result[name] = array[tuple(index)]
        return result

    def head(self, feed: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The first ``n`` samples of ``feed`` (the whole feed when the batch is fixed: never cut below it)."""
        return self.take(feed, 0, n) if self.splittable else dict(feed)

    def split(self, feed: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """One feed per sample (keeping the batch axis), or ``[feed]`` when the batch is fixed."""
        n = self.count(feed)
        if not self.splittable or n <= 1:
            return [dict(feed)]
        return [self.take(feed, i, i + 1) for i in range(n)]

    def concat(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
        """``feeds`` joined on their batch axes into one; ``None`` when they cannot be joined (other
        dimensions differ, or a non-batched input differs). Does not look at a fixed batch: see :meth:`group`."""
        if not feeds:
            return None
        if len(feeds) == 1:
            return dict(feeds[0])
        joined: dict[str, np.ndarray] = {}
        for name in feeds[0]:
            parts = [f[name] for f in feeds]
            axis = self._axis(name, parts[0].ndim)
            if axis is None:
                if not all(np.array_equal(parts[0], p) for p in parts[1:]):
                    return None
                joined[name] = parts[0]
                continue
            try:
                joined[name] = np.concatenate(parts, axis=axis)
            except ValueError:
                return None
        return joined

    def group(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Feeds to run: ``feeds`` joined into one when the batch is dynamic and they can be joined, else
        unchanged (one run each). A fixed batch is never joined."""
        joined = self.concat(feeds) if self.splittable else None
        return [joined] if joined is not None else [dict(f) for f in feeds]

    def round_up(self, samples: int) -> int:
        """``samples`` rounded up to whole fixed-size batches (unchanged for a dynamic batch)."""
        if not self.fixed:
            return samples
        return int(math.ceil(samples / self.fixed)) * self.fixed


def feeds_from_batches(
    batches: Iterable[Any], model: Any, limit: int, *, batch_axes: BatchAxes | None = None
) -> list[dict[str, np.ndarray]]:
    """Checked feeds from dataloader batches (``(inputs, labels)`` or bare inputs) until ``limit`` samples.

    Args:
        batches: the dataloader.
        model: the model the feeds are for (anything :func:`~.session.input_specs` takes), or its
            :class:`BatchLayout`.
        limit: stop after the feed that reaches this many samples (counted on the batch axes).
        batch_axes: ``{input name: axis or None}`` where the model's dimension names do not tell.
    """
    layout = model if isinstance(model, BatchLayout) else BatchLayout(model, batch_axes)
    feeds: list[dict[str, np.ndarray]] = []
    seen = 0
    for index, batch in enumerate(batches):
        for feed in layout.feeds(batch, where=f"batch {index}"):
            feeds.append(feed)
            seen += layout.count(feed)
            if seen >= limit:
                return feeds
    return feeds
