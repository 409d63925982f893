"""Quantization inside control flow: If branches (nested too) and Loop/Scan bodies, on small models.

Calibration reaches branch values through copies specialized to the feeds that take each branch, and
loop-body values through per-iteration scan outputs; the quantized model keeps its If/Loop structure
and its semantics for every input (a branch the calibration data never took stays FP32 and still runs).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cfmodels import (
    growing_loop_model,
    if_feed,
    if_in_loop_model,
    if_model,
    loop_model,
    loop_reference,
    scan_model,
)
from qhelpers import check_valid, run

from lpot_ir.backends.onnxruntime.specialize import specialize
from lpot_ir.calibration import calibrate
from lpot_ir.ir.model import load_model, to_proto
from lpot_ir.ir.quant import Approach, Fp32Category, QuantFormat, TuningConfig
from lpot_ir.quantizer import ModelQuantizer, apply_recipe, default_config
from lpot_ir.tuning.latency import build_latency_model
from lpot_ir.tuning.sensitivity import SensitivityMeter
from lpot_ir.tuning.space import fallback_groups

BRANCH_COMPUTE = ("then_conv", "else_conv", "else_matmul", "inner_then_matmul", "inner_else_matmul")
ALL_PATHS = [if_feed(16, 1.0, seed=1), if_feed(16, -1.0, seed=2), if_feed(8, 0.5, seed=3), if_feed(8, -0.5, seed=4)]


def _all_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Op types of every graph, by graph name (subgraphs included)."""
    found: dict[str, list[str]] = {}

    def visit(graph: onnx.GraphProto) -> None:
        found.setdefault(graph.name, []).extend(n.op_type for n in graph.node)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)

    visit(model.graph)
    return found


def _relative_error(model: onnx.ModelProto, qmodel: onnx.ModelProto, feed: dict[str, np.ndarray]) -> float:
    (y0,), (y1,) = run(model, feed)[:1], run(qmodel, feed)[:1]
    assert y0.shape == y1.shape
    return float(np.abs(y0 - y1).max() / max(float(np.abs(y0).max()), 1e-6))


def _quantized(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], config: TuningConfig | None = None):
    quantizer = ModelQuantizer(model, feeds)
    return quantizer, quantizer.quantize(config or default_config())


# -- If ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def if_result():
    return _quantized(if_model(), ALL_PATHS)


