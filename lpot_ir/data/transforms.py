"""Built-in transforms, composed from LPOT's YAML form (``transform: {Resize: {size: 224}, ...}``).

Transforms work on numpy images in HWC layout (height, width, channels) or HW. Most are callables
``transform(array) -> array`` applied to a sample's input only (labels are untouched); a sample whose
input is a tuple or a dict (multi-input models) gets the transform applied to each of its arrays.
A :class:`SampleTransform` sees the whole ``(input, label)`` sample instead and may change the label
(``ParseDecodeImagenet`` takes the label out of a record; ``ResizeWithRatio`` moves boxes).

Postprocess transforms (``evaluation.accuracy.postprocess.transform``) take and return a
``(preds, labels)`` pair; they run on each batch before the metric sees it.

Names are the YAML keys (LPOT's names); :data:`TRANSFORMS` and :data:`POSTPROCESSES` map them to
classes, filled by :func:`register_transform` and :func:`register_postprocess`. A few LPOT transforms
behave differently per framework (PyTorch's ``Resize: 256`` resizes the shorter side, its
``Normalize`` works on CHW tensors); those flavours are registered with ``flavour=`` and chosen by
:func:`create_transform`'s ``framework`` (the YAML's ``model.framework``).
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lpot_ir.errors import ConfigError, DataError
from lpot_ir.registry import DuplicateNameError, add_to_registry

__all__ = [
    "Registry",
    "TransformRegistry",
    "TRANSFORMS",
    "TRANSFORM_FLAVOURS",
    "FLAVOURS",
    "POSTPROCESSES",
    "register_transform",
    "register_postprocess",
    "create_transform",
    "create_postprocess",
    "transform_flavour",
    "apply_to_input",
    "SampleTransform",
    "Compose",
    "Resize",
    "CenterCrop",
    "RandomCrop",
    "Normalize",
    "ChannelsFirstNormalize",
    "resize_image",
    "pil_resize",
    "PIL_RESAMPLE",
    "Transpose",
    "Cast",
    "Rescale",
    "ToArray",
    "LabelShift",
    "Reshape",
]

logger = logging.getLogger(__name__)

class Registry(dict[str, type]):
    """A YAML name -> class registry that is also LPOT's accessor: ``DATASETS(framework)[name](...)``,
    ``METRICS(framework)[name]`` (the framework does not change datasets and metrics here)."""

    def __call__(self, framework: Any = None) -> Mapping[str, type]:
        return self


class _LpotSampleTransform:
    """A transform called LPOT's way: ``transform((image, label)) -> (image, label)``."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, sample: tuple[Any, Any]) -> tuple[Any, Any]:
        image, label = sample
        if isinstance(self.transform, Compose):
            return self.transform.apply(image, label)
        if isinstance(self.transform, SampleTransform):
            return self.transform((image, label))
        return apply_to_input(self.transform, image), label


class TransformRegistry(Registry):
    """:data:`TRANSFORMS`; called LPOT's way, ``TRANSFORMS(framework, "preprocess")[name](**args)`` builds the
    framework's flavour of a transform that takes and returns ``(image, label)`` samples (``"postprocess"``:
    the postprocess steps, taking ``(preds, labels)``)."""

    def __call__(self, framework: Any = None, process: str = "preprocess") -> Mapping[str, Any]:  # type: ignore[override]
        if process not in ("preprocess", "postprocess", "general"):
            raise ConfigError(f"TRANSFORMS: process must be 'preprocess', 'postprocess' or 'general', got {process!r}.")
        if process == "postprocess":
            return {name: _lpot_factory(cls, post=True) for name, cls in POSTPROCESSES.items()}
        flavour = transform_flavour(framework)
        return {name: _lpot_factory(TRANSFORM_FLAVOURS.get((flavour, name), cls)) for name, cls in self.items()}


def _lpot_factory(cls: type, post: bool = False) -> Callable[..., Any]:
    def build(*args: Any, **kwargs: Any) -> Any:
        made = cls(*args, **kwargs)
        if post:
            return lambda sample: made(*sample)
        if isinstance(made, Compose):  # LPOT's Compose takes transforms that already take samples
            made.transforms = [t.transform if isinstance(t, _LpotSampleTransform) else t for t in made.transforms]
        return _LpotSampleTransform(made)

    build.__name__ = cls.__name__
    build.__doc__ = cls.__doc__
    return build


