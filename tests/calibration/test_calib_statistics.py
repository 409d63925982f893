"""Running statistics: exact min/max over batches, exact histogram widening, bounded state."""

from __future__ import annotations

import numpy as np
import pytest

from lpot_ir.calibration.statistics import Histogram, TensorStatistics


def test_running_min_max_equal_numpy_over_concatenated_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(scale=s, size=(3, 17)).astype(np.float32) for s in (0.1, 5.0, 1.0, 40.0, 0.01)]
    stats = TensorStatistics("t", histogram=True)
    for batch in batches:
        stats.update(batch)
    everything = np.concatenate([b.reshape(-1) for b in batches])
    assert stats.min == float(everything.min())
    assert stats.max == float(everything.max())
    assert stats.count == everything.size
    assert stats.histogram is not None and stats.histogram.total == everything.size


def test_histogram_widening_is_exact() -> None:
    rng = np.random.default_rng(1)
    small = rng.uniform(-0.9, 0.9, 5000).astype(np.float32)
    large = rng.uniform(-300.0, 300.0, 5000).astype(np.float32)
    grown = Histogram(bins_per_side=64)
    grown.add(small, float(np.abs(small).max()))
    assert grown.bound == 1.0
    before = grown.counts.copy()
    grown.add(large, float(np.abs(large).max()))
    assert grown.bound == 512.0
    assert grown.counts.sum() == small.size + large.size  # nothing lost
    # identical to counting everything directly at the final bound
    direct = Histogram(bins_per_side=64)
    direct.widen_to(511.0)
    direct.add(np.concatenate([small, large]), 300.0)
    np.testing.assert_array_equal(grown.counts, direct.counts)
    # the small values all merged into the two bins around zero (width 8 > 0.9)
    assert before.sum() == small.size
    assert grown.counts[63] + grown.counts[64] >= small.size


def test_histogram_counts_match_numpy_histogram() -> None:
    rng = np.random.default_rng(2)
    values = rng.standard_normal(20000).astype(np.float32)
    hist = Histogram(bins_per_side=128)
    hist.add(values, float(np.abs(values).max()))
    expected, _ = np.histogram(values.astype(np.float64), bins=hist.edges())
    # at most a handful of values sit exactly on an edge after float32 scaling
    assert np.abs(hist.counts - expected).sum() <= 4
    assert hist.counts.sum() == values.size


def test_zeros_before_first_nonzero_are_kept() -> None:
    stats = TensorStatistics("z", histogram=True)
    stats.update(np.zeros((4, 4), np.float32))
    stats.update(np.array([0.5, -0.25], np.float32))
    assert stats.histogram is not None
    assert stats.histogram.total == 18
    assert stats.histogram.bound == 1.0
    assert stats.histogram.counts[stats.histogram.bins_per_side] == 16  # bin [0, w) holds the zeros

def test_nonfinite_values_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    stats = TensorStatistics("n", histogram=True)
    stats.update(np.array([1.0, np.nan, -2.0, np.inf], np.float32))
    assert (stats.min, stats.max, stats.count, stats.nonfinite) == (-2.0, 1.0, 2, 2)
    assert "NaN or infinite" in caplog.text


def test_statistics_round_trip_and_bounded_size() -> None:
    stats = TensorStatistics("r", histogram=True, bins_per_side=256)
    rng = np.random.default_rng(3)
    for _ in range(50):
        stats.update(rng.standard_normal((8, 32)).astype(np.float32))
    size_after_50 = stats.histogram.counts.nbytes
    for _ in range(200):
        stats.update(rng.standard_normal((8, 32)).astype(np.float32))
    assert stats.histogram.counts.nbytes == size_after_50 == 2 * 256 * 8
    copy = TensorStatistics.from_dict("r", stats.to_dict())
    assert (copy.min, copy.max, copy.count) == (stats.min, stats.max, stats.count)
    np.testing.assert_array_equal(copy.histogram.counts, stats.histogram.counts)
    assert copy.histogram.bound == stats.histogram.bound


def test_relu_statistics_derived_from_the_input_equal_direct_ones() -> None:
    rng = np.random.default_rng(4)
    batches = [rng.normal(0.5, 2.0, size=(2, 100)).astype(np.float32) for _ in range(5)]
    source = TensorStatistics("x", histogram=True)
    direct = TensorStatistics("y", histogram=True)
    direct.histogram.widen_to(float(max(np.abs(b).max() for b in batches)))  # same bound as the source
    for batch in batches:
        source.update(batch)
        direct.update(np.maximum(batch, 0))
    derived = source.after_relu("y")
    assert (derived.min, derived.max, derived.count) == (direct.min, direct.max, direct.count)
    assert derived.histogram.bound == direct.histogram.bound
    np.testing.assert_array_equal(derived.histogram.counts, direct.histogram.counts)


def test_large_tensors_histogram_a_strided_subsample_but_min_max_stay_exact() -> None:
    from lpot_ir.calibration.statistics import HISTOGRAM_VALUES_PER_SAMPLE

    rng = np.random.default_rng(5)
    stats = TensorStatistics("big", histogram=True)
    size = 3 * HISTOGRAM_VALUES_PER_SAMPLE + 7
    batches = [rng.standard_normal(size).astype(np.float32) for _ in range(4)]
    batches[2][5] = 77.0  # an extreme value that the subsample may skip
    for batch in batches:
        stats.update(batch, samples=1)
    assert stats.max == 77.0 and stats.count == 4 * size
    assert stats.histogram.bound == 128.0  # the bound follows the exact maximum
    step = 4  # ceil(size / HISTOGRAM_VALUES_PER_SAMPLE); the offset rotates 0, 1, 2, 3
    assert stats.histogram.total == sum(batch[i % step :: step].size for i, batch in enumerate(batches))
    assert stats.histogram.total <= 4 * HISTOGRAM_VALUES_PER_SAMPLE


def test_tiny_and_huge_magnitudes_are_counted() -> None:
    stats = TensorStatistics("tiny", histogram=True)
    stats.update(np.array([1e-42, -3e-43, 0.0], np.float32))  # float32 denormals
    stats.update(np.array([3e38, -1.0], np.float32))
    assert stats.histogram.total == 5 and stats.max == pytest.approx(3e38)
