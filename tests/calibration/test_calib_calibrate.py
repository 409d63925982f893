"""calibrate(): one instrumented ONNX Runtime pass over tiny onnx.helper models."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.calibration import CalibAlgorithm, CalibrationResult, calibrate
from lpot_ir.errors import DataError, QuantizationError
from lpot_ir.ir.model import load_model

RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 6)).astype(np.float32)
B = RNG.standard_normal(6).astype(np.float32)


def _mlp() -> onnx.ModelProto:
    """x[N, 8] -> MatMul W -> Add B -> Relu -> z; plus a Shape output that is not float."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "B"], ["pre"], name="add"),
        helper.make_node("Relu", ["pre"], ["z"], name="relu"),
        helper.make_node("Shape", ["z"], ["z_shape"], name="shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 6]),
         helper.make_tensor_value_info("z_shape", TensorProto.INT64, [2])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _reference(x: np.ndarray) -> dict[str, np.ndarray]:
    mm = x @ W
    pre = mm + B
    return {"x": x, "mm": mm, "pre": pre, "z": np.maximum(pre, 0)}


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)


def _batches(data: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(data[i : i + size], np.zeros(len(data[i : i + size]))) for i in range(0, len(data), size)]


def test_minmax_equals_numpy_over_all_tensors(data: np.ndarray) -> None:
    result = calibrate(_mlp(), _batches(data, 8), sampling_size=1000, progress=False)
    assert result.num_samples == 40
    ref = _reference(data)
    assert set(result.ranges(CalibAlgorithm.MINMAX)) == {"x", "mm", "pre", "z"}  # z_shape is int64
    for name, values in ref.items():
        r = result.range(name, CalibAlgorithm.MINMAX)
        assert r.lo == pytest.approx(min(float(values.min()), 0.0), rel=1e-5, abs=1e-6)
        assert r.hi == pytest.approx(max(float(values.max()), 0.0), rel=1e-5, abs=1e-6)
    # weights: minmax from the initializers, for any algorithm
    assert result.range("W", CalibAlgorithm.KL).to_list() == [float(W.min()), float(W.max())]
    assert result.weights["B"].lo == min(float(B.min()), 0.0)


def test_sampling_size_counts_samples_and_slices_the_last_batch(data: np.ndarray) -> None:
    result = calibrate(_mlp(), _batches(data, 8), tensors=["pre"], sampling_size=13, progress=False)
    assert result.num_samples == 13
    ref = _reference(data[:13])["pre"]
    r = result.range("pre", "minmax")
    assert (r.lo, r.hi) == pytest.approx((min(ref.min(), 0.0), max(ref.max(), 0.0)), rel=1e-5)
    assert result.tensors == ("pre",)


def test_fewer_samples_than_sampling_size_uses_all_and_warns(data, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        result = calibrate(_mlp(), [data[:5]], tensors=["z"], sampling_size=100, progress=False)
    assert result.num_samples == 5
    assert "fewer than sampling_size=100" in caplog.text


def test_input_forms_dict_tuple_and_bare_array_agree(data: np.ndarray) -> None:
    forms = [
        [data[:10]],
        [(data[:10], None)],
        [{"x": data[:10]}],
        [((data[:10],), np.zeros(10))],
    ]
    results = [calibrate(_mlp(), f, tensors=["pre"], progress=False).range("pre", "minmax") for f in forms]
    assert all(r == results[0] for r in results)


def test_all_algorithms_in_one_pass_and_round_trip(data: np.ndarray) -> None:
    runs = []

    def loader() -> Iterator[np.ndarray]:
        runs.append(1)
        yield from (data[i : i + 4] for i in range(0, 40, 4))

    result = calibrate(_mlp(), loader(), algorithms=list(CalibAlgorithm), progress=False)
    assert len(runs) == 1 and result.num_samples == 40
    assert set(result.algorithms) == set(CalibAlgorithm)
    for algorithm in CalibAlgorithm:
        for r in result.ranges(algorithm).values():
            assert r.lo <= 0.0 <= r.hi
    copy = CalibrationResult.from_dict(result.to_dict())
    assert copy == result
    with pytest.raises(KeyError, match="did not compute 'kl'"):
        calibrate(_mlp(), [data], progress=False).range("z", CalibAlgorithm.KL)


def test_outlier_clipped_by_kl_and_percentile_end_to_end() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    x[123, 3] = 1000.0
    result = calibrate(_mlp(), [x[i : i + 10] for i in range(0, 300, 10)], tensors=["x"], progress=False,
                       algorithms=("minmax", "kl", "percentile"), sampling_size=300, percentile=99.9)
    assert result.range("x", "minmax").hi == 1000.0
    bulk_p99 = float(np.percentile(np.delete(x.reshape(-1), 123 * 8 + 3), 99.0))
    for algorithm in ("kl", "percentile"):
        hi = result.range("x", algorithm).hi
        assert bulk_p99 < hi < 100.0, (algorithm, hi)


def _raising_after_first(data: np.ndarray) -> Iterator[np.ndarray]:
    yield data[:8]
    raise AssertionError("the cache hit must not consume the loader")


def test_cache_hit_does_not_run(data: np.ndarray, tmp_path: Path) -> None:
    first = calibrate(_mlp(), iter([data[:8], data[8:16]]), algorithms=("minmax", "mse"), cache_dir=tmp_path,
                      progress=False)
    assert len(list(tmp_path.glob("calib-*.json"))) == 1
    again = calibrate(_mlp(), _raising_after_first(data), algorithms=("minmax", "mse"), cache_dir=tmp_path,
                      progress=False)
    assert again == first
    # another algorithm set is another entry (and runs)
    calibrate(_mlp(), [data[:8]], algorithms=("kl",), cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("calib-*.json"))) == 2


