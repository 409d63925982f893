"""MXNet frontend: symbol + params converted in the isolated MXNet environment, names kept, errors clear."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from frontend_helpers import ort_run

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
