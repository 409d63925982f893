"""summarize / `lpot summarize`: likely inputs and outputs with shapes and dtypes, in every format."""

from __future__ import annotations

import argparse
import json

import onnx
import pytest

from lpot_ir.commands import summarize as summarize_command
from lpot_ir.frontends import summarize, to_onnx


def _cli(argv: list[str], capsys) -> str:
    parser = argparse.ArgumentParser(prog="lpot")
    summarize_command.add_parser(parser.add_subparsers())
    assert summarize_command.run(parser.parse_args(argv)) == 0
    return capsys.readouterr().out


def test_onnx_and_cli(torch_cnn, tmp_path, capsys):
    model, x = torch_cnn
    path = tmp_path / "cnn.onnx"
    onnx.save(to_onnx(model, example_inputs=x).model, path)
    summary = summarize(path)
    assert [(t.name, t.shape, t.dtype) for t in summary.inputs] == [("x", ("batch", 3, 16, 16), "float32")]
    assert [(t.name, t.op) for t in summary.outputs] == [("output", "Gemm")]
    text = _cli(["summarize", str(path)], capsys)
    assert "x  shape=(batch, 3, 16, 16)  dtype=float32" in text
    data = json.loads(_cli(["summarize", str(path), "--json"], capsys))
    assert data["inputs"][0]["name"] == "x"


def test_torchscript(torch_cnn, tmp_path):
    torch = pytest.importorskip("torch")
    model, x = torch_cnn
    torch.jit.trace(model, x).save(str(tmp_path / "m.pt"))
    summary = summarize(tmp_path / "m.pt")
    assert summary.framework == "pytorch" and len(summary.inputs) == 1 and len(summary.outputs) == 1
    assert ("Conv2d", 5) in summary.op_counts


@pytest.mark.tensorflow
@pytest.mark.slow
def test_frozen_pb_like_summarize_graph(frozen_pb, capsys):
    summary = summarize(frozen_pb)
    assert [(t.name, t.shape, t.dtype, t.op) for t in summary.inputs] == [
        ("image", (None, 12, 12, 3), "float32", "Placeholder")
    ]
    assert [(t.name, t.shape, t.dtype) for t in summary.outputs] == [("Identity", (None, 4), "float32")]
    text = _cli(["summarize", str(frozen_pb)], capsys)
    assert "Found 1 possible input(s):\n  image  shape=(?, 12, 12, 3)  dtype=float32  op=Placeholder" in text


@pytest.mark.tensorflow
@pytest.mark.slow
def test_saved_model_and_keras(keras_cnn, tmp_path):
    model, _ = keras_cnn
    model.export(str(tmp_path / "sm"), verbose=False)
    model.save(tmp_path / "m.keras")
    sm = summarize(tmp_path / "sm")
    assert [(t.name, t.shape, t.dtype) for t in sm.inputs] == [("image", (None, 12, 12, 3), "float32")]
    assert [(t.shape, t.dtype) for t in sm.outputs] == [((None, 4), "float32")]
    keras_summary = summarize(tmp_path / "m.keras")
    assert keras_summary.framework == "keras"
    assert keras_summary.inputs[0].shape == (None, 12, 12, 3)
    assert keras_summary.outputs[0].op == "Dense"


def test_lpot_command_line(tmp_path, capsys):
    from lpot_ir.cli import main

    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert main(["summarize", str(tmp_path / "m.onnx")]) == 0
    assert "x  shape=(n, 4)  dtype=float32" in capsys.readouterr().out
    assert main(["summarize", str(tmp_path / "missing.pb")]) == 2
    assert "does not exist" in capsys.readouterr().err
