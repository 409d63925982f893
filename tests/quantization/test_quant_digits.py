"""A real accuracy test: a small CNN trained on scikit-learn's digits, INT8 top-1 within 1% of FP32."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
from qhelpers import check_valid, session

from lpot_ir.ir.quant import QuantFormat
from lpot_ir.quantizer import ModelQuantizer, default_config

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")


class _DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        )
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def _top1(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    logits = session(model).run(None, {"x": x})[0]
    return float((logits.argmax(axis=1) == y).mean())


@pytest.mark.slow
def test_digits_cnn_int8_accuracy_within_one_percent():
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and the suite runs on 2 shared cores
    try:
        torch.manual_seed(0)
        net = _DigitsCNN()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
        for _epoch in range(15):
            for idx in torch.randperm(len(train)).split(100):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (xt[:1],), buffer, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    fp32 = onnx.load_from_string(buffer.getvalue())
    fp32_top1 = _top1(fp32, x[test], y[test])
    assert fp32_top1 > 0.9  # the network really learned

    calib = [{"x": x[train][i: i + 50]} for i in range(0, 200, 50)]
    quantizer = ModelQuantizer(fp32, calib)
    for fmt in (QuantFormat.QDQ, QuantFormat.QOPERATOR):
        qm = quantizer.quantize(default_config(fmt=fmt))
        check_valid(qm.model, contrib=fmt is QuantFormat.QOPERATOR)
        assert all(d.quantized for d in qm.decisions.values() if d.op_type in ("Conv", "Gemm"))
        int8_top1 = _top1(qm.model, x[test], y[test])
        assert int8_top1 >= fp32_top1 * 0.99, (fp32_top1, int8_top1)
