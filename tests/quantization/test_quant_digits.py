"""A real accuracy test: a CNN trained on scikit-learn's digits, every Conv and Gemm INT8, top-1 within 1% of FP32.

The model is the bundled example (``lpot_ir.examples_data``: trained in a child process with
``PORTABLE_TORCH_ENV``, so the same bits on every CPU) with its outlier channel scaled back, which leaves an
ordinary trained CNN that INT8 does not hurt. What still differs between CPUs is ONNX Runtime's INT8 kernels
and the default weight format, so both formats are checked, and only held-out digits the INT8 model gets
right by more than any CPU's rounding could move (``rounding_floor``) are counted as right.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from qhelpers import check_valid

from lpot_ir.config.schema import AccuracyCriterion
from lpot_ir.examples_data import OUTLIER_SCALE, digits_example
from lpot_ir.ir.quant import QuantFormat
from lpot_ir.quantizer import ModelQuantizer
from tests.tuning.helpers import (
    OUTLIER_OPS,
    SAFETY,
    WEIGHT_FORMATS,
    default_config_for,
    leads,
    logits,
    reference_logits,
    rounding_floor,
)

GOAL = AccuracyCriterion(relative=0.01)


def _without_outlier(model: onnx.ModelProto) -> onnx.ModelProto:
    """The example with channel 0 of the stem's output scaled back down (the same function, numpy arithmetic)."""
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    initializers = {i.name: i for i in plain.graph.initializer}
    nodes = {n.name: n for n in plain.graph.node}
    stem, depthwise = (nodes[name] for name in OUTLIER_OPS)
    for name, factor in ((stem.input[1], 1 / OUTLIER_SCALE), (stem.input[2], 1 / OUTLIER_SCALE),
                         (depthwise.input[1], OUTLIER_SCALE)):
        values = numpy_helper.to_array(initializers[name]).copy()
        values[0] *= np.float32(factor)
        initializers[name].CopyFrom(numpy_helper.from_array(values, name))
    return plain


@pytest.mark.slow
@pytest.mark.parametrize("weights", sorted(WEIGHT_FORMATS))
def test_digits_cnn_int8_accuracy_within_one_percent(weights):
    digits = digits_example()
    fp32 = _without_outlier(onnx.load(str(digits.model_path)))
    data, labels = digits.eval_data, digits.eval_labels
    baseline = float(np.mean(np.argmax(logits(fp32, data), axis=-1) == labels))
    assert baseline > 0.95  # the network really learned (492 of 500)

    quantizer = ModelQuantizer(fp32, digits.calib_dataloader(batch_size=10))
    base = default_config_for(WEIGHT_FORMATS[weights])
    qdq = quantizer.quantize(base).model
    # ONNX Runtime against the reference evaluator, times SAFETY, but never below one rounding step's reach
    margin = max(rounding_floor(qdq), SAFETY * float(np.max(np.abs(logits(qdq, data) - reference_logits(qdq, data)))))
    for fmt in (QuantFormat.QDQ, QuantFormat.QOPERATOR):
        qm = quantizer.quantize(dataclasses.replace(base, format=fmt))
        check_valid(qm.model, contrib=fmt is QuantFormat.QOPERATOR)
        assert all(d.quantized for d in qm.decisions.values() if d.op_type in ("Conv", "Gemm"))
        on_eval = leads(logits(qm.model, data), labels)
        surely_right = float(np.mean(on_eval > margin))
        assert GOAL.is_met(baseline, surely_right), (fmt, baseline, surely_right, np.sort(on_eval)[:12], margin)
