"""Unit checks of the loop's parts: history, objectives ranking, sensitivity, space building."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpot_ir.backends.onnxruntime.batching import feeds_from_batches
from lpot_ir.errors import ConfigError
from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.quantizer import default_config
from lpot_ir.strategies import TrialResult
from lpot_ir.tuning import SensitivityMeter, TuningHistory
from lpot_ir.tuning.history import HistoryHeader
from lpot_ir.tuning.objectives import ObjectiveMeter, ranking_key, weighted_score
from lpot_ir.tuning.sensitivity import normalized_error
from lpot_ir.tuning.space import build_space
from tests.tuning.helpers import OUTLIER_OPS, make_config


def _trial(index, objectives, accuracy=0.9, meets=True):
    return TrialResult(index, TuningConfig(calib_sampling_size=index + 1), accuracy, objectives, meets, None, 0.1)


def test_history_round_trip(tmp_path):
    history = TuningHistory(tmp_path / "h.jsonl")
    history.start(HistoryHeader("k1", 0.97, {"performance": 0.01}))
    trial = _trial(0, {"performance": 0.005})
    history.append(trial)
    history.append(TrialResult(1, TuningConfig(), None, {}, False, "evaluation failed: X", 0.2))
    header, trials = history.read()
    assert header.run_key == "k1" and header.baseline_accuracy == 0.97
    assert trials[0].config.key() == trial.config.key() and trials[0].objectives == {"performance": 0.005}
    assert trials[1].failed == "evaluation failed: X" and trials[1].accuracy is None


def test_history_that_is_not_one(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"kind": "trial", "index": 0}\n{"kind": "header"}\n')
    with pytest.raises(ConfigError, match="malformed line 1"):
        TuningHistory(path).read()
    with pytest.raises(ConfigError, match="Cannot read the tuning history"):
        TuningHistory(tmp_path / "missing.jsonl").read()


def test_ranking_weighted_then_next_objective():
    baseline = {"performance": 1.0, "modelsize": 100.0}
    weights = [("performance", 0.5), ("modelsize", 0.5)]
    fast_big = _trial(0, {"performance": 0.5, "modelsize": 100.0})
    slow_small = _trial(1, {"performance": 1.0, "modelsize": 40.0})
    assert weighted_score(fast_big.objectives, weights, baseline) == pytest.approx(0.75)
    assert min([fast_big, slow_small], key=lambda t: ranking_key(t, weights, baseline)) is slow_small
    # equal scores within the tolerance: the first objective decides
    a = _trial(2, {"performance": 0.50, "modelsize": 60.0})
    b = _trial(3, {"performance": 0.40, "modelsize": 70.0})
    assert min([a, b], key=lambda t: ranking_key(t, weights, baseline)) is b
    # one objective, latencies within noise: higher accuracy, then the earlier trial
    single = [("performance", 1.0)]
    c = _trial(4, {"performance": 0.500}, accuracy=0.95)
    d = _trial(5, {"performance": 0.501}, accuracy=0.96)
    assert min([c, d], key=lambda t: ranking_key(t, single, baseline)) is d


def test_objective_meter_measures_all_three(digits):
    import onnx

    model = onnx.load(str(digits.model_path))
    meter = ObjectiveMeter(["performance", "modelsize", "footprint"], {"input": digits.eval_data[:10]}, iterations=3)
    values = meter(model)
    assert values["modelsize"] == model.ByteSize()
    assert values["performance"] > 0 and math.isfinite(values["performance"])
    assert values["footprint"] >= 0


def test_normalized_error_sees_a_destroyed_channel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 5, 5))
    x[:, 0] *= 100.0
    y = x.copy()
    y[:, 1:] = 0.0  # every channel but the outlier one lost
    assert normalized_error(y, x) == pytest.approx(0.75, rel=0.05)
    assert normalized_error(x, x) == 0.0


def test_sensitivity_points_at_the_outlier_ops(digits, quantizer):
    fp32 = to_proto(quantizer.fp32_model)
    meter = SensitivityMeter(fp32, lambda c: quantizer.quantize(c).model, feeds_from_batches(digits.calib_dataloader(), fp32, 32))
    scores = meter(default_config())
    top3 = sorted(scores, key=scores.get, reverse=True)[:3]
    assert set(OUTLIER_OPS) <= set(top3)
    fallback = meter(default_config().with_nodes_fp32(list(OUTLIER_OPS) + ["/stem/stem.2/Relu"]))
    assert fallback.get("/dw1/dw1.0/Conv", 0.0) < scores["/dw1/dw1.0/Conv"] / 10


def test_space_from_model_wise_lists_and_groups(quantizer, tmp_path):
    from lpot_ir.config import load_config

    data = make_config(tmp_path).to_dict()
    data["quantization"] = {
        "calibration": {"sampling_size": [50, 100]},
        "model_wise": {"activation": {"algorithm": ["minmax", "kl"]}, "weight": {"granularity": ["per_channel", "per_tensor"]}},
        "optype_wise": {"Gemm": {"activation": {"dtype": "fp32"}}},
    }
    build = build_space(load_config(data), quantizer.nodes, quantizer.fp32_model)
    space = build.space
    assert len(space.model_wise) == 4 and space.sampling_sizes == (50, 100)
    assert "/fc/Gemm" in build.pinned and "/fc/Gemm" not in {n.name for n in space.nodes}
    groups = {g[0]: g for g in space.fallback_groups}
    assert groups["/stem/stem.0/Conv"] == ("/stem/stem.0/Conv", "/stem/stem.2/Relu")
    assert groups["/pw1/pw1.0/Conv"] == ("/pw1/pw1.0/Conv", "/pw1/pw1.2/Relu", "/pool/MaxPool")


def test_model_wise_fp32_only_is_refused(quantizer, tmp_path):
    from lpot_ir.config import load_config

    data = make_config(tmp_path).to_dict()
    data["quantization"] = {"model_wise": {"activation": {"dtype": "fp32"}}}
    with pytest.raises(ConfigError, match="quantizes nothing"):
        build_space(load_config(data), quantizer.nodes, quantizer.fp32_model)


def test_relative_loss_is_positive_when_worse_in_both_directions():
    from pathlib import Path

    from lpot_ir.metrics.relative import relative_loss
    from lpot_ir.tuning.outcome import TuningOutcome

    assert relative_loss(0.8, 0.6) == pytest.approx(0.25)  # accuracy fell
    assert relative_loss(0.5, 0.6, higher_is_better=False) == pytest.approx(0.2)  # a loss rose
    assert relative_loss(0.5, 0.4, higher_is_better=False) == pytest.approx(-0.2)
    assert relative_loss(0.0, 0.1, higher_is_better=False) == pytest.approx(0.1)  # zero baseline: absolute
    assert relative_loss(0.5, None) is None and relative_loss(0.5, math.nan) is None
    config = TuningConfig()
    best = TrialResult(0, config, 0.6, {}, True, None, 0.0)
    outcome = TuningOutcome(None, best, [best], 0.5, {}, True, "", 1, 0, 0.0, Path("."), higher_is_better=False)
    assert outcome.relative_loss == pytest.approx(0.2)
