"""Built-in transforms, composed from LPOT's YAML form (``transform: {Resize: {size: 224}, ...}``).

Transforms work on numpy images in HWC layout (height, width, channels) or HW. Each is a callable
``transform(array) -> array`` applied to a sample's input only (labels are untouched). A sample whose
input is a tuple or a dict (multi-input models) gets the transform applied to each of its arrays.

Postprocess transforms (``evaluation.accuracy.postprocess.transform``) take and return a
``(preds, labels)`` pair; they run on each batch before the metric sees it.

Names are the YAML keys; :data:`TRANSFORMS` and :data:`POSTPROCESSES` map them to classes, filled by
:func:`register_transform` and :func:`register_postprocess`.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lpot_ir.errors import ConfigError, DataError
from lpot_ir.registry import add_to_registry

__all__ = [
    "TRANSFORMS",
    "POSTPROCESSES",
    "register_transform",
    "register_postprocess",
    "create_transform",
    "create_postprocess",
    "apply_to_input",
    "Compose",
    "Resize",
    "CenterCrop",
    "RandomCrop",
    "Normalize",
    "Transpose",
    "Cast",
    "Rescale",
    "ToArray",
    "LabelShift",
    "Reshape",
]

logger = logging.getLogger(__name__)

TRANSFORMS: dict[str, type] = {}
POSTPROCESSES: dict[str, type] = {}


def register_transform(name: str, *, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: make a transform available under ``name`` in YAML (duplicate names: :mod:`lpot_ir.registry`)."""

    def decorate(cls: type) -> type:
        add_to_registry(TRANSFORMS, name, cls, kind="transform", replace=replace)
        return cls

    return decorate


def register_postprocess(name: str, *, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: make a postprocess transform available under ``name`` in YAML (duplicate names:
    :mod:`lpot_ir.registry`)."""

    def decorate(cls: type) -> type:
        add_to_registry(POSTPROCESSES, name, cls, kind="postprocess", replace=replace)
        return cls

    return decorate


def _hw(size: int | Sequence[int], what: str) -> tuple[int, int]:
    """``224`` -> (224, 224); ``[h, w]`` -> (h, w)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif (
        isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size)
    ):
        h, w = int(size[0]), int(size[1])
    elif isinstance(size, Sequence) and len(size) == 1 and isinstance(size[0], (int, np.integer)):
        h = w = int(size[0])
    else:
        raise ConfigError(
            f"{what}: size must be an integer or a list [height, width] of integers, got {size!r}."
        )
    if h <= 0 or w <= 0:
        raise ConfigError(f"{what}: size must be positive, got {size!r}.")
    return h, w


def _image(array: Any, what: str) -> np.ndarray:
    image = np.asarray(array)
    if image.ndim not in (2, 3):
        raise DataError(
            f"{what} expects an HWC or HW image (2 or 3 dimensions), got shape {image.shape}. "
            "Put Transpose after the spatial transforms if your model wants CHW."
        )
    return image


