"""MXNet frontend: symbol + params converted in the isolated MXNet environment, names kept, errors clear."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from frontend_helpers import ort_run, output_step, qdq_quantize

from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends import summarize, to_onnx, wrap_for_eval
from lpot_ir.frontends.mxnet import find_symbol_and_params
from lpot_ir.frontends.summary import mxnet_param_names

pytestmark = [pytest.mark.mxnet, pytest.mark.slow]


@pytest.fixture(scope="module")
def converted(mxnet_model):
    symbol, x, _ = mxnet_model
    return to_onnx(symbol, example_inputs=x[:2])


def test_symbol_and_params_convert(mxnet_model, converted):
    _, x, y = mxnet_model
    assert converted.framework == "mxnet"
    assert converted.input_names == ("data",)
    assert {"conv0_fwd", "conv1_fwd", "dense0_fwd", "batchnorm0_fwd"} <= set(converted.name_map.values())
    assert all(n.name for n in converted.model.graph.node)
    out = ort_run(converted.model, {"data": x})[0]  # dynamic batch: 8 rows after tracing with 2
    np.testing.assert_allclose(out, y, atol=1e-4)


def test_params_found_beside_symbol_or_given(mxnet_model, tmp_path):
    symbol, x, y = mxnet_model
    assert find_symbol_and_params(symbol, None) == (symbol, symbol.with_name("net-0000.params"))
    assert find_symbol_and_params(symbol.with_name("net-0000.params"), None)[0] == symbol
    assert {"conv0_weight", "dense0_bias", "batchnorm0_running_mean"} <= mxnet_param_names(
        symbol.with_name("net-0000.params")
    )
    lone = tmp_path / "lone-symbol.json"
    shutil.copy(symbol, lone)
    with pytest.raises(ModelLoadError, match="--params"):
        to_onnx(lone, example_inputs=x)
    converted = to_onnx(lone, params=symbol.with_name("net-0000.params"), example_inputs=x)
    np.testing.assert_allclose(ort_run(converted.model, {"data": x})[0], y, atol=1e-4)


def test_ndarray_eval_wrapper_matches_mxnet(mxnet_model, converted):
    _, x, y = mxnet_model
    model = wrap_for_eval(converted.model, "mxnet")
    out = model(x)
    assert hasattr(out, "asnumpy")  # NDArray-style result even though MXNet is not importable here
    np.testing.assert_allclose(out.asnumpy(), y, atol=1e-4)


def test_summarize_symbol(mxnet_model):
    symbol, _, _ = mxnet_model
    summary = summarize(symbol)
    assert [t.name for t in summary.inputs] == ["data"]
    assert summary.outputs[0].op == "FullyConnected"
    assert dict(summary.op_counts)["Convolution"] == 2


def test_unsupported_mxnet_op_is_named(mxnet_model):
    symbol, _, _ = mxnet_model
    with pytest.raises(ConversionError, match=r"MXNet operator 'gammaln' \(symbol node\(s\) \['lgamma_head'\]\)"):
        to_onnx(symbol.with_name("odd-symbol.json"), example_inputs=np.ones((2, 3), np.float32))


def test_env_creation_failure_says_what_to_install(tmp_path, monkeypatch):
    from lpot_ir.frontends.mxnet import ensure_mxnet_env

    monkeypatch.setenv("LPOT_IR_MXNET_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(ConversionError, match=r"pip install 'mxnet==1.9.1' 'numpy==1.23.5' 'onnx==1.14.1'"):
        ensure_mxnet_env(tmp_path / "env")


# ------------------------------------------------------------------------------ export back to MXNet


def _load_in_mxnet(python: Path, prefix: Path, x: np.ndarray, tmp: Path) -> dict[str, np.ndarray]:
    np.save(tmp / "x.npy", x)
    proc = subprocess.run(
        [str(python), "-I", str(Path(__file__).with_name("mxnet_load_export.py")), str(prefix), str(tmp / "x.npy"), str(tmp / "out.npz")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(tmp / "out.npz") as data:
        return {k: data[k] for k in data.files}


def test_quantized_model_exports_to_mxnet(mxnet_env, mxnet_model, converted, tmp_path):
    """An MXNet model, quantized by lpot-ir, goes back to MXNet: symbol + params that Gluon and Module load,
    computing what ONNX Runtime computes for the Q/DQ model."""
    from lpot_ir.quantizer import quantize

    _, x, _ = mxnet_model
    rng = np.random.default_rng(0)
    calib = [(rng.random((4, 3, 16, 16), dtype=np.float32), None) for _ in range(4)]
    quantized = quantize(converted.model, calib_dataloader=calib)
    export = quantized.export("mxnet", tmp_path / "int8")
    assert export.symbol == tmp_path / "int8-symbol.json" and export.params.exists()
    assert export.input_names == ("data",) and export.fake_quant > 0
    assert any("FP32 arithmetic with the INT8 rounding kept" in note for note in export.notes)
    ort = ort_run(quantized.model, {"data": x})[0]
    reference = ort_run(quantized.model, {"data": x}, optimize=False)[0]
    loaded = _load_in_mxnet(mxnet_env, tmp_path / "int8", x, tmp_path)
    np.testing.assert_array_equal(loaded["gluon"], loaded["module"])
    assert int(loaded["int_params"]) >= 3  # the conv and dense weights stay int8 in the params
    # FP32 fake quantization against ONNX Runtime's reference Q/DQ semantics: float rounding only (the
    # model's float logits are ~1; 1e-5 is a hundred float32 ulps)
    np.testing.assert_allclose(loaded["gluon"], reference, atol=1e-5)
    # against ORT's fused integer kernels: a requantized activation may land one step apart; the logits
    # move by at most a few percent of their range then
    assert np.abs(loaded["gluon"] - ort).max() <= 0.05 * np.abs(ort).max()
    assert export.max_abs_diff is not None and export.max_abs_diff <= 0.05 * np.abs(ort).max()


def test_per_channel_signed_qdq_model_exports_to_mxnet(mxnet_model, converted, tmp_path):
    """A Q/DQ model from ONNX Runtime's quantize_static (per-channel int8 weights, int8 activations, the
    output quantized too) is lowered within one output quantization step of ONNX Runtime."""
    from lpot_ir.frontends import export_to_mxnet

    _, x, _ = mxnet_model
    rng = np.random.default_rng(1)
    batches = [{"data": rng.random((4, 3, 16, 16), dtype=np.float32)} for _ in range(3)]
    qdq = qdq_quantize(converted.model, batches, tmp_path, per_channel=True, signed_activations=True)
    export = export_to_mxnet(qdq, tmp_path / "pc", check_inputs={"data": x})
    assert export.max_abs_diff_reference is not None and export.max_abs_diff_reference <= 1e-5
    last = qdq.graph.node[-1]
    if last.op_type == "DequantizeLinear":
        assert export.max_abs_diff <= output_step(qdq) + 1e-6


def test_unsupported_op_for_mxnet_is_named(tmp_path):
    from lpot_ir.frontends import export_to_mxnet

    node = onnx.helper.make_node("Einsum", ["a", "b"], ["y"], name="mix", equation="ij,jk->ik")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 2]) for n in ("a", "b")],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError, match=r"MXNet lowering does not build: Einsum \(node 'mix'\)"):
        export_to_mxnet(model, tmp_path / "m")
