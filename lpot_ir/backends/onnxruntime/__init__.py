"""The ONNX Runtime backend: sessions, feeds, synthetic inputs, benchmarking, and the INT8 capability table.

Names are imported lazily, so ``import lpot_ir.backends.onnxruntime.capabilities`` does not load
ONNX Runtime itself.

* :mod:`.session`: :func:`make_session`, :func:`make_feed` (THE check that a batch fits a model),
  :func:`input_specs`, :func:`run_feed`, :func:`run_batches`.
* :mod:`.batching`: :class:`BatchLayout` (which axis of each input holds the samples: THE batching rules
  of calibration, sensitivity and the accuracy proxy), :func:`parse_batch_axes`.
* :mod:`.synthetic`: :func:`synthetic_inputs`, :func:`synthetic_shapes`, :func:`parse_shape_overrides`.
* :mod:`.timing`: :func:`time_feeds` (warmup + ``perf_counter`` loop), :func:`count_samples`.
* :mod:`.benchmarking`: :func:`benchmark_model` (multi-instance), :func:`compare_latency`, :func:`compare_runners`,
  :class:`PerformanceResult`, :class:`LatencyComparison`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "InputSpec",
    "input_specs",
    "output_names",
    "make_session",
    "make_feed",
    "feed_values",
    "BatchLayout",
    "parse_batch_axes",
    "run_feed",
    "run_batches",
    "model_bytes",
    "feeds_from_batches",
    "count_samples",
    "synthetic_inputs",
    "synthetic_shapes",
    "parse_shape_overrides",
    "LatencyStats",
    "InstanceTiming",
    "PerformanceResult",
    "LatencyComparison",
    "available_cores",
    "plan_instances",
    "time_feeds",
    "benchmark_model",
    "compare_latency",
    "compare_runners",
    "format_table",
]

_HOMES = {
    "session": (
        "InputSpec", "input_specs", "output_names", "make_session", "make_feed", "feed_values", "run_feed", "run_batches",
        "model_bytes",
    ),
    "batching": ("BatchLayout", "parse_batch_axes", "feeds_from_batches"),
    "timing": ("count_samples", "time_feeds"),
    "synthetic": ("synthetic_inputs", "synthetic_shapes", "parse_shape_overrides"),
    "benchmarking": (
        "LatencyStats", "InstanceTiming", "PerformanceResult", "LatencyComparison", "available_cores",
        "plan_instances", "benchmark_model", "compare_latency", "compare_runners", "format_table",
    ),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
