"""Built-in datasets, created from LPOT's YAML form (``dataset: {ImageFolder: {root: ...}}``).

A dataset is anything with ``__getitem__`` and ``__len__`` whose items are ``(input, label)`` pairs.
An input is an array, or a tuple / dict of arrays for a model with several inputs; a label may be
``None``. :data:`DATASETS` maps YAML names to classes and is filled by :func:`register_dataset`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from lpot_ir.data.transforms import Compose, Registry, SampleTransform, apply_to_input, build_from_registry
from lpot_ir.errors import ConfigError, DataError
from lpot_ir.registry import add_to_registry

__all__ = [
    "DATASETS",
    "register_dataset",
    "create_dataset",
    "DummyDataset",
    "DummyDatasetV2",
    "NumpyDataset",
    "ImageFolder",
    "TransformedDataset",
    "TransformedIterableDataset",
    "IMAGE_EXTENSIONS",
    "read_image",
]

logger = logging.getLogger(__name__)

DATASETS: Registry = Registry()

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")


def register_dataset(name: str, *, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: make a dataset available under ``name`` in YAML (duplicate names: :mod:`lpot_ir.registry`)."""

    def decorate(cls: type) -> type:
        add_to_registry(DATASETS, name, cls, kind="dataset", replace=replace)
        return cls

    return decorate