TRANSFORMS: TransformRegistry = TransformRegistry()
"""YAML name -> transform class (the ONNX Runtime flavour, which is also the TensorFlow one unless
:data:`TRANSFORM_FLAVOURS` says otherwise)."""
TRANSFORM_FLAVOURS: dict[tuple[str, str], type] = {}
"""``(flavour, name)`` -> the class a framework's flavour uses instead of ``TRANSFORMS[name]``."""
POSTPROCESSES: Registry = Registry()

FLAVOURS = ("onnxrt", "tensorflow", "pytorch", "mxnet")
"""Transform flavours: LPOT's frameworks (its two ONNX Runtime backends share one)."""


def register_transform(name: str, *, flavour: str | None = None, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: make a transform available under ``name`` in YAML (duplicate names: :mod:`lpot_ir.registry`).

    Args:
        name: the YAML key.
        flavour: register a framework's flavour of ``name`` (one of :data:`FLAVOURS`); it must take the
            parameters the default class takes (the YAML is checked against the default class).
        replace: replace a different class registered under that name (and flavour).
    """
    if flavour is not None and flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")

    def decorate(cls: type) -> type:
        known = TRANSFORM_FLAVOURS.get((flavour, name)) if flavour is not None else None
        if flavour is None:
            add_to_registry(TRANSFORMS, name, cls, kind="transform", replace=replace)
        elif known is not None and known is not cls and not replace:
            raise DuplicateNameError(
                f"A {flavour} flavour of the transform {name!r} is already registered ({known.__qualname__}). "
                "Pass replace=True to replace it."
            )
        else:
            TRANSFORM_FLAVOURS[(flavour, name)] = cls
        return cls

    return decorate


def transform_flavour(framework: Any) -> str:
    """The transform flavour of an LPOT framework name (``pytorch``, ``tensorflow``, ``mxnet``,
    ``onnxrt_qlinearops``, ...); ``None``, ``onnx`` and the ONNX Runtime names give ``onnxrt``."""
    name = str(getattr(framework, "value", framework) or "").lower()
    if name.startswith("pytorch") or name == "torch":
        return "pytorch"
    if name.startswith("tensorflow") or name == "keras":
        return "tensorflow"
    if name == "mxnet":
        return "mxnet"
    return "onnxrt"


class SampleTransform:
    """A transform of the whole sample: ``transform((input, label)) -> (input, label)``.

    Subclasses implement :meth:`__call__`; :class:`Compose` and the datasets hand them the label too.
    """

    def __call__(self, sample: tuple[Any, Any]) -> tuple[Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


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
    ``INTER_LINEAR`` and TensorFlow's ``tf.image.resize`` (which LPOT's ONNX Runtime and TensorFlow
    transforms use); ``nearest`` picks the nearest pixel; ``bicubic`` is Pillow's (antialiased when
    shrinking). Integer images are rounded and clipped back to their dtype; float images stay float.
    The PyTorch flavour (``model.framework: pytorch``) is torchvision's: see :class:`TorchResize`.
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        self.size = _hw(size, "Resize")
        if interpolation not in ("bilinear", "nearest", "bicubic"):
            raise ConfigError(
                f"Resize: interpolation {interpolation!r} is not supported; use 'bilinear', 'nearest' or 'bicubic'."
            )
        self.interpolation = interpolation

    def __call__(self, array: Any) -> np.ndarray:
        return resize_image(_image(array, "Resize"), self.size, self.interpolation)


def resize_image(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an HWC/HW array to ``(height, width)`` (see :class:`Resize` for the arithmetic)."""
    out_h, out_w = size
    h, w = image.shape[:2]
    if interpolation == "bicubic":
        return pil_resize(image, size, "bicubic")
    if interpolation == "nearest":
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


PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # Image.NEAREST, BILINEAR, BICUBIC


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("This transform uses Pillow, which is not installed: pip install pillow") from None
    return Image


def pil_resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an HWC/HW array to ``(height, width)`` with Pillow (antialiased when shrinking, as torchvision).

    ``uint8`` images with 1, 3 or 4 channels go through Pillow as they are; anything else is resized
    channel by channel as 32-bit float (mode ``F``), then cast back (integers rounded and clipped).
    """
    Image = _pil()
    resample = PIL_RESAMPLE[interpolation]
    out_h, out_w = size
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (3, 4)):
        return np.asarray(Image.fromarray(image).resize((out_w, out_h), resample))
    planes = image[..., None] if image.ndim == 2 else image
    resized = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32), mode="F").resize(
                    (out_w, out_h), resample
                )
            )
            for c in range(planes.shape[2])
        ],
        axis=-1,
    )
    if image.ndim == 2:
        resized = resized[..., 0]
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(resized), info.min, info.max).astype(image.dtype)
    return resized.astype(image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32)


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
    """``(x - mean) / std`` per channel (the last axis: HWC); the result is float32.

    The PyTorch and MXNet flavours normalize CHW tensors (channels first, as after ``ToTensor``).
    """

    channels_first = False

    def __init__(self, mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if np.any(self.std == 0):
            raise ConfigError(f"Normalize: std must not contain 0, got {std!r}.")
        if self.mean.size > 1 and self.std.size > 1 and self.mean.size != self.std.size:
            raise ConfigError(f"Normalize: mean has {self.mean.size} values but std has {self.std.size}.")

    def __call__(self, array: Any) -> np.ndarray:
        data = np.asarray(array, dtype=np.float32)
        channels = max(self.mean.size, self.std.size)
        if channels == 1:
            return ((data - self.mean[0]) / self.std[0]).astype(np.float32)
        axis = 0 if self.channels_first and data.ndim == 3 else -1
        if data.shape[axis] != channels:
            layout = "CHW (channels first, as after ToTensor)" if axis == 0 else "HWC (channels last)"
            raise DataError(
                f"Normalize: mean/std have {channels} values but the image of shape {data.shape} has "
                f"{data.shape[axis]} channels on its channel axis; this flavour of Normalize works on {layout} images."
            )
        shape = (-1, 1, 1) if axis == 0 else (-1,)
        return ((data - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(np.float32)


@register_transform("Normalize", flavour="pytorch")
@register_transform("Normalize", flavour="mxnet")
class ChannelsFirstNormalize(Normalize):
    """PyTorch/MXNet flavour of ``Normalize``: a 3-D image is CHW (channels first)."""

    channels_first = True


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


@register_transform("Compose")
class Compose:
    """Apply transforms in order (LPOT's ``Compose(transform_list)``; a YAML ``transform`` section is one).

    ``compose(array)`` runs the input through every transform (a :class:`SampleTransform` sees the
    label ``None``); ``compose.apply(input, label)`` runs the whole sample, as the datasets do.
    """

    def __init__(self, transform_list: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transform_list)

    def apply(self, sample_input: Any, label: Any) -> tuple[Any, Any]:
        """Run ``(input, label)`` through the transforms; only sample transforms see (and may change) the label."""
        for transform in self.transforms:
            if isinstance(transform, SampleTransform):
                sample_input, label = transform((sample_input, label))
            elif isinstance(transform, Compose):
                sample_input, label = transform.apply(sample_input, label)
            else:
                sample_input = apply_to_input(transform, sample_input)
        return sample_input, label

    def __call__(self, array: Any) -> Any:
        return self.apply(array, None)[0]

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


def build_from_registry(
    registry: Mapping[str, type], kind: str, name: str, params: Any, *, cls: type | None = None
) -> Any:
    """Instantiate ``registry[name]`` from a YAML value: a mapping of keyword arguments, None, or one scalar.

    Args:
        registry: name -> class.
        kind: what is being built, for messages ("transform", "dataset", "metric").
        name: the YAML key.
        params: the YAML value (``{size: 224}``, ``None`` or a scalar such as ``topk: 1``).
        cls: build this class instead of ``registry[name]`` (a framework's flavour of it).

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
    cls = cls or registry[name]
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


def create_transform(spec: Mapping[str, Any] | None, framework: Any = None) -> Compose:
    """Build the transforms of a YAML ``transform`` mapping, composed in the order written.

    Example:
        ``create_transform({"Resize": {"size": 8}, "Rescale": None, "Transpose": {"perm": [2, 0, 1]}})``

    Args:
        spec: ``{name: parameters, ...}``.
        framework: the YAML's ``model.framework`` (or ``pytorch``, ``tensorflow``, ``mxnet``): picks each
            transform's flavour for that framework (see :func:`transform_flavour`); default ONNX Runtime's.
    """
    flavour = transform_flavour(framework)
    return Compose(
        [
            build_from_registry(
                TRANSFORMS, "transform", name, params, cls=TRANSFORM_FLAVOURS.get((flavour, str(name)))
            )
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
