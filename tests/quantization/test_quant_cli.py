"""``lpot quantize``: LPOT YAML or TuningConfig YAML, .npy/.npz/folder data, clear errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
import pytest
from onnx import helper
from qhelpers import check_valid, make_model, run

from lpot_ir.commands import quantize as quantize_command
from lpot_ir.errors import DataError
from lpot_ir.ir.quant import Approach, DType, TuningConfig
from lpot_ir.quantizer import apply_recipe

RNG = np.random.default_rng(5)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpot")
    quantize_command.add_parser(parser.add_subparsers(dest="command"))
    return parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W2"], ["y"], name="conv2")]
    model = make_model(nodes, [("x", ["N", 3, 6, 6])], [("y", None)],
                       {"W": (rng.normal(size=(4, 3, 3, 3)) * 0.3).astype(np.float32),
                        "W2": (rng.normal(size=(2, 4, 1, 1)) * 0.3).astype(np.float32)})
    path = tmp_path_factory.mktemp("cli") / "fp32.onnx"
    onnx.save(model, str(path))
    return path


def test_lpot_yaml_and_npz(model_path, tmp_path):
    data = tmp_path / "calib.npz"
    np.savez(data, x=RNG.normal(size=(6, 3, 6, 6)).astype(np.float32))
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        "model:\n  name: tiny\n  framework: onnxrt\n"
        "quantization:\n  format: qdq\n  model_wise:\n    activation:\n      dtype: [int8, uint8]\n"
        "  op_wise:\n    conv2:\n      activation:\n        dtype: [fp32]\n"
    )
    out = tmp_path / "out" / "int8.onnx"
    assert _main(["quantize", str(model_path), "-c", str(conf), "-o", str(out), "--calib", str(data)]) == 0
    qmodel = onnx.load(str(out))
    check_valid(qmodel)
    recipe = json.loads((out.parent / "int8.recipe.json").read_text())
    config = TuningConfig.from_dict(recipe["config"])
    assert config.global_config.activation.dtype is DType.INT8
    assert config.resolve("conv2", "Conv").fp32
    assert [n.op_type for n in qmodel.graph.node].count("Conv") == 2
    feed = {"x": RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)}
    assert run(qmodel, feed)[0].shape == (2, 2, 6, 6)
    # the saved recipe replays to the same bytes
    assert apply_recipe(model_path, out.parent / "int8.recipe.json").model.graph == qmodel.graph


def test_tuning_config_yaml_dynamic_without_data(model_path, tmp_path):
    conf = tmp_path / "tuning.yaml"
    conf.write_text(TuningConfig(approach=Approach.DYNAMIC).to_yaml())
    out = tmp_path / "dyn.onnx"
    assert _main(["quantize", str(model_path), "-c", str(conf), "-o", str(out)]) == 0
    check_valid(onnx.load(str(out)))


def test_folder_of_npy_with_default_config(model_path, tmp_path, capsys):
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"part{i}.npy", RNG.normal(size=(3, 3, 6, 6)).astype(np.float32))
    out = tmp_path / "q.onnx"
    assert _main(["quantize", str(model_path), "-o", str(out), "--calib", str(folder)]) == 0
    assert "Quantized 3 node(s)" in capsys.readouterr().out
    check_valid(onnx.load(str(out)))


def test_data_that_does_not_fit_names_input_and_shapes(model_path, tmp_path):
    data = tmp_path / "bad.npy"
    np.save(data, RNG.normal(size=(4, 5, 6, 6)).astype(np.float32))
    with pytest.raises(DataError) as info:
        _main(["quantize", str(model_path), "-o", str(tmp_path / "q.onnx"), "--calib", str(data)])
    message = str(info.value)
    assert "'x'" in message and "5" in message and "3" in message
    assert not (tmp_path / "q.onnx").exists()