def _per_input(value: Any, count: int, what: str) -> list[Any]:
    """Broadcast a scalar (or a one-element list) to ``count`` inputs; check a list's length."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return list(value) * count
        if len(value) != count:
            raise DataError(
                f"dummy dataset: {what} has {len(value)} values but there are {count} input shapes."
            )
        return list(value)
    return [value] * count


@register_dataset("dummy")
class DummyDataset:
    """Random inputs of a fixed shape, reproducible from ``seed``.

    As in LPOT, the first dimension of ``shape`` is the number of samples: ``shape: [128, 3, 224, 224]``
    gives 128 samples of shape (3, 224, 224). A list of shapes (``[[128, 3, 224, 224], [128, 1]]``)
    gives a model with several inputs: each sample's input is a tuple, one array per shape.

    Args:
        shape: the shape, or a list of shapes (all with the same first dimension).
        dtype: numpy dtype name, or one per shape.
        low: lower bound (inclusive), or one per shape (LPOT's default -128).
        high: upper bound (exclusive for integer dtypes), or one per shape (LPOT's default 127).
        label: yield label 0 with each sample (otherwise the label is None).
        seed: the random seed; sample ``i`` is the same whatever order samples are read in.
    """

    def __init__(
        self,
        shape: Sequence[int] | Sequence[Sequence[int]],
        dtype: str | Sequence[str] = "float32",
        low: float | Sequence[float] = -128.0,
        high: float | Sequence[float] = 127.0,
        label: bool = False,
        seed: int = 9527,
    ) -> None:
        sequence = isinstance(shape, (list, tuple))
        nested = sequence and bool(shape) and all(isinstance(s, (list, tuple)) for s in shape)
        flat = sequence and not any(isinstance(s, (list, tuple)) for s in shape)
        shapes: list[list[int]] = (
            [list(s) for s in cast("Sequence[Sequence[int]]", shape)] if nested
            else [list(cast("Sequence[int]", shape))] if flat and shape else []  # anything else is refused below
        )
        if not shapes or any(
            not s or any(not isinstance(d, (int, np.integer)) or d <= 0 for d in s) for s in shapes
        ):
            raise DataError(
                f"dummy dataset: shape must be a list of positive integers (or a list of such lists), got {shape!r}."
            )
        counts = {s[0] for s in shapes}
        if len(counts) != 1:
            raise DataError(
                f"dummy dataset: the first dimension is the number of samples and must be the same for every "
                f"input, got shapes {shapes}."
            )
        self.length = counts.pop()
        self.shapes = [tuple(int(d) for d in s[1:]) for s in shapes]
        try:
            self.dtypes = [np.dtype(d) for d in _per_input(dtype, len(shapes), "dtype")]
        except TypeError:
            raise DataError(
                f"dummy dataset: {dtype!r} is not a numpy dtype name (e.g. float32, int64)."
            ) from None
        self.lows = [float(v) for v in _per_input(low, len(shapes), "low")]
        self.highs = [float(v) for v in _per_input(high, len(shapes), "high")]
        for lo, hi in zip(self.lows, self.highs, strict=True):
            if hi < lo:
                raise DataError(f"dummy dataset: high ({hi}) is below low ({lo}).")
        self.label = bool(label)
        self.seed = int(seed)
        self.multi_input = len(shapes) > 1

    def __len__(self) -> int:
        return self.length

    def _one(self, rng: np.random.Generator, i: int) -> np.ndarray:
        dtype, lo, hi, shape = self.dtypes[i], self.lows[i], self.highs[i], self.shapes[i]
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            lo_i, hi_i = int(np.floor(lo)), int(np.ceil(hi))
            if hi_i <= lo_i:
                return np.full(shape, lo_i, dtype=dtype)
            return rng.integers(lo_i, hi_i, size=shape).astype(dtype)
        return rng.uniform(lo, hi, size=shape).astype(dtype)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(index)
        index %= self.length
        rng = np.random.default_rng([self.seed, index])
        arrays = [self._one(rng, i) for i in range(len(self.shapes))]
        sample = tuple(arrays) if self.multi_input else arrays[0]
        return sample, (0 if self.label else None)


def _shape_list(value: Any, what: str) -> list[tuple[int, ...]]:
    """One shape ``[224, 224, 3]`` or several ``[[224, 224, 3], [10]]`` -> a list of shape tuples."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        shapes = [tuple(v) for v in value]
    elif isinstance(value, (list, tuple)):
        shapes = [tuple(value)]
    else:
        shapes = []
    if not shapes or any(not isinstance(d, (int, np.integer)) or d <= 0 for s in shapes for d in s):
        raise DataError(f"dummy_v2: {what} must be a shape (list of positive integers) or a list of shapes, got {value!r}.")
    return [tuple(int(d) for d in s) for s in shapes]


@register_dataset("dummy_v2")
class DummyDatasetV2:
    """Random samples of a given sample shape (LPOT's ``dummy_v2``): ``input_shape`` is one sample's
    shape (``[224, 224, 3]``) or a list of shapes (several inputs); ``label_shape`` likewise for labels.

    LPOT's ``dummy_v2`` never ends; here ``sample_size`` samples are given (so evaluation ends), each
    reproducible from ``seed`` and its index. ``low``, ``high`` and ``dtype`` are given once or once per
    shape, inputs first, then labels.
    """

    def __init__(
        self,
        input_shape: Sequence[int] | Sequence[Sequence[int]],
        label_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
        low: float | Sequence[float] = -128.0,
        high: float | Sequence[float] = 127.0,
        dtype: str | Sequence[str] = "float32",
        sample_size: int = 100,
        seed: int = 9527,
    ) -> None:
        self.input_shapes = _shape_list(input_shape, "input_shape")
        self.label_shapes = _shape_list(label_shape, "label_shape") if label_shape is not None else []
        if isinstance(sample_size, bool) or not isinstance(sample_size, (int, np.integer)) or sample_size < 1:
            raise DataError(f"dummy_v2: sample_size must be a positive integer, got {sample_size!r}.")
        shapes = [[int(sample_size), *s] for s in self.input_shapes + self.label_shapes]
        self._data = DummyDataset(shapes, dtype=dtype, low=low, high=high, seed=seed)
        self.length = int(sample_size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        arrays, _ = self._data[index]
        arrays = arrays if isinstance(arrays, tuple) else (arrays,)
        n = len(self.input_shapes)
        inputs, labels = arrays[:n], arrays[n:]
        return (inputs[0] if n == 1 else tuple(inputs)), (
            None if not labels else labels[0] if len(labels) == 1 else tuple(labels)
        )


def _load_array(path: Path, what: str) -> Any:
    if not path.exists():
        raise DataError(f"numpy dataset: {what} file '{path}' does not exist.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"numpy dataset: cannot read {what} file '{path}' as .npy/.npz: {exc}") from None


@register_dataset("numpy")
class NumpyDataset:
    """Samples from numpy files: the first axis of every array indexes the samples (a 0-d array is one
    value given with every sample, such as a sample rate).

    * ``.npy``: one array, the model's single input.
    * ``.npz``: one array per model input, keyed by the input's name (a sample's input is then a dict;
      with a single array it is the array itself). An array named ``label_key`` holds the labels.

    Args:
        path: the ``.npy`` or ``.npz`` file.
        labels: labels, as a ``.npy`` file path or an array (optional).
        label_key: the name of the labels array inside an ``.npz`` file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        labels: str | os.PathLike[str] | Any = None,
        label_key: str = "labels",
    ) -> None:
        self.path = Path(path)
        data = _load_array(self.path, "data")
        label_array: np.ndarray | None = None
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                arrays = {k: data[k] for k in data.files}
            if label_key in arrays:
                label_array = arrays.pop(label_key)
            if not arrays:
                raise DataError(f"numpy dataset: '{self.path}' holds no input arrays (only '{label_key}').")
            self.inputs: dict[str, np.ndarray] | np.ndarray = (
                arrays if len(arrays) > 1 else next(iter(arrays.values()))
            )
        else:
            self.inputs = data
        if labels is not None:
            label_array = (
                _load_array(Path(labels), "labels")
                if isinstance(labels, (str, os.PathLike))
                else np.asarray(labels)
            )
        arrays_with_samples = (
            [self.inputs] if isinstance(self.inputs, np.ndarray) else [v for v in self.inputs.values() if v.ndim]
        )
        if not arrays_with_samples or arrays_with_samples[0].ndim == 0:
            raise DataError(
                f"numpy dataset: '{self.path}' holds only scalars; the first axis of an array must index the samples."
            )
        self.length = int(arrays_with_samples[0].shape[0])
        if isinstance(self.inputs, dict):
            sizes = {k: v.shape[0] for k, v in self.inputs.items() if v.ndim}
            if len(set(sizes.values())) != 1:
                raise DataError(
                    f"numpy dataset: the arrays in '{self.path}' hold different numbers of samples: {sizes}. The "
                    "first axis of every array indexes the samples (a 0-d array is one value shared by all); as "
                    "calibration data, pass the file with --calib, which reads each input's own batch axis."
                )
        if label_array is not None and len(label_array) != self.length:
            raise DataError(
                f"numpy dataset: {len(label_array)} labels for {self.length} samples in '{self.path}'."
            )
        self.labels = label_array

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if isinstance(self.inputs, dict):
            sample: Any = {k: v[index] if v.ndim else v for k, v in self.inputs.items()}
        else:
            sample = self.inputs[index]
        return sample, (None if self.labels is None else self.labels[index])


@register_dataset("ImageFolder")
class ImageFolder:
    """Images in one sub-folder per class: ``root/<class>/<image>``; labels follow the sorted folder names.

    Images are read with Pillow as RGB ``uint8`` arrays in HWC layout.

    Args:
        root: the folder holding one sub-folder per class.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(
                f"ImageFolder: root '{self.root}' is not a folder; point it at a folder with one sub-folder per class."
            )
        self.classes = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not self.classes:
            raise DataError(
                f"ImageFolder: '{self.root}' has no sub-folders; put each class's images in its own sub-folder."
            )
        self.class_to_index = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name in self.classes:
            for file in sorted((self.root / name).rglob("*")):
                if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                    self.samples.append((file, self.class_to_index[name]))
        if not self.samples:
            raise DataError(
                f"ImageFolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under the class folders of '{self.root}'."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return read_image(path, "ImageFolder"), label


def read_image(path: str | os.PathLike[str], who: str, mode: str = "RGB") -> np.ndarray:
    """An image file as a ``uint8`` HWC array (Pillow; ``mode`` ``RGB`` or ``L``, which gives HW)."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{who} reads images with Pillow, which is not installed: pip install pillow") from None
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except OSError as exc:
        raise DataError(f"{who}: cannot read image '{path}': {exc}") from None


def _transform_item(transform: Callable[[Any], Any], item: Any) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        sample, label = item
    else:
        sample, label = item, None
    if isinstance(transform, Compose):
        return transform.apply(sample, label)
    if isinstance(transform, SampleTransform):
        return transform((sample, label))
    return apply_to_input(transform, sample), label


class TransformedDataset:
    """A dataset whose samples pass through ``transform``: the input, or the whole ``(input, label)``
    sample for a :class:`~lpot_ir.data.transforms.SampleTransform`."""

    def __init__(self, dataset: Any, transform: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return _transform_item(self.transform, self.dataset[index])


class TransformedIterableDataset:
    """:class:`TransformedDataset` for a dataset that is only iterable (records read in order)."""

    def __init__(self, dataset: Any, transform: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Any:
        for item in self.dataset:
            yield _transform_item(self.transform, item)


def create_dataset(spec: Mapping[str, Any], transform: Callable[[Any], Any] | None = None) -> Any:
    """Build a dataset from its YAML form: a mapping with one key, the dataset name, to its parameters.

    Example:
        ``create_dataset({"dummy": {"shape": [4, 3, 8, 8], "low": 0, "high": 1, "label": True}})``

    Args:
        spec: ``{name: parameters}``.
        transform: applied to each sample's input (see :func:`lpot_ir.data.create_transform`).

    Raises:
        ConfigError: unknown dataset name or parameter.
        DataError: the data cannot be read.
    """
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            f"A dataset is a mapping with exactly one key, the dataset's name (e.g. {{ImageFolder: {{root: ./images}}}}); "
            f"got {spec!r}. Built-in datasets: {', '.join(sorted(DATASETS))}."
        )
    ((name, params),) = spec.items()
    dataset = build_from_registry(DATASETS, "dataset", name, params)
    if transform is not None and len(getattr(transform, "transforms", [transform])) > 0:
        random_access = hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
        dataset = (TransformedDataset if random_access else TransformedIterableDataset)(dataset, transform)
    return dataset
