"""Image datasets LPOT knew by name, read from local files in their standard formats.

LPOT downloaded MNIST, Fashion-MNIST and CIFAR when asked (``download: true``); lpot-ir never downloads.
Each dataset looks for its files where LPOT put them (and in ``root`` itself), and when they are missing
says which files it expected, where, and where to get them. ``download`` is accepted for compatibility.

* ``MNIST``: ``mnist.npz`` (Keras' file: ``x_train``, ``y_train``, ``x_test``, ``y_test``) or the four
  IDX files of the original distribution (``train-images-idx3-ubyte[.gz]``, ...), in ``root/MNIST`` or ``root``.
* ``FashionMNIST``: the four IDX files (``t10k-images-idx3-ubyte.gz``, ...) in ``root/FashionMNIST`` or ``root``
  (Debian's ``dataset-fashion-mnist`` package installs them in ``/usr/share/datasets/fashion-mnist``).
* ``CIFAR10`` / ``CIFAR100``: the Python pickles (``data_batch_1..5``, ``test_batch`` / ``train``, ``test``) in
  ``root/cifar-10-batches-py`` (``root/cifar-100-python``) or ``root``.

Samples are ``(image, label)``: ``uint8`` HWC images (``[28, 28, 1]`` for MNIST, ``[32, 32, 3]`` for CIFAR)
and integer labels.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpot_ir.data.datasets import IMAGE_EXTENSIONS, read_image, register_dataset
from lpot_ir.errors import DataError

__all__ = ["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "ImagenetRaw", "StyleTransfer", "read_idx"]

logger = logging.getLogger(__name__)

_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: magic ``0 0 type ndim``, big-endian dims, data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DataError(f"Cannot read IDX file '{path}': {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"'{path}' is not an IDX file (its first bytes are {data[:4]!r}).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 1
    if len(data) - offset < count * dtype.itemsize:
        raise DataError(f"IDX file '{path}' is truncated: dims {dims} need {count * dtype.itemsize} bytes.")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _missing(dataset: str, folders: Sequence[Path], expected: str, source: str) -> DataError:
    where = " or ".join(f"'{f}'" for f in folders)
    return DataError(
        f"{dataset}: {expected} not found in {where}. lpot-ir does not download datasets (LPOT's "
        f"'download: true' is ignored): get them from {source} and put them in '{folders[0]}', or set root to "
        f"the folder that holds them."
    )


class _ArrayImages:
    """Images ``[N, H, W, C]`` and labels ``[N]`` held in memory."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


