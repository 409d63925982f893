"""tuning.tensorboard: per-trial TensorBoard runs, read back with TensorBoard's own reader and checked
against the models run here in ONNX Runtime."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from lpot_ir.cli import main as lpot
from lpot_ir.ir.model import to_proto
from lpot_ir.quantizer import default_config
from lpot_ir.tuning import Evaluator, tune
from lpot_ir.tuning.sensitivity import normalized_error
from lpot_ir.tuning.tensorboard import TensorBoardWriter, node_tag
from tests.tuning.helpers import OUTLIER_OPS, make_config


@pytest.fixture(autouse=True)
def _reader_without_tensorflow(monkeypatch):
    """TensorBoard's reader without importing TensorFlow: its own no-TensorFlow switch (the module
    ``tensorboard.compat.notf``, which TensorBoard's TF-free builds ship) selects its stub."""
    monkeypatch.setitem(sys.modules, "tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="TensorBoard is not installed"
)
pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")


def _read(logdir: Path):
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.HISTOGRAMS: 0, event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    return accumulator


def _values(model: onnx.ModelProto, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` in ONNX Runtime with ``names`` added as graph outputs (optimizations off: the Q/DQ
    reference semantics)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feed), strict=True))


def test_trial_run_holds_histograms_errors_and_the_graph(digits, quantizer, tmp_path):
    fp32 = to_proto(quantizer.fp32_model)
    feed = {fp32.graph.input[0].name: digits.calib_data[:8]}
    fallback = OUTLIER_OPS[1]
    candidate = quantizer.quantize(default_config().with_nodes_fp32([fallback]))
    writer = TensorBoardWriter(tmp_path, fp32, [feed], max_samples=8)
    logdir = writer.write_trial(3, candidate)
    assert logdir == tmp_path / "tensorboard" / "trial_3"
    run = _read(logdir)
    histograms, scalars = set(run.Tags()["histograms"]), set(run.Tags()["scalars"])

    conv, relu = OUTLIER_OPS[0], "/stem/stem.2/Relu"  # quantized; the Relu's output is a quantized tensor
    tag = node_tag(conv)
    assert tag == conv[1:]  # '/stem/stem.0/Conv' -> 'stem/stem.0/Conv'
    model = candidate.model
    node = next(n for n in model.graph.node if n.name == conv)
    assert {f"{tag}/output/fp32", f"{tag}/output/int8", f"{tag}/weight/fp32", f"{tag}/weight/int8"} <= histograms
    assert f"error/{tag}" in scalars and f"error/{node_tag(fallback)}" in scalars

    # the values, from independent ORT runs: the FP32 output, and the INT8 model's DQ(Q(output))
    relu_out = next(n.output[0] for n in model.graph.node if n.name == relu)
    dq_out = next(
        d.output[0]
        for q in model.graph.node if q.op_type == "QuantizeLinear" and q.input[0] == relu_out
        for d in model.graph.node if d.op_type == "DequantizeLinear" and d.input[0] == q.output[0]
    )  # fmt: skip
    fp32_relu_out = next(n.output[0] for n in fp32.graph.node if n.name == relu)
    fp32_node = next(n for n in fp32.graph.node if n.name == conv)
    reference = _values(fp32, [fp32_relu_out], feed)[fp32_relu_out]
    actual = _values(model, [dq_out], feed)[dq_out]
    scale = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == next(
        q.input[1] for q in model.graph.node if q.op_type == "QuantizeLinear" and q.input[0] == relu_out))  # fmt: skip
    assert np.allclose(actual / scale, np.round(actual / scale), atol=1e-3)  # on the INT8 grid
    for name, array in ((f"{node_tag(relu)}/output/fp32", reference), (f"{node_tag(relu)}/output/int8", actual)):
        (event,) = run.Histograms(name)
        h = event.histogram_value
        assert event.step == 3 and h.num == array.size
        assert h.min == pytest.approx(float(array.min()), abs=1e-6) and h.max == pytest.approx(float(array.max()), abs=1e-6)
        assert h.sum == pytest.approx(float(array.astype(np.float64).sum()), rel=1e-4, abs=1e-3)
    (error,) = run.Scalars(f"error/{node_tag(relu)}")
    assert error.value == pytest.approx(normalized_error(actual, reference), rel=1e-4)
    assert 0 < error.value < 0.5  # quantization moved it, not destroyed it

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_dq = next(n for n in model.graph.node if n.output[0] == node.input[1])
    q, scale = inits[weight_dq.input[0]].astype(np.float64), inits[weight_dq.input[1]].astype(np.float64)
    zero = inits[weight_dq.input[2]].astype(np.float64) if len(weight_dq.input) > 2 else 0.0
    shape = (-1,) + (1,) * (q.ndim - 1)
    dequantized = (q - np.reshape(zero, shape) if np.ndim(zero) else q - zero) * (np.reshape(scale, shape) if scale.ndim else scale)
    fp32_weight = next(numpy_helper.to_array(i) for i in fp32.graph.initializer if i.name == fp32_node.input[1])
    w32 = run.Histograms(f"{tag}/weight/fp32")[0].histogram_value
    w8 = run.Histograms(f"{tag}/weight/int8")[0].histogram_value
    assert w32.num == fp32_weight.size and w32.max == pytest.approx(float(fp32_weight.max()), rel=1e-6)
    assert w8.num == q.size and w8.max == pytest.approx(float(dequantized.max()), rel=1e-5)
    assert w8.min == pytest.approx(float(dequantized.min()), rel=1e-5)

    graph = run.Graph()
    devices = {n.name: n.device for n in graph.node}
    ops = {n.name: n.op for n in graph.node}
    assert ops[conv] == "Conv" and devices[conv] == "/int8" and devices[fallback] == "/fp32"
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops.values())
    assert all(n.attr["scale"].s and n.attr["zero_point"].s for n in graph.node if n.op == "QuantizeLinear")


def test_tuning_writes_one_run_per_trial_and_lpot_shows_the_command(digits, quantizer, tmp_path, capsys, caplog):
    config = make_config(tmp_path, max_trials=3, tensorboard=True)
    outcome = tune(config, quantizer, Evaluator(eval_func=digits.eval_func), progress=False)
    assert "not supported" not in caplog.text
    runs = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert runs == [f"trial_{t.index}" for t in outcome.trials]
    for trial in outcome.trials:
        run = _read(tmp_path / "tensorboard" / f"trial_{trial.index}")
        (accuracy,) = run.Scalars("trial/accuracy")
        assert accuracy.step == trial.index and accuracy.value == pytest.approx(trial.accuracy, rel=1e-6)
        assert any(tag.startswith("error/") for tag in run.Tags()["scalars"])
        assert len(run.Graph().node) > 10
    assert lpot(["tensorboard", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {tmp_path / 'tensorboard'}" in printed and "trial_0" in printed
    assert lpot(["tensorboard", str(tmp_path / "nowhere")]) == 2
    assert "tuning.tensorboard: true" in capsys.readouterr().err
