"""PyTorch frontend: nn.Module and TorchScript -> ONNX with module-path names, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends import to_onnx
from lpot_ir.frontends.pytorch import resolve_scope

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")

from frontend_helpers import ort_run  # noqa: E402


def test_cnn_converts_with_module_names(torch_cnn):
    model, x = torch_cnn
    converted = to_onnx(model, example_inputs=x)
    assert converted.framework == "pytorch"
    names = set(converted.name_map.values())
    assert {"conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "fc"} <= names
    by_framework = {v: k for k, v in converted.name_map.items()}
    assert by_framework["layer1.0.conv1"] == "/layer1/layer1.0/conv1/Conv"
    assert converted.name_map["/layer1/layer1.0/Add"] == "layer1.0/Add"  # functional op in a non-leaf module
    assert not any(n.op_type == "BatchNormalization" for n in converted.model.graph.node)
    assert any("folded 5 BatchNorm" in note for note in converted.notes)
    # dynamic batch: run a batch of a different size than the example
    out = ort_run(converted.model, {converted.input_names[0]: x[:2].numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x[:2]).numpy(), atol=1e-4)
    assert converted.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_encoder_converts_with_module_names(torch_encoder):
    model, x = torch_encoder
    converted = to_onnx(model, example_inputs=(x,))
    names = set(converted.name_map.values())
    assert {"layers.0.linear1", "layers.0.linear2", "layers.0.norm1", "layers.1.norm2"} <= names
    assert any(v.startswith("layers.0.self_attn/") for v in names)
    assert converted.input_names == ("src",)
    out = ort_run(converted.model, {"src": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)


def test_torchscript_file(torch_cnn, tmp_path):
    model, x = torch_cnn
    path = tmp_path / "model.pt"
    torch.jit.trace(model, x).save(str(path))
    converted = to_onnx(path, example_inputs=x)
    assert converted.framework == "pytorch"
    assert "loaded TorchScript file model.pt" in converted.notes[0]
    out = ort_run(converted.model, {converted.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="TorchScript"):
        to_onnx(tmp_path / "bad.pt", example_inputs=x)


def test_unsupported_op_names_op_and_module():
    class Zeta(torch.nn.Module):
        def forward(self, x):
            return torch.special.zeta(x, x)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Sequential(torch.nn.Identity(), Zeta())

        def forward(self, x):
            return self.head(x)

    with pytest.raises(ConversionError, match=r"'aten::special_zeta' \(called in module 'head.1'\)"):
        to_onnx(Net(), example_inputs=torch.rand(2, 3) + 2)


def test_missing_or_wrong_example_inputs(torch_cnn):
    model, _ = torch_cnn
    with pytest.raises(ConversionError, match="needs example inputs"):
        to_onnx(model)
    with pytest.raises(ConversionError, match=r"Input shapes: \(2, 5\)"):
        to_onnx(model, example_inputs=np.zeros((2, 5), np.float32))


def test_resolve_scope_handles_qualified_segments():
    modules = [
        "features",
        "features.0",
        "features.0.1",
        "layer1",
        "layer1.0",
        "layer1.0.conv1",
        "layers.0",
        "layers.0.self_attn",
    ]
    assert resolve_scope(["layer1", "layer1.0", "conv1"], modules) == "layer1.0.conv1"
    assert resolve_scope(["features", "features.0", "features.0.1"], modules) == "features.0.1"
    assert resolve_scope(["layers.0", "self_attn"], modules) == "layers.0.self_attn"
    assert resolve_scope(["nope"], modules) is None
