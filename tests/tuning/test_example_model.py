"""The bundled example is a real test of tuning: all-INT8 loses more than 1%, two fallbacks recover it."""

from __future__ import annotations

from lpot_ir.quantizer import default_config
from tests.tuning.helpers import OUTLIER_OPS


def test_fp32_model_is_accurate(digits):
    assert digits.accuracy(digits.model_path) > 0.95


def test_all_int8_loses_more_than_one_percent(digits, quantizer):
    fp32 = digits.accuracy(digits.model_path)
    int8 = digits.accuracy(quantizer.quantize(default_config()).model)
    assert (fp32 - int8) / fp32 > 0.01


def test_one_fallback_is_not_enough_two_recover(digits, quantizer):
    fp32 = digits.accuracy(digits.model_path)
    for name in OUTLIER_OPS:
        single = digits.accuracy(quantizer.quantize(default_config().with_nodes_fp32([name])).model)
        assert (fp32 - single) / fp32 > 0.01, name
    both = digits.accuracy(quantizer.quantize(default_config().with_nodes_fp32(list(OUTLIER_OPS))).model)
    assert (fp32 - both) / fp32 <= 0.01


def test_copy_files(digits, tmp_path):
    folder = digits.copy_files(tmp_path / "data")
    assert sorted(p.name for p in folder.iterdir()) == [
        "calib_data.npy", "calib_labels.npy", "eval_data.npy", "eval_labels.npy", "model.onnx",
    ]
