"""Calibration data as people have it: batch axes from dimension names, scalar inputs, fixed batches, -1 dims.

Small ONNX models with each shape case are built here and run in ONNX Runtime; the same rules are
checked through ``lpot quantize``, ``calibrate``, ``load_calibration_files``, an LPOT ``DataLoader``,
the YAML's numpy dataset and ``Quantization.fit`` (tests/test_corpus.py runs the real models).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.backends.onnxruntime.batching import BatchLayout, parse_batch_axes
from lpot_ir.backends.onnxruntime.session import input_specs
from lpot_ir.calibration import calibrate, load_calibration_files
from lpot_ir.cli import main
from lpot_ir.data import DataLoader
from lpot_ir.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 4)).astype(np.float32)


def _vad_like(named: bool = True, state_dims: tuple = (2, "batch", 4)) -> onnx.ModelProto:
    """``input [batch, 8]``, ``state [2, batch, 4]``, a scalar ``sr``: out = (input @ W + mean(state)) * sr / 16000."""
    batch = "batch" if named else None
    state_shape = [d if (named or d != "batch") else None for d in state_dims]
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["h"], name="mm"),
        helper.make_node("ReduceMean", ["state"], ["s"], axes=[0], keepdims=0, name="mean"),
        helper.make_node("Add", ["h", "s"], ["y"], name="add"),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Div", ["srf", "k"], ["scale"], name="div"),
        helper.make_node("Mul", ["y", "scale"], ["out"], name="mul"),
        helper.make_node("Unsqueeze", ["y", "zero"], ["y1"], name="unsq"),
        helper.make_node("Add", ["state", "y1"], ["stateN"], name="next"),
    ]
    graph = helper.make_graph(
        nodes,
        "vad_like",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 8]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, state_shape),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 4]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, state_shape),
        ],
        [
            numpy_helper.from_array(W, "W"),
            numpy_helper.from_array(np.array(16000.0, np.float32), "k"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _linear(shape: list, name: str = "x") -> onnx.ModelProto:
    """``y = x @ W`` on the last axis (20 -> 5); ``shape`` may hold -1 / 0 as Paddle exports write them."""
    weight = RNG.standard_normal((shape[-1], 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", [name, "W"], ["y"], name="mm")],
        "linear",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:-1], 5])],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fixed_batch_cnn() -> onnx.ModelProto:
    """A classifier whose batch is fixed at 1 (like the model zoo's SqueezeNet ``data_0 [1, 3, 224, 224]``)."""
    conv = RNG.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3
    fc = RNG.standard_normal((6, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
            helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
            helper.make_node("MatMul", ["f", "fc_w"], ["logits"], name="fc"),
        ],
        "fixed1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(fc, "fc_w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feed(samples: int = 1, sr: int = 16000) -> dict[str, np.ndarray]:
    return {
        "input": RNG.standard_normal((samples, 8)).astype(np.float32),
        "state": RNG.standard_normal((2, samples, 4)).astype(np.float32),
        "sr": np.array(sr, np.int64),
    }


def _axes(model: object, **kw: object) -> dict:
    return BatchLayout(model, **kw).axes()  # type: ignore[arg-type]


# -- the rules --------------------------------------------------------------------------------------------


def test_batch_axes_come_from_shared_dimension_names_and_scalars_are_not_batched() -> None:
    layout = BatchLayout(_vad_like())
    assert layout.axes() == {"input": 0, "state": 1, "sr": None} and layout.fixed is None
    # without names: axis 0, except where axis 0 disagrees with the model's batch (state's 2): its dynamic axis
    assert _axes(_vad_like(named=False)) == {"input": 0, "state": 1, "sr": None}
    # a fixed batch: state [2, 1, 4] keeps it on the axis of size 1; a static input beside a dynamic batch is not batched
    assert _axes([("input", (1, 8), "float32"), ("state", (2, 1, 4), "float32")]) == {"input": 0, "state": 1}
    assert _axes([("input", ("T", 576), "float32"), ("h", (1, 1, 128), "float32")]) == {"input": 0, "h": None}
    # several axes of the fixed size: one exact feed needs no choice (it is never cut or joined)
    odd = BatchLayout([("input", (1, 8), "float32"), ("state", (2, 1, 1, 4), "float32")])
    assert odd.fixed == 1 and "state" not in odd.axes()
    assert len(odd.feeds({"input": np.zeros((1, 8)), "state": np.zeros((2, 1, 1, 4))})) == 1
    # a fixed batch of 1 with a dynamic sequence stays on axis 0
    assert BatchLayout([("ids", (1, "seq"), "int64"), ("mask", (1, "seq"), "int64")]).fixed == 1
    # dims declared -1 or 0 are dynamic
    model = _linear([-1, 3, 0, 20])
    assert input_specs(model)[0].shape == (None, 3, None, 20)
    assert BatchLayout(model).fixed is None
    # the user's setting wins; names and axes are checked
    assert _axes(_vad_like(), batch_axes={"state": -2, "input": None}) == {"input": None, "state": 1, "sr": None}
    with pytest.raises(ConfigError, match=r"'nope'.*its inputs are 'input'"):
        BatchLayout(_vad_like(), {"nope": 0})
    with pytest.raises(ConfigError, match="rank 3"):
        BatchLayout(_vad_like(), {"state": 3})
    assert parse_batch_axes(["state=1", "sr=none"]) == {"state": 1, "sr": None}
    with pytest.raises(ConfigError, match="NAME=AXIS"):
        parse_batch_axes(["state"])


def test_ambiguous_batch_axis_names_the_choices_and_the_setting(tmp_path: Path) -> None:
    model = _vad_like(named=False, state_dims=(2, "batch", "batch"))  # state [2, ?, ?]: axis 1 or 2
    feed = _feed(4)  # state (2, 4, 4): both axes hold 4
    np.savez(tmp_path / "d.npz", **feed)
    with pytest.raises(DataError) as err:
        load_calibration_files(tmp_path / "d.npz", model)
    message = str(err.value)
    assert "'state'" in message and "axis 1 or 2" in message and "(2, 4, 4)" in message
    assert "--batch-axis" in message and "batch_axes" in message and "\n" not in message
    loader = load_calibration_files(tmp_path / "d.npz", model, batch_axes={"state": 1})
    assert [b["state"].shape for b in loader] == [(2, 1, 4)] * 4
    # the data settles it when only one axis fits the other inputs' sample count
    feed["state"] = feed["state"][:, :, :4]
    np.savez(tmp_path / "one.npz", input=feed["input"][:1], state=feed["state"][:, :1], sr=feed["sr"])
    assert load_calibration_files(tmp_path / "one.npz", model).layout.axes()["state"] == 1


# -- files and the command line ----------------------------------------------------------------------------


def test_one_feed_file_with_a_scalar_and_state_on_axis_1_quantizes(tmp_path: Path, capsys) -> None:
    onnx.save(_vad_like(), tmp_path / "vad.onnx")
    feed = _feed(1)
    np.savez(tmp_path / "run.npz", **feed)
    code = main(["quantize", str(tmp_path / "vad.onnx"), "-o", str(tmp_path / "int8.onnx"), "--calib",
                 str(tmp_path / "run.npz")])
    out, err = capsys.readouterr()
    assert code == 0, err
    onnx.checker.check_model(str(tmp_path / "int8.onnx"), full_check=True)
    reference = ort.InferenceSession(str(tmp_path / "vad.onnx")).run(None, feed)
    got = ort.InferenceSession(str(tmp_path / "int8.onnx")).run(None, feed)
    # one-feed calibration: every activation range is exactly this run's, so INT8 is within a few steps
    for a, r in zip(got, reference, strict=True):
        step = (max(float(r.max()), 0) - min(float(r.min()), 0)) / 255
        assert np.abs(a - r).max() <= 4 * step


def test_samples_are_cut_on_each_inputs_batch_axis(tmp_path: Path) -> None:
    model = _vad_like()
    feed = _feed(3)
    np.savez(tmp_path / "three.npz", **feed)
    batches = list(load_calibration_files(tmp_path / "three.npz", model))
    assert [(b["input"].shape, b["state"].shape, b["sr"].shape) for b in batches] == [((1, 8), (2, 1, 4), ())] * 3
    np.testing.assert_array_equal(np.concatenate([b["state"] for b in batches], axis=1), feed["state"])
    # feeds stacked on a new first axis (numpy.stack of the inputs of K runs; sr once per run)
    runs = [_feed(1, sr=8000) for _ in range(5)]
    np.savez(tmp_path / "stacked.npz", **{k: np.stack([r[k] for r in runs]) for k in runs[0]})
    loader = load_calibration_files(tmp_path / "stacked.npz", model)
    got = list(loader)
    assert len(loader) == len(got) == 5 and loader.num_samples == 5
    assert all(g["sr"] == 8000 and g["state"].shape == (2, 1, 4) for g in got)
    np.testing.assert_array_equal(got[3]["state"], runs[3]["state"])
    # calibration counts samples on the batch axes and sees exactly these values
    result = calibrate(model, load_calibration_files(tmp_path / "three.npz", model), tensors=["state"],
                       progress=False)
    assert result.num_samples == 3
    assert result.range("state", "minmax").hi == pytest.approx(float(feed["state"].max()))


def test_inputs_disagreeing_about_samples_name_inputs_shapes_and_axes(tmp_path: Path) -> None:
    feed = _feed(3)
    feed["state"] = feed["state"][:, :2]
    np.savez(tmp_path / "d.npz", **feed)
    with pytest.raises(DataError) as err:
        load_calibration_files(tmp_path / "d.npz", _vad_like())
    message = str(err.value)
    assert "'input' (3, 8) holds 3 sample(s) on axis 0" in message
    assert "'state' (2, 2, 4) holds 2 sample(s) on axis 1" in message and "\n" not in message


def test_fixed_first_dimension_rounds_sampling_size_up_to_whole_batches(tmp_path: Path, caplog) -> None:
    model = _linear([10, 20])
    data = RNG.standard_normal((25, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    with caplog.at_level(logging.WARNING):
        loader = load_calibration_files(tmp_path / "x.npy", model)
        result = calibrate(model, loader, sampling_size=4, progress=False)
    assert [b["x"].shape for b in loader] == [(10, 20)] * 2  # never cut to 4 rows
    assert result.num_samples == 10
    assert "rounded up to 10" in caplog.text and "the last 5 are not used" in caplog.text
    # a dataloader giving whole multiples is split into whole batches; a short last batch is skipped
    result = calibrate(model, [data[:20], data[20:25]], sampling_size=30, progress=False)
    assert result.num_samples == 20
    with pytest.raises(DataError) as err:
        calibrate(model, [data[:4]], progress=False)
    message = str(err.value)
    assert "fixed at 10" in message and "'x'" in message and "(4, 20)" in message and "batch_size=10" in message


def test_dims_declared_minus_one_are_dynamic(tmp_path: Path) -> None:
    model = _linear([-1, 3, 20])  # the PP-OCR classifier declares x [-1, 3, ?, ?]
    data = RNG.standard_normal((4, 3, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    result = calibrate(model, load_calibration_files(tmp_path / "x.npy", model), tensors=["y"], progress=False)
    assert result.num_samples == 4
    y = data @ numpy_helper.to_array(model.graph.initializer[0])
    assert result.range("y", "minmax").hi == pytest.approx(max(float(y.max()), 0.0), rel=1e-5)


# -- dataloaders, the YAML and the Python API --------------------------------------------------------------


def test_lpot_dataloader_over_whole_feeds_and_collated_scalars() -> None:
    model = _vad_like()
    feeds = [_feed(1) for _ in range(4)]
    # DataLoader stacks whole feeds on a new axis (sr becomes shape (2,)): each is used as recorded
    result = calibrate(model, DataLoader(feeds, batch_size=2), tensors=["state", "out"], progress=False)
    assert result.num_samples == 4
    assert result.range("state", "minmax").hi == pytest.approx(max(float(f["state"].max()) for f in feeds))
    # stacked feeds may differ in a non-batched input: each feed is used as recorded
    mixed = [_feed(1, sr=16000), _feed(1, sr=8000)]
    assert calibrate(model, DataLoader(mixed, batch_size=2), progress=False).num_samples == 2
    # a batch (not a stack) whose non-batched input repeats per sample: one value if they are equal
    batch = _feed(2)
    batch["sr"] = np.array([16000, 16000])
    assert calibrate(model, [batch], progress=False).num_samples == 2
    batch["sr"] = np.array([16000, 8000])
    with pytest.raises(DataError, match=r"'sr' is not batched .* 2 different values"):
        calibrate(model, [batch], progress=False)


def _accuracy_of(reference: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]):
    """eval_func: top-1 agreement with the FP32 model on ``feeds`` (1.0 for FP32)."""
    ref_session = ort.InferenceSession(reference.SerializeToString())
    expected = [ref_session.run(None, f)[0].argmax(-1) for f in feeds]

    def evaluate(model: onnx.ModelProto) -> float:
        session = ort.InferenceSession(model.SerializeToString())
        return float(np.mean([np.all(session.run(None, f)[0].argmax(-1) == e) for f, e in zip(feeds, expected, strict=True)]))

    return evaluate


@pytest.mark.slow
def test_fit_with_the_default_strategy_on_a_fixed_batch_1_model(tmp_path: Path) -> None:
    """Quantization.fit on a model whose batch is fixed at 1 (issue 9: the accuracy proxy fed it a batch of 4)."""
    from lpot_ir import Quantization

    model = _fixed_batch_cnn()
    feeds = [{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(12)]
    quantizer = Quantization({"tuning": {"exit_policy": {"max_trials": 3}, "workspace": {"path": str(tmp_path)}}})
    quantizer.model = model
    quantizer.calib_dataloader = [f["x"] for f in feeds]
    quantizer.eval_func = _accuracy_of(model, feeds)
    quantizer.progress = False
    result = quantizer.fit()
    assert quantizer.outcome.trials and result.quantized_nodes
    session = ort.InferenceSession(result.model.SerializeToString())
    assert session.run(None, feeds[0])[0].shape == (1, 4)


@pytest.mark.slow
def test_yaml_numpy_calibration_data_is_read_with_the_models_batch_axes(tmp_path: Path) -> None:
    from lpot_ir import Quantization

    model = _vad_like()
    onnx.save(model, tmp_path / "vad.onnx")
    np.savez(tmp_path / "run.npz", **_feed(2))  # one feed of 2 samples: state (2, 2, 4)
    conf = {
        "model": {"batch_axes": {"sr": None}},
        "quantization": {"calibration": {"dataloader": {"dataset": {"numpy": {"path": str(tmp_path / "run.npz")}}}}},
        "tuning": {"exit_policy": {"performance_only": True}, "workspace": {"path": str(tmp_path / "ws")}},
    }
    quantizer = Quantization(conf)
    quantizer.model = str(tmp_path / "vad.onnx")
    quantizer.progress = False
    result = quantizer.fit()
    assert result.quantized_nodes
    feed = _feed(1)
    assert ort.InferenceSession(result.model.SerializeToString()).run(None, feed)[1].shape == (2, 1, 4)


def test_random_calibration_files_give_a_feed_or_a_one_paragraph_error(tmp_path: Path) -> None:
    """Seeded random .npz files (ranks, sizes, dtypes, missing and extra arrays, stacks) against a model with
    a named batch on axes 0 and 1 and a scalar: every outcome is batches that run or a one-paragraph
    LpotError naming an input or the file; never another exception."""
    from lpot_ir.errors import LpotError

    model = _vad_like()
    session = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(1978)
    dtypes = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]
    outcomes = {"ok": 0, "error": 0}
    for trial in range(200):
        samples = int(rng.integers(0, 4))
        arrays = {k: v for k, v in _feed(max(samples, 1)).items()}
        if samples == 0:
            arrays["input"] = arrays["input"][:0]
        for name in list(arrays):
            roll = rng.random()
            if roll < 0.04:
                del arrays[name]
            elif roll < 0.25:
                shape = tuple(int(d) for d in rng.integers(0, 4, size=int(rng.integers(0, 5))))
                arrays[name] = rng.standard_normal(shape).astype(dtypes[int(rng.integers(len(dtypes)))])
            elif roll < 0.4:
                arrays[name] = arrays[name].astype(dtypes[int(rng.integers(len(dtypes)))])
            elif roll < 0.5:
                arrays[name] = np.stack([arrays[name]] * int(rng.integers(1, 3)))
        if rng.random() < 0.2:
            arrays["extra"] = np.zeros(3)
        path = tmp_path / f"t{trial}.npz"
        np.savez(path, **arrays)
        try:
            for feed in load_calibration_files(path, model):
                session.run(None, feed)
            outcomes["ok"] += 1
        except LpotError as exc:
            message = str(exc)
            assert "\n" not in message and message.endswith((".", ")")), message
            assert any(f"'{n}'" in message for n in ("input", "state", "sr")) or str(path) in message, message
            outcomes["error"] += 1
    assert outcomes["ok"] >= 10 and outcomes["error"] >= 10, outcomes


@pytest.mark.slow
def test_lpot_tune_reads_calibration_files_with_the_same_rules(tmp_path: Path, capsys) -> None:
    onnx.save(_vad_like(named=False), tmp_path / "vad.onnx")  # unnamed dims: state [2, ?, 4]
    np.savez(tmp_path / "run.npz", **_feed(1))
    (tmp_path / "conf.yaml").write_text(
        "tuning:\n  exit_policy:\n    performance_only: true\n"
        f"  workspace:\n    path: {tmp_path / 'ws'}\n"
    )
    argv = ["tune", str(tmp_path / "conf.yaml"), "-m", str(tmp_path / "vad.onnx"), "--calib", str(tmp_path / "run.npz"),
            "--no-progress", "--batch-axis", "state=1"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "model:" in out
    code = main([*argv[:-2], "--batch-axis", "nope=1"])
    err = capsys.readouterr().err
    assert code == 2 and "'nope'" in err and err.count("\n") == 1
