"""Models whose weights live in external data files: kept there, run, hashed, handed over and saved.

The 2 GB paths are exercised here on small models by lowering the thresholds they switch on
(``PROTOBUF_LIMIT``, ``SIDE_BY_SIDE_BYTES``): the code paths are the ones a 2 GB model takes, and
ONNX Runtime really loads every model. tests/test_big_model.py runs the same on a real 2.2 GiB model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lpot_ir.ir.model as model_module
from lpot_ir.backends.onnxruntime import benchmarking
from lpot_ir.backends.onnxruntime.benchmarking import compare_latency
from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.errors import ModelLoadError
from lpot_ir.ir.model import (
    has_external_tensors,
    load_model,
    model_digest,
    portable_proto,
    save_model,
    session_parts,
    to_proto,
    weight_bytes,
)
from lpot_ir.tuning.evaluation import model_for_user

WIDTH = 512  # one 512 x 512 float32 weight is 1 MiB: large enough to be handed to ONNX Runtime as an array


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) / 20).astype(np.float32), f"w{i}")
               for i in range(2)]  # fmt: skip
    bias = numpy_helper.from_array(rng.standard_normal(WIDTH).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"),
        helper.make_node("Add", ["h", "b"], ["h2"], name="add"),
        helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
        helper.make_node("MatMul", ["h3", "w1"], ["y"], name="mm1"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        [*weights, bias],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _external(folder: Path) -> Path:
    """The MLP saved as a user would have it: onnx.save with one external data file (relative location)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_mlp(), folder / "mlp.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="mlp.weights", size_threshold=1024)  # fmt: skip
    return folder / "mlp.onnx"


FEED = {"x": np.random.default_rng(0).standard_normal((3, WIDTH)).astype(np.float32)}


def _reference() -> np.ndarray:
    return ort.InferenceSession(_mlp().SerializeToString(), providers=["CPUExecutionProvider"]).run(None, FEED)[0]


def test_external_weights_stay_in_their_file_and_run(tmp_path: Path) -> None:
    model = load_model(_external(tmp_path / "m"))
    consts = [v.const_value for v in model.graph.initializers.values()]
    assert sum(isinstance(c, ir.ExternalTensor) for c in consts) == 3  # nothing read into memory on load
    proto = to_proto(model)
    assert proto.ByteSize() < 4096 and has_external_tensors(proto)
    parts = session_parts(proto)
    assert parts.folder == (tmp_path / "m").resolve() and not parts.arrays
    np.testing.assert_allclose(make_session(model).run(None, FEED)[0], _reference(), rtol=1e-6, atol=1e-6)


def test_large_in_memory_weights_go_to_onnx_runtime_as_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(_mlp())
    monkeypatch.setattr(model_module, "PROTOBUF_LIMIT", 1 << 20)  # "over the limit": 2 MiB of weights
    parts = session_parts(model)
    assert sorted(parts.arrays) == ["w0", "w1"] and parts.folder is None
    assert len(parts.data) < 8192  # the bias stays in the message, the two weights do not
    np.testing.assert_allclose(make_session(model).run(None, FEED)[0], _reference(), rtol=1e-6, atol=1e-6)


def test_digest_depends_on_content_not_on_where_the_file_is(tmp_path: Path) -> None:
    path = _external(tmp_path / "a")
    copy = tmp_path / "b"
    shutil.copytree(path.parent, copy)
    first, moved = model_digest(load_model(path)), model_digest(load_model(copy / "mlp.onnx"))
    assert first == moved
    data = copy / "mlp.weights"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert model_digest(load_model(copy / "mlp.onnx")) != first


def test_portable_proto_and_save_are_self_contained(tmp_path: Path) -> None:
    model = load_model(_external(tmp_path / "m"))
    portable = portable_proto(to_proto(model))
    assert not has_external_tensors(portable)
    out = ort.InferenceSession(portable.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, FEED)[0]
    np.testing.assert_allclose(out, _reference(), rtol=1e-6, atol=1e-6)
    saved = save_model(model, tmp_path / "out" / "inline.onnx")
    assert sorted(os.listdir(saved.parent)) == ["inline.onnx"]  # no reference to the source's weight file
    onnx.checker.check_model(str(saved), full_check=True)
    saved_external = save_model(model, tmp_path / "out2" / "ext.onnx", external_data=True)
    onnx.checker.check_model(str(saved_external), full_check=True)
    out = ort.InferenceSession(str(saved_external), providers=["CPUExecutionProvider"]).run(None, FEED)[0]
    np.testing.assert_allclose(out, _reference(), rtol=1e-6, atol=1e-6)


