"""Models as they come from other people: old opsets, Constant-node weights, If/Loop, dynamic dims,
shared weights, several inputs and outputs. Every output must be valid and run; nothing may crash."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qhelpers import check_valid, make_model, minmax_ranges, op_histogram, run

from lpot_ir.backends.onnxruntime.capabilities import quantizable_nodes
from lpot_ir.ir.model import load_model
from lpot_ir.ir.quant import FP32, Approach, Fp32Category, TuningConfig
from lpot_ir.passes.quantization.annotate import annotate
from lpot_ir.quantizer import ModelQuantizer, quantize

RNG = np.random.default_rng(3)


def _weights(*shape, scale=0.3):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _apply(model, feeds, config=None):
    quantizer = ModelQuantizer(model)
    return quantizer.apply_ranges(config or TuningConfig(), minmax_ranges(quantizer.fp32_model, feeds))


def _calibrated(model, feeds, config=None):
    """Quantized with lpot-ir's own calibration (it reaches values inside If branches and loop bodies)."""
    return ModelQuantizer(model, feeds).quantize(config or TuningConfig())


def _close(model, qmodel, feed, tolerance=0.06):
    for y0, y1 in zip(run(model, feed), run(qmodel, feed), strict=True):
        assert y0.shape == y1.shape
        assert np.abs(y0 - y1).max() <= tolerance * max(float(np.abs(y0).max()), 1e-6)


@pytest.mark.slow
def test_old_opset_zoo_model_with_computed_weights(zoo_dir):
    """SqueezeNet at opset 9, weights computed by ConstantOfShape, initializers listed as inputs."""
    model = onnx.load(str(zoo_dir / "light_squeezenet.onnx"))
    assert model.opset_import[0].version < 13
    inits = {i.name for i in model.graph.initializer}
    data_input = next(i for i in model.graph.input if i.name not in inits)
    name = data_input.name
    shape = [d.dim_value for d in data_input.type.tensor_type.shape.dim]
    feeds = [{name: np.random.default_rng(i).random(size=shape).astype(np.float32)} for i in range(2)]
    qm = quantize(model, calib_dataloader=feeds)
    check_valid(qm.model)
    assert qm.model.opset_import[0].version >= 13
    assert len(qm.quantized_nodes) > 20
    convs = [d for d in qm.decisions.values() if d.op_type == "Conv"]
    assert convs and all(d.quantized for d in convs)
    run(qm.model, feeds[0])


def test_weights_in_constant_nodes():
    w = _weights(4, 3, 3, 3)
    nodes = [
        helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "Wc")),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
    ]
    model = make_model(nodes, [("x", ["N", 3, 6, 6])], [("y", None)])
    feed = {"x": RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)}
    qm = _apply(model, [feed])
    check_valid(qm.model)
    assert qm.decisions["conv"].quantized
    assert "Constant" not in op_histogram(qm.model)
    _close(model, qm.model, feed)


def _if_model():
    w = _weights(8, 8)
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["h", "Wt"], ["t1"], name="then_matmul"),
         helper.make_node("Relu", ["t1"], ["t2"], name="then_relu"),
         helper.make_node("MatMul", ["t2", "Wt2"], ["t_out"], name="then_matmul2")], "then", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(_weights(8, 8), "Wt"), numpy_helper.from_array(_weights(8, 8), "Wt2")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["e_out"], name="else_relu")], "else", [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, ["N", 8])],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["s"], ["s2"], keepdims=0),
        helper.make_node("Greater", ["s2", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph, name="if"),
    ]
    return make_model(nodes, [("x", ["N", 8])], [("y", ["N", 8])], {"W": w, "zero": np.array(0, np.float32)})


def test_control_flow_branches_are_quantized_where_calibration_reached_them():
    model = _if_model()
    feeds = [{"x": RNG.normal(size=(3, 8)).astype(np.float32) + s} for s in (-1.0, 1.0)]
    qm = _calibrated(model, feeds)
    check_valid(qm.model)
    assert all(qm.decisions[n].quantized for n in ("matmul", "then_matmul", "then_relu", "then_matmul2"))
    for feed in feeds:  # both branches run
        _close(model, qm.model, feed)
    # calibrated only on feeds that take the else branch: the then branch stays FP32 where it needs a range
    # from inside the branch (then_matmul reads h, calibrated in the main graph, and is still quantized)
    low = [feeds[0]]
    qm = _calibrated(model, low)
    reason = qm.fp32_nodes["then_matmul2"]
    assert reason.category is Fp32Category.NO_RANGE and "no calibration feed took the then_branch of If 'if'" in reason.detail
    assert qm.decisions["then_matmul"].quantized
    check_valid(qm.model)
    _close(model, qm.model, feeds[0])
    (y,) = run(qm.model, feeds[1])  # the branch calibration never saw still runs (h is out of its range there)
    assert y.shape == (3, 8) and np.isfinite(y).all()


