"""The space-to-depth stem rules: FP32 equivalence, quantized bit-equivalence, declines, export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from qhelpers import check_valid, make_model, minmax_ranges, op_histogram, run

from lpot_ir.ir.model import from_proto, to_proto
from lpot_ir.ir.pattern import RuleSet
from lpot_ir.ir.quant import QuantFormat, TuningConfig
from lpot_ir.passes.quantization import PipelineRecord, select_pipeline
from lpot_ir.passes.quantization.space_to_depth import (
    SPACE_TO_DEPTH_CONV,
    SPACE_TO_DEPTH_QUANTIZED_CONV,
    rearrange_kernel,
)
from lpot_ir.passes.rewrite import apply_rules
from lpot_ir.quantizer import ModelQuantizer

RNG = np.random.default_rng(7)
FP32_RULES = RuleSet("s2d", [SPACE_TO_DEPTH_CONV])


def _stem(size: tuple[int, int], *, cin: int = 3, k: int = 7, stride: int = 2, pad: int = 3,
          group: int = 1) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="stem", kernel_shape=[k, k],
                              strides=[stride, stride], pads=[pad] * 4, group=group),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    inits = {"W": (RNG.normal(size=(8, cin // group, k, k)) * 0.2).astype(np.float32),
             "B": (RNG.normal(size=(8,)) * 0.1).astype(np.float32)}
    return make_model(nodes, [("x", [1, cin, *size])], [("y", None)], inits)


def _feed(size: tuple[int, int], cin: int = 3) -> dict[str, np.ndarray]:
    return {"x": RNG.normal(size=(1, cin, *size)).astype(np.float32)}


def test_rearranged_kernel_layout_matches_space_to_depth():
    w = np.arange(2 * 3 * 7 * 7, dtype=np.float32).reshape(2, 3, 7, 7)
    w2 = rearrange_kernel(w)
    assert w2.shape == (2, 12, 4, 4)
    # channel (dy * 2 + dx) * Cin + c, tap (a, b) holds W[o, c, 2a + dy, 2b + dx]; the 8th row/column is 0
    assert w2[1, (1 * 2 + 0) * 3 + 2, 1, 3] == w[1, 2, 3, 6]
    assert np.all(w2[:, 6:, 3, :] == 0) and np.all(w2[:, 3:6, :, 3] == 0)
    assert np.all(rearrange_kernel(w.astype(np.int8), np.full(2, 5, np.int8))[:, 6:, 3, :] == 5)


@pytest.mark.parametrize("size", [(16, 16), (15, 15), (13, 18), (9, 7)])
def test_fp32_rewrite_is_equal(size):
    proto = _stem(size)
    feed = _feed(size)
    model = from_proto(proto)
    report = apply_rules(model, FP32_RULES)
    assert dict(report.counts) == {"SpaceToDepthConv": 1}
    rewritten = to_proto(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert op_histogram(rewritten) == {"Pad": 1, "SpaceToDepth": 1, "Conv": 1, "Relu": 1}
    (expected,), (actual,) = run(proto, feed), run(rewritten, feed)
    assert expected.shape == actual.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"cin": 8}, "8 input channels"),
    ({"k": 3, "pad": 1}, "kernel 3x3"),
    ({"stride": 1}, "strides are [1, 1]"),
    ({"cin": 4, "group": 2}, "group is not 1"),
])
def test_rule_declines_with_a_reason(kwargs, reason):
    proto = _stem((16, 16), **kwargs)
    model = from_proto(proto)
    report = apply_rules(model, FP32_RULES, trace=True)
    assert not any(report.counts.values())
    assert reason in report.explain("stem", "SpaceToDepthConv")


def _quantize(proto: onnx.ModelProto, feed, fmt: QuantFormat = QuantFormat.QDQ, s2d: bool = True) -> onnx.ModelProto:
    quantizer = ModelQuantizer(proto)
    ranges = minmax_ranges(quantizer.fp32_model, [feed])
    config = TuningConfig(format=fmt)
    record = PipelineRecord.current(select_pipeline(config))
    assert "space-to-depth-stems" in record.steps
    if not s2d:  # the same pipeline without the step
        record = PipelineRecord("no-s2d", 1, record.prepare, tuple(s for s in record.steps if s != "space-to-depth-stems"))
    return quantizer.apply_ranges(config, ranges, record).model


@pytest.mark.parametrize("fmt", [QuantFormat.QDQ, QuantFormat.QOPERATOR])
@pytest.mark.parametrize("size", [(16, 16), (15, 13)])
def test_quantized_stem_is_rewritten_and_equal(size, fmt):
    proto = _stem(size)
    feed = _feed(size)
    with_rule = _quantize(proto, feed, fmt)
    check_valid(with_rule, contrib=fmt is QuantFormat.QOPERATOR)
    hist = op_histogram(with_rule)
    assert hist["SpaceToDepth"] == 1 and hist["Pad"] == 1, hist
    without = _quantize(proto, feed, fmt, s2d=False)
    assert "SpaceToDepth" not in op_histogram(without)
    (y0,), (y1,) = run(without, feed), run(with_rule, feed)
    step = float(y0.max() - min(float(y0.min()), 0.0)) / 255  # the uint8 output step (min/max range)
    assert np.abs(y0 - y1).max() <= step + 1e-7, np.abs(y0 - y1).max()  # measured: bit-identical
    if fmt is QuantFormat.QDQ:  # the rule alone on the model quantized without it: one rewrite, then none
        rules = RuleSet("q", [SPACE_TO_DEPTH_QUANTIZED_CONV])
        m = from_proto(without)
        assert dict(apply_rules(m, rules).counts) == {"SpaceToDepthQuantizedConv": 1}
        onnx.checker.check_model(to_proto(m), full_check=True)
        np.testing.assert_array_equal(run(to_proto(m), feed)[0], y1)
        assert not any(apply_rules(m, rules).counts.values())


def test_pytorch_export_runs_space_to_depth():
    torch = pytest.importorskip("torch")
    size = (15, 16)
    proto, feed = _stem(size), _feed(size)
    quantizer = ModelQuantizer(proto)
    qm = quantizer.apply_ranges(TuningConfig(), minmax_ranges(quantizer.fp32_model, [feed]))
    assert op_histogram(qm.model)["SpaceToDepth"] == 1
    module = qm.export("pytorch")
    with torch.no_grad():
        out = module(torch.from_numpy(feed["x"])).numpy()
    ref = run(qm.model, feed)[0]
    assert np.abs(out - ref).max() <= float(np.abs(ref).max()) / 255 + 1e-6  # one uint8 output step


@pytest.mark.slow
def test_tensorflow_export_runs_space_to_depth(tmp_path):
    tf = pytest.importorskip("tensorflow")
    size = (16, 14)
    proto, feed = _stem(size), _feed(size)
    quantizer = ModelQuantizer(proto)
    qm = quantizer.apply_ranges(TuningConfig(), minmax_ranges(quantizer.fp32_model, [feed]))
    path = qm.export("tensorflow", tmp_path / "saved")
    loaded = tf.saved_model.load(str(path))
    (out,) = [v.numpy() for v in loaded.signatures["serving_default"](x=tf.constant(feed["x"])).values()]
    ref = run(qm.model, feed)[0]
    assert np.abs(out - ref).max() <= float(np.abs(ref).max()) / 255 + 1e-6
