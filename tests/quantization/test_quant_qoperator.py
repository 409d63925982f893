"""Lowering to the QOperator format: rule counts, op histogram, numerics equal to the QDQ model."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from qhelpers import check_valid, make_model, minmax_ranges, op_histogram, run

from lpot_ir.ir.model import load_model
from lpot_ir.ir.quant import Approach, QuantFormat, TuningConfig
from lpot_ir.passes.quantization.lower_qoperator import lower_to_qoperator, qoperator_rules
from lpot_ir.quantizer import ModelQuantizer, default_config

RNG = np.random.default_rng(2)


def _cnn():
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["p", "W2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "p"], ["a"], name="add"),
        helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "Wg", "Bg"], ["y"], transB=1, name="fc"),
    ]
    inits = {"W": (RNG.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32),
             "B": (RNG.normal(size=(8,)) * 0.1).astype(np.float32),
             "W2": (RNG.normal(size=(8, 8, 3, 3)) * 0.2).astype(np.float32),
             "Wg": (RNG.normal(size=(5, 8)) * 0.3).astype(np.float32),
             "Bg": (RNG.normal(size=(5,)) * 0.1).astype(np.float32)}
    return make_model(nodes, [("x", ["N", 3, 16, 16])], [("y", None)], inits)


def test_static_cnn_lowers_to_qlinear_ops():
    model = _cnn()
    feed = {"x": RNG.normal(size=(2, 3, 16, 16)).astype(np.float32)}
    quantizer = ModelQuantizer(model)
    ranges = minmax_ranges(quantizer.fp32_model, [feed])
    qdq = quantizer.apply_ranges(default_config(), ranges)
    qop = quantizer.apply_ranges(default_config(fmt=QuantFormat.QOPERATOR), ranges)
    check_valid(qop.model, contrib=True)
    hist = op_histogram(qop.model)
    assert hist == {"QuantizeLinear": 1, "QLinearConv": 2, "MaxPool": 1, "QLinearAdd": 1,
                    "QLinearGlobalAveragePool": 1, "Flatten": 1, "QGemm": 1}, hist  # QGemm outputs float
    assert {d.domain for d in qop.model.opset_import} >= {"", "com.microsoft"}
    y_qdq, y_qop = run(qdq.model, feed)[0], run(qop.model, feed)[0]
    y_fp32 = run(model, feed)[0]
    assert np.abs(y_qdq - y_qop).max() <= 1e-5 * max(1.0, float(np.abs(y_qdq).max()))
    assert np.abs(y_fp32 - y_qop).max() <= 0.05 * float(np.abs(y_fp32).max())


def test_rules_decline_when_the_float_value_has_other_users():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    model = make_model(nodes, [("x", ["N", 3, 4, 4])], [("c", None), ("y", None)],
                       {"W": (RNG.normal(size=(2, 3, 1, 1))).astype(np.float32)})
    feed = {"x": RNG.normal(size=(1, 3, 4, 4)).astype(np.float32)}
    quantizer = ModelQuantizer(model)
    qm = quantizer.apply_ranges(default_config(fmt=QuantFormat.QOPERATOR),
                                minmax_ranges(quantizer.fp32_model, [feed]))
    check_valid(qm.model, contrib=True)
    for y0, y1 in zip(run(model, feed), run(qm.model, feed), strict=True):
        assert np.abs(y0 - y1).max() <= 0.05 * float(np.abs(y0).max())


def test_every_rule_has_a_spec():
    rules = qoperator_rules()
    assert len(rules) >= 20
    assert all(rule.spec and "→" in rule.spec for rule in rules)


def test_rule_names_are_written_out_and_kernels_come_from_the_table():
    import re

    import lpot_ir.passes.quantization.lower_qoperator as lowering
    from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES

    names = {rule.name for rule in qoperator_rules()}
    written = set(re.findall(r"``(Lower\w+)``", lowering.__doc__ or ""))
    assert names == written, (names - written, written - names)  # a grep for a rule name finds it
    kernels = {k.op_type for c in CAPABILITIES.values() for k in (c.qoperator, c.float_output, c.dynamic_qoperator)
               if k is not None}
    assert {f"Lower{k}" for k in kernels if k[0] == "Q" or k.startswith("Dynamic")} <= names
    assert {name[len("LowerInteger"):] for name in names if name.startswith("LowerInteger")} == {
        c.op_type for c in CAPABILITIES.values() if c.qoperator is not None and c.qoperator.op_type == c.op_type
    }


def test_dynamic_qoperator_uses_fused_contrib_ops():
    hidden, inp = 4, 6
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("LSTM", ["h", "Wl", "Rl"], ["y"], hidden_size=hidden, name="lstm")]
    inits = {"W": (RNG.normal(size=(inp, inp)) * 0.3).astype(np.float32),
             "Wl": (RNG.normal(size=(1, 4 * hidden, inp)) * 0.3).astype(np.float32),
             "Rl": (RNG.normal(size=(1, 4 * hidden, hidden)) * 0.3).astype(np.float32)}
    model = make_model(nodes, [("x", ["seq", "batch", inp])], [("y", None)], inits)
    config = TuningConfig(approach=Approach.DYNAMIC, format=QuantFormat.QOPERATOR)
    qm = ModelQuantizer(model, approach=Approach.DYNAMIC).quantize(config)
    check_valid(qm.model, contrib=True)
    hist = op_histogram(qm.model)
    assert hist == {"DynamicQuantizeMatMul": 1, "DynamicQuantizeLSTM": 1}, hist
    feed = {"x": RNG.normal(size=(5, 2, inp)).astype(np.float32)}
    y0, y1 = run(model, feed)[0], run(qm.model, feed)[0]
    assert np.abs(y0 - y1).max() <= 0.05 * float(np.abs(y0).max())


def test_lowering_a_float_model_changes_nothing():
    model = load_model(_cnn())
    report = lower_to_qoperator(model)
    assert report.total == 0


pytestmark = pytest.mark.filterwarnings("ignore")
