"""The real-model suite's own code (benchmarks/suite): task folders, evaluate, metrics, the op count.

Everything runs on tiny task folders built here (no package data, no downloads): a two-class linear
classifier and a one-number recurrent accumulator, both run by ONNX Runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from real_models import fp32_compute_ops  # noqa: E402
from suite import evaluate as suite_eval  # noqa: E402
from suite import metrics  # noqa: E402
from suite.tasks import write_task_folder  # noqa: E402


def _classifier(weight: np.ndarray) -> onnx.ModelProto:
    """logits = x @ W (x: (batch, 4), W: (4, 3))."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"], name="fc")],
        "clf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _accumulator() -> onnx.ModelProto:
    """out = x + state, stateN = out: the running sum of x over a stream when the state is carried."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "state"], ["out"]), helper.make_node("Identity", ["out"], ["stateN"])],
        "acc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 1])],  # fmt: skip
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, ["batch", 1])],  # fmt: skip
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.fixture(scope="module")
def classifier_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3))
    xs = [rng.standard_normal((5, 4)).astype(np.float32) for _ in range(6)]
    labels = [rng.integers(0, 3, size=5).astype(np.int64) for _ in range(6)]
    folder = tmp_path_factory.mktemp("clf")
    task = {
        "name": "tiny_classifier", "description": "synthetic", "source": {}, "metric": "top1_accuracy",
        "metric_params": {"output": "logits"}, "higher_is_better": True, "approach": "static",
        "inputs": [["x", ["batch", 4], "float32"]], "outputs": [["logits", ["batch", 3], "float32"]],
        "frontend": "onnx",
    }  # fmt: skip
    write_task_folder(
        folder, task, _classifier(weight), [{"x": x} for x in xs[:2]], [{"x": x} for x in xs],
        [{"label": y} for y in labels],
    )  # fmt: skip
    return folder, weight, xs, labels


def test_task_folder_round_trip(classifier_task: tuple) -> None:
    folder, _, xs, labels = classifier_task
    task = suite_eval.load_task(folder)
    assert task["eval_feeds"] == 6 and task["calib_feeds"] == 2 and task["metric"] == "top1_accuracy"
    feeds = suite_eval.load_feeds(folder / "eval.npz")
    refs = suite_eval.load_references(folder / "eval.npz")
    assert [sorted(f) for f in feeds] == [["x"]] * 6  # references are not model inputs
    np.testing.assert_array_equal(feeds[3]["x"], xs[3])
    np.testing.assert_array_equal(refs[5]["label"], labels[5])
    assert len(suite_eval.load_feeds(folder / "calib.npz")) == 2


def test_evaluate_matches_numpy(classifier_task: tuple) -> None:
    folder, weight, xs, labels = classifier_task
    expected = np.mean(np.concatenate([(x @ weight.astype(np.float32)).argmax(1) == y for x, y in zip(xs, labels, strict=True)]))
    assert suite_eval.evaluate(folder / "model.onnx", folder) == pytest.approx(expected, abs=1e-12)
    proto = onnx.load(str(folder / "model.onnx"))
    assert suite_eval.evaluate(proto, folder) == pytest.approx(expected, abs=1e-12)
    subset = [1, 4]
    sub_expected = np.mean(np.concatenate([(xs[i] @ weight.astype(np.float32)).argmax(1) == labels[i] for i in subset]))
    assert suite_eval.evaluate(proto.SerializeToString(), folder, indices=subset) == pytest.approx(sub_expected, abs=1e-12)


def test_evaluate_matches_renamed_inputs_by_position(classifier_task: tuple) -> None:
    """A tool that re-exported the model under other names is still scored on the same feeds."""
    folder, _, _, _ = classifier_task
    proto = onnx.load(str(folder / "model.onnx"))
    proto.graph.input[0].name = "renamed"
    proto.graph.node[0].input[0] = "renamed"
    proto.graph.output[0].name = "scores"
    proto.graph.node[0].output[0] = "scores"
    assert suite_eval.evaluate(proto, folder) == suite_eval.evaluate(folder / "model.onnx", folder)


def test_carried_state_flows_through_the_stream(tmp_path: Path) -> None:
    """With ``carry``, each chunk gets the state the model produced on the previous chunk; the stored
    (here deliberately zero) state is used only where a stream starts."""
    x = np.array([0.2, 0.2, 0.2, 0.2, -0.9, 0.3], dtype=np.float32)
    running = np.cumsum(x)  # 0.2 0.4 0.6 0.8 -0.1 0.2
    feeds = [{"x": np.array([[v]], np.float32), "state": np.zeros((1, 1), np.float32)} for v in x]
    refs = [{"speech": np.array([[running[i] >= 0.5]], np.uint8), "continues": np.array(i > 0)} for i in range(len(x))]
    task = {
        "name": "acc", "description": "", "source": {}, "metric": "vad_frame_f1",
        "metric_params": {"output": "out", "threshold": 0.5}, "higher_is_better": True, "approach": "static",
        "inputs": [["x", ["batch", 1], "float32"], ["state", ["batch", 1], "float32"]],
        "outputs": [["out", ["batch", 1], "float32"], ["stateN", ["batch", 1], "float32"]],
        "frontend": "onnx", "carry": {"stateN": "state"},
    }  # fmt: skip
    write_task_folder(tmp_path, task, _accumulator(), feeds[:2], feeds, refs)
    assert suite_eval.evaluate(tmp_path / "model.onnx", tmp_path) == 1.0
    # Without the carry every chunk sees state 0: no output reaches 0.5, so no speech frame is found.
    assert suite_eval.evaluate(tmp_path / "model.onnx", tmp_path, indices=[0, 2, 4]) == 0.0


def test_ctc_metrics() -> None:
    chars = ["blank", "a", "b", "c", " "]
    # time steps: a a blank b b -> "ab"; " c c " -> "c" after stripping
    probs = np.eye(5)[[[1, 1, 0, 2, 2], [4, 3, 3, 0, 4]]]
    assert metrics.ctc_greedy_decode(probs, chars) == ["ab", " c "]
    outputs = [{"p": probs}]
    refs = [{"text": np.array(["ab", "cc"])}]
    assert metrics.ctc_exact_match(outputs, refs, characters=chars) == 0.5
    assert metrics.ctc_char_accuracy(outputs, refs, characters=chars) == pytest.approx(1 - 1 / 4)
    assert metrics.edit_distance("kitten", "sitting") == 3


def test_retrieval_and_f1_metrics() -> None:
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.6]])
    refs = [{"pair": np.array([1, 0, 3, 2])}]
    # nearest of 0 is 1 (rank 1); of 1 is 0; of 2 is 3; of 3 is 1, partner 2 ranks 3rd
    out = [{"e": emb}]
    assert metrics.pair_retrieval_top1(out, refs, pooling="none") == 0.75
    assert metrics.pair_retrieval_mrr(out, refs, pooling="none") == pytest.approx((1 + 1 + 1 + 1 / 3) / 4)
    mask = np.array([[1, 1, 0, 0]])
    prob = np.array([[0.9, 0.2, 0.7, 0.1]])
    assert metrics.binary_f1([{"o": prob}], [{"mask": mask}]) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert metrics.mean_cosine([{"e": emb}], [{"embedding": emb * 3}], pooling="none") == pytest.approx(1.0)


def test_fp32_compute_ops_counts_only_float_compute(classifier_task: tuple) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    folder, _, _, _ = classifier_task
    assert fp32_compute_ops(onnx.load(str(folder / "model.onnx"))) == (1, 1)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(suite_eval.load_feeds(folder / "calib.npz"))

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    out = folder / "int8.onnx"
    quantize_static(str(folder / "model.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    quantized = onnx.load(str(out))
    assert {n.op_type for n in quantized.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "MatMul"}
    assert fp32_compute_ops(quantized) == (0, 1)
    # the same graph with its activation Q/DQ removed: the MatMul reads FP32 again
    dq_in = next(n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in
                 next(m for m in quantized.graph.node if m.op_type == "MatMul").input[:1])  # fmt: skip
    matmul = next(m for m in quantized.graph.node if m.op_type == "MatMul")
    matmul.input[0] = "x"
    assert dq_in.output[0] not in matmul.input
    assert fp32_compute_ops(quantized) == (1, 1)


def test_fp32_compute_ops_counts_integer_ops_once(classifier_task: tuple) -> None:
    """Dynamic quantization: DynamicQuantizeLinear + MatMulInteger is one INT8 compute op."""
    from onnxruntime.quantization import quantize_dynamic

    folder, _, _, _ = classifier_task
    out = folder / "dynamic.onnx"
    quantize_dynamic(str(folder / "model.onnx"), str(out))
    quantized = onnx.load(str(out))
    assert "MatMulInteger" in {n.op_type for n in quantized.graph.node}
    assert fp32_compute_ops(quantized) == (0, 1)
