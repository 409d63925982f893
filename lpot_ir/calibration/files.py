"""Calibration data from files, for ``lpot quantize MODEL --calib DATA`` (and ``lpot tune --calib``).

``DATA`` is a ``.npy`` file, an ``.npz`` file, or a folder of them (read in file-name order).

* A ``.npy`` file holds one array: the model must have one input.
* An ``.npz`` file holds one array per model input, matched by input name; extra keys are ignored (with
  a note). A model with one input takes the single array of an ``.npz`` whatever its key.

Which axis of each array counts samples is the model's business (:class:`~lpot_ir.backends.onnxruntime.
batching.BatchLayout`): the batch axis of each input (``state [2, batch, 128]`` keeps its samples on axis
1), none for a scalar or other non-batched input (given once, used with every batch). A file whose arrays
have exactly the model's ranks is one feed of N samples (the inputs of one real run: N = 1, or a batch);
a file whose arrays have one more leading axis stacks K such feeds (e.g. ``numpy.stack`` of the
inputs of K runs). Feeds are cut into batches of ``batch_size`` samples on the batch axes (stacked
feeds are used as recorded); a fixed batch size of the model is respected (a remainder is dropped, with
a warning).

Every file is checked against the model before any batch is produced, and every mismatch is a
:class:`~lpot_ir.errors.DataError` that names the file, the input and both shapes or dtypes: a wrong
rank, a static dimension that differs, a dtype that cannot be used, a missing input, inputs of one file
with different sample counts. Shapes and dtypes are checked by
:func:`lpot_ir.backends.onnxruntime.session.make_feed` (the one check that data fits a model) on one
batch-shaped view of each array, and each yielded batch goes through it too. Its dtype rule: another
float type is cast to the input's float type (float64 data for a float32 input, numpy's default, is
cast with a note), an integer type to a wider integer type; floats for an integer input and integers
for a float input are errors.

Only array headers are read up front; ``.npy`` files are memory-mapped and ``.npz`` members are read
one file at a time while iterating, so a folder larger than memory still works.
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.batching import BatchAxes, BatchLayout
from lpot_ir.backends.onnxruntime.session import InputSpec, make_feed
from lpot_ir.errors import DataError, paragraph

__all__ = ["NumpyBatches", "load_calibration_files"]

logger = logging.getLogger(__name__)


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)
"""What numpy and zipfile raise on a truncated, corrupted, encrypted or pickled file."""


def _unreadable(where: str, exc: BaseException) -> DataError:
    reason = paragraph(exc) or type(exc).__name__
    return DataError(
        f"Calibration data {where} is not a readable numpy file ({reason}); it may be truncated or corrupted, "
        "or hold pickled objects. Re-save it with numpy.save / numpy.savez from numeric arrays."
    )


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return tuple(array.shape), array.dtype


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            headers[info.filename[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
    return headers


@dataclass(frozen=True)
class _Source:
    """One data file: which array feeds which input, whether it stacks feeds, how many samples it holds."""

    path: Path
    keys: Mapping[str, str | None]  # input name -> npz key (None: the .npy array)
    stack: int | None  # feeds stacked on a new axis 0, or None (one feed)
    per_feed: int  # samples in each feed

    @property
    def samples(self) -> int:
        return self.per_feed * (self.stack if self.stack is not None else 1)


def _check_against_model(
    layout: BatchLayout, spec: InputSpec, shape: tuple[int, ...], dtype: np.dtype, where: str, stacked: bool,
    batch_size: int,
) -> None:
    """Check one array (by its header) with ``make_feed`` on a batch-shaped, zero-copy stand-in."""
    feed_shape = shape[1:] if stacked and layout.rank(spec.name) == len(shape) - 1 else shape
    axis = layout.axes().get(spec.name)
    if axis is not None and len(feed_shape) > axis:
        feed_shape = (*feed_shape[:axis], min(batch_size, feed_shape[axis]) or 1, *feed_shape[axis + 1 :])
    if spec.shape is not None and len(feed_shape) == len(spec.shape) + 1 and axis is None:
        feed_shape = feed_shape[1:]  # a non-batched input given once per sample
    stand_in = np.broadcast_to(np.zeros((), dtype), feed_shape)
    try:
        make_feed([spec], {spec.name: stand_in})
    except DataError as exc:
        raise DataError(
            f"Calibration data {where} holds an array of shape {_shape_text(shape)} and dtype {dtype} for model "
            f"input '{spec.name}' (shape {spec.shape_text()}, dtype {spec.dtype}), which does not fit: {exc}"
        ) from None
    if dtype != spec.dtype:
        logger.info("%s: input %r is %s; the %s data is cast to %s.", where, spec.name, spec.dtype, dtype, spec.dtype)


def _list_files(root: Path) -> list[Path]:
    if not root.exists():
        raise DataError(
            f"Calibration data '{root}' does not exist. Pass a .npy file, an .npz file or a folder of them "
            f"(relative paths are resolved from '{Path.cwd()}')."
        )
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".npy", ".npz"))
        if not files:
            raise DataError(
                f"Calibration data folder '{root}' holds no .npy or .npz files. Put the calibration arrays there "
                "(first axis = samples) or pass a file."
            )
        return files
    if root.suffix.lower() not in (".npy", ".npz"):
        raise DataError(
            f"Calibration data '{root}' is neither a .npy nor an .npz file. Save the arrays with numpy.save / "
            "numpy.savez (first axis = samples), or pass a folder of such files."
        )
    return [root]


def _describe(path: Path, root: Path) -> str:
    return f"'{path}'" if path == root else f"'{path.name}' (in '{root}')"


def _plan_file(path: Path, root: Path, layout: BatchLayout, batch_size: int) -> _Source:
    specs = layout.specs
    where = _describe(path, root)
    try:
        if path.suffix.lower() == ".npy":
            headers: dict[str | None, tuple[tuple[int, ...], np.dtype]] = {None: _npy_header(path)}
        else:
            headers = {name: header for name, header in _npz_headers(path).items()}
    except _READ_ERRORS as exc:
        raise _unreadable(where, exc) from None
    names = [s.name for s in specs]
    keys: dict[str, str | None] = {}
    if None in headers:
        if len(specs) != 1:
            raise DataError(
                f"Calibration data {where} is a .npy file (one array), but the model has {len(specs)} inputs "
                f"({', '.join(names)}). Save an .npz file with one array per input name, e.g. "
                f"numpy.savez(path, {', '.join(f'{n}=...' for n in names)})."
            )
        keys[specs[0].name] = None
    elif len(specs) == 1 and specs[0].name not in headers and len(headers) == 1:
        keys[specs[0].name] = next(iter(headers))
    else:
        missing = [n for n in names if n not in headers]
        if missing:
            raise DataError(
                f"Calibration data {where} has no array for model input '{missing[0]}'"
                f"{' (also missing: ' + ', '.join(missing[1:]) + ')' if len(missing) > 1 else ''}; its arrays are "
                f"{', '.join(repr(k) for k in headers) or 'none'}. Save one array per model input, named after the "
                f"input ({', '.join(names)})."
            )
        keys = {n: n for n in names}
        extra = [k for k in headers if k is not None and k not in keys.values()]  # no None key here
        if extra:
            logger.info("Calibration data %s: ignoring arrays that are not model inputs: %s.", where, ", ".join(extra))
    shapes = {spec.name: headers[keys[spec.name]][0] for spec in specs}
    stack, per_feed = layout.plan(shapes, where=f"calibration data {where}")
    for spec in specs:
        shape, dtype = headers[keys[spec.name]]
        _check_against_model(layout, spec, shape, dtype, where, stack is not None, batch_size)
    return _Source(path, keys, stack, per_feed)


class NumpyBatches:
    """A dataloader over calibration files: iterating yields ``{input name: array}`` feeds.

    The files were checked against the model when this object was made; each feed is cast to the
    model's dtypes. ``len()`` is the number of feeds; :attr:`num_samples` the number of samples;
    :attr:`layout` the model's batch axes.
    """

    def __init__(self, sources: Sequence[_Source], layout: BatchLayout, batch_size: int) -> None:
        self._sources = list(sources)
        self.layout = layout
        self.batch_size = batch_size
        self.num_samples = sum(s.samples for s in self._sources)

    def __len__(self) -> int:
        return sum(1 for _ in self._plan())

    def _plan(self) -> Iterator[tuple[tuple[int, int, int, int], ...]]:
        """Each batch as ``((source index, stacked feed index or -1, start, stop), ...)``, without reading data.

        Consecutive one-feed files are cut into batches of ``batch_size`` across file boundaries; each feed
        of a stacking file is one batch as recorded."""
        pending: list[tuple[int, int, int, int]] = []
        count = 0
        fixed = bool(self.layout.fixed)
        for index, source in enumerate(self._sources):
            if source.stack is not None:
                if pending and not fixed:
                    yield tuple(pending)
                pending, count = [], 0
                for feed in range(source.stack):
                    for start in range(0, source.per_feed, self.batch_size if fixed else source.per_feed):
                        if not fixed or start + self.batch_size <= source.per_feed:
                            yield ((index, feed, start, start + (self.batch_size if fixed else source.per_feed)),)
                continue
            start = 0
            while start < source.per_feed:
                take = min(self.batch_size - count, source.per_feed - start)
                pending.append((index, -1, start, start + take))
                count += take
                start += take
                if count == self.batch_size:
                    yield tuple(pending)
                    pending, count = [], 0
        if pending and not fixed:
            yield tuple(pending)

    def _arrays(self, source: _Source) -> dict[str, np.ndarray]:
        """The arrays of one file (its headers were read when planning; the data may still be damaged)."""
        try:
            if source.path.suffix.lower() == ".npy":
                array = np.load(source.path, mmap_mode="r", allow_pickle=False)
                np.asarray(array[-1:] if array.ndim else array).copy()  # touch the end: a truncated file fails here
                return {self.layout.specs[0].name: array}
            with np.load(source.path, allow_pickle=False) as archive:
                return {name: archive[key] for name, key in source.keys.items()}
        except _READ_ERRORS as exc:
            raise _unreadable(f"'{source.path}'", exc) from None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        loaded: tuple[int, dict[str, np.ndarray]] | None = None
        for pieces in self._plan():
            parts = []
            for index, feed, start, stop in pieces:
                if loaded is None or loaded[0] != index:
                    loaded = (index, self._arrays(self._sources[index]))
                arrays = loaded[1] if feed < 0 else self.layout.unstack(loaded[1], feed)
                parts.append(self.layout.take(arrays, start, stop))
            joined = self.layout.concat(parts)
            for batch in [joined] if joined is not None else parts:
                yield from self.layout.feeds(
                    {k: np.ascontiguousarray(v) for k, v in batch.items()}, where=f"calibration data '{self._sources[pieces[0][0]].path}'"
                )


def load_calibration_files(
    path: str | os.PathLike[str],
    model_inputs: ir.Model | onnx.ModelProto | Sequence[InputSpec | tuple[str, Sequence[Any] | None, Any]],
    *,
    batch_size: int | None = None,
    batch_axes: BatchAxes | None = None,
) -> NumpyBatches:
    """Check the calibration files at ``path`` against the model and return a dataloader over them.

    Args:
        path: a ``.npy`` file, an ``.npz`` file, or a folder of them (sorted by file name).
        model_inputs: the model (``onnx_ir.Model`` or ``onnx.ModelProto``) or its inputs as
            ``(name, shape, dtype)`` triples.
        batch_size: samples per batch; default: the model's fixed batch size if it has one, else 1.
        batch_axes: ``{input name: axis or None}`` where the model's dimension names do not tell
            (see :class:`~lpot_ir.backends.onnxruntime.batching.BatchLayout`).

    Raises:
        DataError: the path is missing or not numpy data, or the data does not fit the model's inputs.
        ConfigError: ``batch_axes`` names an input the model does not have.
    """
    layout = BatchLayout(model_inputs, batch_axes)
    if not layout.specs:
        raise DataError("The model has no inputs to feed calibration data to; it needs no calibration data.")
    if layout.fixed:
        if batch_size is not None and batch_size != layout.fixed:
            logger.info(
                "The model's batch is fixed at %d; using batch size %d, not %d.", layout.fixed, layout.fixed, batch_size
            )
        batch_size = layout.fixed
    batch_size = int(batch_size or 1)
    if batch_size < 1:
        raise DataError(f"Calibration batch size is {batch_size}; it must be at least 1.")
    root = Path(path)
    sources = [_plan_file(p, root, layout, batch_size) for p in _list_files(root)]
    loader = NumpyBatches(sources, layout, batch_size)
    if loader.num_samples == 0:
        raise DataError(
            f"Calibration data '{root}' holds no samples (the batch axes of its arrays have length 0; "
            f"{layout.describe()})."
        )
    logger.info("Calibration data '%s': %d sample(s) in %d file(s); %s.", root, loader.num_samples, len(sources),
                layout.describe())
    if layout.fixed and (used := len(loader) * layout.fixed) < loader.num_samples:
        logger.warning(
            "Calibration data '%s' holds %d sample(s), not whole batches of the model's fixed batch size %d; the last "
            "%d are not used.", root, loader.num_samples, layout.fixed, loader.num_samples - used,
        )
    return loader
