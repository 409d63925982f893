"""What ONNX Runtime makes of quantized encoders: no slow SkipLayerNormalization, the fused integer kernels,
one DynamicQuantizeLinear per shared input (structure only; timings live in benchmarks/quantize.py)."""

from __future__ import annotations

import io
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper
from qhelpers import check_valid, make_model, op_histogram, ort_optimized_ops, run

from lpot_ir.backends.onnxruntime.capabilities import SLOW_ORT_FUSIONS
from lpot_ir.ir.model import from_proto, to_proto
from lpot_ir.ir.quant import Approach, TuningConfig
from lpot_ir.passes.quantization import avoid_slow_ort_fusions
from lpot_ir.quantizer import quantize

torch = pytest.importorskip("torch")

HIDDEN, HEADS, SEQ, LAYERS = 32, 4, 8, 2


class _Layer(torch.nn.Module):
    """A BERT/MiniLM layer: separate Q/K/V projections reading one input, GELU MLP, post-LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (torch.nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.norm1, self.norm2 = torch.nn.LayerNorm(HIDDEN), torch.nn.LayerNorm(HIDDEN)
        self.up, self.down = torch.nn.Linear(HIDDEN, 4 * HIDDEN), torch.nn.Linear(4 * HIDDEN, HIDDEN)

    def forward(self, x):
        b, s, _ = x.shape
        d = HIDDEN // HEADS

        def split(t):
            return t.reshape(b, s, HEADS, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        context = (torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1) @ v).transpose(1, 2).reshape(b, s, HIDDEN)
        x = self.norm1(x + self.o(context))
        return self.norm2(x + self.down(torch.nn.functional.gelu(self.up(x))))


@pytest.fixture(scope="module")
def encoder() -> onnx.ModelProto:
    torch.manual_seed(0)
    module = torch.nn.Sequential(*[_Layer() for _ in range(LAYERS)]).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, SEQ, HIDDEN),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def _feed(seed: int, batch: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=(batch, SEQ, HIDDEN)).astype(np.float32)}


def test_skip_layer_norm_is_a_listed_slow_fusion():
    assert "SkipLayerNormalization" in SLOW_ORT_FUSIONS


def test_dynamic_encoder_fuses_like_ort_without_skip_layer_norm(encoder, tmp_path):
    qm = quantize(encoder, TuningConfig(approach=Approach.DYNAMIC))
    check_valid(qm.model)
    raw = op_histogram(qm.model)
    # four tensors feed weight MatMuls per layer (x -> Q/K/V shared, context, norm1 output, GELU output)
    assert raw["DynamicQuantizeLinear"] == 4 * LAYERS and raw["MatMulInteger"] == 6 * LAYERS
    assert raw.get("Sum") == 2 * LAYERS and raw["LayerNormalization"] == 2 * LAYERS
    for node in qm.model.graph.node:  # every residual sum feeds a LayerNormalization
        if node.op_type == "Sum":
            readers = [n.op_type for n in qm.model.graph.node if node.output[0] in n.input]
            assert readers == ["LayerNormalization"], readers
    ops = Counter(ort_optimized_ops(qm.model, str(tmp_path / "opt.onnx")))
    assert ops["SkipLayerNormalization"] == 0, ops
    assert ops["LayerNormalization"] == 2 * LAYERS, ops
    # Q/K/V read one shared DynamicQuantizeLinear (MatMulIntegerToFloat); o/up/down fuse it in
    assert ops["DynamicQuantizeLinear"] == LAYERS and ops["MatMulIntegerToFloat"] == 3 * LAYERS, ops
    assert ops["DynamicQuantizeMatMul"] == 3 * LAYERS, ops
    assert not {"MatMulInteger", "Cast"} & set(ops), ops  # all integer MatMuls fused, bias Adds absorbed
    for batch in (1, 3):
        y0, y1 = run(encoder, _feed(batch, batch))[0], run(qm.model, _feed(batch, batch))[0]
        # measured 0.0026-0.0043 of max|y| here (AMX CPU); seeded weights (same on every CPU), and CPUs'
        # INT8 kernels differ by single rounding steps (1/255 of a range)
        assert np.abs(y0 - y1).max() < 0.1 * np.abs(y0).max()


def test_static_encoder_has_no_skip_layer_norm(encoder, tmp_path):
    feeds = [_feed(s) for s in range(3)]
    qm = quantize(encoder, TuningConfig(), calib_dataloader=feeds)
    check_valid(qm.model)
    ops = Counter(ort_optimized_ops(qm.model, str(tmp_path / "opt.onnx")))
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 2 * LAYERS, ops
    y0, y1 = run(encoder, feeds[0])[0], run(qm.model, feeds[0])[0]
    # measured 0.0036 of max|y| here (AMX CPU); seeded weights (same on every CPU), and CPUs'
    # INT8 kernels differ by single rounding steps (1/255 of a range)
    assert np.abs(y0 - y1).max() < 0.15 * np.abs(y0).max()
    module = qm.export("pytorch")  # the residual Sum lowers back to torch
    with torch.no_grad():
        y2 = module(torch.from_numpy(feeds[0]["x"])).numpy()
    # the lowered module replays the same Q/DQ in torch: measured 1.2e-7 of max|y|; 0.02 is several INT8 steps
    np.testing.assert_allclose(y2, y1, atol=0.02 * np.abs(y0).max())


def _residual_model(*, bias_add: bool = False, second_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {"g": rng.uniform(0.5, 1.5, 16).astype(np.float32), "b": rng.normal(size=16).astype(np.float32)}
    nodes = []
    if bias_add:
        inits["c"] = rng.normal(size=16).astype(np.float32)
        nodes.append(helper.make_node("Add", ["x", "c"], ["s"], name="add"))
    else:
        nodes.append(helper.make_node("Add", ["x", "y"], ["s"], name="add"))
    nodes.append(helper.make_node("LayerNormalization", ["s", "g", "b"], ["z"], name="ln", axis=-1, epsilon=1e-5))
    outputs: list[tuple[str, list[int | str] | None]] = [("z", ["n", 4, 16])]
    if second_reader:
        nodes.append(helper.make_node("Relu", ["s"], ["r"], name="relu"))
        outputs.append(("r", ["n", 4, 16]))
    inputs = [("x", ["n", 4, 16])] + ([] if bias_add else [("y", ["n", 4, 16])])
    return make_model(nodes, inputs, outputs, inits)


def _rewrite(proto: onnx.ModelProto) -> tuple[int, onnx.ModelProto]:
    model = from_proto(proto)
    report = avoid_slow_ort_fusions(model)
    return report.steps, to_proto(model)


def test_residual_add_before_layer_norm_becomes_sum(tmp_path):
    proto = _residual_model()
    assert "SkipLayerNormalization" in ort_optimized_ops(proto, str(tmp_path / "before.onnx"))  # the fusion is real
    steps, out = _rewrite(proto)
    assert steps == 1 and op_histogram(out) == {"Sum": 1, "LayerNormalization": 1}
    assert [n.name for n in out.graph.node] == ["add", "ln"]  # names kept (decisions and aliases use them)
    check_valid(out)
    ops = ort_optimized_ops(out, str(tmp_path / "after.onnx"))
    assert sorted(ops) == ["LayerNormalization", "Sum"], ops
    rng = np.random.default_rng(1)
    feed = {k: rng.normal(size=(2, 4, 16)).astype(np.float32) for k in ("x", "y")}
    # the original runs ORT's SkipLayerNormalization kernel (another summation order): equal to rounding
    np.testing.assert_allclose(run(out, feed)[0], run(proto, feed)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["bias_add", "second_reader"])
def test_adds_ort_does_not_fuse_stay(kind):
    proto = _residual_model(**{kind: True})
    steps, out = _rewrite(proto)
    assert steps == 0 and op_histogram(out).get("Sum") is None
