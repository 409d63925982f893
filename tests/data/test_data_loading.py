"""Datasets (dummy, numpy, image folder) and the DataLoader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lpot_ir import common
from lpot_ir.config import create_dataloader
from lpot_ir.data import (
    DataLoader,
    DummyDataset,
    ImageFolder,
    NumpyDataset,
    create_dataset,
)
from lpot_ir.errors import ConfigError, DataError


def test_dummy_dataset_shape_dtype_range_and_determinism() -> None:
    dataset = create_dataset(
        {"dummy": {"shape": [5, 3, 2, 2], "dtype": "float32", "low": 0, "high": 1, "label": True}}
    )
    assert len(dataset) == 5
    sample, label = dataset[3]
    assert sample.shape == (3, 2, 2) and sample.dtype == np.float32 and label == 0
    assert 0.0 <= sample.min() and sample.max() < 1.0
    np.testing.assert_array_equal(
        sample, DummyDataset([5, 3, 2, 2], low=0, high=1)[3][0]
    )  # same seed, same sample
    assert not np.array_equal(dataset[0][0], dataset[1][0])
    other_seed = DummyDataset([5, 3, 2, 2], low=0, high=1, seed=1)[3][0]
    assert not np.array_equal(sample, other_seed)
    multi = DummyDataset([[4, 3], [4, 2]], dtype=["float32", "int64"], low=[0, 0], high=[1, 10])
    (x, ids), no_label = multi[0]
    assert x.shape == (3,) and ids.shape == (2,) and ids.dtype == np.int64 and no_label is None
    assert all(0 <= v < 10 for v in ids)
    with pytest.raises(DataError, match="same for every input"):
        DummyDataset([[4, 3], [5, 2]])


def test_numpy_dataset_npy_and_npz(tmp_path: Path) -> None:
    inputs = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", inputs)
    np.save(tmp_path / "y.npy", np.array([0, 1, 1, 0]))
    dataset = NumpyDataset(tmp_path / "x.npy", labels=str(tmp_path / "y.npy"))
    assert len(dataset) == 4
    sample, label = dataset[2]
    np.testing.assert_array_equal(sample, inputs[2])
    assert label == 1
    np.savez(
        tmp_path / "multi.npz",
        input_ids=np.ones((4, 5), np.int64),
        mask=np.zeros((4, 5), np.int64),
        labels=np.arange(4),
    )
    multi = create_dataset({"numpy": {"path": str(tmp_path / "multi.npz")}})
    sample, label = multi[3]
    assert set(sample) == {"input_ids", "mask"} and sample["input_ids"].shape == (5,) and label == 3
    with pytest.raises(DataError, match="3 labels for 4 samples"):
        NumpyDataset(tmp_path / "x.npy", labels=np.zeros(3))
    with pytest.raises(DataError, match="does not exist"):
        NumpyDataset(tmp_path / "missing.npy")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label, name in enumerate(["cat", "dog"]):  # sorted names: cat -> 0, dog -> 1
        (root / name).mkdir()
        for i in range(3):
            pixels = np.full((6, 8, 3), 40 * label + i, dtype=np.uint8)
            pixels[0, 0] = rng.integers(0, 255, 3)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_labels_follow_sorted_folders(image_folder: Path) -> None:
    dataset = ImageFolder(image_folder)
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 6
    image, label = dataset[4]
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8 and label == 1
    assert image[3, 3].tolist() == [41, 41, 41]  # dog/1.png
    with pytest.raises(DataError, match="not a folder"):
        ImageFolder(image_folder / "nothing")


def test_dataloader_from_yaml_section_on_image_folder(image_folder: Path) -> None:
    loader = create_dataloader(
        {
            "batch_size": 4,
            "dataset": {"ImageFolder": {"root": str(image_folder)}},
            "transform": {"Resize": {"size": [4, 4]}, "Rescale": {}, "Transpose": {"perm": [2, 0, 1]}},
        }
    )
    batches = list(loader)
    assert len(loader) == 2 == len(batches)
    (x0, y0), (x1, y1) = batches
    assert x0.shape == (4, 3, 4, 4) and x0.dtype == np.float32 and x1.shape == (2, 3, 4, 4)
    assert y0.tolist() == [0, 0, 0, 1] and y1.tolist() == [1, 1]
    np.testing.assert_allclose(x1[1, :, 2, 2], 42 / 255.0, rtol=1e-6)  # dog/2.png, a flat image stays flat
    with pytest.raises(ConfigError, match=r"dataloader\.bach_size.*Did you mean 'batch_size'"):
        create_dataloader({"bach_size": 2, "dataset": {"dummy": {"shape": [2, 2]}}})


def test_last_batch_modes_and_lengths() -> None:
    dataset = [(np.array([i], np.float32), i) for i in range(5)]
    keep = DataLoader(dataset, batch_size=2)
    assert len(keep) == 3 and [y.tolist() for _, y in keep] == [[0, 1], [2, 3], [4]]
    discard = DataLoader(dataset, batch_size=2, last_batch="discard")
    assert len(discard) == 2 and [y.tolist() for _, y in discard] == [[0, 1], [2, 3]]
    rollover = DataLoader(dataset, batch_size=2, last_batch="rollover")
    assert [y.tolist() for _, y in rollover] == [[0, 1], [2, 3]]
    assert len(rollover) == 3  # the held-back sample 4 starts the next pass
    assert [y.tolist() for _, y in rollover] == [[4, 0], [1, 2], [3, 4]]
    with pytest.raises(DataError, match="last_batch"):
        DataLoader(dataset, last_batch="drop")
    with pytest.raises(DataError, match="batch_size"):
        DataLoader(dataset, batch_size=0)


def test_shuffle_is_reproducible_and_covers_every_sample() -> None:
    dataset = [(np.zeros(1), i) for i in range(10)]
    order = [int(v) for _, y in DataLoader(dataset, batch_size=3, shuffle=True, seed=5) for v in y]
    again = [int(v) for _, y in DataLoader(dataset, batch_size=3, shuffle=True, seed=5) for v in y]
    assert order == again and sorted(order) == list(range(10)) and order != list(range(10))


def test_collation_of_tuple_and_dict_inputs_and_errors() -> None:
    tuple_data = [((np.ones(2) * i, np.zeros(3)), None) for i in range(3)]
    (a, b), labels = next(iter(DataLoader(tuple_data, batch_size=3)))
    assert a.shape == (3, 2) and b.shape == (3, 3) and labels is None
    dict_data = [({"ids": np.arange(4), "mask": np.ones(4)}, np.array([1.0])) for _ in range(2)]
    inputs, labels = next(iter(DataLoader(dict_data, batch_size=2)))
    assert inputs["ids"].shape == (2, 4) and labels.shape == (2, 1)
    ragged_labels = [(np.zeros(2), (np.zeros((n, 4)), np.arange(n))) for n in (1, 2)]
    _, labels = next(iter(DataLoader(ragged_labels, batch_size=2)))
    assert isinstance(labels, list) and labels[1][0].shape == (2, 4)
    bad = [(np.zeros(2), 0), (np.zeros(3), 1)]
    with pytest.raises(
        DataError, match=r"sample 0 has shape \(2,\) but sample 1 of the batch has shape \(3,\)"
    ):
        list(DataLoader(bad, batch_size=2))


def test_common_dataloader_batches_any_getitem_len_dataset() -> None:
    class Squares:
        def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
            if index >= 7:
                raise IndexError(index)
            return np.array([index, index * index], np.float32), index % 2

        def __len__(self) -> int:
            return 7

    loader = common.DataLoader(Squares(), batch_size=4)
    batches = list(loader)
    assert len(loader) == 2 and batches[1][0].tolist() == [[4, 16], [5, 25], [6, 36]]
    assert batches[0][1].tolist() == [0, 1, 0, 1]
    as_lists = common.DataLoader(
        [[np.ones(2), 1], [np.zeros(2), 0]], batch_size=2
    )  # LPOT datasets may yield lists
    inputs, labels = next(iter(as_lists))
    assert inputs.shape == (2, 2) and labels.tolist() == [1, 0]
    iterable_only = common.DataLoader(iter([(np.zeros(1), 0)] * 3), batch_size=2)
    assert [x.shape[0] for x, _ in iterable_only] == [2, 1]
