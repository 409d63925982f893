"""Loading, normalizing and saving models: lpot_ir.ir.model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.errors import ModelLoadError
from lpot_ir.ir.model import (
    all_graphs,
    all_nodes,
    load_model,
    model_digest,
    save_model,
    to_proto,
)
from tests.conftest import ZOO_MODELS


def _run(model: onnx.ModelProto | str | Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _random_feed(path: Path) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    return {
        i.name: rng.random([d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32)
        for i in session.get_inputs()
    }


def _mlp(opset: int = 17, *, names: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((3,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm" if names else ""),
        helper.make_node("Add", ["h", "b"], ["h2"], name="add" if names else ""),
        helper.make_node("Relu", ["h2"], ["y"], name="" if not names else "relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("path", ZOO_MODELS, ids=lambda p: p.stem)
def test_zoo_round_trip_is_exact_and_upgraded(path: Path, tmp_path: Path) -> None:
    model = load_model(path)
    proto = to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    # old exporters list every initializer as a graph input; the IR keeps only real inputs
    assert [v.name for v in model.graph.inputs] == [i.name for i in _original_real_inputs(path)]
    names = [node.name for node in all_nodes(model)]
    assert all(names) and len(set(names)) == len(names)

    out = save_model(model, tmp_path / "m.onnx")
    reloaded = load_model(out)
    assert [node.name for node in all_nodes(reloaded)] == names

    feed = _random_feed(path)
    for want, got in zip(_run(onnx.load(path), feed), _run(out, feed), strict=True):
        np.testing.assert_array_equal(want, got)


def _original_real_inputs(path: Path) -> list[onnx.ValueInfoProto]:
    proto = onnx.load(path)
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def test_load_accepts_path_bytes_proto_and_ir_model(tmp_path: Path) -> None:
    proto = _mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(proto, path)
    digests = {
        model_digest(load_model(source))
        for source in (path, str(path), proto.SerializeToString(), proto, ir.serde.deserialize_model(proto))
    }
    assert len(digests) == 1


def test_load_does_not_modify_the_callers_proto() -> None:
    proto = _mlp(opset=11, names=False)
    before = proto.SerializeToString()
    load_model(proto)
    assert proto.SerializeToString() == before


def test_unnamed_nodes_get_deterministic_names_that_survive_save(tmp_path: Path) -> None:
    first = load_model(_mlp(names=False))
    second = load_model(_mlp(names=False))
    names = [n.name for n in first.graph]
    assert names == [n.name for n in second.graph] == ["MatMul_0", "Add_0", "Relu_0"]
    reloaded = load_model(save_model(first, tmp_path / "named.onnx"))
    assert [n.name for n in reloaded.graph] == names


def test_duplicate_node_names_are_made_unique() -> None:
    proto = _mlp()
    for node in proto.graph.node:
        node.name = "same"
    names = [n.name for n in load_model(proto).graph]
    assert len(set(names)) == 3 and names[0] == "same"


def test_opset_upgrade_keeps_outputs(tmp_path: Path) -> None:
    proto = _mlp(opset=7)
    proto.ir_version = 3  # IR v3 (ONNX 1.0-1.2 era): every initializer must also be a graph input
    for init in proto.graph.initializer:
        proto.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    model = load_model(proto)
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert model.opset_imports[""] == 17
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(proto, {"x": x})[0], _run(to_proto(model), {"x": x})[0], rtol=1e-6)


def test_target_opset_none_keeps_the_opset() -> None:
    assert load_model(_mlp(opset=11), target_opset=None).opset_imports[""] == 11


def test_shapes_are_inferred() -> None:
    model = load_model(_mlp())
    hidden = {v.name: v for node in model.graph for v in node.outputs}["h"]
    assert hidden.shape is not None and hidden.shape[1] == 3


def _if_model() -> onnx.ModelProto:
    then_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])]
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])]
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph),
    ]
    graph = helper.make_graph(
        nodes,
        "cond",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_subgraphs_are_visited_named_and_preserved(tmp_path: Path) -> None:
    model = load_model(_if_model())
    graphs = list(all_graphs(model))
    assert len(graphs) == 3
    sub_names = [n.name for g in graphs[1:] for n in g]
    assert all(sub_names) and len(set(sub_names)) == 2
    out = save_model(model, tmp_path / "if.onnx")
    for x in (np.array([1.0, -2.0], np.float32), np.array([-3.0, 1.0], np.float32)):
        np.testing.assert_array_equal(_run(_if_model(), {"x": x})[0], _run(out, {"x": x})[0])


def test_sibling_subgraphs_repeating_a_value_name_get_unique_names(tmp_path: Path) -> None:
    """Both branches define 'v' (ONNX allows it: the scopes are siblings); ranges are keyed by value name."""
    then_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["v"]), helper.make_node("Neg", ["v"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["v"])], "else", [], [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])]
    )
    proto = _if_model()
    proto.graph.node[2].ClearField("attribute")
    proto.graph.node[2].attribute.extend(
        [helper.make_attribute("then_branch", then_graph), helper.make_attribute("else_branch", else_graph)]
    )
    model = load_model(proto)
    names = [v.name for g in all_graphs(model) for n in g for v in n.outputs]
    assert len(names) == len(set(names)) and "v" in names and "v__1" in names
    out = save_model(model, tmp_path / "renamed.onnx")
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    for x in (np.array([1.0, -2.0], np.float32), np.array([-3.0, 1.0], np.float32)):
        np.testing.assert_array_equal(_run(proto, {"x": x})[0], _run(out, {"x": x})[0])


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_text_file_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("these are my notes, not a model\n" * 20)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model|not an ONNX model"):
        load_model(path)


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    data = _mlp().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    assert "truncated" in str(info.value) and "\n" not in str(info.value)


def test_model_failing_the_checker_is_a_clear_error() -> None:
    proto = _mlp()
    proto.graph.node[0].input[1] = "undefined_weight"
    with pytest.raises(ModelLoadError, match="fails the ONNX checker"):
        load_model(proto)


def test_save_with_external_data_round_trips(tmp_path: Path) -> None:
    dest = save_model(load_model(_mlp()), tmp_path / "ext.onnx", external_data=True)
    assert len(list(tmp_path.glob("ext.onnx.*.data"))) == 1  # full-disk and kill behaviour: tests/faults
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(_run(dest, {"x": x})[0], _run(_mlp(), {"x": x})[0], rtol=1e-6)
    assert model_digest(load_model(dest)) == model_digest(load_model(_mlp()))


def test_recovery_config_round_trips_and_is_omitted_when_off():
    from lpot_ir.ir.quant import RecoveryConfig, TuningConfig, WeightRounding

    plain = TuningConfig()
    assert "recovery" not in plain.to_dict()  # keys and recipes of plain configurations are unchanged
    tuned = TuningConfig(recovery=RecoveryConfig(equalization=True, smoothquant_alpha=0.5, weight_rounding="mse"))
    assert tuned.recovery.weight_rounding is WeightRounding.MSE
    assert TuningConfig.from_json(tuned.to_json()) == tuned
    assert TuningConfig.from_yaml(tuned.to_yaml()) == tuned
    assert tuned.key() != plain.key()
    with pytest.raises(ValueError, match="smoothquant_alpha"):
        RecoveryConfig(smoothquant_alpha=1.5)
    with pytest.raises(ValueError, match="Unknown recovery"):
        RecoveryConfig.from_dict({"equalisation": True})


@pytest.mark.parametrize("case", ["test_PReLU_1d_multiparam", "test_PReLU_2d_multiparam", "test_PReLU_3d_multiparam"])
def test_opset_6_prelu_slopes_stay_per_channel_after_the_upgrade(case: str) -> None:
    """Old PyTorch exports wrote a ``[C]`` slope meaning one per channel; from opset 7 it would broadcast
    on the last axis (ONNX Runtime refuses it, or worse, applies it to the wrong axis)."""
    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted" / case
    x = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / "input_0.pb")))
    expected = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / "output_0.pb")))
    model = to_proto(load_model(folder / "model.onnx"))
    session = ort.InferenceSession(model.SerializeToString())
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected, rtol=1e-6, atol=1e-6)
