"""Bayesian optimization: a Gaussian process over per-node options, expected-improvement acquisition.

A point is a calibration sampling size and one option per node (its INT8 options and FP32). The GP
(written with numpy; no extra dependency) uses the kernel ``exp(-hamming(x, x') / lengthscale)`` on
that categorical encoding (a product of per-node kernels, so positive definite), with the
lengthscale chosen by marginal likelihood from a small grid after every observation. It models the
target ``-loss`` (:meth:`TuneStrategy.loss`: relative accuracy drop, plus a cost for FP32 ops, plus 1
when the goal is not met). The next point maximizes expected improvement over a candidate pool:
uniform random points and one- or two-node mutations of the best points so far (which is how single
sensitive ops get reverted), never a point already evaluated.

The model-wise configurations are evaluated first, then ``n_initial`` random points, then the GP
proposes. Exhausts when every point has been evaluated.

With several workers (``batch_size`` > 1) the GP proposes a batch by the *constant liar* heuristic
(Ginsbourger, Le Riche and Carraro, 2010): after each point of the batch is chosen, it is added to the
observations with a pessimistic made-up target (the worst target observed so far) and the GP is fitted
again, so the next point of the batch is chosen away from it. The lies are dropped when the real
results arrive. With one worker there are no lies and the trials are those of the sequential search.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from types import MappingProxyType

import numpy as np

from lpot_ir.strategies.base import BatchSearch, Point, TuneStrategy, register_strategy
from lpot_ir.strategies.random import random_points

__all__ = ["BayesianStrategy", "HammingGP"]

logger = logging.getLogger(__name__)

_erf = np.vectorize(math.erf, otypes=[float])


class HammingGP:
    """A Gaussian process on categorical vectors with kernel ``exp(-hamming / lengthscale)``.

    Args:
        radices: the number of categories of each coordinate.
        noise: observation noise variance (on standardized targets).
    """

    def __init__(self, radices: list[int], noise: float = 1e-4) -> None:
        self.radices = radices
        self.offsets = np.concatenate([[0], np.cumsum(radices)[:-1]]).astype(np.int64)
        self.noise = noise
        self.lengthscale = 1.0

    def _onehot(self, points: np.ndarray) -> np.ndarray:
        out = np.zeros((points.shape[0], int(sum(self.radices))), dtype=np.float64)
        rows = np.repeat(np.arange(points.shape[0]), points.shape[1])
        out[rows, (points + self.offsets).ravel()] = 1.0
        return out

    def _hamming(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return len(self.radices) - self._onehot(a) @ self._onehot(b).T

    def fit(self, points: np.ndarray, targets: np.ndarray) -> HammingGP:
        """Fit to ``points`` (int array, one row per point) and ``targets``; pick the lengthscale."""
        self.x = np.asarray(points, dtype=np.int64)
        y = np.asarray(targets, dtype=np.float64)
        self.mean = float(y.mean())
        std = float(y.std())
        self.scale = std if std > 1e-12 else 1.0
        self.y = (y - self.mean) / self.scale
        distances = self._hamming(self.x, self.x)
        dims = max(1, len(self.radices))
        best = None
        for factor in (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0):
            lengthscale = max(0.25, factor * dims)
            kernel = np.exp(-distances / lengthscale) + self.noise * np.eye(len(self.y))
            try:
                chol = np.linalg.cholesky(kernel)
            except np.linalg.LinAlgError:
                continue
            alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, self.y))
            evidence = -0.5 * float(self.y @ alpha) - float(np.log(np.diag(chol)).sum())
            if best is None or evidence > best[0]:
                best = (evidence, lengthscale, chol, alpha)
        if best is None:  # pragma: no cover - the noise term keeps the kernel positive definite
            raise np.linalg.LinAlgError("GP kernel is not positive definite")
        _, self.lengthscale, self.chol, self.alpha = best
        return self

    def predict(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at ``points`` (in target units)."""
        k = np.exp(-self._hamming(np.asarray(points, dtype=np.int64), self.x) / self.lengthscale)
        mean = k @ self.alpha
        v = np.linalg.solve(self.chol, k.T)
        var = np.clip(1.0 - (v * v).sum(axis=0), 1e-12, None)
        return mean * self.scale + self.mean, np.sqrt(var) * self.scale


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float) -> np.ndarray:
    """EI of maximizing: ``E[max(f - best - xi, 0)]`` under ``N(mean, std^2)``."""
    gain = mean - best - xi
    z = gain / std
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return gain * cdf + std * pdf


