"""LPOT's transforms beyond the basic ones, numerically, on a real photo (scikit-learn's china.jpg)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lpot_ir.data import Compose, create_transform, transform_flavour
from lpot_ir.data.image_transforms import (
    AlignImageChannel,
    ColorJitter,
    CropResize,
    CropToBoundingBox,
    DecodeImage,
    EncodeJpeg,
    Pad,
    QuantizedInput,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomVerticalFlip,
    ResizeWithRatio,
    ToNDArray,
    ToPILImage,
    TorchCenterCrop,
    TorchResize,
    ToTensor,
)
from lpot_ir.data.imagenet_transforms import (
    BilinearImagenet,
    ResizeCropImagenet,
    TensorflowResizeCropImagenet,
)
from lpot_ir.data.transforms import Resize, resize_image
from lpot_ir.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg")[::4, ::4]  # 107 x 160 x 3 uint8, a real photo


def test_flavours_follow_the_framework(photo: np.ndarray) -> None:
    assert [transform_flavour(f) for f in ("pytorch", "tensorflow", "mxnet", "onnxrt_qlinearops", None)] == [
        "pytorch", "tensorflow", "mxnet", "onnxrt", "onnxrt",
    ]
    spec = {"Resize": {"size": 64}, "CenterCrop": {"size": 56}, "ToTensor": {}, "Normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    torch_style = create_transform(spec, framework="pytorch")
    assert isinstance(torch_style.transforms[0], TorchResize) and isinstance(torch_style.transforms[1], TorchCenterCrop)
    out = torch_style(photo)
    # torchvision's Resize(64): the shorter side (107) becomes 64, the longer int(64 * 160 / 107) = 95, with Pillow
    resized = np.asarray(Image.fromarray(photo).resize((95, 64), Image.Resampling.BILINEAR))
    top, left = int(round((64 - 56) / 2)), int(round((95 - 56) / 2))
    expected = (resized[top : top + 56, left : left + 56].transpose(2, 0, 1) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(out, expected, atol=1e-5)
    onnx_style = create_transform({"Resize": {"size": 64}, "Normalize": {"mean": [0.5] * 3}})
    assert onnx_style(photo).shape == (64, 64, 3)  # square resize, channels-last Normalize
    with pytest.raises(DataError, match="CHW"):
        create_transform({"Normalize": {"mean": [0.5] * 3}}, framework="pytorch")(photo)  # HWC given to the CHW flavour
    padded = TorchCenterCrop(200)(photo)  # larger than the image: zero padding, as torchvision
    assert padded.shape == (200, 200, 3) and padded[0, 0].tolist() == [0, 0, 0]


def test_bicubic_resize_is_pillows(photo: np.ndarray) -> None:
    out = Resize([50, 70], interpolation="bicubic")(photo)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(photo).resize((70, 50), Image.Resampling.BICUBIC)))
    as_float = Resize([50, 70], interpolation="bicubic")(photo.astype(np.float32))
    # Pillow's 8-bit path rounds and clips between its horizontal and vertical passes (2 levels here);
    # the float path does not: 3 levels bound the difference on any CPU (the arithmetic is integer / IEEE)
    assert as_float.dtype == np.float32 and np.abs(np.clip(as_float, 0, 255) - out).max() <= 3.0


def test_crops_and_flips(photo: np.ndarray) -> None:
    np.testing.assert_array_equal(CropToBoundingBox(10, 20, 30, 40)(photo), photo[10:40, 20:60])
    np.testing.assert_array_equal(CropResize(20, 10, 40, 30, [30, 40])(photo), photo[10:40, 20:60])  # same size: identity
    with pytest.raises(DataError, match="larger than the image"):
        CropToBoundingBox(100, 0, 30, 30)(photo)
    flips = [RandomHorizontalFlip(seed=3)(photo) for _ in range(1)]
    h_flip, v_flip = RandomHorizontalFlip(seed=5), RandomVerticalFlip(seed=5)
    seen_h = {np.array_equal(h_flip(photo), photo[:, ::-1]) for _ in range(16)}
    seen_v = {np.array_equal(v_flip(photo), photo[::-1]) for _ in range(16)}
    assert seen_h == {True, False} and seen_v == {True, False} and flips[0].shape == photo.shape
    crop = RandomResizedCrop(32, scale=(0.5, 0.5), ratio=(1.0, 1.0), seed=1)
    top, left, h, w = RandomResizedCrop(32, scale=(0.5, 0.5), ratio=(1.0, 1.0), seed=1).window(*photo.shape[:2])
    assert h == w == int(round(np.sqrt(0.5 * 107 * 160)))  # half the area, square
    np.testing.assert_array_equal(crop(photo), resize_image(photo[top : top + h, left : left + w], (32, 32)))
    fallback = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(3.0, 3.0))  # ratio impossible within the image
    assert fallback.window(107, 160) == (27, 0, 53, 160)  # centre crop at the nearest allowed ratio (160 / 3)


def test_pad_modes_match_numpy() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(Pad(1)(image), np.pad(image, 1))
    np.testing.assert_array_equal(Pad([1, 2], padding_mode="edge")(image), np.pad(image, [(2, 2), (1, 1)], mode="edge"))
    np.testing.assert_array_equal(Pad([1, 0, 2, 1], padding_mode="reflect")(image), np.pad(image, [(0, 1), (1, 2)], mode="reflect"))
    rgb = Pad(1, fill=[1, 2, 3])(np.zeros((2, 2, 3), np.uint8))
    assert rgb[0, 0].tolist() == [1, 2, 3] and rgb[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="padding_mode"):
        Pad(1, padding_mode="wrap")


def test_color_jitter_factors(photo: np.ndarray) -> None:
    half = ColorJitter(brightness=[0.5, 0.5])(photo)  # Pillow's brightness blends with black: x * 0.5
    assert np.abs(half.astype(int) - photo.astype(int) * 0.5).max() <= 1.0
    assert np.array_equal(ColorJitter()(photo), photo)
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    cyan = ColorJitter(hue=[0.5, 0.5])(red)  # half a turn of hue: red becomes cyan
    assert cyan[0, 0, 0] < 5 and cyan[0, 0, 1] > 250 and cyan[0, 0, 2] > 250
    gray = ColorJitter(saturation=[0.0, 0.0])(photo)
    expected = np.asarray(ImageEnhance.Color(Image.fromarray(photo)).enhance(0.0))
    np.testing.assert_array_equal(gray, expected)
    assert np.ptp(gray.astype(int), axis=2).max() <= 1  # no colour left
    with pytest.raises(DataError, match="uint8"):
        ColorJitter(brightness=0.2)(photo / 255.0)


def test_channels_dtype_and_tensor_conversions(photo: np.ndarray) -> None:
    gray = AlignImageChannel(1)(photo)
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(photo).convert("L")))
    assert AlignImageChannel(3)(gray).shape == photo.shape
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(AlignImageChannel(3)(rgba), photo)
    chw = ToTensor()(photo)
    assert chw.shape == (3, 107, 160) and chw.dtype == np.float32
    np.testing.assert_allclose(chw[:, 5, 7], photo[5, 7] / 255.0, rtol=1e-6)
    back = ToPILImage()(chw)  # CHW float -> HWC uint8 PIL image (x 255, truncated as torchvision)
    assert isinstance(back, Image.Image) and back.size == (160, 107)
    assert np.abs(np.asarray(back).astype(int) - photo.astype(int)).max() <= 1
    assert ToNDArray()(photo) is not None and np.array_equal(ToNDArray()(photo), photo)
    q = QuantizedInput("uint8", scale=2.0)(np.array([-70.0, -0.3, 0.26, 70.0]))
    assert q.dtype == np.uint8 and q.tolist() == [0, 127, 129, 255]  # round(x * 2) + 128, saturated
    assert QuantizedInput("int8")(photo) is photo  # no scale yet: unchanged


def test_jpeg_round_trip(photo: np.ndarray) -> None:
    encoded = EncodeJpeg(quality=95)(photo)
    assert isinstance(encoded, bytes) and encoded[:2] == b"\xff\xd8"
    decoded = DecodeImage()(encoded)
    reference = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    np.testing.assert_array_equal(decoded, reference)
    # quality 95 with 4:2:0 chroma subsampling: ~4 levels mean error here (libjpeg versions differ a little);
    # an unrelated image is ~70 levels away
    assert np.abs(decoded.astype(int) - photo.astype(int)).mean() < 10
    assert DecodeImage(channels=1)(encoded).shape == (107, 160, 1)
    assert create_transform({"EncodeJped": {}}).transforms[0].quality == 95  # LPOT's documented spelling
    with pytest.raises(DataError, match="encoded image bytes"):
        DecodeImage()(photo)


def test_resize_with_ratio_moves_boxes() -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    image[10:20, 20:40] = 255  # a white box
    label = (np.array([[10 / 40, 20 / 80, 20 / 40, 40 / 80]], np.float32), np.array(["box"]), np.array([1]), "img")
    out, moved = ResizeWithRatio(min_dim=60, max_dim=100, padding=True)((image, label))
    # shorter side 40 -> 60 asks scale 1.5, the longer 80 * 1.5 = 120 > 100 so scale = 100 / 80 = 1.25: 50 x 100
    assert out.shape == (100, 100, 3)
    top = (100 - 50) // 2
    ymin, xmin, ymax, xmax = moved[0][0] * 100
    assert (ymin, xmin, ymax, xmax) == pytest.approx((top + 12.5, 25.0, top + 25.0, 50.0))
    assert out[int(ymin) + 2, int(xmin) + 2].tolist() == [255, 255, 255] and out[5, 5].tolist() == [0, 0, 0]
    plain, same = Compose([ResizeWithRatio(min_dim=60, max_dim=0)]).apply(image, label)
    assert plain.shape == (60, 120, 3) and same is label


def test_imagenet_recipes(photo: np.ndarray) -> None:
    onnx_flavour = ResizeCropImagenet(64, 64, resize_side=72, mean_value=[0.485, 0.456, 0.406])
    out = onnx_flavour(photo)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    resized = resize_image(photo.astype(np.float32), (72, int(round(160 * 72 / 107))))
    top, left = (72 - 64) // 2, (resized.shape[1] - 64) // 2
    crop = resized[top : top + 64, left : left + 64] / 255.0
    expected = ((crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    tf_out = TensorflowResizeCropImagenet(64, 64, resize_side=72, mean_value=[123.68, 116.78, 103.94])(photo)
    np.testing.assert_allclose(tf_out, resized[top : top + 64, left : left + 64] - [123.68, 116.78, 103.94], atol=1e-3)
    assert isinstance(create_transform({"ResizeCropImagenet": {"height": 8, "width": 8}}, "tensorflow").transforms[0], TensorflowResizeCropImagenet)
    inception = BilinearImagenet(32, 32)(photo)
    off_h, off_w = int((107 - 107 * 0.875) / 2), int((160 - 160 * 0.875) / 2)
    centre = photo[off_h : 107 - off_h, off_w : 160 - off_w].astype(np.float32) / 255.0
    np.testing.assert_allclose(inception, (resize_image(centre, (32, 32)) - 0.5) * 2.0, atol=1e-5)
    assert -1.0 <= inception.min() and inception.max() <= 1.0