def test_corrupt_cache_entry_is_a_miss(data: np.ndarray, tmp_path: Path) -> None:
    calibrate(_mlp(), [data[:8]], cache_dir=tmp_path, progress=False)
    (entry,) = tmp_path.glob("calib-*.json")
    entry.write_text("{not json")
    result = calibrate(_mlp(), [data[:8]], cache_dir=tmp_path, progress=False)
    assert result.num_samples == 8


def test_unknown_tensor_and_empty_loader_are_clear_errors(data: np.ndarray) -> None:
    with pytest.raises(QuantizationError, match="'nope'"):
        calibrate(_mlp(), [data], tensors=["nope"], progress=False)
    with pytest.raises(DataError, match="yielded no batches"):
        calibrate(_mlp(), [], progress=False)


def _if_model() -> onnx.ModelProto:
    """y = If(cond) then Relu(x) * 2 else Neg(x); then out = y + 1. Body values cannot be outputs."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t_relu"]), helper.make_node("Mul", ["t_relu", "two"], ["t_out"])],
        "then_body", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, ["N", 4])], [two],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e_out"])],
        "else_body", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, ["N", 4])],
    )
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph, name="if"),
            helper.make_node("Add", ["y", "one"], ["out"], name="add"),
        ],
        "with_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
        [one],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_branch_values_are_calibrated_on_the_feeds_that_take_the_branch() -> None:
    model = load_model(_if_model())
    x = np.linspace(-2, 3, 12, dtype=np.float32).reshape(3, 4)
    result = calibrate(model, [{"x": x, "cond": np.array(True)}], progress=False)
    assert result.range("t_relu", "minmax").to_list() == pytest.approx([0.0, 3.0])
    assert result.range("t_out", "minmax").to_list() == pytest.approx([0.0, 6.0])
    assert result.range("y", "minmax").to_list() == pytest.approx([0.0, 6.0])
    assert result.range("out", "minmax").to_list() == pytest.approx([0.0, 7.0])
    assert "cond" not in result.tensors
    assert "else_branch of If 'if'" in result.skipped["e_out"]
    with pytest.raises(KeyError, match="else_branch"):
        result.range("e_out", "minmax")
    # each branch sees exactly the feeds that take it: the else branch negates x + 10 only (a range always
    # holds 0), the then branch never sees x + 10
    both = calibrate(model, [{"x": x, "cond": np.array(True)}, {"x": x + 10, "cond": np.array(False)}], progress=False)
    assert both.range("t_relu", "minmax").to_list() == pytest.approx([0.0, 3.0])
    assert both.range("e_out", "minmax").to_list() == pytest.approx([-13.0, 0.0])
    assert both.range("y", "minmax").to_list() == pytest.approx([-13.0, 6.0])


def test_batch_that_does_not_fit_is_a_data_error_naming_input_and_shapes(data: np.ndarray) -> None:
    with pytest.raises(DataError) as err:
        calibrate(_mlp(), [data[:4, :5]], progress=False)
    assert "'x'" in str(err.value) and "(N, 8)" in str(err.value) and "(4, 5)" in str(err.value)


def test_calibration_files_feed_calibrate_with_a_progress_bar(data: np.ndarray, tmp_path: Path, capsys) -> None:
    from lpot_ir.calibration import load_calibration_files

    np.save(tmp_path / "calib.npy", data.astype(np.float64))  # float64 is cast to the model's float32
    loader = load_calibration_files(tmp_path / "calib.npy", _mlp())
    result = calibrate(_mlp(), loader, tensors=["mm"], sampling_size=25, progress=True)
    assert result.num_samples == 25
    ref = _reference(data[:25])["mm"]
    assert result.range("mm", "minmax").hi == pytest.approx(float(ref.max()), rel=1e-5)
    assert "calibrating" in capsys.readouterr().err


def test_zoo_squeezenet_ranges_match_plain_inference(zoo_dir: Path) -> None:
    from lpot_ir.backends.onnxruntime.session import input_specs, make_session

    model = load_model(zoo_dir / "light_squeezenet.onnx")
    (spec,) = input_specs(model)
    shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    result = calibrate(model, batches, algorithms=("minmax", "kl"), progress=False, intra_op_threads=1)
    assert result.num_samples == 3
    session = make_session(model, intra_op_threads=1)
    outputs = [session.run(None, {spec.name: b})[0] for b in batches]
    final = model.graph.outputs[0].name
    expected = (min(float(np.min(outputs)), 0.0), max(float(np.max(outputs)), 0.0))
    assert result.range(final, "minmax").to_list() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    relu_outputs = [n.outputs[0].name for n in model.graph if n.op_type == "Relu"]
    assert relu_outputs and all(result.range(r, "minmax").lo == 0.0 for r in relu_outputs)
    for algorithm in ("minmax", "kl"):
        assert all(r.lo <= 0.0 <= r.hi for r in result.ranges(algorithm).values())


def test_batch_inputs_reads_lpot_pairs_and_bare_inputs() -> None:
    from lpot_ir.backends.onnxruntime.session import batch_inputs as split_batch

    a, b, y = np.zeros((2, 3)), np.ones((2, 3)), np.arange(2)
    assert split_batch((a, y), 1) is a  # (inputs, labels)
    assert split_batch([a], 1) == (a,)  # bare, in input order
    assert split_batch((a, b), 2) == (a, b)  # one array per input: bare
    assert split_batch(((a, b), y), 2) == (a, b)  # (inputs, labels) for two inputs
    assert split_batch({"x": a}, 1) == {"x": a}
