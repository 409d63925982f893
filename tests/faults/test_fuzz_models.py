"""Fuzzing model files: truncated, bit-flipped, emptied and foreign files, models whose graph was edited
into something wrong (a node or initializer removed, an input renamed, an unknown op, wrong dims, types,
opsets and IR versions), and models with external data whose data file is missing, truncated or points
outside the model's folder. ``lpot inspect`` and ``lpot quantize`` either work (a quantized model that
passes ``onnx.checker``'s full check) or exit 2 with one error line, no traceback and nothing written;
:func:`lpot_ir.ir.model.load_model` raises one LpotError paragraph."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.cli import main
from lpot_ir.errors import LpotError
from lpot_ir.ir.model import load_model
from tests.faults.fuzzing import assert_one_paragraph, fuzz_settings, run_cli_expecting_error


def _model() -> onnx.ModelProto:
    """x [n, 3, 8, 8] -> Conv -> Relu -> Flatten -> MatMul -> Add -> y [n, 10]; weights over 4 KB (the
    loader's large-initializer path) and small ones."""
    rng = np.random.default_rng(0)
    conv = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv_w")
    fc = numpy_helper.from_array(rng.standard_normal((4 * 6 * 6, 10)).astype(np.float32), "fc_w")
    bias = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc_w"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "fc_b"], ["y"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], [conv, fc, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODEL = _model()
BYTES = MODEL.SerializeToString()
CALIB = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
WORDS = ["Conv", "Relu", "MatMul", "Nonsense", "", "x", "y", "c", "fc_w", "missing"]


def _byte_damage(draw: Any) -> bytes:
    how = draw(st.sampled_from(["truncate", "truncate", "flip", "flip", "garbage", "empty", "text", "append"]))
    data = bytearray(BYTES)
    where = draw(st.floats(0.0, 1.0))
    if how == "truncate":
        return bytes(data[: int(len(data) * where)])
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            data[int((len(data) - 1) * draw(st.floats(0.0, 1.0)))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "garbage":
        return bytes(np.random.default_rng(draw(st.integers(0, 99))).integers(0, 256, 1 + int(3000 * where), np.uint8))
    if how == "empty":
        return b""
    if how == "text":
        return b"ir_version: 8\ngraph { node { op_type: 'Relu' } }\n"
    return bytes(data) + bytes(draw(st.binary(min_size=1, max_size=20)))


def _edit(draw: Any, model: onnx.ModelProto) -> None:
    """One structural edit of ``model`` (in place)."""
    graph = model.graph
    how = draw(st.sampled_from([
        "drop node", "rename input", "op type", "drop initializer", "initializer dims", "input type",
        "input rank", "opset", "ir version", "attribute", "duplicate output", "no outputs", "domain",
    ]))
    node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
    if how == "drop node":
        graph.node.remove(node)
    elif how == "rename input" and node.input:
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(WORDS))
    elif how == "op type":
        node.op_type = draw(st.sampled_from(WORDS))
    elif how == "drop initializer":
        graph.initializer.remove(graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))])
    elif how == "initializer dims":
        tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        tensor.dims[draw(st.integers(0, len(tensor.dims) - 1))] += draw(st.sampled_from([-1, 1, 7]))
    elif how == "input type":
        graph.input[0].type.tensor_type.elem_type = draw(st.sampled_from([0, 2, 7, 9, 10, 11, 16, 99]))
    elif how == "input rank":
        dims = graph.input[0].type.tensor_type.shape.dim
        if draw(st.booleans()):
            dims.pop()
        else:
            dims.add().dim_value = draw(st.integers(0, 3))
    elif how == "opset":
        model.opset_import[0].version = draw(st.sampled_from([0, 1, 6, 9, 10, 25, 99]))
    elif how == "ir version":
        model.ir_version = draw(st.sampled_from([0, 1, 3, 99]))
    elif how == "attribute":
        node.attribute.append(helper.make_attribute(draw(st.sampled_from(["axis", "pads", "group", "junk"])),
                                                    draw(st.sampled_from([0, -5, 3, [1, 2], "x"]))))
    elif how == "duplicate output":
        node.output[0] = graph.node[0].output[0]
    elif how == "no outputs":
        del graph.output[:]
    else:  # "domain"
        node.domain = draw(st.sampled_from(["com.microsoft", "ai.onnx.ml", "made.up"]))


