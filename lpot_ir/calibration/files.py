"""Calibration data from files, for ``lpot quantize MODEL --calib DATA``.

``DATA`` is a ``.npy`` file, an ``.npz`` file, or a folder of them (read in file-name order and
concatenated along the first axis). The first axis of every array counts samples.

* A ``.npy`` file holds one array: the model must have one input.
* An ``.npz`` file holds one array per model input, matched by input name; extra keys are ignored (with
  a note). A model with one input takes the single array of an ``.npz`` whatever its key.

Every file is checked against the model before any batch is produced, and every mismatch is a
:class:`~lpot_ir.errors.DataError` that names the file, the input and both shapes or dtypes: a wrong
rank, a static dimension that differs, a dtype that cannot be used, a missing input, arrays of one file
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.session import InputSpec, input_specs, make_feed
from lpot_ir.errors import DataError

__all__ = ["NumpyBatches", "load_calibration_files"]

logger = logging.getLogger(__name__)


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
    """One data file: which array feeds which input, and how many samples it holds."""

    path: Path
    keys: Mapping[str, str | None]  # input name -> npz key (None: the .npy array)
    samples: int


def _check_against_model(
    spec: InputSpec, shape: tuple[int, ...], dtype: np.dtype, where: str, batch_size: int
) -> None:
    """Check one array (by its header) with ``make_feed`` on a batch-shaped, zero-copy stand-in."""
    stand_in = np.broadcast_to(np.zeros((), dtype), (min(batch_size, shape[0]) or 1, *shape[1:]))
    try:
        make_feed([spec], {spec.name: stand_in})
    except DataError as exc:
        raise DataError(
            f"Calibration data {where} holds an array of shape {_shape_text(shape)} and dtype {dtype} for model "
            f"input '{spec.name}' (shape {spec.shape_text()}, dtype {spec.dtype}), which does not fit: {exc}"
        ) from None
    if dtype != spec.dtype:
        logger.info("%s: input %r is %s; the %s data is cast to %s.", where, spec.name, spec.dtype, dtype, spec.dtype)
    if shape[0] % batch_size:
        logger.warning(
            "%s holds %d sample(s) for input %r, not a multiple of the model's fixed batch size %d; the last "
            "%d are not used.", where, shape[0], spec.name, batch_size, shape[0] % batch_size,
        )


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


def _plan_file(path: Path, root: Path, specs: Sequence[InputSpec], batch_size: int) -> _Source:
    where = _describe(path, root)
    try:
        if path.suffix.lower() == ".npy":
            headers: dict[str | None, tuple[tuple[int, ...], np.dtype]] = {None: _npy_header(path)}
        else:
            headers = {name: header for name, header in _npz_headers(path).items()}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"Calibration data {where} is not a readable numpy file ({exc}). Re-save it with numpy.save / "
            "numpy.savez (without pickled objects)."
        ) from None
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
    samples: int | None = None
    for spec in specs:
        shape, dtype = headers[keys[spec.name]]
        if not shape:
            raise DataError(
                f"Calibration data {where} for input '{spec.name}' is a scalar; the first axis must count samples "
                f"(model input shape {spec.shape_text()})."
            )
        _check_against_model(spec, shape, dtype, where, batch_size)
        if samples is not None and shape[0] != samples:
            raise DataError(
                f"Calibration data {where} holds {samples} sample(s) for input '{specs[0].name}' but {shape[0]} for "
                f"input '{spec.name}'; every input needs the same number of samples (first axis)."
            )
        samples = shape[0]
    return _Source(path, keys, int(samples or 0))


class NumpyBatches:
    """A dataloader over calibration files: iterating yields ``{input name: array}`` batches.

    The files were checked against the model when this object was made; each batch is cast to the
    model's dtypes. ``len()`` is the number of batches; :attr:`num_samples` the number of samples.
    """

    def __init__(self, sources: Sequence[_Source], specs: Sequence[InputSpec], batch_size: int) -> None:
        self._sources = list(sources)
        self._specs = list(specs)
        self.batch_size = batch_size
        self.num_samples = sum(s.samples for s in self._sources)

    def __len__(self) -> int:
        return self.num_samples // self.batch_size if self._fixed_batch else -(-self.num_samples // self.batch_size)

    @property
    def _fixed_batch(self) -> bool:
        return any(s.shape is not None and s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0
                   for s in self._specs)

    def _arrays(self, source: _Source) -> dict[str, np.ndarray]:
        if source.path.suffix.lower() == ".npy":
            return {self._specs[0].name: np.load(source.path, mmap_mode="r", allow_pickle=False)}
        with np.load(source.path, allow_pickle=False) as archive:
            return {name: archive[key] for name, key in source.keys.items()}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        pending_count = 0
        for source in self._sources:
            arrays = self._arrays(source)
            start = 0
            while start < source.samples:
                take = min(self.batch_size - pending_count, source.samples - start)
                pending.append({name: array[start : start + take] for name, array in arrays.items()})
                pending_count += take
                start += take
                if pending_count == self.batch_size:
                    yield self._emit(pending)
                    pending, pending_count = [], 0
            del arrays
        if pending and not self._fixed_batch:
            yield self._emit(pending)

    def _emit(self, pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        batch = {}
        for spec in self._specs:
            parts = [piece[spec.name] for piece in pieces]
            batch[spec.name] = np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0))
        return make_feed(self._specs, batch)  # casts to the model's dtypes


def load_calibration_files(
    path: str | os.PathLike[str],
    model_inputs: ir.Model | onnx.ModelProto | Sequence[InputSpec | tuple[str, Sequence[Any] | None, Any]],
    *,
    batch_size: int | None = None,
) -> NumpyBatches:
    """Check the calibration files at ``path`` against the model and return a dataloader over them.

    Args:
        path: a ``.npy`` file, an ``.npz`` file, or a folder of them (sorted by file name).
        model_inputs: the model (``onnx_ir.Model`` or ``onnx.ModelProto``) or its inputs as
            ``(name, shape, dtype)`` triples.
        batch_size: samples per batch; default: the model's fixed batch size if its first axis is static,
            else 1.

    Raises:
        DataError: the path is missing or not numpy data, or the data does not fit the model's inputs.
    """
    specs = input_specs(model_inputs)
    if not specs:
        raise DataError("The model has no inputs to feed calibration data to; it needs no calibration data.")
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    if fixed:
        size = max(fixed)
        if batch_size is not None and batch_size != size:
            logger.info("The model's batch axis is fixed at %d; using batch size %d, not %d.", size, size, batch_size)
        batch_size = size
    batch_size = int(batch_size or 1)
    if batch_size < 1:
        raise DataError(f"Calibration batch size is {batch_size}; it must be at least 1.")
    root = Path(path)
    sources = [_plan_file(p, root, specs, batch_size) for p in _list_files(root)]
    loader = NumpyBatches(sources, specs, batch_size)
    if loader.num_samples == 0:
        raise DataError(f"Calibration data '{root}' holds no samples (the first axis of its arrays has length 0).")
    logger.info("Calibration data '%s': %d sample(s) in %d file(s).", root, loader.num_samples, len(sources))
    return loader
