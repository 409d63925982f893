"""Framework models through lpot_ir.quantize, lpot quantize, and QuantizedModel.export back to a framework."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import lpot_ir
from lpot_ir.cli import main
from lpot_ir.errors import QuantizationError

pytestmark = pytest.mark.slow


def _ort(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _calib(x: np.ndarray, n: int = 4) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(3)
    return [(rng.random(x.shape, dtype=np.float32), 0) for _ in range(n)]


def test_quantize_a_torch_module_maps_names_and_exports_back(torch_cnn, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module, x = torch_cnn
    xs = x.numpy()
    qmodel = lpot_ir.quantize(module, calib_dataloader=_calib(xs))
    assert qmodel.quantized_nodes, "nothing was quantized"
    # decisions and scopes know the PyTorch module paths
    aliases = {alias for d in qmodel.decisions.values() for alias in getattr(d, "aliases", ())}
    assert "layer1.0.conv1" in aliases
    with torch.no_grad():
        fp32 = module(x).numpy()
    int8 = _ort(qmodel.model, xs)
    assert np.abs(int8 - fp32).max() <= 0.1 * np.abs(fp32).max()

    exported = qmodel.export("pytorch")
    assert isinstance(exported, torch.nn.Module)
    with torch.no_grad():
        lowered = exported(x).numpy()
    unfused = ort.InferenceSession(
        qmodel.model.SerializeToString(),
        sess_options=_no_optimizations(),
        providers=["CPUExecutionProvider"],
    ).run(None, {_input_name(qmodel.model): xs})[0]
    np.testing.assert_allclose(lowered, unfused, atol=1e-5)

    written = qmodel.export("onnx", tmp_path / "cnn-int8.onnx")
    assert written.exists() and (tmp_path / "cnn-int8.recipe.json").exists()
    with pytest.raises(QuantizationError, match="Unknown export target"):
        qmodel.export("caffe", tmp_path / "x")
    with pytest.raises(QuantizationError, match="pass path"):
        qmodel.export("tensorflow")


def _no_optimizations() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def _input_name(model) -> str:
    return model.graph.input[0].name


def test_export_to_tensorflow_matches_onnx_runtime(torch_cnn, tf_modules, tmp_path: Path) -> None:
    tf, _ = tf_modules
    module, x = torch_cnn
    xs = x.numpy()
    qmodel = lpot_ir.quantize(module, calib_dataloader=_calib(xs))
    path = qmodel.export("tensorflow", tmp_path / "saved")
    loaded = tf.saved_model.load(str(path))
    outputs = loaded(tf.constant(xs)) if callable(loaded) else loaded.signatures["serving_default"](tf.constant(xs))
    got = next(iter(outputs.values())).numpy() if isinstance(outputs, dict) else np.asarray(
        outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    )
    want = ort.InferenceSession(
        qmodel.model.SerializeToString(), sess_options=_no_optimizations(), providers=["CPUExecutionProvider"]
    ).run(None, {_input_name(qmodel.model): xs})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_cli_quantizes_a_torchscript_file(torch_cnn, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    module, x = torch_cnn
    script = tmp_path / "cnn.pt"
    torch.jit.trace(module, x).save(str(script))
    np.save(tmp_path / "calib.npy", np.random.default_rng(4).random((8, 3, 16, 16), dtype=np.float32))
    out = tmp_path / "cnn-int8.onnx"
    code = main(["quantize", str(script), "--calib", str(tmp_path / "calib.npy"), "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Converted the pytorch model" in printed and out.exists()
    with torch.no_grad():
        fp32 = module(x).numpy()
    import onnx

    int8 = _ort(onnx.load(out), x.numpy())
    assert np.abs(int8 - fp32).max() <= 0.1 * np.abs(fp32).max()


@pytest.mark.mxnet
def test_cli_takes_mxnet_params_from_a_flag(mxnet_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    symbol, x, y = mxnet_model
    moved = tmp_path / "weights.params"
    shutil.copy(symbol.with_name("net-0000.params"), moved)
    lone = tmp_path / "net-symbol.json"
    shutil.copy(symbol, lone)  # no net-0000.params beside it: --params must be used
    np.save(tmp_path / "calib.npy", np.repeat(x[:1], 4, axis=0))
    out = tmp_path / "mx-int8.onnx"
    code = main(["quantize", str(lone), "--params", str(moved), "--calib", str(tmp_path / "calib.npy"), "-o", str(out)])
    assert code == 0, capsys.readouterr()
    import onnx

    int8 = _ort(onnx.load(out), x)
    assert np.abs(int8 - y).max() <= 0.1 * np.abs(y).max()
