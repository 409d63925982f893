"""LPOT's image transforms beyond the basic ones: crops, flips, padding, colour, channel and dtype changes.

Every transform takes a numpy image in HWC layout (height, width, channels) or HW, unless its docstring
says otherwise (``ToTensor`` makes CHW; ``DecodeImage`` takes encoded bytes). Random transforms draw from
a generator seeded by their ``seed`` parameter, so a pipeline is reproducible. Pillow does the work
where it is the reference (bicubic and antialiased resizing, colour jitter, JPEG coding).

The PyTorch flavours (``model.framework: pytorch``) of ``Resize`` and ``CenterCrop`` follow
torchvision: an integer size resizes the shorter side, a crop larger than the image pads it.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpot_ir.data.transforms import (
    PIL_RESAMPLE,
    CenterCrop,
    Resize,
    SampleTransform,
    _check_fits,
    _hw,
    _image,
    _pil,
    pil_resize,
    register_transform,
    resize_image,
)
from lpot_ir.errors import ConfigError, DataError

__all__ = [
    "TorchResize",
    "TorchCenterCrop",
    "RandomResizedCrop",
    "CropResize",
    "CropToBoundingBox",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "Pad",
    "ColorJitter",
    "AlignImageChannel",
    "ResizeWithRatio",
    "ToTensor",
    "ToPILImage",
    "ToNDArray",
    "QuantizedInput",
    "DecodeImage",
    "EncodeJpeg",
]

logger = logging.getLogger(__name__)

@register_transform("Resize", flavour="pytorch")
class TorchResize(Resize):
    """PyTorch flavour of ``Resize`` (torchvision's): an integer size is the shorter side (the aspect
    ratio is kept); ``[height, width]`` is exact. Pillow resamples (antialiased when shrinking)."""

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        super().__init__(size, interpolation)
        self.shorter_side = isinstance(size, (int, np.integer)) or (
            isinstance(size, Sequence) and len(size) == 1
        )

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "Resize")
        h, w = image.shape[:2]
        if self.shorter_side:
            side = self.size[0]
            short, long = (h, w) if h <= w else (w, h)
            other = int(side * long / short)
            size = (side, other) if h <= w else (other, side)
        else:
            size = self.size
        return pil_resize(image, size, self.interpolation)


@register_transform("CenterCrop", flavour="pytorch")
class TorchCenterCrop(CenterCrop):
    """PyTorch flavour of ``CenterCrop`` (torchvision's): an image smaller than the crop is padded with
    zeros first; the offset is ``round((H - h) / 2)``."""

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "CenterCrop")
        h, w = self.size
        pad_h, pad_w = max(h - image.shape[0], 0), max(w - image.shape[1], 0)
        if pad_h or pad_w:
            pads = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)] + [(0, 0)] * (image.ndim - 2)
            image = np.pad(image, pads)
        top = int(round((image.shape[0] - h) / 2.0))
        left = int(round((image.shape[1] - w) / 2.0))
        return image[top : top + h, left : left + w]


def _pair(value: Any, what: str, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    raise ConfigError(f"{name}: {what} must be a pair [low, high], got {value!r}.")


@register_transform("RandomResizedCrop")
class RandomResizedCrop:
    """Crop a random area and aspect ratio, then resize it to ``size`` (torchvision's algorithm).

    The crop covers a fraction of the image drawn from ``scale`` with an aspect ratio drawn (log-uniformly)
    from ``ratio``; ten draws are tried, then a centre crop of the nearest allowed ratio is used.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = "bilinear",
        seed: int = 1978,
    ) -> None:
        self.size = _hw(size, "RandomResizedCrop")
        self.scale = _pair(scale, "scale", "RandomResizedCrop")
        self.ratio = _pair(ratio, "ratio", "RandomResizedCrop")
        if not 0 < self.scale[0] <= self.scale[1] or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(
                f"RandomResizedCrop: scale and ratio must be positive pairs [low, high] with low <= high, got "
                f"{list(scale)} and {list(ratio)}."
            )
        if interpolation not in PIL_RESAMPLE:
            raise ConfigError(
                f"RandomResizedCrop: interpolation {interpolation!r} is not one of {', '.join(PIL_RESAMPLE)}."
            )
        self.interpolation = interpolation
        self._rng = np.random.default_rng(seed)

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The next crop window ``(top, left, crop height, crop width)`` for an image of that size."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * self._rng.uniform(*self.scale)
            aspect = math.exp(self._rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(self._rng.integers(0, height - h + 1))
                left = int(self._rng.integers(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "RandomResizedCrop")
        top, left, h, w = self.window(image.shape[0], image.shape[1])
        return resize_image(image[top : top + h, left : left + w], self.size, self.interpolation)


@register_transform("CropResize")
class CropResize:
    """Crop the window at (``x``, ``y``) of ``width`` x ``height``, then resize it to ``size``."""

    def __init__(
        self, x: int, y: int, width: int, height: int, size: int | Sequence[int], interpolation: str = "bilinear"
    ) -> None:
        if min(x, y) < 0 or min(width, height) <= 0:
            raise ConfigError(
                f"CropResize: x and y must be >= 0 and width, height > 0, got x={x}, y={y}, {width}x{height}."
            )
        self.x, self.y, self.width, self.height = int(x), int(y), int(width), int(height)
        self.size = _hw(size, "CropResize")
        if interpolation not in PIL_RESAMPLE:
            raise ConfigError(f"CropResize: interpolation {interpolation!r} is not one of {', '.join(PIL_RESAMPLE)}.")
        self.interpolation = interpolation

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "CropResize")
        _check_fits(image, self.y + self.height, self.x + self.width, "CropResize")
        crop = image[self.y : self.y + self.height, self.x : self.x + self.width]
        return resize_image(crop, self.size, self.interpolation)


@register_transform("CropToBoundingBox")
class CropToBoundingBox:
    """Crop the box whose top-left corner is (``offset_height``, ``offset_width``), ``target_height`` x
    ``target_width`` (``tf.image.crop_to_bounding_box``)."""

    def __init__(self, offset_height: int, offset_width: int, target_height: int, target_width: int) -> None:
        if min(offset_height, offset_width) < 0 or min(target_height, target_width) <= 0:
            raise ConfigError(
                "CropToBoundingBox: offsets must be >= 0 and the target size positive, got "
                f"offset ({offset_height}, {offset_width}), target {target_height}x{target_width}."
            )
        self.top, self.left = int(offset_height), int(offset_width)
        self.height, self.width = int(target_height), int(target_width)

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "CropToBoundingBox")
        _check_fits(image, self.top + self.height, self.left + self.width, "CropToBoundingBox")
        return image[self.top : self.top + self.height, self.left : self.left + self.width]


class _RandomFlip:
    axis = 1
    name = "RandomHorizontalFlip"

    def __init__(self, seed: int = 1978) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, self.name)
        return np.flip(image, axis=self.axis) if self._rng.uniform() < 0.5 else image


