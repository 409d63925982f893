"""The timing loop of every benchmark: warmup, then ``time.perf_counter`` around each ``session.run``.

Kept free of ``onnx``/``onnx_ir`` imports so that a benchmark worker process starts quickly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lpot_ir.errors import DataError, LpotError

__all__ = ["count_samples", "time_feeds"]


def count_samples(feed: Mapping[str, np.ndarray]) -> int:
    """Samples in one feed: the first-axis length of its first input (1 for a scalar)."""
    first = next(iter(feed.values()), None)
    if first is None or first.ndim == 0:
        return 1
    return int(first.shape[0])


def time_feeds(
    session: Any,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    warmup: int,
    iterations: int,
    before_timing: Callable[[], Any] | None = None,
) -> tuple[np.ndarray, int]:
    """Run ``warmup`` untimed then ``iterations`` timed feeds (cycling through ``feeds``).

    Returns:
        (per-iteration seconds, timed samples).

    Raises:
        DataError: ONNX Runtime fails on a feed.
    """
    if not feeds:
        raise DataError("There is no batch to benchmark: the dataloader yielded nothing.")
    n = len(feeds)
    counts = [count_samples(f) for f in feeds]
    seconds = np.empty(iterations, dtype=np.float64)
    samples = 0
    index = 0
    try:
        for index in range(warmup):
            session.run(None, feeds[index % n])
        if before_timing is not None:
            before_timing()
        clock = time.perf_counter
        for index in range(iterations):
            feed = feeds[index % n]
            start = clock()
            session.run(None, feed)
            seconds[index] = clock() - start
            samples += counts[index % n]
    except LpotError:
        raise
    except Exception as exc:  # ORT raises its own exception types from C++
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"ONNX Runtime failed on benchmark batch {index % n}: {text}. Check that the data matches what the "
            "model was built for (shapes of dynamic axes, value ranges such as token ids)."
        ) from None
    return seconds, samples