@st.composite
def damaged_model(draw: Any, folder: Path) -> Path:
    """A model file in a fresh ``folder``: damaged bytes, an edited graph, or broken external data."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    kind = draw(st.sampled_from(["bytes", "graph", "graph", "external"]))
    if kind == "bytes":
        path.write_bytes(_byte_damage(draw))
    elif kind == "graph":
        model = onnx.ModelProto()
        model.CopyFrom(MODEL)
        for _ in range(draw(st.integers(1, 2))):
            _edit(draw, model)
        path.write_bytes(model.SerializeToString())
    else:
        model = onnx.ModelProto()
        model.CopyFrom(MODEL)
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="model.data",
                  size_threshold=256)
        data = folder / "model.data"
        how = draw(st.sampled_from(["missing", "truncated", "outside", "empty"]))
        if how == "missing":
            data.unlink()
        elif how == "truncated":
            data.write_bytes(data.read_bytes()[: int(data.stat().st_size * draw(st.floats(0.0, 0.99)))])
        elif how == "empty":
            data.write_bytes(b"")
        else:
            proto = onnx.load(str(path), load_external_data=False)
            for tensor in proto.graph.initializer:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = draw(st.sampled_from(["../model.data", "/etc/hostname", "sub/../../x.data"]))
            path.write_bytes(proto.SerializeToString())
    return path


def _quantize_ok_or_exit_2(capsys: Any, path: Path, calib: Path, out: Path) -> None:
    capsys.readouterr()
    code = main(["quantize", str(path), "-o", str(out), "--calib", str(calib)])
    err = capsys.readouterr().err
    assert code in (0, 2), f"exit {code}: {err[-2000:]}"
    event(f"lpot quantize exit {code}")
    assert "Traceback" not in err and "internal error" not in err, err[-2000:]
    if code == 0:
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    else:
        run_cli_expecting_error(capsys, ["quantize", path, "-o", out, "--calib", calib], outputs=[out])


@fuzz_settings(60)
@given(data=st.data())
def test_damaged_models_load_or_fail_with_one_paragraph(data, tmp_path_factory):
    path = data.draw(damaged_model(tmp_path_factory.getbasetemp() / "model-fuzz"))
    try:
        load_model(path)
        event("loads")
    except LpotError as exc:
        assert_one_paragraph(exc)
        event(f"refused: {type(exc).__name__}")


@fuzz_settings(30)
@given(data=st.data())
def test_lpot_inspect_and_quantize_on_damaged_models(data, tmp_path_factory, capsys):
    base = tmp_path_factory.getbasetemp() / "model-cli"
    path = data.draw(damaged_model(base / "model"))
    calib = base / "calib.npy"
    if not calib.exists():
        np.save(calib, CALIB)
    out = base / "out" / "int8.onnx"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir()
    capsys.readouterr()
    code = main(["inspect", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, err[-2000:]
    _quantize_ok_or_exit_2(capsys, path, calib, out)


@pytest.mark.parametrize("cut", [0, 1, 100, len(BYTES) // 2, len(BYTES) - 1])
def test_truncated_model_is_one_paragraph_and_nothing_written(cut, tmp_path, capsys):
    """Deterministic cases of the property above: a model file cut short anywhere."""
    path = tmp_path / "model.onnx"
    path.write_bytes(BYTES[:cut])
    np.save(tmp_path / "calib.npy", CALIB)
    out = tmp_path / "int8.onnx"
    failure = run_cli_expecting_error(capsys, ["quantize", path, "-o", out, "--calib", tmp_path / "calib.npy"],
                                      outputs=[out])
    assert "model.onnx" in failure.err
    with pytest.raises(LpotError) as caught:
        load_model(path)
    assert_one_paragraph(caught.value)