@register_transform("RandomHorizontalFlip")
class RandomHorizontalFlip(_RandomFlip):
    """Mirror the image left-right with probability 0.5 (reproducible from ``seed``)."""


@register_transform("RandomVerticalFlip")
class RandomVerticalFlip(_RandomFlip):
    """Flip the image upside down with probability 0.5 (reproducible from ``seed``)."""

    axis = 0
    name = "RandomVerticalFlip"


_PAD_MODES = {"constant": "constant", "edge": "edge", "reflect": "reflect", "symmetric": "symmetric"}


@register_transform("Pad")
class Pad:
    """Pad the borders (torchvision's ``Pad``).

    Args:
        padding: one value for every side, ``[left/right, top/bottom]`` or ``[left, top, right, bottom]``.
        fill: the value of ``constant`` padding (one value, or one per channel).
        padding_mode: ``constant``, ``edge``, ``reflect`` or ``symmetric``.
    """

    def __init__(self, padding: int | Sequence[int], fill: float | Sequence[float] = 0, padding_mode: str = "constant") -> None:
        values = [int(padding)] if isinstance(padding, (int, np.integer)) else [int(p) for p in padding]
        if len(values) not in (1, 2, 4) or any(v < 0 for v in values):
            raise ConfigError(
                f"Pad: padding must be one, two or four non-negative integers, got {padding!r}."
            )
        if len(values) == 1:
            values = values * 4
        elif len(values) == 2:
            values = [values[0], values[1], values[0], values[1]]
        self.left, self.top, self.right, self.bottom = values
        if padding_mode not in _PAD_MODES:
            raise ConfigError(f"Pad: padding_mode {padding_mode!r} is not one of {', '.join(_PAD_MODES)}.")
        self.mode = padding_mode
        self.fill = np.asarray(fill, dtype=np.float64).reshape(-1)

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "Pad")
        pads = [(self.top, self.bottom), (self.left, self.right)] + [(0, 0)] * (image.ndim - 2)
        if self.mode != "constant":
            return np.pad(image, pads, mode=_PAD_MODES[self.mode])  # type: ignore[call-overload]
        if self.fill.size == 1:
            return np.pad(image, pads, mode="constant", constant_values=self.fill[0].astype(image.dtype))
        if image.ndim != 3 or image.shape[2] != self.fill.size:
            raise DataError(f"Pad: fill has {self.fill.size} values but the image has shape {image.shape}.")
        out = np.empty(
            (image.shape[0] + self.top + self.bottom, image.shape[1] + self.left + self.right, image.shape[2]),
            dtype=image.dtype,
        )
        out[...] = self.fill.astype(image.dtype)
        out[self.top : self.top + image.shape[0], self.left : self.left + image.shape[1]] = image
        return out


