"""Per-channel statistics (calibrate(channel_axes=...)): what the recovery rewrites read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.calibration import CalibrationResult, ChannelStatistics, calibrate
from lpot_ir.errors import QuantizationError

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 6)).astype(np.float32)


def _model() -> onnx.ModelProto:
    """x[N, T, 4] -> MatMul W -> pre[N, T, 6] -> Relu -> z."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["pre"], name="mm"),
        helper.make_node("Relu", ["pre"], ["z"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3, 6])], [numpy_helper.from_array(W, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((20, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("pre_axis", [-1, 2])  # same axis as the Relu output: derived from it; else collected
def test_channel_ranges_equal_numpy_for_inputs_outputs_and_relu(data: np.ndarray, pre_axis: int) -> None:
    axes = {"x": -1, "pre": pre_axis, "z": -1}
    result = calibrate(_model(), [data[:7], data[7:]], channel_axes=axes, progress=False)
    pre = data @ W
    for name, array, axis in (("x", data, -1), ("pre", pre, pre_axis), ("z", np.maximum(pre, 0), -1)):
        channels = result.channel_range(name)
        assert channels.axis == axis
        lo, hi = channels.arrays()
        np.testing.assert_allclose(lo, array.min(axis=(0, 1)), rtol=1e-6)
        np.testing.assert_allclose(hi, array.max(axis=(0, 1)), rtol=1e-6)
        np.testing.assert_allclose(channels.absmax(), np.abs(array).max(axis=(0, 1)), rtol=1e-6)
    assert result.range("z", "minmax").hi == pytest.approx(float(np.maximum(pre, 0).max()), rel=1e-6)
    assert CalibrationResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_channel_axes_are_part_of_the_cache_key_and_plain_results_are_unchanged(data: np.ndarray, tmp_path: Path) -> None:
    plain = calibrate(_model(), [data], progress=False, cache_dir=tmp_path)
    assert "channels" not in plain.to_dict() and "channel_axes" not in plain.options
    with_channels = calibrate(_model(), [data], channel_axes={"pre": -1}, progress=False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("calib-*.json"))) == 2
    cached = calibrate(_model(), [data], channel_axes={"pre": -1}, progress=False, cache_dir=tmp_path)
    assert cached == with_channels
    only = calibrate(_model(), [data], tensors=[], channel_axes={"pre": -1}, progress=False)
    assert only.channels == with_channels.channels and set(only.tensors) == {"pre"}


def test_bad_axis_and_non_activation_are_clear_errors(data: np.ndarray) -> None:
    with pytest.raises(QuantizationError, match="no channel axis 3"):
        calibrate(_model(), [data], channel_axes={"pre": 3}, progress=False)
    with pytest.raises(QuantizationError, match="not float activations"):
        calibrate(_model(), [data], channel_axes={"W": 0}, progress=False)


def test_channel_statistics_skip_non_finite_values_and_check_the_channel_count() -> None:
    stats = ChannelStatistics("t", 0)
    stats.update(np.array([[1.0, np.nan], [np.inf, -2.0]], np.float32))
    assert stats.lo is not None and stats.hi is not None
    np.testing.assert_array_equal(stats.lo, [1.0, -2.0])
    np.testing.assert_array_equal(stats.hi, [1.0, -2.0])
    with pytest.raises(ValueError, match="3 channels"):
        stats.update(np.zeros((3, 2), np.float32))