def test_loop_body_is_quantized_from_every_iteration():
    body = helper.make_graph(
        [helper.make_node("MatMul", ["v_in", "Wl"], ["v_out"], name="loop_matmul"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32) * 0.9, "Wl")],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
        helper.make_node("Loop", ["trips", "", "h"], ["y"], body=body, name="loop"),
    ]
    model = make_model(nodes, [("x", ["N", 4])], [("y", ["N", 4])],
                       {"W": _weights(4, 4), "trips": np.array(3, np.int64)})
    feed = {"x": RNG.normal(size=(2, 4)).astype(np.float32)}
    qm = _calibrated(model, [feed])
    check_valid(qm.model)
    assert qm.decisions["matmul"].quantized and qm.decisions["loop_matmul"].quantized
    _close(model, qm.model, feed)


def test_dynamic_batch_and_sequence_dimensions():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    model = make_model(nodes, [("x", ["batch", "seq", 16])], [("y", None)], {"W": _weights(16, 16),
                                                                          "W2": _weights(16, 4)})
    feeds = [{"x": RNG.normal(size=(b, s, 16)).astype(np.float32)} for b, s in ((1, 7), (3, 2))]
    for approach in (Approach.STATIC, Approach.DYNAMIC):
        qm = _apply(model, feeds, TuningConfig(approach=approach))
        check_valid(qm.model)
        assert qm.decisions["mm1"].quantized and qm.decisions["mm2"].quantized
        # other shapes than calibration saw (values inside the calibrated range)
        _close(model, qm.model, {"x": 0.5 * RNG.normal(size=(5, 11, 16)).astype(np.float32)})


def test_shared_weight_stored_once_and_fp32_user_keeps_float():
    w = _weights(3, 3, 3, 3)
    nodes = [helper.make_node("Conv", ["x", "W"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
             helper.make_node("Conv", ["a", "W"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
             helper.make_node("Conv", ["b", "W"], ["y"], pads=[1, 1, 1, 1], name="conv_c")]
    model = make_model(nodes, [("x", ["N", 3, 6, 6])], [("y", None)], {"W": w})
    feed = {"x": RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)}
    qm = _apply(model, [feed])
    check_valid(qm.model)
    inits = [i.name for i in qm.model.graph.initializer]
    assert inits.count("W_quantized") == 1 and "W" not in inits
    _close(model, qm.model, feed)

    qm = _apply(model, [feed], TuningConfig().with_node("conv_b", FP32))
    check_valid(qm.model)
    conv_b = next(n for n in qm.model.graph.node if n.op_type == "Conv" and n.input[1] == "W")
    assert conv_b is not None and "W_quantized" in [i.name for i in qm.model.graph.initializer]
    _close(model, qm.model, feed)


def test_multiple_inputs_and_outputs_and_consumed_graph_output():
    nodes = [helper.make_node("Conv", ["x1", "W"], ["c"], name="conv"),
             helper.make_node("Conv", ["x2", "W"], ["d"], name="conv2"),
             helper.make_node("Add", ["c", "d"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "W2"], ["y"], name="conv3")]
    model = make_model(nodes, [("x1", ["N", 3, 6, 6]), ("x2", ["N", 3, 6, 6])], [("c", None), ("y", None)],
                       {"W": _weights(3, 3, 1, 1), "W2": _weights(2, 3, 1, 1)})
    feed = {"x1": RNG.normal(size=(2, 3, 6, 6)).astype(np.float32),
            "x2": RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)}
    qm = _apply(model, [feed])
    check_valid(qm.model)
    assert [o.name for o in qm.model.graph.output] == ["c", "y"]
    assert [i.name for i in qm.model.graph.input] == ["x1", "x2"]
    assert all(qm.decisions[n].quantized for n in ("conv", "conv2", "add", "conv3"))
    _close(model, qm.model, feed)


def test_missing_range_leaves_node_fp32():
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv")]
    model = make_model(nodes, [("x", ["N", 3, 6, 6])], [("y", None)], {"W": _weights(3, 3, 1, 1)})
    qm = ModelQuantizer(model).apply_ranges(TuningConfig(), {})
    check_valid(qm.model)
    assert qm.fp32_nodes["conv"].category is Fp32Category.NO_RANGE
    assert "QuantizeLinear" not in op_histogram(qm.model)


def test_non_constant_weight_and_integer_inputs_are_unsupported():
    nodes = [helper.make_node("Conv", ["x", "w_in"], ["y"], name="conv"),
             helper.make_node("Add", ["i", "i"], ["j"], name="int_add")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [2, 3, 1, 1]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4]),
         helper.make_tensor_value_info("j", TensorProto.INT64, [2])],
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    nodes_, unsupported = quantizable_nodes(model, Approach.STATIC)
    assert not nodes_
    assert "not a constant" in unsupported["conv"].detail
    assert "int_add" in unsupported