def _jitter_range(value: Any, name: str, centre: float, bound: tuple[float, float] | None) -> tuple[float, float] | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"ColorJitter: {name} must be non-negative, got {value}.")
        low, high = centre - value, centre + value
        if bound is not None:
            low = max(low, bound[0])
    else:
        low, high = _pair(value, name, "ColorJitter")
    if bound is not None and not bound[0] <= low <= high <= bound[1]:
        raise ConfigError(f"ColorJitter: {name} range [{low}, {high}] must lie within {list(bound)}.")
    return None if low == high == centre else (low, high)


@register_transform("ColorJitter")
class ColorJitter:
    """Randomly change brightness, contrast, saturation and hue (torchvision's ``ColorJitter``, with Pillow).

    Each of ``brightness``, ``contrast`` and ``saturation`` is a number ``v`` (a factor drawn from
    ``[max(0, 1 - v), 1 + v]``) or a pair ``[low, high]``; ``hue`` is ``v`` in [0, 0.5] (a shift drawn from
    ``[-v, v]``) or a pair. The four are applied in a random order. Works on ``uint8`` RGB (or gray) images.
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0,
        contrast: float | Sequence[float] = 0,
        saturation: float | Sequence[float] = 0,
        hue: float | Sequence[float] = 0,
        seed: int = 1978,
    ) -> None:
        self.brightness = _jitter_range(brightness, "brightness", 1.0, (0.0, math.inf))
        self.contrast = _jitter_range(contrast, "contrast", 1.0, (0.0, math.inf))
        self.saturation = _jitter_range(saturation, "saturation", 1.0, (0.0, math.inf))
        self.hue = _jitter_range(hue, "hue", 0.0, (-0.5, 0.5))
        self._rng = np.random.default_rng(seed)

    def __call__(self, array: Any) -> np.ndarray:
        from PIL import ImageEnhance

        Image = _pil()
        image = _image(array, "ColorJitter")
        if image.dtype != np.uint8 or not (image.ndim == 2 or image.shape[2] == 3):
            raise DataError(
                f"ColorJitter works on uint8 RGB or gray images, got {image.dtype} of shape {image.shape}; put it "
                "before Rescale / Normalize / ToTensor."
            )
        pil = Image.fromarray(image)
        for index in self._rng.permutation(4).tolist():
            if index == 0 and self.brightness:
                pil = ImageEnhance.Brightness(pil).enhance(self._rng.uniform(*self.brightness))
            elif index == 1 and self.contrast:
                pil = ImageEnhance.Contrast(pil).enhance(self._rng.uniform(*self.contrast))
            elif index == 2 and self.saturation:
                pil = ImageEnhance.Color(pil).enhance(self._rng.uniform(*self.saturation))
            elif index == 3 and self.hue and pil.mode == "RGB":
                shift = self._rng.uniform(*self.hue)
                h, s, v = pil.convert("HSV").split()
                hue = (np.asarray(h, dtype=np.int16) + int(round(shift * 255))) % 256
                pil = Image.merge("HSV", (Image.fromarray(hue.astype(np.uint8), "L"), s, v)).convert("RGB")
        return np.asarray(pil)


@register_transform("AlignImageChannel")
class AlignImageChannel:
    """Give the image ``dim`` channels (1 or 3): gray becomes RGB by repetition, RGBA drops alpha, RGB
    becomes gray by luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, as Pillow's ``L``). The result
    is always HWC (``[H, W, 1]`` for ``dim: 1``)."""

    def __init__(self, dim: int = 3) -> None:
        if dim not in (1, 3):
            raise ConfigError(f"AlignImageChannel: dim must be 1 or 3, got {dim!r}.")
        self.dim = dim

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "AlignImageChannel")
        if image.ndim == 2:
            image = image[..., None]
        channels = image.shape[2]
        if channels == 4:
            image, channels = image[..., :3], 3
        if channels == self.dim:
            return image
        if channels == 1:
            return np.repeat(image, 3, axis=2)
        if channels == 3:
            if image.dtype == np.uint8:
                return np.asarray(_pil().fromarray(image).convert("L"))[..., None]
            gray = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            return gray.astype(image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32)[..., None]
        raise DataError(f"AlignImageChannel: cannot turn an image of shape {image.shape} into {self.dim} channel(s).")


@register_transform("ResizeWithRatio")
class ResizeWithRatio(SampleTransform):
    """Resize keeping the aspect ratio so the shorter side is at least ``min_dim`` and the longer at most
    ``max_dim``; with ``padding``, pad to ``max_dim`` x ``max_dim`` (centred, ``constant_value``) and move the
    label's boxes with the image.

    The label, when it is a detection label ``(boxes [N, 4] normalized (ymin, xmin, ymax, xmax), names,
    classes, image id)`` (what the COCO datasets give), has its boxes re-normalized to the padded image.
    """

    def __init__(self, min_dim: int = 800, max_dim: int = 1365, padding: bool = False, constant_value: float = 0) -> None:
        if min_dim < 0 or max_dim < 0:
            raise ConfigError(f"ResizeWithRatio: min_dim and max_dim must be >= 0, got {min_dim}, {max_dim}.")
        self.min_dim, self.max_dim = int(min_dim), int(max_dim)
        self.padding = bool(padding)
        self.constant_value = constant_value
        if self.padding and not self.max_dim:
            raise ConfigError("ResizeWithRatio: padding needs max_dim (the padded size).")

    def __call__(self, sample: tuple[Any, Any]) -> tuple[Any, Any]:
        array, label = sample
        image = _image(array, "ResizeWithRatio")
        height, width = image.shape[:2]
        scale = 1.0
        if self.min_dim:
            scale = max(1.0, self.min_dim / min(height, width))
        if self.max_dim and round(max(height, width) * scale) > self.max_dim:
            scale = self.max_dim / max(height, width)
        if scale != 1.0:
            image = resize_image(image, (int(round(height * scale)), int(round(width * scale))))
        if not self.padding:
            return image, label
        h, w = image.shape[:2]
        top, left = (self.max_dim - h) // 2, (self.max_dim - w) // 2
        pads = [(top, self.max_dim - h - top), (left, self.max_dim - w - left)] + [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, pads, mode="constant", constant_values=self.constant_value)
        if isinstance(label, (tuple, list)) and len(label) == 4:
            boxes = np.asarray(label[0], dtype=np.float64).reshape(-1, 4)
            moved = (boxes * [h, w, h, w] + [top, left, top, left]) / self.max_dim
            label = (moved.astype(np.float32), *label[1:])
        return image, label


@register_transform("ToTensor")
class ToTensor:
    """HWC (or HW) image -> CHW float32 (torchvision's ``ToTensor``): ``uint8`` is divided by 255, other
    dtypes keep their values. The "tensor" is a numpy array: models run in ONNX Runtime."""

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "ToTensor")
        chw = image[None] if image.ndim == 2 else np.transpose(image, (2, 0, 1))
        if chw.dtype == np.uint8:
            return (chw.astype(np.float32) / 255.0).astype(np.float32)
        return np.ascontiguousarray(chw, dtype=np.float32)


@register_transform("ToPILImage")
class ToPILImage:
    """An array -> ``PIL.Image`` (torchvision's ``ToPILImage``): a CHW array (1, 3 or 4 channels first) is
    made HWC; a float image is taken as [0, 1] and scaled to ``uint8``. ``mode`` converts (e.g. ``RGB``)."""

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode

    def __call__(self, array: Any) -> Any:
        Image = _pil()
        if isinstance(array, Image.Image):
            return array.convert(self.mode) if self.mode else array
        image = np.asarray(array)
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
            image = np.transpose(image, (1, 2, 0))
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if np.issubdtype(image.dtype, np.floating):
            image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
        try:
            pil = Image.fromarray(image)
        except (TypeError, ValueError) as exc:
            raise DataError(f"ToPILImage: an array of shape {image.shape} and dtype {image.dtype} is no image ({exc}).") from None
        return pil.convert(self.mode) if self.mode else pil


@register_transform("ToNDArray")
class ToNDArray:
    """LPOT's MXNet ``ToNDArray``. Models run in ONNX Runtime, which takes numpy arrays, so this gives a
    numpy array (an ``NDArray`` is turned into one with ``asnumpy()``)."""

    def __call__(self, array: Any) -> np.ndarray:
        return np.asarray(array.asnumpy() if hasattr(array, "asnumpy") else array)


@register_transform("QuantizedInput")
class QuantizedInput:
    """Quantize the input for a model that takes integers: ``round(x * scale)`` (plus 128 for ``uint8``),
    saturated to the dtype's range. Without ``scale`` (not known yet while tuning) it changes nothing."""

    def __init__(self, dtype: str = "int8", scale: float | None = None) -> None:
        if dtype not in ("int8", "uint8"):
            raise ConfigError(f"QuantizedInput: dtype must be 'int8' or 'uint8', got {dtype!r}.")
        if scale is not None and not scale > 0:
            raise ConfigError(f"QuantizedInput: scale must be positive, got {scale!r}.")
        self.dtype = np.dtype(dtype)
        self.scale = scale

    def __call__(self, array: Any) -> Any:
        if self.scale is None:
            return array
        data = np.rint(np.asarray(array, dtype=np.float64) * self.scale) + (128 if self.dtype == np.uint8 else 0)
        info = np.iinfo(self.dtype)
        return np.clip(data, info.min, info.max).astype(self.dtype)


def _encoded_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    array = np.asarray(value)
    if array.ndim == 0 and isinstance(array.item(), (bytes, bytearray)):
        return bytes(array.item())
    raise DataError(f"{what} expects encoded image bytes (e.g. a JPEG file's contents), got {type(value).__name__}.")


@register_transform("DecodeImage")
class DecodeImage:
    """Encoded image bytes (JPEG, PNG, ...) -> ``uint8`` HWC array, decoded by Pillow.

    Args:
        channels: 0 keeps the file's (gray gives ``[H, W, 1]``), 1 makes gray, 3 makes RGB (as ``tf.io.decode_jpeg``).
    """

    def __init__(self, channels: int = 0) -> None:
        if channels not in (0, 1, 3):
            raise ConfigError(f"DecodeImage: channels must be 0, 1 or 3, got {channels!r}.")
        self.channels = channels

    def __call__(self, value: Any) -> np.ndarray:
        return decode_image(_encoded_bytes(value, "DecodeImage"), self.channels)


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
    """Decode image bytes to ``uint8`` HWC (``channels`` 0: as stored, 1: gray, 3: RGB)."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as pil:
            mode = pil.mode
            if channels == 1 or (channels == 0 and mode in ("L", "1", "I;16", "I")):
                array = np.asarray(pil.convert("L"))[..., None]
            else:
                array = np.asarray(pil.convert("RGB"))
    except OSError as exc:
        raise DataError(f"Cannot decode image bytes ({len(data)} bytes): {exc}") from None
    return array


@register_transform("EncodeJpeg")
@register_transform("EncodeJped")
class EncodeJpeg:
    """``uint8`` HWC (1 or 3 channels) or HW image -> JPEG bytes (Pillow, ``quality`` as ``tf.io.encode_jpeg``).
    LPOT's documentation spells it ``EncodeJped``; both names work."""

    def __init__(self, quality: int = 95) -> None:
        if not 1 <= int(quality) <= 100:
            raise ConfigError(f"EncodeJpeg: quality must be in 1..100, got {quality!r}.")
        self.quality = int(quality)

    def __call__(self, array: Any) -> bytes:
        image = _image(array, "EncodeJpeg")
        if image.dtype != np.uint8:
            raise DataError(f"EncodeJpeg needs a uint8 image, got {image.dtype}; put a Cast to uint8 before it.")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        buffer = io.BytesIO()
        _pil().fromarray(image).save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()
