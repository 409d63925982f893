"""TFRecord datasets (read with TensorFlow) and ``tf.train.Example`` parsing.

TensorFlow is imported only when a record file is read. These datasets are iterable (records are read
in file order, ``shuffle`` is not available); ``len()`` counts the records once.

* ``TFRecordDataset``: the raw serialized records of the files ``root`` names (a path or a glob pattern);
  samples are ``(record bytes, None)``: a transform parses them.
* ``ImageRecord``: ImageNet in TFRecord form (``root/*-*-of-*``, as the TensorFlow models' ``build_imagenet_data``
  writes): samples are ``(uint8 HWC RGB image, label)`` from ``image/encoded`` and ``image/class/label``.
* ``COCORecord``: COCO in the TensorFlow object detection API's TFRecord form: samples are
  ``(image, (boxes, names, classes, image id))`` (see :mod:`lpot_ir.data.coco`).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lpot_ir.data.coco import coco_example_sample
from lpot_ir.data.datasets import register_dataset
from lpot_ir.data.image_transforms import decode_image
from lpot_ir.data.transforms import SampleTransform, register_transform
from lpot_ir.errors import DataError

__all__ = [
    "tensorflow",
    "read_records",
    "record_files",
    "parse_example",
    "TFRecordDataset",
    "ImageRecord",
    "COCORecord",
    "ParseDecodeImagenet",
    "parse_imagenet_example",
]

logger = logging.getLogger(__name__)


def tensorflow() -> Any:
    """Import TensorFlow quietly, or explain how to install it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise DataError(
            "Reading TFRecord files needs TensorFlow, which is not installed: pip install tensorflow-cpu "
            "(make install installs it)."
        ) from None
    return tf


def read_records(files: list[Path]) -> Iterator[bytes]:
    """The serialized records of ``files``, in order (``tf.data.TFRecordDataset``)."""
    tf = tensorflow()
    for path in files:
        try:
            for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
                yield bytes(record)
        except tf.errors.DataLossError as exc:
            raise DataError(f"'{path}' is not a readable TFRecord file: {exc.message}") from None


def parse_example(record: bytes) -> dict[str, Any]:
    """A serialized ``tf.train.Example`` -> ``{feature name: list of bytes | float32 array | int64 array}``."""
    tf = tensorflow()
    try:
        example = tf.train.Example.FromString(record)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise DataError(f"A record ({len(record)} bytes) is not a tf.train.Example: {exc}") from None
    out: dict[str, Any] = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = list(feature.bytes_list.value)
        elif kind == "float_list":
            out[key] = np.asarray(feature.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            out[key] = np.asarray(feature.int64_list.value, dtype=np.int64)
        else:
            out[key] = []
    return out


def record_files(root: str | os.PathLike[str], pattern: str | None, who: str) -> list[Path]:
    """The TFRecord files ``root`` names: those matching ``pattern`` in the folder ``root``, or ``root`` itself
    (a file or a glob pattern) without one."""
    base = Path(root)
    if pattern is not None:
        if not base.is_dir():
            raise DataError(f"{who}: root '{base}' is not a folder.")
        files = sorted(base.glob(pattern))
        where = f"'{base / pattern}'"
    elif base.is_file():
        files = [base]
        where = f"'{base}'"
    else:
        files = sorted(Path(p) for p in glob.glob(os.fspath(base)))
        where = f"'{base}' (a file or a glob pattern)"
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"{who}: no TFRecord files match {where}.")
    return files


class _RecordDataset:
    """Iterable over the records of TFRecord files; ``len()`` counts them once."""

    name = "TFRecordDataset"

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._length: int | None = None

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for _ in read_records(self.files))
        return self._length

    def _item(self, record: bytes) -> tuple[Any, Any]:
        return record, None

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        count = 0
        for record in read_records(self.files):
            count += 1
            yield self._item(record)
        self._length = count


@register_dataset("TFRecordDataset")
class TFRecordDataset(_RecordDataset):
    """The serialized records of ``root`` (a TFRecord file or a glob pattern); samples ``(bytes, None)``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(record_files(root, None, "TFRecordDataset"))


def parse_imagenet_example(record: bytes) -> tuple[np.ndarray, int]:
    """An ImageNet ``tf.train.Example`` -> (``uint8`` HWC RGB image, ``image/class/label``)."""
    features = parse_example(record)
    encoded = features.get("image/encoded") or []
    labels = features.get("image/class/label")
    if not encoded or labels is None or len(labels) == 0:
        raise DataError(
            "An ImageNet record needs 'image/encoded' and 'image/class/label' features (the TensorFlow models' "
            f"build_imagenet_data format); this one has {sorted(features)}."
        )
    return decode_image(encoded[0], 3), int(labels[0])


@register_dataset("ImageRecord")
class ImageRecord(_RecordDataset):
    """ImageNet TFRecords ``root/*-*-of-*``; samples ``(uint8 HWC RGB image, label)`` (labels as stored:
    1..1000 in the usual files, so models with 1000 classes need ``LabelShift: 1``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(record_files(root, "*-*-of-*", "ImageRecord"))

    def _item(self, record: bytes) -> tuple[Any, Any]:
        return parse_imagenet_example(record)


@register_transform("ParseDecodeImagenet")
class ParseDecodeImagenet(SampleTransform):
    """Parse an ImageNet record into ``(image, label)``. ``ImageRecord`` already does it (as LPOT's, where
    this transform became a no-op), so a decoded sample passes through unchanged; on a raw record (from
    ``TFRecordDataset``) it parses and decodes."""

    def __call__(self, sample: tuple[Any, Any]) -> tuple[Any, Any]:
        value, label = sample
        if isinstance(value, (bytes, bytearray)) or (isinstance(value, np.ndarray) and value.dtype.kind == "S"):
            return parse_imagenet_example(bytes(np.asarray(value).item() if isinstance(value, np.ndarray) else value))
        return value, label


@register_dataset("COCORecord")
class COCORecord(_RecordDataset):
    """COCO TFRecords in the object detection API format (``root`` a file or glob pattern); samples
    ``(uint8 HWC RGB image, (boxes [N, 4] (ymin, xmin, ymax, xmax) normalized, names, classes, image id))``.

    ``num_cores`` (LPOT's interleave width) is accepted; records are read in order.
    """

    def __init__(self, root: str | os.PathLike[str], num_cores: int = 28) -> None:
        super().__init__(record_files(root, None, "COCORecord"))
        self.num_cores = int(num_cores)

    def _item(self, record: bytes) -> tuple[Any, Any]:
        return coco_example_sample(parse_example(record))
