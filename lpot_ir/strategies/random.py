"""Random search: seeded uniform sampling of the space without replacement.

Each point (a calibration sampling size and one option per node, FP32 included) is equally likely;
a node with ``k`` INT8 options is FP32 with probability ``1 / (k + 1)``. The same seed gives the same
sequence. Spaces of up to ``enumerate_limit`` points are shuffled once (a permutation: every point
exactly once, then the search ends); larger spaces are sampled coordinate by coordinate and points
already drawn are drawn again, at most ``max_redraws`` times in a row before the search ends.

With several workers the points are proposed in batches (the sequence does not depend on results, so it
is the same as with one worker).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

import numpy as np

from lpot_ir.strategies.base import BatchSearch, Point, TuneStrategy, TuningSpace, register_strategy

__all__ = ["RandomStrategy", "decode_point", "random_points"]


def decode_point(space: TuningSpace, index: int) -> Point:
    """The point with mixed-radix number ``index`` (sampling size first, then nodes in model order)."""
    assignment = []
    for choice in reversed(space.choices):
        index, option = divmod(index, len(choice.options))
        assignment.append(option)
    return (index % len(space.sampling_sizes), tuple(reversed(assignment)))


def random_points(
    space: TuningSpace, rng: np.random.Generator, *, enumerate_limit: int = 200_000, max_redraws: int = 1000
) -> Iterator[Point]:
    """Distinct uniformly random points of ``space`` (finite: ends when exhausted or after redraws)."""
    total = space.size
    if total <= enumerate_limit:
        for index in rng.permutation(total):
            yield decode_point(space, int(index))
        return
    radices = np.array([len(c.options) for c in space.choices], dtype=np.int64)
    drawn: set[Point] = set()
    redraws = 0
    while redraws < max_redraws:
        size_index = int(rng.integers(len(space.sampling_sizes)))
        assignment = tuple(int(v) for v in rng.integers(0, radices))
        point = (size_index, assignment)
        if point in drawn:
            redraws += 1
            continue
        redraws = 0
        drawn.add(point)
        yield point


@register_strategy("random")
class RandomStrategy(TuneStrategy):
    """Uniform random points without replacement.

    Options:
        enumerate_limit: spaces up to this many points are permuted exactly. Default 200000.
        max_redraws: in larger spaces, consecutive already-drawn points before giving up. Default 1000.
    """

    default_options = MappingProxyType({"enumerate_limit": 200_000, "max_redraws": 1000})

    def search(self) -> BatchSearch:
        points = random_points(
            self.space,
            self.rng,
            enumerate_limit=int(self.options["enumerate_limit"]),
            max_redraws=int(self.options["max_redraws"]),
        )
        yield from self.evaluate_all(self.space.config_for(p) for p in points)