def test_eval_func_gets_a_proto_or_over_the_limit_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proto = to_proto(load_model(_external(tmp_path / "m")))
    with model_for_user(proto) as given:
        assert isinstance(given, onnx.ModelProto) and not has_external_tensors(given)
    import lpot_ir.tuning.evaluation as evaluation

    monkeypatch.setattr(evaluation, "PROTOBUF_LIMIT", weight_bytes(proto) - 1)
    with model_for_user(proto) as given:
        assert isinstance(given, str) and given.endswith(".onnx")
        out = ort.InferenceSession(given, providers=["CPUExecutionProvider"]).run(None, FEED)[0]
        folder = Path(given).parent
    np.testing.assert_allclose(out, _reference(), rtol=1e-6, atol=1e-6)
    assert not folder.exists()  # the temporary copy is gone once eval_func returns


def test_latency_of_large_models_is_compared_one_session_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fp32 = _mlp()
    monkeypatch.setattr(benchmarking, "SIDE_BY_SIDE_BYTES", 0)
    result = compare_latency({"a": fp32, "b": fp32}, FEED, rounds=4, iterations=3, warmup=1)
    assert result.rounds == 2 and all(len(v) == 2 for v in result.per_round_ms.values())
    assert result.ratio["a"] == 1.0 and result.ratio["b"] > 0


@pytest.mark.parametrize(
    ("location", "length", "says"),
    [("../outside.bin", None, "outside the model's folder"), ("mlp.weights", 1 << 30, "which has")],
)
def test_external_data_that_points_wrong_is_a_clear_error(tmp_path: Path, location: str, length: int | None,
                                                          says: str) -> None:  # fmt: skip
    path = _external(tmp_path / "m")
    (tmp_path / "outside.bin").write_bytes(b"\0" * (WIDTH * WIDTH * 4))
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
        if entry.key == "length" and length is not None:
            entry.value = str(length)
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match=says):
        load_model(path)


def test_external_tensors_from_two_folders_run(tmp_path: Path) -> None:
    # a model whose weights live in two folders: ONNX Runtime maps one folder itself, the other's tensors
    # are handed over as memory-mapped arrays
    first = to_proto(load_model(_external(tmp_path / "a")))
    second = to_proto(load_model(_external(tmp_path / "b")))
    mixed = onnx.ModelProto()
    mixed.CopyFrom(first)
    moved = next(t for t in second.graph.initializer if t.name == "w1")
    target = next(t for t in mixed.graph.initializer if t.name == "w1")
    target.CopyFrom(moved)
    parts = session_parts(mixed)
    assert list(parts.arrays) == ["w1"] and parts.folder == (tmp_path / "a").resolve()
    np.testing.assert_allclose(make_session(mixed).run(None, FEED)[0], _reference(), rtol=1e-6, atol=1e-6)


def agreement_with_fp32(model: object) -> float:
    """An eval_func for worker processes: the candidate must arrive self-contained (a plain proto)."""
    assert isinstance(model, onnx.ModelProto) and not has_external_tensors(model)
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, FEED)[0]
    reference = _reference()
    return float(np.mean(np.sum(out * reference, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)))


@pytest.mark.slow
def test_external_weights_reach_worker_processes(tmp_path: Path) -> None:
    from lpot_ir import Quantization, common

    quantizer = Quantization({
        "model": {"name": "mlp"},
        "tuning": {"accuracy_criterion": {"relative": 0.01}, "exit_policy": {"timeout": 0, "max_trials": 3},
                   "workers": 2, "workspace": {"path": str(tmp_path / "ws")}},
    })  # fmt: skip
    quantizer.model = str(_external(tmp_path / "m"))
    rows = np.random.default_rng(1).standard_normal((16, WIDTH)).astype(np.float32)
    quantizer.calib_dataloader = common.DataLoader([(r, None) for r in rows], batch_size=4)
    quantizer.eval_func = agreement_with_fp32
    quantizer.fit()
    outcome = quantizer.outcome
    assert outcome.baseline_accuracy == pytest.approx(1.0, abs=1e-5)  # the FP32 model, evaluated in a worker
    assert outcome.met_goal and all(t.failed is None for t in outcome.trials)
    assert all((t.worker or "").startswith("process:") for t in outcome.trials)
