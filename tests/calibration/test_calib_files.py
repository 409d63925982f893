"""load_calibration_files: .npy / .npz / folders checked against the model's inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lpot_ir.calibration import load_calibration_files
from lpot_ir.errors import DataError


def _model(inputs: list[tuple[str, int, list]]) -> onnx.ModelProto:
    """Identity per input (the graph only matters for its input signature)."""
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name, _, _ in inputs]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, t, shape) for name, t, shape in inputs],
        [helper.make_tensor_value_info(f"{name}_out", t, shape) for name, t, shape in inputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


IMAGE = _model([("image", TensorProto.FLOAT, ["N", 3, 4, 4])])
FIXED = _model([("image", TensorProto.FLOAT, [2, 3, 4, 4])])
TWO = _model([("ids", TensorProto.INT64, ["N", 5]), ("mask", TensorProto.FLOAT, ["N", 5])])


def _images(n: int, dtype=np.float32) -> np.ndarray:
    return np.arange(n * 48, dtype=np.float64).reshape(n, 3, 4, 4).astype(dtype)


def test_npy_for_a_one_input_model(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _images(5))
    loader = load_calibration_files(tmp_path / "x.npy", IMAGE)
    batches = list(loader)
    assert len(loader) == len(batches) == 5 and loader.num_samples == 5
    assert batches[2]["image"].shape == (1, 3, 4, 4) and batches[2]["image"].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), _images(5))


def test_single_input_takes_the_single_npz_array_whatever_its_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", whatever=_images(3))
    assert [b["image"].shape for b in load_calibration_files(tmp_path / "d.npz", IMAGE)] == [(1, 3, 4, 4)] * 3


def test_npz_by_input_name_ignores_extra_keys(tmp_path: Path, caplog) -> None:
    ids = np.arange(20, dtype=np.int32).reshape(4, 5)  # int32 -> int64 is a safe widening cast
    mask = np.ones((4, 5), np.float64)  # float64 -> float32 is cast
    np.savez(tmp_path / "d.npz", mask=mask, ids=ids, labels=np.zeros(4))
    with caplog.at_level(logging.INFO):
        loader = load_calibration_files(tmp_path / "d.npz", TWO, batch_size=3)
    batches = list(loader)
    assert [b["ids"].shape[0] for b in batches] == [3, 1]
    assert batches[0]["ids"].dtype == np.int64 and batches[0]["mask"].dtype == np.float32
    np.testing.assert_array_equal(batches[1]["ids"], ids[3:])
    assert "labels" in caplog.text


def test_folder_is_sorted_by_name_and_concatenated(tmp_path: Path) -> None:
    data = _images(7)
    np.save(tmp_path / "b.npy", data[3:])
    np.savez(tmp_path / "a.npz", image=data[:3])
    (tmp_path / "notes.txt").write_text("ignored")
    loader = load_calibration_files(tmp_path, FIXED)  # static batch axis 2: batches of 2, last odd sample dropped
    batches = list(loader)
    assert loader.batch_size == 2 and len(loader) == len(batches) == 3
    assert all(b["image"].shape == (2, 3, 4, 4) for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), data[:6])


def test_wrong_rank_names_input_and_both_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((5, 3, 16), np.float32))
    with pytest.raises(DataError) as err:
        load_calibration_files(tmp_path / "x.npy", IMAGE)
    message = str(err.value)
    assert "'image'" in message and "(5, 3, 16)" in message and "(N, 3, 4, 4)" in message and "rank" in message


def test_wrong_static_dim_names_input_axis_and_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", image=np.zeros((4, 3, 5, 4), np.float32))
    with pytest.raises(DataError) as err:
        load_calibration_files(tmp_path / "d.npz", IMAGE)
    message = str(err.value)
    assert "'image'" in message and "(4, 3, 5, 4)" in message and "(N, 3, 4, 4)" in message
    assert "axis 2 must be 4, got 5" in message


def test_missing_npz_key_names_the_input_and_the_keys_found(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", ids=np.zeros((2, 5), np.int64), other=np.zeros((2, 5), np.float32))
    with pytest.raises(DataError) as err:
        load_calibration_files(tmp_path / "d.npz", TWO)
    assert "'mask'" in str(err.value) and "'ids', 'other'" in str(err.value)


def test_float_data_for_an_integer_input_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", ids=np.zeros((2, 5), np.float32), mask=np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match=r"dtype float32 for model input 'ids' \(shape \(N, 5\), dtype int64\)"):
        load_calibration_files(tmp_path / "d.npz", TWO)


def test_integer_images_for_a_float_input_are_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _images(2, np.uint8))
    with pytest.raises(DataError, match=r"dtype uint8 for model input 'image' \(shape \(N, 3, 4, 4\), dtype float32\)"):
        load_calibration_files(tmp_path / "x.npy", IMAGE)


def test_npy_for_a_two_input_model_and_mismatched_sample_counts(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match=r"\.npy file \(one array\), but the model has 2 inputs \(ids, mask\)"):
        load_calibration_files(tmp_path / "x.npy", TWO)
    np.savez(tmp_path / "d.npz", ids=np.zeros((2, 5), np.int64), mask=np.zeros((3, 5), np.float32))
    with pytest.raises(DataError, match="2 sample"):
        load_calibration_files(tmp_path / "d.npz", TWO)


def test_missing_path_empty_folder_and_not_numpy(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_calibration_files(tmp_path / "nope.npy", IMAGE)
    with pytest.raises(DataError, match="holds no .npy or .npz"):
        load_calibration_files(tmp_path, IMAGE)
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="not a readable numpy file"):
        load_calibration_files(tmp_path / "bad.npy", IMAGE)


def test_input_specs_as_triples(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float64))
    loader = load_calibration_files(tmp_path / "x.npy", [("inp", (None, 2), "float32")])
    assert [b["inp"].dtype for b in loader] == [np.float32] * 3
