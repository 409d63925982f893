"""The bundled example is a real test of tuning on every CPU: all-INT8 loses far more than 1%, either
outlier op alone in FP32 still does, both together recover it.

The FP32 model is the same on every CPU (``lpot_ir.examples_data`` trains it portably); what differs is
ONNX Runtime's INT8 kernels and the default weight format (8 bits with VNNI/AMX/ARM, 7 bits on x86
without VNNI). So each property is checked for both formats, whatever this CPU is, with margins that
another CPU's kernels cannot cross (``SAFETY`` in tests/tuning/helpers.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lpot_ir.config.schema import AccuracyCriterion
from lpot_ir.examples_data import VERSION, cache_name
from tests.tuning.helpers import (
    OUTLIER_FALLBACK,
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


def test_fp32_model_is_accurate(digits):
    # 492 of 500 right (the model is the same bits on every CPU); FP32 rounding differs between CPUs by a few
    # ULPs, and 0.95 leaves 17 digits to spare
    assert digits.accuracy(digits.model_path) > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("weights", sorted(WEIGHT_FORMATS))
def test_outlier_ops_decide_the_goal_with_a_margin(weights, digits, quantizer):
    fp32 = onnx.load(str(digits.model_path))
    labels, calib = digits.eval_labels, digits.calib_data
    baseline = float(np.mean(np.argmax(logits(fp32, digits.eval_data), axis=-1) == labels))
    fp32_class = np.argmax(logits(fp32, calib), axis=-1)
    allowed = baseline - GOAL.threshold(baseline)  # the allowed absolute drop: also the proxy's threshold
    base = default_config_for(WEIGHT_FORMATS[weights])
    for case, nodes in {"all INT8": (), "stem FP32": OUTLIER_OPS[:1], "dw1 FP32": OUTLIER_OPS[1:]}.items():
        # The outlier tensor quantized: one step of it is worth several logits, so CPUs' rounding moves single
        # samples a lot (ONNX Runtime and the reference evaluator differ by several logits). The miss is asked to
        # be SAFETY x the allowed drop, on the held-out digits and, in both implementations, on the calibration
        # samples the accuracy proxy compares.
        model = quantizer.quantize(base.with_nodes_fp32(list(nodes))).model
        loss = baseline - float(np.mean(np.argmax(logits(model, digits.eval_data), axis=-1) == labels))
        assert loss > SAFETY * allowed, (case, loss)
        for run in (logits, reference_logits):
            flips = float(np.mean(np.argmax(run(model, calib), axis=-1) != fp32_class))
            assert flips > SAFETY * allowed, (case, run.__name__, flips)
    # Both in FP32: the remaining INT8 ops' rounding is small. The margin is the larger of SAFETY x the kernel noise
    # (ONNX Runtime against the reference evaluator: 4e-6 logits on the calibration samples on an AMX CPU, where
    # both round alike, so it alone protects against nothing) and the floor no CPU's rounding can cross
    # (rounding_floor: SAFETY one-step roundings of the classifier's input, 0.074 logits at 8 and 7 bits). The
    # model meets the goal even if every held-out digit within the margin went wrong (491 of 500 are outside it
    # at 8 bits, 491 at 7 bits), and no calibration sample is that close (the nearest leads by 0.111 logits at
    # 8 bits, 0.456 at 7 bits), so the proxy sees no disagreement on any CPU.
    model = quantizer.quantize(base.with_nodes_fp32(list(OUTLIER_FALLBACK))).model
    int8_calib = logits(model, calib)
    noise = float(np.max(np.abs(int8_calib - reference_logits(model, calib))))
    margin = max(rounding_floor(model), SAFETY * noise)
    on_eval = leads(logits(model, digits.eval_data), labels)
    assert GOAL.is_met(baseline, float(np.mean(on_eval > margin))), (np.sort(on_eval)[:8], margin)
    assert np.min(leads(int8_calib, fp32_class)) > margin, (np.sort(leads(int8_calib, fp32_class))[:4], margin)


def test_cache_folder_is_named_by_the_torch_version(digits):
    torch = pytest.importorskip("torch")
    major_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert digits.folder.name == cache_name() == f"{VERSION}-torch{major_minor}"  # a torch upgrade rebuilds it
    assert digits.info["torch"].startswith(major_minor + ".")


def test_copy_files(digits, tmp_path):
    folder = digits.copy_files(tmp_path / "data")
    assert sorted(p.name for p in folder.iterdir()) == [
        "calib_data.npy", "calib_labels.npy", "eval_data.npy", "eval_labels.npy", "model.onnx",
    ]
