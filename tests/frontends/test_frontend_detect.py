"""detect_framework: objects by their class's module, paths by suffix / folder contents / first bytes."""

from __future__ import annotations

import json
import sys

import onnx
import pytest

from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends import detect_framework, to_onnx


def _tiny_onnx():
    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_paths_by_suffix_and_contents(tmp_path):
    model = _tiny_onnx()
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "net-symbol.json").write_text(json.dumps({"nodes": [], "arg_nodes": [], "heads": []}))
    (tmp_path / "cfg.json").write_text(json.dumps({"a": 1}))
    (tmp_path / "frozen.pb").write_bytes(b"\x0a\x00")
    (tmp_path / "m.keras").write_bytes(b"PK")
    (tmp_path / "m.pt").write_bytes(b"PK")
    (tmp_path / "noext").write_bytes(model.SerializeToString())
    assert detect_framework(tmp_path / "m.onnx") == "onnx"
    assert detect_framework(str(tmp_path / "sm")) == "tensorflow"
    assert detect_framework(tmp_path / "net-symbol.json") == "mxnet"
    assert detect_framework(tmp_path / "frozen.pb") == "tensorflow"
    assert detect_framework(tmp_path / "m.keras") == "keras"
    assert detect_framework(tmp_path / "m.pt") == "pytorch"
    assert detect_framework(tmp_path / "noext") == "onnx"
    assert detect_framework(model) == "onnx"
    with pytest.raises(ModelLoadError, match="not an MXNet symbol"):
        detect_framework(tmp_path / "cfg.json")
    with pytest.raises(ModelLoadError, match="does not exist"):
        detect_framework(tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match="not a TensorFlow SavedModel"):
        detect_framework(tmp_path)


def test_override_and_aliases():
    assert detect_framework(object(), "torch") == "pytorch"
    assert detect_framework("whatever", "onnxrt_qlinearops") == "onnx"
    with pytest.raises(ConversionError, match="Unknown framework 'caffe'"):
        detect_framework("x", "caffe")
    with pytest.raises(ConversionError, match="Cannot tell the framework"):
        detect_framework(object())


def test_object_detection_does_not_import_frameworks(torch_cnn):
    model, _ = torch_cnn
    assert detect_framework(model) == "pytorch"  # a user subclass of nn.Module defined in a test module
    before = set(sys.modules)
    detect_framework(_tiny_onnx())
    assert not {"tensorflow", "mxnet"} & (set(sys.modules) - before)


def test_onnx_passes_through_with_identity_name_map():
    converted = to_onnx(_tiny_onnx())
    assert converted.framework == "onnx"
    assert converted.name_map == {"relu": "relu"}
    assert converted.input_names == ("x",) and converted.output_names == ("y",)


def test_unwrap_model_opens_wrappers_but_not_models(torch_cnn) -> None:
    import onnx
    from onnx import TensorProto, helper

    from lpot_ir.frontends import is_onnx_model, unwrap_model

    proto = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )

    class Model:  # LPOT's common.Model(model) wrapper
        def __init__(self, model: object) -> None:
            self.model = model

    assert unwrap_model(Model(proto)) is proto
    module, _ = torch_cnn
    module.model = module.fc  # a user's nn.Module that happens to have a .model attribute
    try:
        assert unwrap_model(module) is module
    finally:
        del module.model
    assert is_onnx_model(proto) and is_onnx_model(proto.SerializeToString())
    assert not is_onnx_model(module) and not is_onnx_model(object())
    assert isinstance(unwrap_model(Model(proto)), onnx.ModelProto)


def test_aliases_map_keeps_only_names_that_differ():
    import onnx as _onnx

    from lpot_ir.frontends.base import ConvertedModel

    converted = ConvertedModel(_onnx.ModelProto(), "pytorch", {"a": "a", "b": "layer1.conv", "c": ""}, (), ())
    assert converted.aliases_map == {"b": "layer1.conv"}
    assert ConvertedModel(_onnx.ModelProto(), "onnx", {"a": "a"}, (), ()).aliases_map is None
