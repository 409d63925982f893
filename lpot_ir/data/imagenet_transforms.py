"""LPOT's ImageNet preprocessing transforms: ``ResizeCropImagenet`` and ``BilinearImagenet``.

Both resize with the half-pixel bilinear arithmetic of ``tf.image.resize`` / OpenCV (see
:class:`~lpot_ir.data.transforms.Resize`). ``ResizeCropImagenet`` has two flavours, as in LPOT: the ONNX
Runtime one scales pixels to [0, 1], normalizes by ``mean_value`` / ``std_value`` and returns CHW; the
TensorFlow one (``model.framework: tensorflow``) subtracts ``mean_value`` from the 0..255 pixels, multiplies
by ``scale`` and stays HWC.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpot_ir.data.transforms import _check_fits, _image, register_transform, resize_image
from lpot_ir.errors import ConfigError

__all__ = ["ResizeCropImagenet", "TensorflowResizeCropImagenet", "BilinearImagenet"]

logger = logging.getLogger(__name__)


def _three_channels(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image


@register_transform("ResizeCropImagenet")
class ResizeCropImagenet:
    """Resize the shorter side to ``resize_side``, crop ``height`` x ``width`` (centre, or random with
    ``random_crop``), optionally flip left-right at random, then normalize.

    ONNX Runtime flavour (the default): ``(pixel / 255 - mean_value) / std_value`` per channel, CHW float32.
    ``scale`` multiplies the result (1.0 leaves it).
    """

    channels_first = True

    def __init__(
        self,
        height: int,
        width: int,
        random_crop: bool = False,
        resize_side: int = 256,
        random_flip_left_right: bool = False,
        mean_value: Sequence[float] = (0.0, 0.0, 0.0),
        std_value: Sequence[float] | None = None,
        scale: float = 1.0,
        seed: int = 1978,
    ) -> None:
        if min(height, width, resize_side) <= 0:
            raise ConfigError(
                f"ResizeCropImagenet: height, width and resize_side must be positive, got {height}, {width}, {resize_side}."
            )
        self.height, self.width, self.resize_side = int(height), int(width), int(resize_side)
        self.random_crop = bool(random_crop)
        self.random_flip = bool(random_flip_left_right)
        self.mean = np.asarray(mean_value, dtype=np.float64).reshape(-1)
        default_std = (0.229, 0.224, 0.225) if self.channels_first else (1.0,)
        self.std = np.asarray(std_value if std_value is not None else default_std, dtype=np.float64).reshape(-1)
        if np.any(self.std == 0):
            raise ConfigError(f"ResizeCropImagenet: std_value must not contain 0, got {std_value!r}.")
        self.scale = float(scale)
        self._rng = np.random.default_rng(seed)

    def _resize_crop(self, array: Any) -> np.ndarray:
        image = _three_channels(_image(array, "ResizeCropImagenet"))
        h, w = image.shape[:2]
        ratio = self.resize_side / min(h, w)
        image = resize_image(image.astype(np.float32), (int(round(h * ratio)), int(round(w * ratio))))
        _check_fits(image, self.height, self.width, "ResizeCropImagenet")
        h, w = image.shape[:2]
        if self.random_crop:
            top = int(self._rng.integers(0, h - self.height + 1))
            left = int(self._rng.integers(0, w - self.width + 1))
        else:
            top, left = (h - self.height) // 2, (w - self.width) // 2
        image = image[top : top + self.height, left : left + self.width]
        if self.random_flip and self._rng.uniform() < 0.5:
            image = image[:, ::-1]
        return image

    def __call__(self, array: Any) -> np.ndarray:
        image = self._resize_crop(array).astype(np.float64) / 255.0
        image = (image - self.mean) / self.std * self.scale
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


@register_transform("ResizeCropImagenet", flavour="tensorflow")
class TensorflowResizeCropImagenet(ResizeCropImagenet):
    """TensorFlow flavour: ``(pixel - mean_value) * scale`` on 0..255 pixels (divided by ``std_value``
    when given), HWC float32."""

    channels_first = False

    def __call__(self, array: Any) -> np.ndarray:
        image = self._resize_crop(array).astype(np.float64)
        image = (image - self.mean) / self.std * self.scale
        return image.astype(np.float32)


@register_transform("BilinearImagenet")
class BilinearImagenet:
    """Inception preprocessing: pixels to [0, 1], crop the central ``central_fraction`` of each side,
    bilinear resize to ``height`` x ``width``, map to [-1, 1] (``(x - 0.5) * 2``), then
    ``(x - mean_value) * scale``. HWC float32."""

    def __init__(
        self,
        height: int,
        width: int,
        central_fraction: float = 0.875,
        mean_value: Sequence[float] = (0.0, 0.0, 0.0),
        scale: float = 1.0,
    ) -> None:
        if min(height, width) <= 0 or not 0 < central_fraction <= 1:
            raise ConfigError(
                f"BilinearImagenet: height and width must be positive and central_fraction in (0, 1], got "
                f"{height}, {width}, {central_fraction}."
            )
        self.height, self.width = int(height), int(width)
        self.central_fraction = float(central_fraction)
        self.mean = np.asarray(mean_value, dtype=np.float64).reshape(-1)
        self.scale = float(scale)

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "BilinearImagenet")
        data = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        h, w = data.shape[:2]
        top = int((h - h * self.central_fraction) / 2)
        left = int((w - w * self.central_fraction) / 2)
        data = data[top : h - top, left : w - left]
        data = resize_image(data, (self.height, self.width))
        result = ((data.astype(np.float64) - 0.5) * 2.0 - self.mean) * self.scale
        return result.astype(np.float32)
