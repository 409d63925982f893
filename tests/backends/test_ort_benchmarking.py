"""benchmark_model, plan_instances, compare_latency and the result types."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lpot_ir.backends.onnxruntime import (
    LatencyComparison,
    PerformanceResult,
    available_cores,
    benchmark_model,
    compare_latency,
    format_table,
    plan_instances,
)
from lpot_ir.errors import ConfigError, DataError

BATCHES = [(np.full((2, 3), i, np.float32), np.ones((2, 3), np.float32)) for i in range(3)]


def test_single_instance_counts_and_percentiles(add_matmul_model):
    result = benchmark_model(add_matmul_model, BATCHES, warmup=2, iterations=-1)
    assert isinstance(result, PerformanceResult)
    assert (result.instances, result.iterations, result.samples, result.batch_size, result.warmup) == (1, 3, 6, 2, 2)
    assert 0 < result.latency_p50_ms <= result.latency_p90_ms <= result.latency_p99_ms
    assert result.throughput > 0 and result.cores_per_instance == len(available_cores())
    cycled = benchmark_model(add_matmul_model, BATCHES, warmup=0, iterations=7, cores_per_instance=1)
    assert (cycled.iterations, cycled.samples, cycled.cores_per_instance) == (7, 14, 1)


def test_synthetic_input_and_result_data(add_matmul_model):
    result = benchmark_model(add_matmul_model, batch_size=4, warmup=1, iterations=5)
    data = result.to_dict()
    json.dumps(data)
    assert data["mode"] == "performance" and data["batch_size"] == 4 and data["samples"] == 20
    assert data["per_instance"][0]["iterations"] == 5
    text = str(result)
    for field in ("latency p50", "latency p90", "latency p99", "throughput", "batch size", "warmup",
                  "iterations", "instances", "cores per instance"):
        assert field in text


def test_bad_counts_and_too_many_cores(add_matmul_model):
    n = len(available_cores())
    with pytest.raises(ConfigError, match=rf"needs {n + 1} cores, but this process may use only {n}"):
        plan_instances(1, n + 1)
    with pytest.raises(ConfigError, match="each instance needs at least one core"):
        plan_instances(n + 1)
    with pytest.raises(ConfigError, match="iteration must be"):
        benchmark_model(add_matmul_model, BATCHES, iterations=0)
    with pytest.raises(DataError, match="'y' expects shape"):
        benchmark_model(add_matmul_model, [(np.ones((2, 3), np.float32), np.ones((2, 5), np.float32))])


def test_plan_instances_gives_disjoint_cores():
    cores = available_cores()
    plan = plan_instances(len(cores), 1)
    assert plan == [(c,) for c in cores]
    assert plan_instances(1) == [tuple(cores)]


@pytest.mark.slow
@pytest.mark.skipif(len(available_cores()) < 2, reason="needs 2 cores")
def test_instance_failure_is_raised_in_the_parent(add_matmul_model):
    # Fits the declared shapes (N is free) but x and y disagree on N: ORT fails inside both workers.
    bad = [(np.ones((2, 3), np.float32), np.ones((3, 3), np.float32))]
    with pytest.raises(DataError, match="ONNX Runtime failed on benchmark batch 0"):
        benchmark_model(add_matmul_model, bad, warmup=0, iterations=2, cores_per_instance=1, num_instances=2)


def test_compare_latency(add_matmul_model):
    comparison = compare_latency(
        {"ref": add_matmul_model, "same": add_matmul_model.SerializeToString()},
        (np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)),
        rounds=3, iterations=4, warmup=1,
    )
    assert isinstance(comparison, LatencyComparison)
    assert comparison.names == ("ref", "same") and comparison.ratio["ref"] == 1.0
    assert all(len(v) == 3 for v in comparison.per_round_ms.values())
    assert comparison.ratio["same"] > 0 and comparison.speedup("same") == pytest.approx(1 / comparison.ratio["same"])
    json.dumps(comparison.to_dict())
    assert "ratio vs ref" in str(comparison) and "same" in str(comparison)
    synthetic = compare_latency({"only": add_matmul_model}, rounds=1, iterations=1, warmup=0, batch_size=3)
    assert synthetic.ratio == {"only": 1.0}


def test_format_table_aligns_columns():
    text = format_table(("name", "value"), [("a", 1.5), ("longer", 22)], title="T")
    lines = text.splitlines()
    assert lines[0] == "T" and lines[1].startswith("name") and len({len(line) for line in lines[1:]}) == 1
    assert lines[3].endswith(" 1.5") and lines[4].endswith("  22")
