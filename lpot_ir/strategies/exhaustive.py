"""Exhaustive search: every combination of per-node options (FP32 included), in a sensible order.

The space is finite but its size is the product of every node's number of options, so the order
matters: the model-wise configurations first (fastest expected first), then configurations that
differ from a model-wise one in one node, then in two, and so on; at each distance, fewer FP32 nodes
first (a different INT8 option before FP32). Within that, nodes are taken in model order and
sampling sizes in their given order. Every point is proposed once; the search ends when all have
been proposed. ``max_trials`` in the YAML bounds it on real models. With several workers the points
are proposed in batches, in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from types import MappingProxyType

from lpot_ir.strategies.base import BatchSearch, Point, TuneStrategy, register_strategy

__all__ = ["ExhaustiveStrategy"]


@register_strategy("exhaustive")
class ExhaustiveStrategy(TuneStrategy):
    """All points of the space, nearest to a model-wise configuration first. No options."""

    default_options = MappingProxyType({})

    def search(self) -> BatchSearch:
        yield from self.evaluate_all(self.space.config_for(p) for p in self._points())

    def _points(self) -> Iterator[Point]:
        """Every point once, in the order described in the module docstring."""
        space = self.space
        choices = space.choices
        n = len(choices)
        globals_ = [g for g, s in space.global_order if s == 0]
        sizes = range(len(space.sampling_sizes))
        seen: set[Point] = set()
        for distance in range(n + 1):
            for n_fp32 in range(distance + 1):
                for g in globals_:
                    start = tuple(c.by_global[g] for c in choices)
                    fp32_able = [i for i in range(n) if start[i] != choices[i].fp32_index]
                    alternatives = {
                        i: [o for o in range(choices[i].fp32_index) if o != start[i]] for i in range(n)
                    }
                    alt_able = [i for i in range(n) if alternatives[i]]
                    if n_fp32 > len(fp32_able) or distance - n_fp32 > len(alt_able):
                        continue
                    for s in sizes:
                        for fp32_set in itertools.combinations(fp32_able, n_fp32):
                            taken = set(fp32_set)
                            rest = [i for i in alt_able if i not in taken]
                            for alt_set in itertools.combinations(rest, distance - n_fp32):
                                for options in itertools.product(*(alternatives[i] for i in alt_set)):
                                    assignment = list(start)
                                    for i in fp32_set:
                                        assignment[i] = choices[i].fp32_index
                                    for i, o in zip(alt_set, options, strict=True):
                                        assignment[i] = o
                                    point = (s, tuple(assignment))
                                    if point not in seen:
                                        seen.add(point)
                                        yield point
