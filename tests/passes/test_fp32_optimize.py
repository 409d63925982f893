"""The ``fp32-optimize`` pipeline over real graphs: the ONNX zoo's opset-9 models (weights computed by
ConstantOfShape), a small CNN and a small transformer encoder exported from torch. Each comes out
valid (full checker), with its weights as initializers, and computes the same outputs in ORT."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from passes_testutil import RNG, assert_close, check, histogram, run

from lpot_ir.ir import load_model, save_model, to_proto
from lpot_ir.passes import run_pipeline

ZOO_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
BIG = {"light_vgg19", "light_zfnet512", "light_bvlc_alexnet"}  # 60-140 M parameters once folded
SLOW = BIG | {"light_resnet50"}
ZOO = [pytest.param(p, marks=pytest.mark.slow, id=p.stem) if p.stem in SLOW else pytest.param(p, id=p.stem)
       for p in sorted(ZOO_DIR.glob("light_*.onnx"))]


def _randomize_fills(proto: onnx.ModelProto, seed: int) -> None:
    """Give each ConstantOfShape its own positive fill so BN folding sees distinct statistics."""
    rng = np.random.default_rng(seed)
    for node in proto.graph.node:
        if node.op_type == "ConstantOfShape":
            value = next(a for a in node.attribute if a.name == "value")
            value.t.CopyFrom(onnx.numpy_helper.from_array(np.array([rng.uniform(0.01, 0.03)], np.float32)))


@pytest.mark.parametrize("path", ZOO)
def test_zoo_model_folds_weights_and_keeps_outputs(path: Path, tmp_path: Path) -> None:
    proto = onnx.load(path)
    _randomize_fills(proto, seed=len(path.stem))
    model = load_model(proto)
    feeds = {model.graph.inputs[0].name: RNG.standard_normal((1, 3, 224, 224)).astype(np.float32)}
    expected = run(model, feeds)
    n_before = len(model.graph)

    report = run_pipeline(model, "fp32-optimize")

    ops = histogram(model)
    assert "ConstantOfShape" not in ops and "Constant" not in ops and "Dropout" not in ops
    assert report["constant-folding"].changes > 0 and len(model.graph) < n_before
    for node in model.graph:
        if node.op_type in ("Conv", "Gemm", "BatchNormalization"):
            assert all(v is None or v.is_initializer() for v in node.inputs[1:]), node.name
    if path.stem == "light_resnet50":
        assert report["fuse-batchnorm"].details["FuseBatchNormIntoConv"] == 53 and "BatchNormalization" not in ops
    optimized = check(model)
    if path.stem in BIG:  # a file round trip of 250-570 MB of weights only costs time
        assert_close(expected, run(optimized, feeds), rtol=1e-4)
    else:
        reloaded = load_model(save_model(model, tmp_path / "optimized.onnx"))  # IR round trip via a file
        assert histogram(reloaded) == ops
        assert_close(expected, run(reloaded, feeds), rtol=1e-4)
    del model, optimized, proto
    gc.collect()


def _export(module, args) -> onnx.ModelProto:
    import torch

    buffer = io.BytesIO()
    # Not under no_grad: there, eval-mode TransformerEncoderLayer takes a fused fast path the exporter cannot export.
    torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17)
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def torch_mod():
    return pytest.importorskip("torch")


def test_torch_cnn(torch_mod) -> None:
    torch = torch_mod
    torch.manual_seed(0)

    class SmallCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2)
            self.bn_up = torch.nn.BatchNorm2d(4)
            self.drop = torch.nn.Dropout(0.2)
            self.fc = torch.nn.Linear(4 * 16 * 16, 10)
            self.bn_fc = torch.nn.BatchNorm1d(10)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            x = torch.relu(self.bn_up(self.up(x)))
            return self.bn_fc(self.fc(self.drop(torch.flatten(x, 1))))

    net = SmallCNN()
    for bn in (net.bn, net.bn_up, net.bn_fc):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    model = load_model(_export(net, (x,)))
    report = run_pipeline(model, "fp32-optimize")
    details = {rule: n for _, rule, n in report.rules() if n}
    assert details["FuseBatchNormIntoConvTranspose"] == 1 and details["FuseBatchNormIntoGemm"] == 1
    assert histogram(model) == {"Conv": 1, "Relu": 2, "ConvTranspose": 1, "Flatten": 1, "Gemm": 1}
    check(model)
    with torch.no_grad():
        expected = net(x).numpy()
    assert_close([expected], run(model, {model.graph.inputs[0].name: x.numpy()}), rtol=1e-4)


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")
def test_torch_transformer_encoder(torch_mod) -> None:
    torch = torch_mod
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(1, 5, 16)
    model = load_model(_export(encoder, (x,)))
    before = histogram(model)
    report = run_pipeline(model, "fp32-optimize")
    after = histogram(model)
    assert report["constant-folding"].changes > 0
    assert sum(after.values()) < sum(before.values())
    assert "Identity" not in after and "Constant" not in after and "Shape" not in after
    proto = to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    with torch.no_grad():
        expected = encoder(x).numpy()
    assert_close([expected], run(proto, {model.graph.inputs[0].name: x.numpy()}), rtol=1e-4)