@register_strategy("bayesian")
class BayesianStrategy(TuneStrategy):
    """Gaussian-process search over per-node options.

    Options:
        fp32_penalty: loss for all nodes in FP32 (proportional to the FP32 fraction). Default 0.1.
        n_initial: random points evaluated after the model-wise ones, before the GP. Default 2.
        n_candidates: random candidates scored per step (as many mutations are added). Default 256.
        xi: exploration margin of expected improvement. Default 0.01.
    """

    default_options = MappingProxyType({"fp32_penalty": 0.1, "n_initial": 2, "n_candidates": 256, "xi": 0.01})

    def search(self) -> BatchSearch:
        space = self.space
        total = space.size
        radices = [len(space.sampling_sizes)] + [len(c.options) for c in space.choices]
        seen: set[Point] = set()
        observed: list[tuple[Point, float]] = []
        penalty = float(self.options["fp32_penalty"])
        gp = HammingGP(radices)
        randoms = random_points(space, self.rng)

        def evaluate(points: list[Point]) -> BatchSearch:
            seen.update(points)
            results = yield [space.config_for(p) for p in points]
            observed.extend((p, -self.loss(r, penalty)) for p, r in zip(points, results, strict=True))

        yield from evaluate(list(dict.fromkeys(space.global_point(g, s) for g, s in space.global_order)))
        initial: list[Point] = []
        for _ in range(int(self.options["n_initial"])):
            point = next((p for p in randoms if p not in seen and p not in initial), None)
            if point is None:
                break
            initial.append(point)
        yield from evaluate(initial)
        if len(initial) < int(self.options["n_initial"]):
            return
        while len(seen) < total:
            batch: list[Point] = []
            lies: list[tuple[Point, float]] = []
            while len(batch) < max(1, self.batch_size) and len(seen) + len(batch) < total:
                point = self._next_point(gp, observed + lies, seen | set(batch), radices, randoms)
                if point is None:
                    break
                batch.append(point)
                lies.append((point, min(t for _, t in observed)))  # constant liar: the worst target so far
            if not batch:
                return
            yield from evaluate(batch)

    def _next_point(
        self,
        gp: HammingGP,
        observed: list[tuple[Point, float]],
        excluded: set[Point],
        radices: list[int],
        randoms: Iterator[Point],
    ) -> Point | None:
        """The candidate of largest expected improvement (a random unseen point if no candidate is left)."""
        candidates = self._candidates(observed, excluded, radices)
        if not candidates:
            return next((p for p in randoms if p not in excluded), None)
        x = np.array([[p[0], *p[1]] for p, _ in observed], dtype=np.int64)
        y = np.array([t for _, t in observed])
        gp.fit(x, y)
        cx = np.array([[p[0], *p[1]] for p in candidates], dtype=np.int64)
        mean, std = gp.predict(cx)
        ei = expected_improvement(mean, std, float(y.max()), float(self.options["xi"]) * gp.scale)
        return candidates[int(np.argmax(ei))]

    def _candidates(
        self, observed: list[tuple[Point, float]], seen: set[Point], radices: list[int]
    ) -> list[Point]:
        """Unseen candidates: uniform random points and mutations of the best observed points."""
        n = int(self.options["n_candidates"])
        rng = self.rng
        out: dict[Point, None] = {}
        draws = rng.integers(0, np.array(radices), size=(n, len(radices)))
        for row in draws:
            out[(int(row[0]), tuple(int(v) for v in row[1:]))] = None
        best = sorted(range(len(observed)), key=lambda i: (-observed[i][1], i))[:3]
        for i in best:
            flat = [observed[i][0][0], *observed[i][0][1]]
            for _ in range(max(1, n // len(best))):
                mutated = list(flat)
                for _ in range(int(rng.integers(1, 3))):
                    coord = int(rng.integers(len(radices)))
                    if radices[coord] > 1:
                        shift = int(rng.integers(1, radices[coord]))
                        mutated[coord] = (mutated[coord] + shift) % radices[coord]
                out[(mutated[0], tuple(mutated[1:]))] = None
        return [p for p in out if p not in seen]