def _resize_axis(length: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a half-pixel bilinear resize along one axis (as cv2 INTER_LINEAR)."""
    scale = length / out
    src = (np.arange(out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, length - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    frac = src - lo
    return lo, hi, frac


@register_transform("Resize")
class Resize:
    """Resize an HWC/HW image to ``size`` (an int means a square).

    ``bilinear`` uses half-pixel centres without antialiasing, the same arithmetic as OpenCV's
    ``INTER_LINEAR`` (which LPOT's ONNX Runtime transforms use); ``nearest`` picks the nearest pixel.
    Integer images are rounded and clipped back to their dtype; float images stay float.
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        self.size = _hw(size, "Resize")
        if interpolation not in ("bilinear", "nearest"):
            raise ConfigError(
                f"Resize: interpolation {interpolation!r} is not supported; use 'bilinear' or 'nearest'."
            )
        self.interpolation = interpolation

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "Resize")
        out_h, out_w = self.size
        h, w = image.shape[:2]
        if self.interpolation == "nearest":
            rows = np.minimum(np.floor((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
            cols = np.minimum(np.floor((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
            return image[rows][:, cols]
        data = image.astype(np.float64)
        r0, r1, fr = _resize_axis(h, out_h)
        c0, c1, fc = _resize_axis(w, out_w)
        extra = (1,) * (image.ndim - 2)
        fr = fr.reshape((-1, 1) + extra)
        fc = fc.reshape((1, -1) + extra)
        top = data[r0][:, c0] * (1 - fc) + data[r0][:, c1] * fc
        bottom = data[r1][:, c0] * (1 - fc) + data[r1][:, c1] * fc
        result = top * (1 - fr) + bottom * fr
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            return np.clip(np.rint(result), info.min, info.max).astype(image.dtype)
        return result.astype(image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32)


def _crop(image: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    return image[top : top + h, left : left + w]


def _check_fits(image: np.ndarray, h: int, w: int, what: str) -> None:
    if image.shape[0] < h or image.shape[1] < w:
        raise DataError(
            f"{what}: the crop {h}x{w} is larger than the image {image.shape[0]}x{image.shape[1]}; "
            "put a Resize before it or choose a smaller size."
        )


@register_transform("CenterCrop")
class CenterCrop:
    """Crop the centre ``size`` (int = square) of an HWC/HW image."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _hw(size, "CenterCrop")

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "CenterCrop")
        h, w = self.size
        _check_fits(image, h, w, "CenterCrop")
        top = (image.shape[0] - h) // 2
        left = (image.shape[1] - w) // 2
        return _crop(image, top, left, h, w)


@register_transform("RandomCrop")
class RandomCrop:
    """Crop a random ``size`` window (int = square); positions come from a generator seeded by ``seed``."""

    def __init__(self, size: int | Sequence[int], seed: int = 1978) -> None:
        self.size = _hw(size, "RandomCrop")
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __call__(self, array: Any) -> np.ndarray:
        image = _image(array, "RandomCrop")
        h, w = self.size
        _check_fits(image, h, w, "RandomCrop")
        top = int(self._rng.integers(0, image.shape[0] - h + 1))
        left = int(self._rng.integers(0, image.shape[1] - w + 1))
        return _crop(image, top, left, h, w)


@register_transform("Normalize")
class Normalize:
    """``(x - mean) / std`` per channel (the last axis); the result is float32."""

    def __init__(self, mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if np.any(self.std == 0):
            raise ConfigError(f"Normalize: std must not contain 0, got {std!r}.")

    def __call__(self, array: Any) -> np.ndarray:
        data = np.asarray(array, dtype=np.float32)
        if self.mean.ndim and data.shape[-1] != self.mean.shape[0]:
            raise DataError(
                f"Normalize: mean/std have {self.mean.shape[0]} values but the image's last axis "
                f"(channels) has {data.shape[-1]}; Normalize works on HWC images, so put Transpose after it."
            )
        return ((data - self.mean) / self.std).astype(np.float32)


@register_transform("Transpose")
class Transpose:
    """Permute axes, e.g. ``perm: [2, 0, 1]`` turns HWC into CHW."""

    def __init__(self, perm: Sequence[int]) -> None:
        self.perm = tuple(int(p) for p in perm)

    def __call__(self, array: Any) -> np.ndarray:
        data = np.asarray(array)
        if sorted(self.perm) != list(range(data.ndim)):
            raise DataError(f"Transpose: perm {list(self.perm)} does not fit an array of shape {data.shape}.")
        return np.transpose(data, self.perm)


@register_transform("Cast")
class Cast:
    """Convert to ``dtype`` (a numpy name such as float32, int64, uint8)."""

    def __init__(self, dtype: str = "float32") -> None:
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise ConfigError(
                f"Cast: {dtype!r} is not a numpy dtype name (e.g. float32, int64, uint8)."
            ) from None

    def __call__(self, array: Any) -> np.ndarray:
        return np.asarray(array).astype(self.dtype)


@register_transform("Rescale")
class Rescale:
    """Scale 8-bit pixel values to [0, 1] (divide by 255); the result is float32."""

    def __call__(self, array: Any) -> np.ndarray:
        return (np.asarray(array, dtype=np.float32) / 255.0).astype(np.float32)


@register_transform("ToArray")
class ToArray:
    """Turn an image-like object (a PIL image, a list) into a numpy array."""

    def __call__(self, array: Any) -> np.ndarray:
        return np.asarray(array)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, array: Any) -> Any:
        for transform in self.transforms:
            array = transform(array)
        return array

    def __len__(self) -> int:
        return len(self.transforms)


def apply_to_input(transform: Callable[[Any], Any], sample_input: Any) -> Any:
    """Apply ``transform`` to one sample's input: an array, or each array of a tuple/dict input."""
    if isinstance(sample_input, Mapping):
        return {k: transform(v) for k, v in sample_input.items()}
    if isinstance(sample_input, (tuple, list)):
        return type(sample_input)(transform(v) for v in sample_input)
    return transform(sample_input)


@register_postprocess("LabelShift")
class LabelShift:
    """Subtract ``label_shift`` from the labels (e.g. 1 for ImageNet models with 1001 classes)."""

    def __init__(self, label_shift: int = 0) -> None:
        self.label_shift = int(label_shift)

    def __call__(self, preds: Any, labels: Any) -> tuple[Any, Any]:
        return preds, np.asarray(labels) - self.label_shift


@register_postprocess("Reshape")
class Reshape:
    """Reshape the predictions (a single array) to ``shape`` (``-1`` allowed)."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)

    def __call__(self, preds: Any, labels: Any) -> tuple[Any, Any]:
        data = np.asarray(preds[0] if isinstance(preds, (list, tuple)) and len(preds) == 1 else preds)
        try:
            return data.reshape(self.shape), labels
        except ValueError:
            raise DataError(
                f"Reshape: predictions of shape {data.shape} cannot become {list(self.shape)}."
            ) from None


def build_from_registry(registry: Mapping[str, type], kind: str, name: str, params: Any) -> Any:
    """Instantiate ``registry[name]`` from a YAML value: a mapping of keyword arguments, None, or one scalar.

    Args:
        registry: name -> class.
        kind: what is being built, for messages ("transform", "dataset", "metric").
        name: the YAML key.
        params: the YAML value (``{size: 224}``, ``None`` or a scalar such as ``topk: 1``).

    Raises:
        ConfigError: unknown name (with the closest one) or keyword arguments the class does not take.
    """

    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"Unknown {kind} '{name}'.{hint} Built-in {kind}s: {', '.join(sorted(registry))}. "
            f"Register your own with lpot_ir's register_{kind} decorator."
        )
    cls = registry[name]
    check_params(cls, kind, name, params)
    try:
        if params is None:
            return cls()
        if isinstance(params, Mapping):
            return cls(**params)
        return cls(params)
    except (ConfigError, DataError):
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"The {kind} '{name}' cannot be built from {params!r}: {exc}") from None


def check_params(cls: type, kind: str, name: str, params: Any) -> None:
    """Raise ConfigError if ``params`` names keyword arguments ``cls`` does not accept."""

    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a class whose signature cannot be read: let the call decide
        return
    accepted = list(signature.parameters)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    if params is None:
        return
    if not isinstance(params, Mapping):
        if not accepted:
            raise ConfigError(f"The {kind} '{name}' takes no parameters, got {params!r}.")
        return
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            valid = ", ".join(accepted) if accepted else "none"
            raise ConfigError(f"The {kind} '{name}' has no parameter '{key}'.{hint} Its parameters: {valid}.")


def _spec_items(spec: Any, kind: str) -> list[tuple[str, Any]]:
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"A {kind} section must be a mapping of names to parameters "
            f"(e.g. {{Resize: {{size: 224}}, CenterCrop: {{size: 224}}}}), got {spec!r}."
        )
    return list(spec.items())


def create_transform(spec: Mapping[str, Any] | None) -> Compose:
    """Build the transforms of a YAML ``transform`` mapping, composed in the order written.

    Example:
        ``create_transform({"Resize": {"size": 8}, "Rescale": None, "Transpose": {"perm": [2, 0, 1]}})``
    """
    return Compose(
        [
            build_from_registry(TRANSFORMS, "transform", name, params)
            for name, params in _spec_items(spec, "transform")
        ]
    )


class _ComposedPostprocess:
    def __init__(self, steps: list[Callable[[Any, Any], tuple[Any, Any]]]) -> None:
        self.steps = steps

    def __call__(self, preds: Any, labels: Any) -> tuple[Any, Any]:
        for step in self.steps:
            preds, labels = step(preds, labels)
        return preds, labels


def create_postprocess(spec: Mapping[str, Any] | None) -> Callable[[Any, Any], tuple[Any, Any]]:
    """Build a ``(preds, labels) -> (preds, labels)`` callable from a YAML postprocess ``transform`` mapping."""
    return _ComposedPostprocess(
        [
            build_from_registry(POSTPROCESSES, "postprocess", name, params)
            for name, params in _spec_items(spec, "postprocess")
        ]
    )
