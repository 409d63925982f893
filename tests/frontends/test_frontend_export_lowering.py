"""export_to_pytorch / export_to_tensorflow: Q/DQ ONNX models lowered back to frameworks match ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from frontend_helpers import ort_run, output_step, qdq_quantize

from lpot_ir.errors import ConversionError
from lpot_ir.frontends import export_to_pytorch, export_to_tensorflow, to_onnx

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")


@pytest.fixture(scope="module")
def cnn_models(torch_cnn, tmp_path_factory):
    """The FP32 CNN as ONNX plus Q/DQ versions: per-tensor u8/s8, per-channel u8/s8 (ORT quantize_static)."""
    model, x = torch_cnn
    converted = to_onnx(model, example_inputs=x)
    rng = np.random.default_rng(3)
    batches = [{"x": rng.random((4, 3, 16, 16), dtype=np.float32)} for _ in range(4)]
    tmp = tmp_path_factory.mktemp("qdq")
    qdq = {
        (pc, signed): qdq_quantize(converted.model, batches, tmp, per_channel=pc, signed_activations=signed)
        for pc in (False, True)
        for signed in (False, True)
    }
    test_x = rng.random((3, 3, 16, 16), dtype=np.float32)
    return converted.model, qdq, test_x


@pytest.mark.parametrize("per_channel,signed", [(False, False), (True, False), (True, True)])
def test_pytorch_lowering_matches_ort_within_one_step(cnn_models, per_channel, signed):
    _, qdq, x = cnn_models
    model = qdq[(per_channel, signed)]
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    lowered = export_to_pytorch(model)
    assert isinstance(lowered, torch.nn.Module)
    with torch.no_grad():
        out = lowered(torch.from_numpy(x)).numpy()
    ref = ort_run(model, {"x": x})[0]
    step = output_step(model)
    assert np.abs(out - ref).max() <= step + 1e-6
    # the lowered module is real PyTorch: its state travels with state_dict
    assert any(v.dtype == torch.int8 for v in lowered.state_dict().values())


def test_pytorch_lowering_of_fp32_model_is_exact(cnn_models):
    fp32, _, x = cnn_models
    with torch.no_grad():
        out = export_to_pytorch(fp32)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ort_run(fp32, {"x": x})[0], atol=1e-5)


@pytest.mark.slow
def test_pytorch_lowering_of_quantized_transformer(torch_encoder, tmp_path):
    model, x = torch_encoder
    converted = to_onnx(model, example_inputs=x)
    rng = np.random.default_rng(4)
    batches = [{"src": rng.standard_normal((3, 5, 16)).astype(np.float32)} for _ in range(3)]
    qdq = qdq_quantize(converted.model, batches, tmp_path, per_channel=True)
    with torch.no_grad():
        out = export_to_pytorch(qdq)(x).numpy()
        fp32 = model(x).numpy()
    # exact against ONNX Runtime's reference Q/DQ semantics (graph optimizations off) ...
    np.testing.assert_allclose(out, ort_run(qdq, {"src": x.numpy()}, optimize=False)[0], atol=1e-5)
    # ... and close to ORT's fused integer kernels, whose requantization rounds some values one step apart: that
    # moves the output less than quantization itself does (measured 0.067 against 0.30; a wrong kernel: ~2.7)
    fused = ort_run(qdq, {"src": x.numpy()})[0]
    assert np.abs(out - fused).max() <= np.abs(out - fp32).max()


def test_unsupported_op_is_named():
    node = onnx.helper.make_node("Einsum", ["a", "b"], ["y"], name="mix", equation="ij,jk->ik")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 2]) for n in ("a", "b")],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError, match=r"Einsum \(node 'mix'\)"):
        export_to_pytorch(model)


@pytest.mark.tensorflow
@pytest.mark.slow
@pytest.mark.parametrize("per_channel,signed", [(False, False), (True, True)])
def test_tensorflow_lowering_matches_ort_within_one_step(
    cnn_models, tf_modules, tmp_path, per_channel, signed
):
    tf, _ = tf_modules
    _, qdq, x = cnn_models
    model = qdq[(per_channel, signed)]
    path = export_to_tensorflow(model, tmp_path / "saved")
    assert (path / "saved_model.pb").exists()
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](x=tf.constant(x))["output"].numpy()
    ref = ort_run(model, {"x": x})[0]
    assert np.abs(out - ref).max() <= output_step(model) + 1e-6
    # saving again replaces the SavedModel atomically
    export_to_tensorflow(model, path)
    assert (path / "saved_model.pb").exists()


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_lowers_like_onnx_runtime(auto_pad, tf_modules, tmp_path):
    """Conv and MaxPool with auto_pad: odd sizes, stride 2, so begin and end pads differ."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=auto_pad, strides=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["y"], auto_pad=auto_pad, kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "pads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 3, 9, 8)).astype(np.float32)
    ref = ort_run(model, {"x": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(export_to_pytorch(model)(torch.from_numpy(x)).numpy(), ref, atol=1e-5)
    tf, _ = tf_modules
    loaded = tf.saved_model.load(str(export_to_tensorflow(model, tmp_path / "saved")))
    out = loaded.signatures["serving_default"](x=tf.constant(x))
    np.testing.assert_allclose(next(iter(out.values())).numpy(), ref, atol=1e-5)
