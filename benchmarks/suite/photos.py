"""Real photographs that installed Python packages ship, and reproducible crops of them.

No photo is downloaded: scikit-image bundles some of its ``skimage.data`` images in the wheel,
scikit-learn ships two sample photos (``load_sample_images``) and matplotlib one (Grace Hopper).
Only camera photographs are used (no drawings, logos, text scans or microscopy).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Photo", "PHOTO_SOURCES", "photos", "random_crops", "center_crop"]


@dataclass(frozen=True)
class Photo:
    """One photo: a short name, where it came from (package and file) and its RGB pixels."""

    name: str
    source: str
    pixels: np.ndarray  # (H, W, 3) uint8


PHOTO_SOURCES: tuple[tuple[str, str, str], ...] = (
    # (name, package, file inside the package)
    ("astronaut", "scikit-image", "skimage/data/astronaut.png"),
    ("chelsea", "scikit-image", "skimage/data/chelsea.png"),
    ("coffee", "scikit-image", "skimage/data/coffee.png"),
    ("rocket", "scikit-image", "skimage/data/rocket.jpg"),
    ("motorcycle_left", "scikit-image", "skimage/data/motorcycle_left.png"),
    ("motorcycle_right", "scikit-image", "skimage/data/motorcycle_right.png"),
    ("camera", "scikit-image", "skimage/data/camera.png"),
    ("coins", "scikit-image", "skimage/data/coins.png"),
    ("moon", "scikit-image", "skimage/data/moon.png"),
    ("brick", "scikit-image", "skimage/data/brick.png"),
    ("grass", "scikit-image", "skimage/data/grass.png"),
    ("gravel", "scikit-image", "skimage/data/gravel.png"),
    ("clock_motion", "scikit-image", "skimage/data/clock_motion.png"),
    ("hubble_deep_field", "scikit-image", "skimage/data/hubble_deep_field.jpg"),
    ("china", "scikit-learn", "sklearn/datasets/images/china.jpg"),
    ("flower", "scikit-learn", "sklearn/datasets/images/flower.jpg"),
    ("grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
)
"""The photos, in a fixed order."""


def _site_file(relative: str) -> Path:
    import importlib.util

    top = relative.split("/")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{top} is not installed (it ships {relative})")
    return Path(spec.origin).parent.parent / relative


def photos() -> list[Photo]:
    """Every photo of :data:`PHOTO_SOURCES` that is installed, as RGB uint8 (grey photos repeated to 3 channels)."""
    from PIL import Image

    found = []
    for name, package, relative in PHOTO_SOURCES:
        path = _site_file(relative)
        if not path.exists():
            continue
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
        found.append(Photo(name, f"{package}: {relative}", pixels))
    return found


def center_crop(pixels: np.ndarray, size: int, padding: int = 32) -> np.ndarray:
    """The standard ImageNet evaluation crop: the central ``size / (size + padding)`` of the short side,
    resized (bicubic) to ``size`` x ``size``."""
    from PIL import Image

    h, w = pixels.shape[:2]
    side = int(round(min(h, w) * size / (size + padding)))
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(pixels[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BICUBIC), dtype=np.uint8)


def random_crops(
    pixels: np.ndarray, count: int, size: int | tuple[int, int], rng: np.random.Generator,
    *, scale: tuple[float, float] = (0.25, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Iterator[np.ndarray]:
    """``count`` random-resized crops (area ``scale`` of the photo, aspect ``ratio``), each flipped
    left-right with probability 1/2, resized (bicubic) to ``size`` (an int: square; or (height, width))."""
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    h, w = pixels.shape[:2]
    for _ in range(count):
        for _attempt in range(20):
            area = h * w * rng.uniform(*scale)
            aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
            cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw = ch = min(h, w)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = pixels[top : top + ch, left : left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image = Image.fromarray(np.ascontiguousarray(crop)).resize((width, height), Image.BICUBIC)
        yield np.asarray(image, dtype=np.uint8)
