"""Each transform, numerically."""

from __future__ import annotations

import numpy as np
import pytest

from lpot_ir.data import (
    Cast,
    CenterCrop,
    LabelShift,
    Normalize,
    RandomCrop,
    Rescale,
    Reshape,
    Resize,
    ToArray,
    Transpose,
    create_postprocess,
    create_transform,
)
from lpot_ir.errors import ConfigError, DataError


def test_resize_bilinear_matches_half_pixel_arithmetic() -> None:
    row = np.array([[0.0, 10.0]], dtype=np.float32)  # 1x2 HW image
    out = Resize([1, 4])(row)
    # source x = (i + 0.5) * 0.5 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last pixel)
    np.testing.assert_allclose(out, [[0.0, 2.5, 7.5, 10.0]])
    assert out.dtype == np.float32
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    down = Resize(2)(image)
    # 4 -> 2: source = (i + 0.5) * 2 - 0.5 = 0.5, 2.5: the mean of each 2x2 block
    np.testing.assert_allclose(down[..., 0], [[2.5, 4.5], [10.5, 12.5]])


def test_resize_integer_images_round_and_keep_dtype() -> None:
    image = np.array([[[0], [255]]], dtype=np.uint8)  # 1x2x1
    out = Resize([1, 4])(image)
    assert out.dtype == np.uint8 and out.shape == (1, 4, 1)
    np.testing.assert_array_equal(out[0, :, 0], [0, 64, 191, 255])  # 63.75 -> 64, 191.25 -> 191
    nearest = Resize([2, 4], interpolation="nearest")(np.array([[1, 2], [3, 4]], dtype=np.int64))
    np.testing.assert_array_equal(nearest, [[1, 1, 2, 2], [3, 3, 4, 4]])
    with pytest.raises(ConfigError, match="bilinear"):
        Resize(4, interpolation="lanczos")
    with pytest.raises(DataError, match="HWC"):
        Resize(4)(np.zeros((1, 3, 4, 4)))


def test_center_crop_and_random_crop() -> None:
    image = np.arange(5 * 6).reshape(5, 6)
    np.testing.assert_array_equal(CenterCrop([3, 2])(image), image[1:4, 2:4])
    np.testing.assert_array_equal(CenterCrop(2)(image), image[1:3, 2:4])
    with pytest.raises(DataError, match="larger than the image"):
        CenterCrop(7)(image)
    first, second = RandomCrop(3, seed=7), RandomCrop(3, seed=7)
    crops = [first(image) for _ in range(5)]
    assert all(np.array_equal(a, second(image)) for a in crops)  # the same seed gives the same crops
    positions = set()
    for crop in crops:
        top, left = divmod(int(crop[0, 0]), 6)
        np.testing.assert_array_equal(crop, image[top : top + 3, left : left + 3])
        positions.add((top, left))
    assert len(positions) > 1


def test_normalize_rescale_cast_transpose_toarray() -> None:
    image = np.array([[[0, 128, 255], [255, 0, 64]]], dtype=np.uint8)  # 1x2x3 HWC
    scaled = Rescale()(image)
    np.testing.assert_allclose(scaled, image / 255.0, rtol=1e-6)
    assert scaled.dtype == np.float32
    normalized = Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 1.0])(scaled)
    np.testing.assert_allclose(normalized, (image / 255.0 - 0.5) / np.array([0.5, 0.25, 1.0]), atol=1e-6)
    with pytest.raises(DataError, match="channels"):
        Normalize(mean=[0.5, 0.5], std=[1.0, 1.0])(scaled)
    chw = Transpose([2, 0, 1])(image)
    assert chw.shape == (3, 1, 2) and chw[2, 0, 1] == image[0, 1, 2]
    with pytest.raises(DataError, match="perm"):
        Transpose([1, 0])(image)
    cast = Cast("int64")(np.array([1.7, -2.2]))
    assert cast.dtype == np.int64 and cast.tolist() == [1, -2]
    with pytest.raises(ConfigError, match="dtype"):
        Cast("float33")
    from PIL import Image

    pil = Image.fromarray(image)
    np.testing.assert_array_equal(ToArray()(pil), image)


def test_compose_from_yaml_form_in_order() -> None:
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    transform = create_transform(
        {
            "CenterCrop": {"size": 2},
            "Rescale": None,
            "Normalize": {"mean": [0.1, 0.2, 0.3]},
            "Transpose": {"perm": [2, 0, 1]},
        }
    )
    out = transform(image)
    expected = np.transpose(image[1:3, 1:3] / 255.0 - np.array([0.1, 0.2, 0.3]), (2, 0, 1))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert len(create_transform(None)) == 0
    with pytest.raises(ConfigError, match="Did you mean 'CenterCrop'"):
        create_transform({"CentreCrop": {"size": 2}})
    with pytest.raises(ConfigError, match="takes no parameters"):
        create_transform({"Rescale": 3})


def test_postprocess() -> None:
    preds, labels = create_postprocess({"LabelShift": {"label_shift": 1}, "Reshape": {"shape": [-1, 4]}})(
        [np.zeros((2, 1, 4))], np.array([1, 3])
    )
    assert preds.shape == (2, 4) and labels.tolist() == [0, 2]
    assert LabelShift(2)(None, [5])[1].tolist() == [3]
    with pytest.raises(DataError, match="cannot become"):
        Reshape([3, 3])(np.zeros(4), None)