def test_opset_below_13_falls_back_to_per_tensor_with_note():
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv")]
    proto = make_model(nodes, [("x", ["N", 3, 6, 6])], [("y", None)], {"W": _weights(3, 3, 1, 1)}, opset=11)
    model = load_model(proto, target_opset=None)
    qnodes, unsupported = quantizable_nodes(model, Approach.STATIC)
    result = annotate(model, TuningConfig(), qnodes, unsupported)
    assert "per_channel -> per_tensor" in result.notes["conv"]
    assert result.configs["conv"].weight.granularity.value == "per_tensor"


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_scalar_constant_operand_of_mul_and_concat(fmt):
    """torch exports ``x * 100`` with a 0-d constant; quantizing it must not crash (NumPy scalar clip)."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "W"], ["b"], name="conv_b"),
             helper.make_node("Mul", ["a", "big"], ["a2"], name="mul_big"),
             helper.make_node("Mul", ["b", "small"], ["b2"], name="mul_small"),
             helper.make_node("Concat", ["a2", "b2"], ["c"], axis=1, name="concat"),
             helper.make_node("Conv", ["c", "W2"], ["y"], name="conv_out")]
    model = make_model(nodes, [("x", ["N", 3, 4, 4])], [("y", None)],
                       {"W": _weights(4, 3, 1, 1), "W2": _weights(2, 8, 1, 1),
                        "big": np.array(100.0, np.float32), "small": np.array(0.01, np.float32)})
    feed = {"x": RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)}
    qm = _apply(model, [feed], TuningConfig(format=fmt))
    check_valid(qm.model, contrib=fmt == "qoperator")
    assert qm.decisions["mul_big"].quantized and qm.decisions["concat"].quantized
    _close(model, qm.model, feed)


@pytest.mark.parametrize(("mode", "value"), [("constant", None), ("constant", 0.7), ("reflect", None)])
def test_qoperator_integer_pad_fills_with_the_quantized_pad_value(mode, value):
    """An integer Pad fills with 0 unless told otherwise; 0 is not the zero point of an asymmetric
    tensor, so the lowering passes the quantized pad value (the zero point for the default 0.0)."""
    pad_inputs = ["c", "pads"] + (["pad_value"] if value is not None else [])
    # a MaxPool between Pad and conv2: a zero Pad right before a Conv is folded into it (fuse-pad)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Pad", pad_inputs, ["p"], mode=mode, name="pad"),
             helper.make_node("MaxPool", ["p"], ["mp"], kernel_shape=[2, 2], name="pool"),
             helper.make_node("Conv", ["mp", "W2"], ["y"], name="conv2")]
    inits = {"W": _weights(4, 3, 3, 3), "W2": _weights(2, 4, 1, 1),
             "pads": np.array([0, 0, 2, 2, 0, 0, 2, 2], np.int64)}
    if value is not None:
        inits["pad_value"] = np.array(value, np.float32)
    model = make_model(nodes, [("x", [1, 3, 8, 8])], [("y", None)], inits)
    feed = {"x": RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)}
    qm = _apply(model, [feed], TuningConfig(format="qoperator"))
    check_valid(qm.model, contrib=True)
    ops = op_histogram(qm.model)
    assert ops.get("QLinearConv") == 2 and ops.get("Pad") == 1 and "DequantizeLinear" in ops
    pad = next(n for n in qm.model.graph.node if n.op_type == "Pad")
    assert pad.input[0].endswith("_quantized")  # runs on INT8
    if mode == "constant":
        inits_q = {i.name: numpy_helper.to_array(i) for i in qm.model.graph.initializer}
        zero_point, scale = inits_q[pad.input[0].replace("_quantized", "_zero_point")], inits_q["c_scale"]
        expected = np.round(np.float32(value or 0.0) / scale) + int(zero_point)
        assert int(inits_q[pad.input[2]].reshape(-1)[0]) == int(np.clip(expected, 0, 255))
        assert int(zero_point) != 0  # the case the fill value matters for
    _close(model, qm.model, feed)


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_opset18_pad_with_axes_runs_at_ort_level_all(fmt):
    """ORT 1.32's layout transformer mis-permutes Pad's ``axes`` input next to QLinearConv (a Gather out
    of range at run time); the quantizer spells the pads out for every axis instead."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Pad", ["c", "pads", "pad_value", "axes"], ["p"], name="pad"),
             helper.make_node("Conv", ["p", "W2"], ["y"], name="conv2")]
    inits = {"W": _weights(4, 3, 3, 3), "W2": _weights(2, 4, 1, 1), "pads": np.array([1, 2, 1, 0], np.int64),
             "pad_value": np.array(-0.4, np.float32), "axes": np.array([-2, 3], np.int64)}
    model = make_model(nodes, [("x", [1, 3, 8, 8])], [("y", None)], inits, opset=19)
    feed = {"x": RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)}
    qm = _apply(model, [feed], TuningConfig(format=fmt))
    check_valid(qm.model, contrib=fmt == "qoperator")
    pad = next(n for n in qm.model.graph.node if n.op_type == "Pad")
    assert len(pad.input) == 3  # no axes
    full = next(numpy_helper.to_array(i) for i in qm.model.graph.initializer if i.name == pad.input[1])
    assert full.tolist() == [0, 0, 1, 2, 0, 0, 1, 0]
    _close(model, qm.model, feed)  # the session (optimization level all) runs
