"""shrink-pruned-channels: dead channels leave every tensor of their group; what cannot shrink is declined."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from lpot_ir.ir import to_proto
from lpot_ir.passes import get_pass, run_pipeline
from lpot_ir.passes.pruning import find_channel_groups, shrink_pruned_channels
from tests.passes.passes_testutil import RNG, build, run, tensor, vi


def _conv(name: str, x: str, w: str, b: str | None, out: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [out], name=name, **attrs)


def _weights(shape: tuple[int, ...], zero_rows: list[int] = (), axis: int = 0) -> np.ndarray:  # type: ignore[assignment]
    w = RNG.standard_normal(shape).astype(np.float32)
    index = [slice(None)] * len(shape)
    index[axis] = list(zero_rows)  # type: ignore[call-overload]
    w[tuple(index)] = 0
    return w


def _check(model, before: onnx.ModelProto, x: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    np.testing.assert_allclose(run(after, {"x": x})[0], run(before, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_conv_relu_conv_removes_zero_filters_and_their_input_channels() -> None:
    # Conv(x, W[8]) -> Relu -> Conv(·, V[4, 8]) -> GlobalAveragePool; filters 1, 5 of W are zero with zero bias
    w1 = _weights((8, 3, 3, 3), [1, 5])
    b1 = RNG.standard_normal(8).astype(np.float32)
    b1[[1, 5]] = 0
    model = build(
        [
            _conv("c1", "x", "w1", "b1", "h", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            _conv("c2", "r", "w2", None, "y0", pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["y0"], ["y"], name="gap"),
        ],
        [vi("x", shape=[1, 3, 6, 6])], [vi("y")],
        [tensor("w1", w1), tensor("b1", b1), tensor("w2", _weights((4, 8, 3, 3)))],
    )  # fmt: skip
    before = to_proto(model)
    result = get_pass("shrink-pruned-channels")(model)
    assert result.changes == 2 and result.modified
    inits = {i.name: tuple(i.dims) for i in to_proto(model).graph.initializer}
    assert inits["w1"] == (6, 3, 3, 3) and inits["b1"] == (6,) and inits["w2"] == (4, 6, 3, 3)
    _check(model, before, RNG.standard_normal((1, 3, 6, 6)).astype(np.float32))


def test_nonzero_constant_channels_fold_into_an_unpadded_sink_bias() -> None:
    # zero filters 0 and 2 with biases 0.7 and -0.3: the channels are the constants relu(b) = 0.7 and 0. A 1x1
    # Conv absorbs 0.7 in its bias; a padded 3x3 Conv cannot (the border sees padding zeros, not 0.7), but a zero
    # channel needs no folding, so channel 2 goes either way
    w1 = _weights((6, 3, 1, 1), [0, 2])
    b1 = np.array([0.7, 0.1, -0.3, 0.2, 0.5, -0.1], dtype=np.float32)
    for kernel, pads, removed in ((1, [0, 0, 0, 0], 2), (3, [1, 1, 1, 1], 1)):
        model = build(
            [
                _conv("c1", "x", "w1", "b1", "h"),
                helper.make_node("Relu", ["h"], ["r"], name="relu"),
                _conv("c2", "r", "w2", "b2", "y", pads=pads),
            ],
            [vi("x", shape=[1, 3, 5, 5])], [vi("y")],
            [tensor("w1", w1), tensor("b1", b1), tensor("w2", _weights((4, 6, kernel, kernel))),
             tensor("b2", np.zeros(4, np.float32))],
        )  # fmt: skip
        before = to_proto(model)
        result = shrink_pruned_channels(model)
        assert result.changes == removed, kernel
        _check(model, before, RNG.standard_normal((1, 3, 5, 5)).astype(np.float32))


def test_unused_input_channels_remove_the_producing_filters() -> None:
    # channel pruning: the sink's input slices 0 and 3 are zero, so nothing reads channels 0 and 3
    model = build(
        [
            _conv("c1", "x", "w1", "b1", "h"),
            helper.make_node("BatchNormalization", ["h", "s", "t", "m", "v"], ["n"], name="bn"),
            helper.make_node("Relu", ["n"], ["r"], name="relu"),
            _conv("c2", "r", "w2", None, "y"),
        ],
        [vi("x", shape=[1, 2, 4, 4])], [vi("y")],
        [tensor("w1", _weights((5, 2, 1, 1))), tensor("b1", RNG.standard_normal(5).astype(np.float32)),
         tensor("s", np.ones(5, np.float32)), tensor("t", RNG.standard_normal(5).astype(np.float32)),
         tensor("m", np.zeros(5, np.float32)), tensor("v", np.ones(5, np.float32)),
         tensor("w2", _weights((3, 5, 1, 1), [0, 3], axis=1))],
    )  # fmt: skip
    before = to_proto(model)
    assert shrink_pruned_channels(model).changes == 2
    inits = {i.name: tuple(i.dims) for i in to_proto(model).graph.initializer}
    assert inits["w1"] == (3, 2, 1, 1) and inits["s"] == (3,) and inits["v"] == (3,) and inits["w2"] == (3, 3, 1, 1)
    _check(model, before, RNG.standard_normal((1, 2, 4, 4)).astype(np.float32))


def _declined(model) -> list[str]:  # type: ignore[no-untyped-def]
    result = shrink_pruned_channels(model)
    assert result.changes == 0
    return [g.decline or "" for g in result.declined]


def test_declines_name_their_reason() -> None:
    w = _weights((4, 3, 1, 1), [2])
    cases = {
        "graph output": (
            [_conv("c1", "x", "w", None, "y")], "the channels reach the graph output 'y'"),
        "softmax over channels": (
            [_conv("c1", "x", "w", None, "h"), helper.make_node("Softmax", ["h"], ["s"], name="sm", axis=1),
             _conv("c2", "s", "w2", None, "y")], "Softmax node 'sm': the rewrite cannot shrink"),
        "one branch of an Add": (
            [_conv("c1", "x", "w", None, "a"), _conv("c3", "x", "w3", None, "b"),
             helper.make_node("Add", ["a", "b"], ["h"], name="add"), _conv("c2", "h", "w2", None, "y")], None),
        "grouped conv": (
            [_conv("c1", "x", "w", None, "h"), _conv("g", "h", "wg", None, "y0", group=2),
             _conv("c2", "y0", "w2", None, "y")], "grouped convolution (group=2)"),
    }  # fmt: skip
    for label, (nodes, reason) in cases.items():
        model = build(
            nodes, [vi("x", shape=[1, 3, 4, 4])], [vi("y")],
            [tensor("w", w), tensor("w2", _weights((2, 4, 1, 1))), tensor("w3", _weights((4, 3, 1, 1))),
             tensor("wg", _weights((4, 2, 1, 1)))],
        )  # fmt: skip
        declines = _declined(model)
        if reason is None:  # channel 2 is zero in one branch only: not dead, nothing to decline
            assert declines == [], label
        else:
            assert any(reason in d for d in declines), (label, declines)


def test_flatten_and_concat_offsets_reach_the_classifier() -> None:
    torch = pytest.importorskip("torch")
    from lpot_ir.frontends import resolve_model
    from lpot_ir.ir import load_model

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
            self.expand = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU6())
            self.dw = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.BatchNorm2d(16), torch.nn.ReLU6())
            self.project = torch.nn.Sequential(torch.nn.Conv2d(16, 8, 1), torch.nn.BatchNorm2d(8))
            self.left = torch.nn.Conv2d(8, 4, 3, padding=1)
            self.right = torch.nn.Conv2d(8, 4, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 2 * 2, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = x + self.project(self.dw(self.expand(x)))  # residual: stem and project share channels
            y = torch.relu(torch.cat([self.left(x), self.right(x)], 1))
            return self.fc(torch.nn.functional.max_pool2d(y, 2).flatten(1))

    torch.manual_seed(0)
    net = Net()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    with torch.no_grad():
        for conv, bn, rows in ((net.expand[0], net.expand[1], slice(0, 8)), (net.stem[0], net.stem[1], slice(0, 2)),
                               (net.project[0], net.project[1], slice(0, 2))):  # fmt: skip
            conv.weight[rows] = 0
            if conv.bias is not None:
                conv.bias[rows] = 0
            bn.weight[rows] = 0
            bn.bias[rows] = 0
        net.right.weight[:1] = 0
        net.right.bias[:1] = 0
    x = torch.randn(2, 3, 4, 4)
    proto = resolve_model(net, calib_dataloader=[(x.numpy(), None)]).model
    model = load_model(proto)
    report = run_pipeline(model, "fp32-optimize")
    assert report["shrink-pruned-channels"].changes == 8 + 2 + 1
    groups = {tuple(g.source_nodes): g for g in find_channel_groups(model).groups.values()}
    residual = [g for s, g in groups.items() if len(s) == 2][0]
    assert residual.channels == 6  # stem and project shrank together
    out = to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    fc = {i.name: tuple(i.dims) for i in out.graph.initializer}["fc.weight"]
    assert fc == (5, 7 * 4)  # 7 channels x 2 x 2 features: right's channel 0 left the flattened features
    np.testing.assert_allclose(run(out, {"x": x.numpy()})[0], net(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_gemm_and_matmul_sources_lose_their_zero_output_features() -> None:
    # Gemm(x, W[16, 6]^T, b) -> Relu -> MatMul(·, V[16, 12]) -> Add(c) -> Relu -> Gemm(·, U[12, 3]): rows 3, 9 of
    # W (with zero bias) and columns 0, 4, 5 of V (with zero c) are pruned features; both layers narrow
    w = _weights((16, 6), [3, 9])
    b = RNG.standard_normal(16).astype(np.float32)
    b[[3, 9]] = 0
    v = _weights((16, 12), [0, 4, 5], axis=1)
    c = RNG.standard_normal(12).astype(np.float32)
    c[[0, 4, 5]] = 0
    model = build(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc1", transB=1),
            helper.make_node("Relu", ["h"], ["r"], name="relu1"),
            helper.make_node("MatMul", ["r", "v"], ["m"], name="fc2"),
            helper.make_node("Add", ["m", "c"], ["a"], name="bias2"),
            helper.make_node("Relu", ["a"], ["s"], name="relu2"),
            helper.make_node("Gemm", ["s", "u"], ["y"], name="fc3"),
        ],
        [vi("x", shape=[2, 6])], [vi("y")],
        [tensor("w", w), tensor("b", b), tensor("v", v), tensor("c", c), tensor("u", _weights((12, 3)))],
    )  # fmt: skip
    before = to_proto(model)
    result = get_pass("shrink-pruned-channels")(model)
    assert result.changes == 2 + 3
    inits = {i.name: tuple(i.dims) for i in to_proto(model).graph.initializer}
    assert inits["w"] == (14, 6) and inits["b"] == (14,)
    assert inits["v"] == (14, 9) and inits["c"] == (9,) and inits["u"] == (9, 3)
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    np.testing.assert_allclose(run(after, {"x": x})[0], run(before, {"x": x})[0], rtol=1e-5, atol=1e-5)
