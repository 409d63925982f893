"""COCO datasets: the raw images with their annotation JSON (``COCORaw``), preprocessed images saved as
``.npy`` (``COCONpy``), and the parsing of COCO TFRecords (``COCORecord``, in :mod:`lpot_ir.data.records`).

All give a sample as ``(image, (boxes, names, classes, image_id))``, LPOT's detection label:

* ``boxes``: float32 ``[N, 4]``, ``(ymin, xmin, ymax, xmax)`` divided by the image height and width;
* ``names``: the category names (str array), ``classes``: the COCO category ids (int64 array);
* ``image_id``: the image's file name (COCORaw, COCONpy) or ``image/source_id`` (COCORecord).

The detection metrics (``mAP``, ``COCOmAP``, ``VOCmAP``) read this label directly. Annotation files are
read with pycocotools (``pip install pycocotools``). As in LPOT, images without boxes are left out, and
crowd annotations count as ordinary boxes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lpot_ir.data.datasets import read_image, register_dataset
from lpot_ir.data.image_transforms import decode_image
from lpot_ir.errors import DataError

__all__ = ["COCO_CATEGORIES", "COCORaw", "COCONpy", "coco_example_sample", "load_coco"]

logger = logging.getLogger(__name__)

COCO_CATEGORIES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana",
    53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table",
    70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone",
    78: "microwave", 79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock",
    86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip
"""The 80 COCO 2017 detection categories: id -> name (the ids the TensorFlow detection models output)."""


def load_coco(annotation_file: Path, who: str) -> Any:
    """A ``pycocotools.coco.COCO`` for the annotation JSON (its loading messages kept off stdout)."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise DataError(f"{who} reads COCO annotations with pycocotools, which is not installed: pip install pycocotools") from None
    if not annotation_file.is_file():
        raise DataError(
            f"{who}: the annotation file '{annotation_file}' does not exist (anno_dir is relative to root, default "
            "annotations/instances_val2017.json). lpot-ir does not download COCO: get it from https://cocodataset.org."
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{who}: '{annotation_file}' is not a COCO annotation file ({type(exc).__name__}: {exc}).") from None


def _image_labels(coco: Any, image_id: int, names: Mapping[int, str]) -> tuple[dict[str, Any], tuple[Any, ...]]:
    info = coco.loadImgs(image_id)[0]
    height, width = float(info["height"]), float(info["width"])
    boxes, classes = [], []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
        bbox = ann.get("bbox") or []
        if len(bbox) != 4:
            continue
        x, y, w, h = (float(v) for v in bbox)
        boxes.append([y / height, x / width, (y + h) / height, (x + w) / width])
        classes.append(int(ann["category_id"]))
    label = (
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray([names.get(c, str(c)) for c in classes], dtype=str),
        np.asarray(classes, dtype=np.int64),
        str(info["file_name"]),
    )
    return info, label


class _COCOFiles:
    """Images listed in a COCO annotation file, with LPOT's detection labels; subclasses read the image."""

    who = "COCORaw"

    def __init__(self, root: str | os.PathLike[str], folder: str, anno_dir: str, suffix: str) -> None:
        self.root = Path(root)
        self.folder = self.root / folder
        if not self.folder.is_dir():
            raise DataError(f"{self.who}: the image folder '{self.folder}' does not exist (it is relative to root).")
        coco = load_coco(self.root / anno_dir, self.who)
        names = {int(c["id"]): str(c["name"]) for c in coco.loadCats(coco.getCatIds())} or dict(COCO_CATEGORIES)
        self.samples: list[tuple[Path, tuple[Any, ...]]] = []
        missing = empty = 0
        for image_id in sorted(coco.getImgIds()):
            info, label = _image_labels(coco, image_id, names)
            path = self.folder / (str(info["file_name"]) + suffix)
            if not path.is_file():
                missing += 1
            elif label[0].shape[0] == 0:
                empty += 1
            else:
                self.samples.append((path, label))
        if missing or empty:
            logger.info("%s: left out %d image(s) without a file and %d without boxes", self.who, missing, empty)
        if not self.samples:
            raise DataError(
                f"{self.who}: none of the images of '{self.root / anno_dir}' with boxes is in '{self.folder}'."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[np.ndarray, tuple[Any, ...]]:
        path, label = self.samples[index]
        return self._read(path), label


@register_dataset("COCORaw")
class COCORaw(_COCOFiles):
    """COCO images ``root/img_dir/<file_name>`` with ``root/anno_dir`` (a COCO instances JSON); samples are
    ``(uint8 HWC RGB image, (boxes, names, classes, file name))`` (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        img_dir: str = "val2017",
        anno_dir: str = "annotations/instances_val2017.json",
        num_cores: int = 28,
    ) -> None:
        super().__init__(root, img_dir, anno_dir, "")

    def _read(self, path: Path) -> np.ndarray:
        return read_image(path, self.who)


@register_dataset("COCONpy")
class COCONpy(_COCOFiles):
    """Preprocessed COCO images saved as ``root/npy_dir/<file_name>.npy`` with ``root/anno_dir``; samples are
    ``(the saved array, (boxes, names, classes, file name))``. (LPOT gave ``(category id, xywh box)`` pairs
    as this dataset's label; lpot-ir gives the same label as ``COCORaw`` so every COCO metric reads it.)"""

    who = "COCONpy"

    def __init__(
        self,
        root: str | os.PathLike[str],
        npy_dir: str = "val2017",
        anno_dir: str = "annotations/instances_val2017.json",
        num_cores: int = 28,
    ) -> None:
        super().__init__(root, npy_dir, anno_dir, ".npy")

    def _read(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"COCONpy: cannot read '{path}' as .npy: {exc}") from None


def coco_example_sample(features: Mapping[str, Any]) -> tuple[np.ndarray, tuple[Any, ...]]:
    """A parsed COCO ``tf.train.Example`` (object detection API format) -> ``(image, label)``."""
    encoded = features.get("image/encoded") or []
    if not encoded:
        raise DataError(
            "A COCO record needs 'image/encoded' (the TensorFlow object detection API's create_coco_tf_record "
            f"format); this one has {sorted(features)}."
        )
    coords = [np.asarray(features.get(f"image/object/bbox/{k}", []), dtype=np.float32) for k in ("ymin", "xmin", "ymax", "xmax")]
    if len({c.shape[0] for c in coords}) != 1:
        raise DataError(f"A COCO record's bbox features have different lengths: {[c.shape[0] for c in coords]}.")
    boxes = np.stack(coords, axis=1) if coords[0].size else np.zeros((0, 4), np.float32)
    names = [n.decode("utf-8") for n in features.get("image/object/class/text", [])]
    classes = np.asarray(features.get("image/object/class/label", []), dtype=np.int64)
    if classes.size == 0 and names:
        ids = {name: cid for cid, name in COCO_CATEGORIES.items()}
        classes = np.asarray([ids.get(n, -1) for n in names], dtype=np.int64)
    if not names and classes.size:
        names = [COCO_CATEGORIES.get(int(c), str(int(c))) for c in classes]
    source = features.get("image/source_id") or [b""]
    label = (boxes, np.asarray(names, dtype=str), classes, source[0].decode("utf-8"))
    return decode_image(encoded[0], 3), label
