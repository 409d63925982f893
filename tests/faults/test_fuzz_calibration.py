"""Fuzzing calibration files (``--calib``: .npy, .npz, folders): random shapes and dtypes (complex, text,
pickled objects, datetimes included), wrong and extra names, truncated files, flipped bytes, files that are
not numpy at all. Every outcome is batches that ONNX Runtime runs, or one LpotError paragraph; through
``lpot quantize`` it is a valid INT8 model, or exit 2 with one error line and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.calibration import load_calibration_files
from lpot_ir.cli import main
from lpot_ir.errors import LpotError
from tests.faults.fuzzing import assert_one_paragraph, fuzz_settings, run_cli_expecting_error


def _mlp() -> onnx.ModelProto:
    """x [n, 8] float32 -> MatMul -> Relu -> y [n, 4]."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _recurrent() -> onnx.ModelProto:
    """Like Silero VAD: input [batch, 6], state [2, batch, 4] (batch on axis 1), a scalar int64 sr."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["h"], name="fc"),
        helper.make_node("Add", ["state", "h"], ["s1"], name="mix"),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["s1", "srf"], ["new_state"], name="scale"),
        helper.make_node("ReduceMean", ["new_state"], ["out"], axes=[0, 2], keepdims=0, name="mean"),
    ]
    graph = helper.make_graph(
        nodes, "recurrent",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 6]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, "batch", 4])], [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fixed_batch() -> onnx.ModelProto:
    """x [2, 3] fixed batch of two (a model exported with a static batch)."""
    w = numpy_helper.from_array(np.random.default_rng(2).standard_normal((3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODELS = {"mlp": _mlp(), "recurrent": _recurrent(), "fixed-batch": _fixed_batch()}
SESSIONS = {k: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for k, m in MODELS.items()}
GOOD = {  # one real feed of each model, the seed the mutations start from
    "mlp": {"x": np.ones((5, 8), np.float32)},
    "recurrent": {"input": np.ones((3, 6), np.float32), "state": np.zeros((2, 3, 4), np.float32), "sr": np.array(16000)},
    "fixed-batch": {"x": np.ones((4, 3), np.float32)},
}
DTYPES = ["float32", "float64", "float16", "int64", "int32", "uint8", "bool", "complex64", "<U3", "object", "datetime64[s]"]


@st.composite
def arrays(draw: Any, like: np.ndarray | None) -> np.ndarray:
    """Mostly near the real array (another dtype, a dimension off, a stacked axis), sometimes anything."""
    how = draw(st.sampled_from(["same", "dtype", "shape", "stack", "random", "random"] if like is not None else ["random"]))
    if how == "same":
        return like
    if how == "dtype":
        return _as_dtype(like, draw(st.sampled_from(DTYPES)))
    if how == "stack":
        return np.stack([like] * draw(st.integers(1, 3)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    if how == "shape" and like is not None and like.ndim:
        shape = list(like.shape)
        shape[draw(st.integers(0, like.ndim - 1))] += draw(st.sampled_from([-1, 1, 2]))
        shape = tuple(max(0, d) for d in shape)
    return _as_dtype(np.random.default_rng(draw(st.integers(0, 9))).standard_normal(shape), draw(st.sampled_from(DTYPES)))


def _as_dtype(array: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "object":
        return np.array(array.tolist() if array.ndim else [array.item()], dtype=object)
    if dtype == "<U3":
        return array.astype("<U3")
    if dtype.startswith("datetime64"):
        return array.astype(np.int64).astype(dtype)
    return array.astype(dtype)


def _save(path: Path, data: dict[str, np.ndarray], kind: str) -> None:
    if kind == "npy":
        np.save(path.with_suffix(".npy"), next(iter(data.values())), allow_pickle=True)
    else:
        np.savez(path.with_suffix(".npz"), **data)


def _corrupt(path: Path, how: str, where: float, byte: int) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: int(len(data) * where)]))
    elif how == "flip" and data:
        data[int((len(data) - 1) * where)] ^= byte or 1
        path.write_bytes(bytes(data))
    elif how == "garbage":
        path.write_bytes(bytes(np.random.default_rng(byte).integers(0, 256, int(200 * where) + 1, dtype=np.uint8)))


@st.composite
def calibration_data(draw: Any, folder: Path) -> tuple[str, Path]:
    """A model name and a --calib path (a file or a folder) with fuzzed content."""
    model = draw(st.sampled_from(sorted(MODELS)))
    good = GOOD[model]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = []
    for index in range(draw(st.integers(1, 3))):
        data = {}
        for name, array in good.items():
            if draw(st.integers(0, 9)) == 0:
                continue  # a missing input
            data[draw(st.sampled_from([name, name, name, "Input", "x0"]))] = draw(arrays(array))
        if draw(st.booleans()) and draw(st.booleans()):
            data["extra"] = draw(arrays(None))
        if not data:
            data["x"] = draw(arrays(None))
        kind = draw(st.sampled_from(["npz", "npz", "npy"]))
        path = folder / f"part{index}"
        _save(path, data, kind)
        files.append(path.with_suffix(f".{kind}"))
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "garbage", "empty", "text"]))
    if damage != "none":
        victim = draw(st.sampled_from(files))
        if damage == "empty":
            victim.write_bytes(b"")
        elif damage == "text":
            victim.write_text("input,state\n1,2\n")
        else:
            _corrupt(victim, damage, draw(st.floats(0.0, 1.0)), draw(st.integers(0, 255)))
    if draw(st.integers(0, 4)) == 0:
        (folder / "notes.txt").write_text("not data")  # ignored in a folder
    target = folder if len(files) > 1 or draw(st.booleans()) else files[0]
    return model, target


@fuzz_settings(100)
@given(data=st.data())
def test_calibration_files_give_batches_that_run_or_one_paragraph(data, tmp_path_factory):
    model, path = data.draw(calibration_data(tmp_path_factory.getbasetemp() / "calib-fuzz"))
    batch_size = data.draw(st.sampled_from([None, 1, 2, 3]))
    batch_axes = {"state": 1} if model == "recurrent" and data.draw(st.booleans()) else None
    try:
        batches = load_calibration_files(path, MODELS[model], batch_size=batch_size, batch_axes=batch_axes)
        for feed in batches:
            SESSIONS[model].run(None, feed)
    except LpotError as exc:
        assert_one_paragraph(exc)


@fuzz_settings(25)
@given(data=st.data())
def test_lpot_quantize_with_fuzzed_calibration_data(data, tmp_path_factory, capsys):
    base = tmp_path_factory.getbasetemp() / "calib-cli"
    model, path = data.draw(calibration_data(base / "data"))
    model_path = base / f"{model}.onnx"
    if not model_path.exists():
        onnx.save(MODELS[model], model_path)
    out = base / "out" / "int8.onnx"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir()
    try:
        load_calibration_files(path, MODELS[model])
        ok = True
    except LpotError:
        ok = False
    if ok:
        capsys.readouterr()
        code = main(["quantize", str(model_path), "-o", str(out), "--calib", str(path)])
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, err
        if code == 0:
            onnx.checker.check_model(onnx.load(str(out)), full_check=True)
            return
        assert not out.exists()
    run_cli_expecting_error(capsys, ["quantize", model_path, "-o", out, "--calib", path], outputs=[out])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_real_feeds_load(model, tmp_path):
    """The seed data of the fuzzing is valid: it loads and runs (so the fuzzed cases start from real data)."""
    np.savez(tmp_path / "run.npz", **GOOD[model])
    feeds = list(load_calibration_files(tmp_path / "run.npz", MODELS[model]))
    assert feeds
    for feed in feeds:
        SESSIONS[model].run(None, feed)