def _idx_pair(folders: Sequence[Path], prefix: str) -> tuple[Path, Path] | None:
    images = _find(folders, [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    labels = _find(folders, [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    return (images, labels) if images is not None and labels is not None else None


def _idx_images(pair: tuple[Path, Path], dataset: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(pair[0]), read_idx(pair[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{dataset}: '{pair[0]}' holds {images.shape} and '{pair[1]}' {labels.shape}; expected [N, H, W] images "
            "and [N] labels."
        )
    return images[..., None], labels.astype(np.int64)


@register_dataset("MNIST")
class MNIST(_ArrayImages):
    """MNIST digits from ``mnist.npz`` or the IDX files (see the module docstring); ``train`` picks the
    60000 training images instead of the 10000 test ones. Images are ``uint8 [28, 28, 1]``."""

    folder = "MNIST"
    source = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz (or the IDX files of http://yann.lecun.com/exdb/mnist/)"

    def __init__(self, root: str | os.PathLike[str], train: bool = False, download: bool = True) -> None:
        self.root = Path(root)
        self.train = bool(train)
        folders = [self.root / self.folder, self.root]
        prefix = "train" if self.train else "t10k"
        pair = _idx_pair(folders, prefix)
        npz = _find(folders, ["mnist.npz"]) if self.folder == "MNIST" else None
        if npz is not None:
            split = "train" if self.train else "test"
            try:
                with np.load(npz, allow_pickle=False) as data:
                    self.images, self.labels = data[f"x_{split}"][..., None], data[f"y_{split}"].astype(np.int64)
            except (OSError, KeyError, ValueError) as exc:
                raise DataError(f"{type(self).__name__}: cannot read '{npz}' as Keras' mnist.npz ({exc}).") from None
        elif pair is not None:
            self.images, self.labels = _idx_images(pair, type(self).__name__)
        else:
            expected = (
                f"mnist.npz or {prefix}-images-idx3-ubyte.gz + {prefix}-labels-idx1-ubyte.gz"
                if self.folder == "MNIST"
                else f"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz"
            )
            raise _missing(type(self).__name__, folders, expected, self.source)


@register_dataset("FashionMNIST")
class FashionMNIST(MNIST):
    """Fashion-MNIST from its four IDX files (see the module docstring); ``uint8 [28, 28, 1]`` images."""

    folder = "FashionMNIST"
    source = (
        "https://github.com/zalandoresearch/fashion-mnist (data/fashion), or on Debian/Ubuntu "
        "'apt-get install dataset-fashion-mnist' and root: /usr/share/datasets/fashion-mnist"
    )


def _unpickle(path: Path, dataset: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{dataset}: cannot read '{path}' as a CIFAR pickle ({exc}).") from None
    if not isinstance(entry, dict) or "data" not in entry:
        raise DataError(f"{dataset}: '{path}' is not a CIFAR batch (a dict with 'data' and labels).")
    return entry


@register_dataset("CIFAR10")
class CIFAR10(_ArrayImages):
    """CIFAR-10 from its Python pickles (``data_batch_1..5`` / ``test_batch``); ``uint8 [32, 32, 3]`` images."""

    folder = "cifar-10-batches-py"
    train_files: tuple[str, ...] = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
    test_files: tuple[str, ...] = ("test_batch",)
    label_key = "labels"
    source = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it)"

    def __init__(self, root: str | os.PathLike[str], train: bool = False, download: bool = True) -> None:
        self.root = Path(root)
        self.train = bool(train)
        names = self.train_files if self.train else self.test_files
        folders = [self.root / self.folder, self.root]
        folder = next((f for f in folders if all((f / n).is_file() for n in names)), None)
        if folder is None:
            raise _missing(type(self).__name__, folders, ", ".join(names), self.source)
        images, labels = [], []
        for name in names:
            entry = _unpickle(folder / name, type(self).__name__)
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry.get(self.label_key, entry.get("labels", [])))
        self.images = np.ascontiguousarray(np.concatenate(images).transpose(0, 2, 3, 1))
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"{type(self).__name__}: {self.images.shape[0]} images but {self.labels.shape[0]} labels "
                f"('{self.label_key}') in {folder}."
            )


@register_dataset("CIFAR100")
class CIFAR100(CIFAR10):
    """CIFAR-100 from its Python pickles (``train`` / ``test``); labels are the 100 fine labels."""

    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    source = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract it)"


@register_dataset("ImagenetRaw")
class ImagenetRaw:
    """Images in one folder with a list file of ``<image name> <label>`` lines (LPOT's ``ImagenetRaw``).

    Args:
        data_path: the folder of images.
        image_list: the list file (default ``data_path/val_map.txt``). Images it names that do not exist
            are skipped with a warning.
    """

    def __init__(self, data_path: str | os.PathLike[str], image_list: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(data_path)
        if not self.root.is_dir():
            raise DataError(f"ImagenetRaw: data_path '{self.root}' is not a folder.")
        listing = Path(image_list) if image_list else self.root / "val_map.txt"
        if not listing.is_file():
            raise DataError(
                f"ImagenetRaw: the image list '{listing}' does not exist; give image_list, a file of "
                "'<image name> <label>' lines (default data_path/val_map.txt)."
            )
        self.samples: list[tuple[Path, int]] = []
        missing = 0
        for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = re.split(r"\s+", line.strip())
            if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
                raise DataError(f"ImagenetRaw: line {number} of '{listing}' is not '<image name> <label>': {line!r}.")
            path = self.root / parts[0]
            if path.is_file():
                self.samples.append((path, int(parts[1])))
            else:
                missing += 1
        if missing:
            logger.warning("ImagenetRaw: %d image(s) listed in %s are not in %s; skipped", missing, listing, self.root)
        if not self.samples:
            raise DataError(f"ImagenetRaw: none of the images listed in '{listing}' is in '{self.root}'.")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return read_image(path, "ImagenetRaw"), label


@register_dataset("style_transfer")
class StyleTransfer:
    """Every (content, style) pair of images from two folders (LPOT's ``style_transfer``).

    A sample is ``((content, style), 0)``: both images cropped by ``crop_ratio`` of their size on each side,
    resized to ``resize_shape`` (``[width, height]``, Pillow's order, as LPOT) and scaled to [0, 1] float32.
    LPOT computed the crop but did not apply it; ``crop_ratio: 0`` reproduces its samples.

    Args:
        content_folder: folder of content images.
        style_folder: folder of style images.
        crop_ratio: fraction cut from each side (0 <= crop_ratio < 0.5).
        resize_shape: ``[width, height]`` of both images.
        image_format: the file extension to read (``jpg``).
    """

    def __init__(
        self,
        content_folder: str | os.PathLike[str],
        style_folder: str | os.PathLike[str],
        crop_ratio: float = 0.1,
        resize_shape: Sequence[int] = (256, 256),
        image_format: str = "jpg",
    ) -> None:
        if not 0 <= crop_ratio < 0.5:
            raise DataError(f"style_transfer: crop_ratio must be in [0, 0.5), got {crop_ratio!r}.")
        if len(resize_shape) != 2 or any(int(v) <= 0 for v in resize_shape):
            raise DataError(f"style_transfer: resize_shape must be [width, height], got {resize_shape!r}.")
        self.crop_ratio = float(crop_ratio)
        self.resize_shape = (int(resize_shape[0]), int(resize_shape[1]))
        suffix = "." + image_format.lower().lstrip(".")
        if suffix not in IMAGE_EXTENSIONS:
            raise DataError(f"style_transfer: image_format {image_format!r} is not one of {IMAGE_EXTENSIONS}.")
        folders = {"content_folder": Path(content_folder), "style_folder": Path(style_folder)}
        found: dict[str, list[Path]] = {}
        for key, folder in folders.items():
            if not folder.is_dir():
                raise DataError(f"style_transfer: {key} '{folder}' is not a folder.")
            found[key] = sorted(p for p in folder.iterdir() if p.suffix.lower() == suffix)
            if not found[key]:
                raise DataError(f"style_transfer: no '*{suffix}' images in {key} '{folder}'.")
        self.pairs = [(c, s) for c in found["content_folder"] for s in found["style_folder"]]

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image

        image = read_image(path, "style_transfer")
        h, w = image.shape[:2]
        top, left = int(self.crop_ratio * h), int(self.crop_ratio * w)
        image = image[top : h - top, left : w - left]
        resized = np.asarray(Image.fromarray(image).resize(self.resize_shape, Image.Resampling.BILINEAR))
        return (resized.astype(np.float32) / 255.0).astype(np.float32)

    def __getitem__(self, index: int) -> tuple[tuple[np.ndarray, np.ndarray], int]:
        content, style = self.pairs[index]
        return (self._load(content), self._load(style)), 0