def test_every_branch_the_data_takes_is_quantized_and_keeps_its_if(if_result, tmp_path: Path) -> None:
    model = if_model()
    _quantizer, qm = if_result
    check_valid(qm.model)
    assert all(qm.decisions[name].quantized for name in ("conv0", *BRANCH_COMPUTE)), qm.fp32_nodes
    ops = _all_ops(qm.model)
    assert ops["if_model"].count("If") == 1 and ops["then"].count("If") == 1  # the control flow is kept
    for graph in ("then", "else", "inner_then", "inner_else"):
        assert "DequantizeLinear" in ops[graph], graph  # each branch dequantizes for its own ops
    for feed in ALL_PATHS:  # all four paths through the nested Ifs
        # 8-bit activations and 7/8-bit weights through 2-3 layers: a few % of the output's magnitude
        assert _relative_error(model, qm.model, feed) < 0.08
    # ONNX Runtime fuses DQ -> Conv -> Q inside the branches, where the Q/DQ pairs were put
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(qm.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = _all_ops(onnx.load(str(tmp_path / "optimized.onnx")))
    assert "QLinearConv" in optimized["then"] and "QLinearConv" in optimized["else"]


def test_branch_ranges_come_from_the_feeds_that_take_the_branch() -> None:
    model = load_model(if_model())
    then_feeds = [f for f in ALL_PATHS if int(f["mode"]) == 16]
    result = calibrate(model, ALL_PATHS, progress=False)
    only_then = calibrate(model, then_feeds, progress=False)
    # t_conv is computed only on the 16 kHz feeds: the same range whether or not the others are calibrated
    assert result.range("t_conv", "minmax") == only_then.range("t_conv", "minmax")
    assert "else_branch of If 'mode_if'" in only_then.skipped["e_conv"]
    # the inner If: each inner branch got only the feeds whose sum is positive / negative
    assert result.range("i1_out", "minmax") != result.range("i2_out", "minmax")


def test_a_branch_no_calibration_feed_took_stays_fp32_with_the_reason_and_still_runs() -> None:
    model = if_model()
    feeds = [if_feed(16, 1.0, seed=1), if_feed(16, -1.0, seed=2)]  # mode 16 only
    _quantizer, qm = _quantized(model, feeds)
    check_valid(qm.model)
    assert qm.decisions["then_conv"].quantized and qm.decisions["inner_else_matmul"].quantized
    for name in ("else_matmul",):  # needs e_flat's range, which only the else branch computes
        reason = qm.fp32_nodes[name]
        assert reason.category is Fp32Category.NO_RANGE
        assert "no calibration data reached this branch" in reason.detail
        assert "else_branch of If 'mode_if'" in reason.detail
    for feed in ALL_PATHS[2:]:  # the 8 kHz path: FP32 inside (else_conv reads h, calibrated in the main graph)
        assert _relative_error(model, qm.model, feed) < 0.08


def test_outer_scope_values_and_weights_are_dequantized_inside_the_reading_branch(if_result) -> None:
    _quantizer, qm = if_result
    graphs = {g.name: g for g in _subgraphs(qm.model.graph)}
    else_graph = graphs["else"]
    # Me is a main-graph initializer read by else_matmul: its int8 copy and DQ live in the else branch
    dq_inputs = [n.input[0] for n in else_graph.node if n.op_type == "DequantizeLinear"]
    assert any(name.startswith("Me") for name in dq_inputs)
    # h (main graph, quantized by relu0's output Q) is dequantized at the start of each branch
    first = else_graph.node[0]
    assert first.op_type == "DequantizeLinear" and first.input[0].startswith("h_quantized")


def _subgraphs(graph: onnx.GraphProto):
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield attribute.g
                yield from _subgraphs(attribute.g)


def test_recipe_replays_subgraph_ranges_bit_for_bit(if_result, tmp_path: Path) -> None:
    _quantizer, qm = if_result
    path = qm.save(tmp_path / "model.onnx")
    recipe = json.loads((tmp_path / "model.recipe.json").read_text())
    assert {"h", "t_relu", "t_pool", "e_relu"} <= set(recipe["ranges"]), sorted(recipe["ranges"])
    again = apply_recipe(if_model(), tmp_path / "model.recipe.json")
    assert again.model.SerializeToString() == onnx.load(str(path)).SerializeToString()


def test_fallback_per_node_works_inside_branches(if_result) -> None:
    quantizer, _qm = if_result
    names = {n.name for n in quantizer.nodes}
    assert set(BRANCH_COMPUTE) <= names
    groups = fallback_groups(quantizer.fp32_model, quantizer.nodes)
    assert any({"then_conv", "then_relu"} <= set(group) for group in groups)
    qm = quantizer.quantize(default_config().with_nodes_fp32(["then_conv", "then_relu"]))
    check_valid(qm.model)
    assert qm.fp32_nodes["then_conv"].category is Fp32Category.USER_EXCLUDED
    assert qm.decisions["else_conv"].quantized and qm.decisions["inner_then_matmul"].quantized
    assert _relative_error(if_model(), qm.model, ALL_PATHS[0]) < 0.08


def test_qoperator_lowering_reaches_inside_branches(if_result) -> None:
    quantizer, _qm = if_result
    qm = quantizer.quantize(dataclasses.replace(default_config(), format=QuantFormat.QOPERATOR))
    onnx.checker.check_model(qm.model, full_check=True)
    ops = _all_ops(qm.model)
    assert "QLinearConv" in ops["then"] and "QLinearConv" in ops["else"]
    assert "MatMulIntegerToFloat" in ops["inner_then"]  # reads the then branch's quantized t_flat
    for feed in ALL_PATHS:
        assert _relative_error(if_model(), qm.model, feed) < 0.08


def test_sensitivity_scores_nodes_inside_branches(if_result) -> None:
    quantizer, _qm = if_result
    meter = SensitivityMeter(to_proto(quantizer.fp32_model), quantizer.quantize, ALL_PATHS, top_k=4)
    report = meter.measure(default_config())
    # the four samples take four paths: each group's branch nodes are scored, main-graph nodes in all
    for name in ("conv0", "then_conv", "else_conv", "inner_then_matmul", "inner_else_matmul", "else_matmul"):
        assert report.nodes.get(name, 0.0) > 0, (name, report.nodes)
    assert len({t.tensor for t in report.tensors}) == len(report.tensors)  # merged over groups, once each


def test_latency_model_times_groups_inside_branches(if_result) -> None:
    quantizer, qm = if_result
    fp32 = to_proto(quantizer.fp32_model)
    groups = fallback_groups(quantizer.fp32_model, quantizer.nodes)
    model = build_latency_model(fp32, qm.model, groups, ALL_PATHS[0], seconds=0.2)
    timed = {name for group in model.groups if model.fp32_time[group] > 0 for name in group}
    assert "then_conv" in timed  # the branch ALL_PATHS[0] takes, profiled on the copy specialized to it
    # the edge from the main graph's conv0 into the branch's Conv (without specializing: no edge, no time)
    index = {name: i for i, group in enumerate(model.groups) for name in group}
    assert any(b == index["then_conv"] and a >= 0 for a, b, _ in model.edge_list)


def test_dynamic_approach_quantizes_matmuls_inside_branches() -> None:
    model = if_model()
    config = TuningConfig(approach=Approach.DYNAMIC)
    qm = ModelQuantizer(model, approach=Approach.DYNAMIC).quantize(config)
    check_valid(qm.model)
    assert qm.decisions["inner_then_matmul"].quantized and qm.decisions["else_matmul"].quantized
    ops = _all_ops(qm.model)
    assert "MatMulInteger" in ops["inner_then"] and "DynamicQuantizeLinear" in ops["inner_then"]
    for feed in ALL_PATHS:
        assert _relative_error(model, qm.model, feed) < 0.08


def test_specialize_groups_feeds_by_the_path_they_take() -> None:
    model = if_model()
    groups = specialize(model, ALL_PATHS)
    assert [g.members for g in groups] == [(0,), (1,), (2, 3)]  # the inner If is only in the then branch
    assert groups[0].taken == (("mode_if", "then_branch"), ("inner_if", "then_branch"))
    assert groups[2].taken == (("mode_if", "else_branch"),)
    for group in groups:
        assert not any(n.op_type == "If" for n in group.model.graph.node)
        for member in group.members:  # the copy computes what the model computes on its feeds
            np.testing.assert_array_equal(run(group.model, ALL_PATHS[member])[0], run(model, ALL_PATHS[member])[0])
    # only the Ifs asked for are inlined
    (one,) = specialize(model, ALL_PATHS[:2], select=lambda node: node.name == "mode_if")
    assert one.members == (0, 1) and one.taken == (("mode_if", "then_branch"),)


# -- Loop / Scan -----------------------------------------------------------------------------------------


def test_loop_body_ranges_cover_every_iteration_and_the_body_is_quantized() -> None:
    model = loop_model(trips=3)
    x = np.random.default_rng(5).normal(size=(4, 8)).astype(np.float32)
    result = calibrate(load_model(model), [{"x": x}], progress=False)
    iterations = loop_reference(model, x)
    lo = min(0.0, min(float(v.min()) for v in iterations))
    hi = max(0.0, max(float(v.max()) for v in iterations))
    assert result.range("b_mm1", "minmax").to_list() == pytest.approx([lo, hi], rel=1e-5)
    # more than the first iteration alone
    assert hi > float(iterations[0].max()) or lo < float(iterations[0].min())
    _quantizer, qm = _quantized(model, [{"x": x}])
    check_valid(qm.model)
    assert all(qm.decisions[n].quantized for n in ("matmul", "loop_matmul1", "loop_matmul2"))
    assert _all_ops(qm.model)["loop_model"].count("Loop") == 1
    assert _relative_error(model, qm.model, {"x": x}) < 0.08


def test_scan_body_is_quantized() -> None:
    model = scan_model()
    rng = np.random.default_rng(6)
    feeds = [{"s0": np.zeros((2, 8), np.float32), "x": rng.normal(size=(6, 2, 8)).astype(np.float32)} for _ in range(2)]
    _quantizer, qm = _quantized(model, feeds)
    check_valid(qm.model)
    assert qm.decisions["scan_state_matmul"].quantized and qm.decisions["scan_input_matmul"].quantized
    assert _relative_error(model, qm.model, feeds[0]) < 0.08


def test_a_loop_whose_values_change_shape_stays_fp32_with_the_reason() -> None:
    model = growing_loop_model()
    feed = {"x": np.random.default_rng(7).normal(size=(2, 4)).astype(np.float32)}
    _quantizer, qm = _quantized(model, [feed])
    check_valid(qm.model)
    assert qm.decisions["matmul"].quantized
    reason = qm.fp32_nodes["grow_matmul"]
    assert reason.category is Fp32Category.NO_RANGE and "per iteration" in reason.detail
    assert run(qm.model, feed)[0].shape == run(model, feed)[0].shape == (5, 4)


def test_an_if_inside_a_loop_body_is_unsupported_for_static_with_the_reason() -> None:
    model = if_in_loop_model()
    feed = {"x": np.random.default_rng(8).normal(size=(2, 4)).astype(np.float32)}
    _quantizer, qm = _quantized(model, [feed])
    check_valid(qm.model)
    reason = qm.fp32_nodes["even_matmul"]
    assert reason.category is Fp32Category.UNSUPPORTED and "calibration cannot reach it" in reason.detail
    assert _relative_error(model, qm.model, feed) < 0.08


# -- Silero VAD as shipped: the whole network inside If branches (skipped without the package) ---------


def _speech(rate: int) -> np.ndarray:
    """One sentence spoken by espeak-ng between a second of silence each side (low noise), at ``rate`` Hz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        text = "Voice activity detection finds the parts of a recording where somebody speaks."
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        with wave.open(str(wav)) as f:
            source = f.getframerate()
            audio = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768.0
    times = np.arange(int(len(audio) * rate / source)) / rate
    speech = np.interp(times, np.arange(len(audio)) / source, audio).astype(np.float32) * 0.5
    silence = np.zeros(rate, np.float32)
    stream = np.concatenate([silence, speech, silence])
    return stream + np.random.default_rng(0).normal(size=stream.shape).astype(np.float32) * 1e-3


def _stream(model: bytes | str, audio: np.ndarray, rate: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Chunks as silero's OnnxWrapper forms them (the previous chunk's tail as context, the state carried
    through ``model``): the feeds, and the speech probability of each chunk."""
    chunk, context_size = (512, 64) if rate == 16000 else (256, 32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, context_size), np.float32)
    feeds, probabilities = [], []
    for c in range(len(audio) // chunk):
        window = np.concatenate([context, audio[None, c * chunk : (c + 1) * chunk]], axis=1)
        feed = {"input": window, "state": state, "sr": np.array(rate, np.int64)}
        feeds.append(feed)
        out, state = session.run(None, feed)
        probabilities.append(float(out.reshape(-1)[0]))
        context = window[:, -context_size:]
    return feeds, np.array(probabilities)


@pytest.mark.slow
def test_silero_vad_as_shipped_is_quantized_inside_its_branches_and_runs_at_both_rates() -> None:
    silero = pytest.importorskip("silero_vad", reason="pip install silero-vad")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = Path(silero.__file__).parent / "data" / "silero_vad.onnx"
    fp32 = path.read_bytes()
    audio16, audio8 = _speech(16000), _speech(8000)
    feeds16, fp32_16 = _stream(fp32, audio16, 16000)
    _feeds8, fp32_8 = _stream(fp32, audio8, 8000)
    assert 0.2 < float((fp32_16 > 0.5).mean()) < 0.8  # the stream holds speech and silence

    qm = ModelQuantizer(str(path), feeds16[::3]).quantize()  # calibrated at 16 kHz only
    check_valid(qm.model)
    quantized = [qm.decisions[n] for n in qm.quantized_nodes]
    assert sum(d.op_type == "Conv" for d in quantized) == 6  # the STFT, the 4 encoder and the decoder Convs
    assert all("If_0_then_branch" in d.name for d in quantized)  # sr == 16000 takes the then branch
    unreached = [d for d in qm.fp32_nodes.values() if "no calibration data reached this branch" in d.detail]
    assert unreached and all("else_branch of If 'If_0'" in d.detail for d in unreached)
    assert _all_ops(qm.model)[onnx.load(str(path)).graph.name].count("If") == 1

    int8 = qm.model.SerializeToString()
    _, int8_16 = _stream(int8, audio16, 16000)
    _, int8_8 = _stream(int8, audio8, 8000)
    # the 8 kHz branch calibration never saw runs in FP32, unchanged: the same kernels on the same values
    np.testing.assert_array_equal(int8_8, fp32_8)
    # 16 kHz in INT8: the decisions may move only near the threshold. Measured here: 1% of the confident
    # frames (|p - 0.5| > 0.25) flip and the mean |p_int8 - p_fp32| is 0.03; a CPU without VNNI quantizes
    # weights to 7 bits, so the bounds leave 5x / 3x room
    confident = np.abs(fp32_16 - 0.5) > 0.25
    flipped = (int8_16 > 0.5) != (fp32_16 > 0.5)
    assert confident.sum() > 50 and float(flipped[confident].mean()) <= 0.05
    assert float(np.abs(int8_16 - fp32_16).mean()) <= 0.1
