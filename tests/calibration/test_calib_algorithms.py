"""Range algorithms on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from lpot_ir.calibration.algorithms import (
    compute_range,
    kl_range,
    minmax_range,
    mse_range,
    percentile_range,
    weight_range,
)
from lpot_ir.calibration.statistics import TensorStatistics
from lpot_ir.ir.quant import CalibAlgorithm

OUTLIER = 1000.0


def _collect(batches: list[np.ndarray]) -> TensorStatistics:
    stats = TensorStatistics("t", histogram=True)
    for batch in batches:
        stats.update(batch)
    return stats


@pytest.fixture(scope="module")
def gaussian_with_outlier() -> tuple[TensorStatistics, np.ndarray]:
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 256)).astype(np.float32) for _ in range(100)]
    batches[37][2, 5] = OUTLIER
    return _collect(batches), np.concatenate([b.reshape(-1) for b in batches])


def test_minmax_keeps_the_outlier(gaussian_with_outlier) -> None:
    stats, values = gaussian_with_outlier
    r = minmax_range(stats)
    assert r.hi == OUTLIER and r.lo == pytest.approx(float(values.min()))


@pytest.mark.parametrize("algorithm", [CalibAlgorithm.PERCENTILE, CalibAlgorithm.KL])
def test_percentile_and_kl_clip_a_heavy_tailed_outlier(gaussian_with_outlier, algorithm) -> None:
    stats, values = gaussian_with_outlier
    r = compute_range(stats, algorithm)
    bulk = np.sort(values)[:-1]  # everything but the outlier
    assert r.hi < OUTLIER / 10, r  # the outlier is clipped
    assert r.hi > float(np.percentile(bulk, 99.0)), r  # the bulk is kept
    assert r.lo < float(np.percentile(bulk, 1.0)), r
    assert r.lo <= 0.0 <= r.hi


def test_percentile_matches_numpy_percentiles() -> None:
    rng = np.random.default_rng(1)
    values = rng.exponential(size=200_000).astype(np.float32) - 0.5
    stats = _collect([values])
    r = percentile_range(stats, 99.0)
    lo, hi = np.percentile(values, [1.0, 99.0])
    width = stats.histogram.bin_width
    assert abs(r.hi - hi) <= 2 * width
    assert abs(r.lo - lo) <= 2 * width


def test_mse_on_uniform_data_is_about_the_data_range() -> None:
    rng = np.random.default_rng(2)
    values = rng.uniform(-1.0, 3.0, 100_000).astype(np.float32)
    r = mse_range(_collect([values]))
    assert r.lo == pytest.approx(-1.0, abs=0.05)
    assert r.hi == pytest.approx(3.0, abs=0.05)


def test_mse_clips_a_long_tail_but_keeps_the_bulk() -> None:
    rng = np.random.default_rng(3)
    values = rng.laplace(scale=1.0, size=200_000).astype(np.float32)
    stats = _collect([values])
    r = mse_range(stats)
    assert r.hi < stats.max * 0.9 and r.lo > stats.min * 0.9  # clipping the tail lowers the error
    assert r.hi > float(np.percentile(values, 99.0)) and r.lo < float(np.percentile(values, 1.0))


def test_non_negative_data_gets_lo_zero_and_signed_ranges_contain_zero() -> None:
    rng = np.random.default_rng(4)
    relu = np.maximum(rng.standard_normal(50_000), 0).astype(np.float32)
    shifted = (rng.standard_normal(50_000) + 10.0).astype(np.float32)  # all positive, far from 0
    for algorithm in CalibAlgorithm:
        r = compute_range(_collect([relu]), algorithm)
        assert r.lo == 0.0 and 0.0 < r.hi <= float(relu.max()) + 1e-6, (algorithm, r)
        s = compute_range(_collect([shifted]), algorithm)
        assert s.lo == 0.0 and s.hi > 10.0, (algorithm, s)


def test_constant_zero_tensor_has_zero_range() -> None:
    stats = _collect([np.zeros(100, np.float32)])
    for algorithm in CalibAlgorithm:
        assert compute_range(stats, algorithm).to_list() == [0.0, 0.0]


def test_histogram_algorithms_need_a_histogram() -> None:
    stats = TensorStatistics("m")
    stats.update(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="needs a histogram"):
        kl_range(stats)


def test_weight_range_is_minmax_with_zero() -> None:
    w = np.array([[0.5, 2.0], [1.0, 3.0]], np.float32)
    assert weight_range(w).to_list() == [0.0, 3.0]
    assert weight_range(-w).to_list() == [-3.0, 0.0]
