"""Dynamic quantization: a transformer encoder (torch), an LSTM, Conv; and static on the same encoder."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper
from qhelpers import check_valid, make_model, op_histogram, ort_optimized_ops, run

from lpot_ir.ir.quant import Approach, TuningConfig
from lpot_ir.quantizer import ModelQuantizer, quantize

torch = pytest.importorskip("torch")

VOCAB, SEQ = 60, 9


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 32)
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)))


@pytest.fixture(scope="module")
def encoder() -> onnx.ModelProto:
    torch.manual_seed(0)
    module = _Encoder().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.randint(0, VOCAB, (2, SEQ)),), buffer, dynamo=False, opset_version=17,
            input_names=["ids"], output_names=["y"], dynamic_axes={"ids": {0: "batch", 1: "seq"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def _ids(seed: int, batch: int = 2, seq: int = SEQ) -> dict[str, np.ndarray]:
    return {"ids": np.random.default_rng(seed).integers(0, VOCAB, size=(batch, seq)).astype(np.int64)}


def _relative_error(model, qmodel, feed) -> float:
    y0, y1 = run(model, feed)[0], run(qmodel, feed)[0]
    return float(np.abs(y0 - y1).max() / np.abs(y0).max())


def test_dynamic_transformer_encoder(encoder, tmp_path):
    qm = quantize(encoder, TuningConfig(approach=Approach.DYNAMIC))
    check_valid(qm.model)
    by_type: dict[str, list[bool]] = {}
    for decision in qm.decisions.values():
        by_type.setdefault(decision.op_type, []).append(decision.quantized)
    assert any(by_type.get("MatMul", [])) or any(by_type.get("Gemm", []))
    assert any(by_type["Gather"])  # the embedding table is stored int8
    assert any("/self_attn/" in n and d.quantized for n, d in qm.decisions.items())  # attention MatMuls
    hist = op_histogram(qm.model)
    assert hist.get("DynamicQuantizeLinear", 0) >= 4 and hist.get("MatMulInteger", 0) >= 4
    for seed, batch in ((1, 3), (2, 1)):  # other batch sizes than the export used
        # measured 0.012-0.018 of max|y| here (AMX CPU); seeded weights (same on every CPU), and CPUs'
        # INT8 kernels differ by single rounding steps (1/255 of a range)
        assert _relative_error(encoder, qm.model, _ids(seed, batch)) < 0.1
    ops = ort_optimized_ops(qm.model, str(tmp_path / "opt.onnx"))
    assert {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"} & set(ops), ops


def test_static_transformer_encoder(encoder):
    feeds = [_ids(s) for s in range(4)]
    qm = quantize(encoder, TuningConfig(), calib_dataloader=feeds)
    check_valid(qm.model)
    assert len(qm.quantized_nodes) >= 8
    # measured 0.011 of max|y| here (AMX CPU); seeded weights (same on every CPU), and CPUs'
    # INT8 kernels differ by single rounding steps (1/255 of a range)
    assert _relative_error(encoder, qm.model, feeds[0]) < 0.15


def test_dynamic_lstm_weights_int8():
    hidden, inp = 6, 4
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(1, 4 * hidden, inp)) * 0.3).astype(np.float32)
    r = (rng.normal(size=(1, 4 * hidden, hidden)) * 0.3).astype(np.float32)
    b = (rng.normal(size=(1, 8 * hidden)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "h"], hidden_size=hidden, name="lstm")]
    model = make_model(nodes, [("x", ["seq", "batch", inp])], [("y", None), ("h", None)], {"W": w, "R": r, "B": b})
    qm = ModelQuantizer(model, approach=Approach.DYNAMIC).quantize(TuningConfig(approach=Approach.DYNAMIC))
    check_valid(qm.model)
    assert qm.decisions["lstm"].quantized
    inits = {i.name: i for i in qm.model.graph.initializer}
    assert inits["W_quantized"].data_type == onnx.TensorProto.INT8 and "W" not in inits
    feed = {"x": rng.normal(size=(5, 2, inp)).astype(np.float32)}
    for y0, y1 in zip(run(model, feed), run(qm.model, feed), strict=True):
        # measured 0.008 (y) and 0.011 (h) of max|y| here (AMX CPU); numpy-seeded weights, 4x to spare
        assert np.abs(y0 - y1).max() < 0.05 * np.abs(y0).max()


def test_dynamic_conv_and_gemm():
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "Wg", "Bg"], ["y"], transB=1, alpha=0.5, beta=2.0, name="gemm"),
    ]
    inits = {"W": (rng.normal(size=(4, 3, 3, 3)) * 0.3).astype(np.float32),
             "B": rng.normal(size=(4,)).astype(np.float32),
             "Wg": (rng.normal(size=(5, 4 * 16)) * 0.2).astype(np.float32),
             "Bg": rng.normal(size=(5,)).astype(np.float32)}
    model = make_model(nodes, [("x", ["N", 3, 4, 4])], [("y", None)], inits)
    qm = quantize(model, TuningConfig(approach=Approach.DYNAMIC))
    check_valid(qm.model)
    assert qm.decisions["conv"].quantized and qm.decisions["gemm"].quantized
    hist = op_histogram(qm.model)
    assert hist["ConvInteger"] == 1 and hist["MatMulInteger"] == 1 and "Gemm" not in hist
    feed = {"x": rng.normal(size=(3, 3, 4, 4)).astype(np.float32)}
    y0, y1 = run(model, feed)[0], run(qm.model, feed)[0]
    # measured 0.0043 of max|y| here (AMX CPU); numpy-seeded weights, 11x to spare
    assert np.abs(y0 - y1).max() < 0.05 * np.abs(y0).max()
