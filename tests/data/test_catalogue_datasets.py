"""LPOT's file datasets on files in their standard formats: written here (IDX, npz, CIFAR pickles, a COCO
annotation file with real photos), or Debian's dataset-fashion-mnist package when it is installed."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpot_ir.config import create_dataloader
from lpot_ir.data import DataLoader, create_dataset
from lpot_ir.data.vision_datasets import read_idx
from lpot_ir.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images * 16).clip(0, 255).astype(np.uint8), data.target.astype(np.int64)  # 8x8 real digits


def test_mnist_npz_and_idx_files(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    (tmp_path / "MNIST").mkdir()
    np.savez(tmp_path / "MNIST" / "mnist.npz", x_train=images[:100], y_train=labels[:100], x_test=images[100:130], y_test=labels[100:130])
    test = create_dataset({"MNIST": {"root": str(tmp_path)}})
    assert len(test) == 30
    image, label = test[3]
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8 and label == labels[103]
    np.testing.assert_array_equal(image[..., 0], images[103])
    assert len(create_dataset({"MNIST": {"root": str(tmp_path), "train": True}})) == 100

    idx_root = tmp_path / "idx"
    idx_root.mkdir()
    _write_idx(idx_root / "t10k-images-idx3-ubyte.gz", images[:20])
    _write_idx(idx_root / "t10k-labels-idx1-ubyte", labels[:20])  # gzipped or not
    np.testing.assert_array_equal(read_idx(idx_root / "t10k-images-idx3-ubyte.gz"), images[:20])
    from_idx = create_dataset({"MNIST": {"root": str(idx_root)}})
    assert len(from_idx) == 20 and from_idx[7][1] == labels[7]

    with pytest.raises(DataError, match=r"does not download.*mnist\.npz.*MNIST") as error:
        create_dataset({"MNIST": {"root": str(tmp_path / "empty"), "download": True}})
    assert str(tmp_path / "empty" / "MNIST") in str(error.value)


def test_fashion_mnist_idx_files(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    folder = tmp_path / "FashionMNIST"
    folder.mkdir()
    for prefix, sl in (("train", slice(0, 50)), ("t10k", slice(50, 60))):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[sl])
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[sl])
    train = create_dataset({"FashionMNIST": {"root": str(tmp_path), "train": True}})
    assert len(train) == 50 and train[0][0].shape == (8, 8, 1)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*dataset-fashion-mnist"):
        create_dataset({"FashionMNIST": {"root": str(tmp_path / "nowhere")}})
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x99\x03junk"))
    with pytest.raises(DataError, match="not an IDX file"):
        create_dataset({"FashionMNIST": {"root": str(tmp_path)}})


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package() -> None:
    loader = create_dataloader(
        {"dataset": {"FashionMNIST": {"root": str(DEBIAN_FASHION_MNIST)}}, "transform": {"Rescale": {}}, "batch_size": 500}
    )
    assert len(loader.dataset) == 10000
    images, labels = next(iter(loader))
    assert images.shape == (500, 28, 28, 1) and images.dtype == np.float32 and 0.0 <= images.min() <= images.max() <= 1.0
    assert set(np.unique(labels).tolist()) == set(range(10))  # the ten clothing classes
    assert np.bincount(create_dataset({"FashionMNIST": {"root": str(DEBIAN_FASHION_MNIST)}}).labels).tolist() == [1000] * 10


def test_cifar10_and_cifar100_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = rng.integers(0, 256, size=(6, 3 * 32 * 32), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": data, "labels": [0, 1, 2, 3, 4, 5]}, handle)
    cifar = create_dataset({"CIFAR10": {"root": str(tmp_path)}})
    image, label = cifar[4]
    assert image.shape == (32, 32, 3) and label == 4
    np.testing.assert_array_equal(image[..., 1], data[4, 1024:2048].reshape(32, 32))  # planes R, G, B -> HWC
    with pytest.raises(DataError, match=r"data_batch_1.*cifar-10-python\.tar\.gz"):
        create_dataset({"CIFAR10": {"root": str(tmp_path), "train": True}})
    with open(tmp_path / "test", "wb") as handle:  # CIFAR-100 files directly in root also work
        pickle.dump({"data": data[:2], "fine_labels": [42, 99], "coarse_labels": [1, 2]}, handle)
    assert [label for _, label in create_dataset({"CIFAR100": {"root": str(tmp_path)}})] == [42, 99]


def _photos(count: int) -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return [np.ascontiguousarray(img[::8, ::8]) for img in (china, flower)][:count]


def test_imagenet_raw_and_style_transfer(tmp_path: Path) -> None:
    photos = _photos(2)
    for i, photo in enumerate(photos):
        Image.fromarray(photo).save(tmp_path / f"img{i}.jpg", quality=95)
    (tmp_path / "val_map.txt").write_text("img0.jpg 3\nimg1.jpg 7\nmissing.jpg 1\n")
    raw = create_dataset({"ImagenetRaw": {"data_path": str(tmp_path)}})
    assert len(raw) == 2 and raw[1][1] == 7 and raw[1][0].shape == photos[1].shape
    (tmp_path / "bad.txt").write_text("img0.jpg three\n")
    with pytest.raises(DataError, match="line 1"):
        create_dataset({"ImagenetRaw": {"data_path": str(tmp_path), "image_list": str(tmp_path / "bad.txt")}})

    styles = create_dataset(
        {"style_transfer": {"content_folder": str(tmp_path), "style_folder": str(tmp_path), "crop_ratio": 0.0, "resize_shape": [24, 16]}}
    )
    assert len(styles) == 4  # every (content, style) pair
    (content, style), label = styles[1]
    assert content.shape == style.shape == (16, 24, 3) and label == 0 and content.max() <= 1.0
    expected = np.asarray(Image.open(tmp_path / "img1.jpg").resize((24, 16), Image.Resampling.BILINEAR)) / 255.0
    np.testing.assert_allclose(style, expected, atol=1e-6)


def test_dummy_v2_is_finite_and_reproducible() -> None:
    dataset = create_dataset({"dummy_v2": {"input_shape": [[4, 4, 3], [2]], "label_shape": [1], "low": 0.0, "high": 1.0, "sample_size": 5}})
    assert len(dataset) == 5
    (a, b), label = dataset[2]
    assert a.shape == (4, 4, 3) and b.shape == (2,) and label.shape == (1,)
    assert np.array_equal(dataset[2][0][0], a) and 0.0 <= a.min() and a.max() < 1.0
    batches = list(DataLoader(dataset, batch_size=2))
    assert len(batches) == 3 and batches[0][0][0].shape == (2, 4, 4, 3)


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    photos = _photos(2)
    (tmp_path / "val2017").mkdir()
    (tmp_path / "npy").mkdir()
    images, annotations = [], []
    for i, photo in enumerate(photos):
        name = f"{i:012d}.jpg"
        Image.fromarray(photo).save(tmp_path / "val2017" / name)
        np.save(tmp_path / "npy" / f"{name}.npy", photo.astype(np.float32) / 255.0)
        images.append({"id": i + 1, "file_name": name, "height": photo.shape[0], "width": photo.shape[1]})
    annotations.append({"id": 1, "image_id": 1, "category_id": 18, "bbox": [8.0, 4.0, 20.0, 10.0], "area": 200.0, "iscrowd": 0})
    annotations.append({"id": 2, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 80.0, 53.0], "area": 4240.0, "iscrowd": 0})
    images.append({"id": 3, "file_name": "no-boxes.jpg", "height": 10, "width": 10})
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]})
    )
    return tmp_path


def test_coco_raw_and_npy(coco_root: Path) -> None:
    raw = create_dataset({"COCORaw": {"root": str(coco_root)}})
    assert len(raw) == 1  # images without boxes (or without a file) are left out, as in LPOT
    image, (boxes, names, classes, image_id) = raw[0]
    assert image.shape == (54, 80, 3) and image_id == "000000000000.jpg"
    np.testing.assert_allclose(boxes[0], [4 / 54, 8 / 80, 14 / 54, 28 / 80], rtol=1e-6)  # (ymin, xmin, ymax, xmax) / size
    assert names.tolist() == ["dog", "person"] and classes.tolist() == [18, 1]
    npy = create_dataset({"COCONpy": {"root": str(coco_root), "npy_dir": "npy"}})
    array, label = npy[0]
    assert array.dtype == np.float32 and array.shape == (54, 80, 3)
    np.testing.assert_array_equal(label[0], boxes)
    loader = create_dataloader({"dataset": {"COCORaw": {"root": str(coco_root)}}, "transform": {"Resize": {"size": 32}}, "batch_size": 1})
    batch_images, batch_labels = next(iter(loader))
    assert batch_images.shape == (1, 32, 32, 3) and isinstance(batch_labels, list) and batch_labels[0][2].tolist() == [18, 1]
    with pytest.raises(DataError, match="annotation file"):
        create_dataset({"COCORaw": {"root": str(coco_root), "anno_dir": "nope.json"}})
