"""Per-op static quantization: every op of the capability table, numerics against FP32 in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType, quantize_nparray
from qhelpers import check_valid, make_model, minmax_ranges, op_histogram, ort_optimized_ops, run

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES
from lpot_ir.ir.quant import (
    DType,
    Granularity,
    OpOverride,
    OpQuantConfig,
    QuantSpec,
    Scheme,
    ScopeKind,
    SpecOverride,
    TuningConfig,
)
from lpot_ir.passes.quantization.qparams import compute_qparams, quantize_array, weight_qparams
from lpot_ir.quantizer import ModelQuantizer

RNG = np.random.default_rng(7)
W_IN = (RNG.normal(size=(4, 3, 3, 3)) * 0.4).astype(np.float32)
B_IN = RNG.normal(size=(4,)).astype(np.float32) * 0.1
W_OUT = (RNG.normal(size=(2, 4, 1, 1)) * 0.4).astype(np.float32)


def _feeds(shape=(2, 3, 8, 8), n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(n)]


def _sandwich(middle: list[onnx.NodeProto], extra: dict | None = None, out_channels_in: int = 4):
    """x -> Conv -> <middle: 'c' -> 'm'> -> Conv -> y, so the op under test has quantized neighbours."""
    w_out = (RNG.normal(size=(2, out_channels_in, 1, 1)) * 0.4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W_in", "B_in"], ["c"], pads=[1, 1, 1, 1], name="conv_in"),
        *middle,
        helper.make_node("Conv", ["m", "W_out"], ["y"], name="conv_out"),
    ]
    inits = {"W_in": W_IN, "B_in": B_IN, "W_out": w_out, **(extra or {})}
    return make_model(nodes, [("x", ["N", 3, 8, 8])], [("y", None)], inits)


def _quantize(model, config=None, feeds=None):
    feeds = feeds or _feeds()
    quantizer = ModelQuantizer(model)
    ranges = minmax_ranges(quantizer.fp32_model, feeds)
    return quantizer.apply_ranges(config or TuningConfig(), ranges), feeds


def _assert_close(model, qmodel, feeds, tolerance=0.06):
    for feed in feeds:
        y0 = run(model, feed)[0]
        y1 = run(qmodel, feed)[0]
        assert y0.shape == y1.shape
        scale = float(np.abs(y0).max()) or 1.0
        assert float(np.abs(y0 - y1).max()) <= tolerance * scale, (np.abs(y0 - y1).max(), scale)


# op under test: (middle nodes 'c' -> 'm', extra initializers, channels reaching conv_out)
CASES = {
    "Relu": ([helper.make_node("Relu", ["c"], ["m"], name="op")], {}, 4),
    "Clip": ([helper.make_node("Clip", ["c", "lo", "hi"], ["m"], name="op")],
             {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}, 4),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["c"], ["m"], alpha=0.1, name="op")], {}, 4),
    "Sigmoid": ([helper.make_node("Sigmoid", ["c"], ["m"], name="op")], {}, 4),
    "MaxPool": ([helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[2, 2], strides=[2, 2], name="op")], {}, 4),
    "AveragePool": ([helper.make_node("AveragePool", ["c"], ["m"], kernel_shape=[2, 2], strides=[2, 2], name="op")],
                    {}, 4),
    # after a Relu: the mean of a zero-mean tensor is a cancellation, tiny next to its quantization step
    "GlobalAveragePool": ([helper.make_node("Relu", ["c"], ["r"]),
                           helper.make_node("GlobalAveragePool", ["r"], ["m"], name="op")], {}, 4),
    "Add": ([helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["c", "r"], ["m"], name="op")], {}, 4),
    "Mul": ([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["m"], name="op")],
            {}, 4),
    "Concat": ([helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[1, 1]),
                helper.make_node("Concat", ["c", "p"], ["m"], axis=1, name="op")], {}, 8),
    "Resize": ([helper.make_node("Resize", ["c", "", "scales"], ["m"], mode="nearest", name="op")],
               {"scales": np.array([1, 1, 2, 2], np.float32)}, 4),
    # edge mode: a zero constant Pad before a Conv is folded into the Conv by fp32-optimize (fuse-pad)
    "Pad": ([helper.make_node("Pad", ["c", "pads"], ["m"], mode="edge", name="op")],
            {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, 4),
    "Transpose": ([helper.make_node("Transpose", ["c"], ["m"], perm=[0, 1, 3, 2], name="op")], {}, 4),
    "Reshape": ([helper.make_node("Reshape", ["c", "shape"], ["m"], name="op")],
                {"shape": np.array([0, 4, 16, 4], np.int64)}, 4),
    "Slice": ([helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["m"], name="op")],
              {"starts": np.array([1], np.int64), "ends": np.array([7], np.int64), "axes": np.array([2], np.int64)}, 4),
    "Split": ([helper.make_node("Split", ["c", "halves"], ["m", "m2"], axis=1, name="op")],
              {"halves": np.array([2, 2], np.int64)}, 2),
    "Squeeze/Unsqueeze": ([helper.make_node("Unsqueeze", ["c", "ax"], ["u"], name="op"),
                           helper.make_node("Squeeze", ["u", "ax"], ["m"], name="op2")],
                          {"ax": np.array([2], np.int64)}, 4),
    "Flatten": ([helper.make_node("Flatten", ["c"], ["f"], axis=1, name="op"),
                 helper.make_node("Reshape", ["f", "shape"], ["m"])], {"shape": np.array([0, 4, 8, 8], np.int64)}, 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_quantized_within_error(case, tmp_path):
    middle, extra, channels = CASES[case]
    model = _sandwich(middle, extra, channels)
    qm, feeds = _quantize(model)
    check_valid(qm.model)
    assert qm.decisions["op"].quantized, qm.decisions["op"]
    for name in ("conv_in", "conv_out"):
        assert qm.decisions[name].quantized
    _assert_close(model, qm.model, feeds)
    hist = op_histogram(qm.model)
    assert hist["QuantizeLinear"] >= 2
    # no requantization: never a DequantizeLinear feeding a QuantizeLinear directly
    producers = {o: n for n in qm.model.graph.node for o in n.output}
    for node in qm.model.graph.node:
        if node.op_type == "QuantizeLinear":
            assert producers.get(node.input[0]) is None or producers[node.input[0]].op_type != "DequantizeLinear"


def test_relu_folds_into_conv_and_ort_fuses_everything(tmp_path):
    model = _sandwich(CASES["MaxPool"][0][:0] + [helper.make_node("Relu", ["c"], ["r"], name="op"),
                      helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2])], {}, 4)
    qm, _ = _quantize(model)
    ops = ort_optimized_ops(qm.model, str(tmp_path / "opt.onnx"))
    assert ops.count("QLinearConv") == 2, ops
    assert "Relu" not in ops and "Conv" not in ops, ops
    assert "DequantizeLinear" in ops  # only the final output is dequantized
    assert ops.count("QuantizeLinear") == 1


@pytest.mark.parametrize(
    "op_type,weight_shape,attrs",
    [
        ("MatMul", (16, 6), {}),
        ("Gemm", (6, 16), {"transB": 1}),
        ("ConvTranspose", (4, 3, 2, 2), {"strides": [2, 2]}),
    ],
)
def test_weighted_ops(op_type, weight_shape, attrs):
    w = (RNG.normal(size=weight_shape) * 0.3).astype(np.float32)
    if op_type == "ConvTranspose":
        inputs, x_shape, bias = ["x", "W"], ["N", 4, 5, 5], {}
    else:
        inputs, x_shape = ["x", "W", "B"] if op_type == "Gemm" else ["x", "W"], ["N", 16]
        bias = {"B": RNG.normal(size=(6,)).astype(np.float32)} if op_type == "Gemm" else {}
    model = make_model([helper.make_node(op_type, inputs, ["y"], name="op", **attrs)], [("x", x_shape)],
                       [("y", None)], {"W": w, **bias})
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=[3 if d == "N" else d for d in x_shape]).astype(np.float32)} for _ in range(2)]
    qm, _ = _quantize(model, feeds=feeds)
    check_valid(qm.model)
    assert qm.decisions["op"].quantized
    _assert_close(model, qm.model, feeds, tolerance=0.04)
    weights = {i.name: i for i in qm.model.graph.initializer}
    assert weights["W_quantized"].data_type == onnx.TensorProto.INT8
    assert "W" not in weights  # the float weight is gone


def test_matmul_of_two_activations_and_gather_embedding():
    table = RNG.normal(size=(10, 8)).astype(np.float32)
    w = RNG.normal(size=(8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "W"], ["q"], name="proj"),
        helper.make_node("Transpose", ["e"], ["et"], perm=[0, 2, 1], name="t"),
        helper.make_node("MatMul", ["q", "et"], ["y"], name="scores"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5, 5])],
        [onnx.numpy_helper.from_array(table, "table"), onnx.numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"ids": np.random.default_rng(i).integers(0, 10, size=(2, 5)).astype(np.int64)} for i in range(2)]
    qm, _ = _quantize(model, feeds=feeds)
    check_valid(qm.model)
    assert all(qm.decisions[n].quantized for n in ("embed", "proj", "scores", "t"))
    gather = next(n for n in qm.model.graph.node if n.op_type == "Gather")
    assert gather.input[0] == "table_quantized"
    _assert_close(model, qm.model, feeds, tolerance=0.05)


@pytest.mark.parametrize("granularity", [Granularity.PER_CHANNEL, Granularity.PER_TENSOR])
@pytest.mark.parametrize("scheme", [Scheme.SYM, Scheme.ASYM])
@pytest.mark.parametrize("act_dtype", [DType.UINT8, DType.INT8])
def test_spec_variants(granularity, scheme, act_dtype):
    model = _sandwich([helper.make_node("Relu", ["c"], ["m"], name="op")])
    config = TuningConfig(global_config=OpQuantConfig(
        activation=QuantSpec(act_dtype, scheme), weight=QuantSpec(DType.INT8, scheme, granularity)))
    qm, feeds = _quantize(model, config)
    check_valid(qm.model)
    _assert_close(model, qm.model, feeds)
    dq = next(n for n in qm.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "W_in_quantized")
    scale = next(i for i in qm.model.graph.initializer if i.name == dq.input[1])
    assert list(scale.dims) == ([4] if granularity is Granularity.PER_CHANNEL else [])
    x_zp = next(i for i in qm.model.graph.initializer if i.name == "x_zero_point")
    expected_type = onnx.TensorProto.UINT8 if act_dtype is DType.UINT8 else onnx.TensorProto.INT8
    assert x_zp.data_type == expected_type
    if scheme is Scheme.SYM:
        assert onnx.numpy_helper.to_array(x_zp).item() == (128 if act_dtype is DType.UINT8 else 0)


def test_per_channel_beats_per_tensor_on_uneven_channels():
    w = W_IN.copy()
    w[0] *= 50.0  # one loud channel ruins a shared scale
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="op")], [("x", ["N", 3, 8, 8])],
                       [("y", None)], {"W": w})
    errors = {}
    for gran in (Granularity.PER_CHANNEL, Granularity.PER_TENSOR):
        config = TuningConfig(global_config=OpQuantConfig(weight=QuantSpec(DType.INT8, Scheme.SYM, gran)))
        qm, _ = _quantize(model, config)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in qm.model.graph.initializer}
        dq = next(n for n in qm.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "W_quantized")
        scale = inits[dq.input[1]].reshape(-1, 1, 1, 1) if gran is Granularity.PER_CHANNEL else inits[dq.input[1]]
        dequantized = (inits["W_quantized"].astype(np.float32) - inits[dq.input[2]].reshape(scale.shape)) * scale
        errors[gran] = float(np.abs(dequantized[1:] - w[1:]).max())
        check_valid(qm.model)
    assert errors[Granularity.PER_CHANNEL] < errors[Granularity.PER_TENSOR] / 10


def test_scoped_override_keeps_node_fp32_with_reason():
    model = _sandwich([helper.make_node("Relu", ["c"], ["m"], name="op")])
    config = TuningConfig().with_override(ScopeKind.NODE_NAME, "conv_out", OpOverride(fp32=True))
    config = config.with_override(ScopeKind.OP_TYPE, "Conv", OpOverride(activation=SpecOverride(dtype=DType.INT8)))
    qm, feeds = _quantize(model, config)
    check_valid(qm.model)
    assert not qm.decisions["conv_out"].quantized
    assert qm.fp32_nodes["conv_out"].category.value == "user_excluded"
    assert qm.decisions["conv_in"].config.activation.dtype is DType.INT8
    assert sum(n.op_type == "Conv" for n in qm.model.graph.node) == 2
    _assert_close(model, qm.model, feeds)


def test_lonely_data_movement_stays_fp32():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2], name="lonely"),
             helper.make_node("Softmax", ["t"], ["y"])]
    model = make_model(nodes, [("x", ["N", 3, 8, 8])], [("y", None)])
    qm, _ = _quantize(model)
    check_valid(qm.model)
    assert qm.fp32_nodes["lonely"].category.value == "not_beneficial"
    assert "QuantizeLinear" not in op_histogram(qm.model)


@pytest.mark.parametrize("dtype,scheme,reduce", [
    (DType.UINT8, Scheme.ASYM, False), (DType.INT8, Scheme.SYM, False), (DType.INT8, Scheme.ASYM, False),
    (DType.UINT8, Scheme.SYM, False), (DType.INT8, Scheme.SYM, True), (DType.UINT8, Scheme.ASYM, True),
])
def test_scale_math_matches_onnxruntime(dtype, scheme, reduce):
    qtype = onnx.TensorProto.UINT8 if dtype is DType.UINT8 else onnx.TensorProto.INT8
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=reduce, symmetric=scheme is Scheme.SYM)
    spec = QuantSpec(dtype, scheme, reduce_range=reduce)
    for lo, hi in [(-1.3, 2.7), (0.0, 5.1), (-3.3, -0.2), (0.0, 0.0), (-1e-3, 7e4)]:
        zp, scale = compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax, symmetric=scheme is Scheme.SYM)
        ours = compute_qparams(lo, hi, spec)
        assert ours.scale.tobytes() == np.asarray(scale, np.float32).tobytes()
        assert int(ours.zero_point) == int(zp)
        data = np.linspace(lo - 1, hi + 1, 101, dtype=np.float32)
        assert np.array_equal(quantize_array(data, ours), quantize_nparray(qtype, data, scale, zp))
    # weights per channel: every channel's parameters match ORT's
    weights = RNG.normal(size=(5, 7)).astype(np.float32)
    params = weight_qparams(weights, QuantSpec(dtype, scheme, Granularity.PER_CHANNEL, reduce_range=reduce), axis=0)
    for c in range(5):
        zp, scale = compute_scale_zp(weights[c].min(), weights[c].max(), qmin, qmax, symmetric=scheme is Scheme.SYM)
        assert params.scale[c] == np.float32(scale) and params.zero_point[c] == zp


def test_every_listed_op_is_in_the_table():
    listed = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
              "GlobalAveragePool", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Resize", "Pad", "Reshape", "Transpose",
              "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "LSTM"}
    assert listed <= set(CAPABILITIES)


def test_bias_add_after_matmul_stays_float_and_matmul_output_is_not_requantized(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="bias_add"),
             helper.make_node("Softmax", ["hb"], ["y"])]
    model = make_model(nodes, [("x", ["N", 7, 16])], [("y", None)],
                       {"W": (RNG.normal(size=(16, 8)) * 0.3).astype(np.float32),
                        "b": RNG.normal(size=(8,)).astype(np.float32)})
    feeds = [{"x": np.random.default_rng(i).normal(size=(2, 7, 16)).astype(np.float32)} for i in range(2)]
    qm, _ = _quantize(model, feeds=feeds)
    check_valid(qm.model)
    assert qm.decisions["mm1"].quantized
    assert qm.fp32_nodes["bias_add"].category.value == "not_beneficial"
    assert op_histogram(qm.model)["QuantizeLinear"] == 1  # the MatMul input only
    assert "MatMulIntegerToFloat" in ort_optimized_ops(qm.model, str(tmp_path / "opt.onnx"))
    _assert_close(model, qm.model, feeds, tolerance=0.03)
