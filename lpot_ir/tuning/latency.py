"""What a configuration costs in latency, before it is built: a model fitted to two profiles.

Every fallback group (an op and the followers that fall back with it) has a measured kernel time in
the FP32 model and in the all-INT8 model (:func:`~lpot_ir.backends.onnxruntime.profiling.profile_nodes`,
one profiled run each). Reverting a set ``S`` of groups to FP32 costs::

    latency(S) = int8_total + sum over g in S of (fp32_time(g) - int8_time(g))
                            + kappa x (elements crossing FP32/INT8 boundaries under S - under no fallback)

A boundary is a tensor whose producer and reader run in different precisions: it costs a
QuantizeLinear or DequantizeLinear over the tensor and often a layout change (ONNX Runtime leaves its
blocked NCHWc layout around FP32 islands), so its cost grows with the tensor's size. ``kappa`` (seconds
per element) starts from the all-INT8 profile's own quantize kernels and is refitted to every
configuration whose latency the tuning loop measures. Predictions are meant for ranking and for
choosing contiguous regions; the loop's measurements decide what is reported.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.profiling import NodeProfile, profile_nodes, value_elements
from lpot_ir.backends.onnxruntime.specialize import specialize
from lpot_ir.fileio import atomic_write

__all__ = ["LatencyModel", "Group", "build_latency_model", "cached_latency_model"]

logger = logging.getLogger(__name__)

Group = tuple[str, ...]

REGION_MARGIN = 0.02
"""A group joins the FP32 side for speed only if that is predicted to save this share of the INT8 time."""

MIN_REGION_SECONDS = 1e-3
"""Below this FP32 kernel time per run, per-kernel overheads and timer noise dominate a profile: no regions.
Measured: the Fashion-MNIST CNN (0.37 ms of FP32 kernels per calibration batch) with its 1-channel stem
kept FP32 for speed ran at 0.34x FP32 against 0.74x for all-INT8 (benchmarks/real_models.py, docs/benchmarks.md);
Silero VAD (0.6 ms) gained nothing from its one region (3.80x against 3.75x)."""

_DEFAULT_KAPPA = 1e-9
"""Seconds per boundary element when the INT8 profile has no quantize kernel to learn from."""


class LatencyModel:
    """Predicts the latency of "these fallback groups in FP32" (see the module docstring).

    Build it with :meth:`from_profiles` (or :func:`build_latency_model`); :meth:`to_dict` /
    :meth:`from_dict` keep it in the workspace, so a resumed run decides with the same numbers.

    Args:
        groups: the fallback groups of the tuning space.
        fp32_time: kernel seconds of each group in the FP32 model (same order as ``groups``).
        int8_time: kernel seconds of each group in the all-INT8 model.
        edges: ``(a, b, elements)`` for each tensor between two groups, ``a``/``b`` indexes into
            ``groups`` or ``-1`` for a node outside the space (always FP32).
        fp32_total: total kernel seconds of the FP32 model.
        int8_total: total kernel seconds of the all-INT8 model.
        kappa: seconds per element of tensor crossing an FP32/INT8 boundary.
    """

    def __init__(
        self,
        groups: Sequence[Group],
        fp32_time: Sequence[float],
        int8_time: Sequence[float],
        edges: Sequence[tuple[int, int, int]],
        fp32_total: float,
        int8_total: float,
        kappa: float = _DEFAULT_KAPPA,
    ) -> None:
        self.groups = tuple(tuple(g) for g in groups)
        self.fp32_time = dict(zip(self.groups, map(float, fp32_time), strict=True))
        self.int8_time = dict(zip(self.groups, map(float, int8_time), strict=True))
        self.fp32_total = float(fp32_total)
        self.int8_total = float(int8_total)
        self.kappa = float(kappa)
        self.edge_list = [(int(a), int(b), int(n)) for a, b, n in edges]
        self._edges: dict[Group, list[tuple[Group | None, int]]] = defaultdict(list)
        for a, b, size in self.edge_list:
            side_a = self.groups[a] if a >= 0 else None
            side_b = self.groups[b] if b >= 0 else None
            if side_a is not None:
                self._edges[side_a].append((side_b, size))
            if side_b is not None:
                self._edges[side_b].append((side_a, size))
        self._observations: list[tuple[float, float]] = []  # (boundary elements delta, residual seconds)

    @classmethod
    def from_profiles(
        cls,
        groups: Sequence[Group],
        fp32_model: onnx.ModelProto,
        fp32_profile: NodeProfile,
        int8_profile: NodeProfile,
        value_elements: Mapping[str, int],
    ) -> LatencyModel:
        """Group times from the two profiles, edges from the FP32 graph, ``kappa`` from the INT8 profile.

        ``int8_profile`` is of the all-INT8 model: its nodes keep their FP32 names and inserted
        Q/DQ nodes are attributed to themselves.
        """
        groups = [tuple(g) for g in groups]
        index = {n: i for i, g in enumerate(groups) for n in g}
        producers = {out: n.name for n in fp32_model.graph.node for out in n.output if out}
        edges: list[tuple[int, int, int]] = []
        for node in fp32_model.graph.node:
            reader = index.get(node.name, -1)
            for value in node.input:
                producer = producers.get(value) if value else None
                if producer is None:
                    continue
                writer = index.get(producer, -1)
                if writer == reader and (writer >= 0 or producer == node.name):
                    continue
                if writer < 0 and reader < 0:
                    continue  # both always FP32: never a boundary
                edges.append((writer, reader, int(value_elements.get(value, 0))))
        return cls(
            groups,
            [sum(fp32_profile.node_seconds.get(n, 0.0) for n in g) for g in groups],
            [sum(int8_profile.node_seconds.get(n, 0.0) for n in g) for g in groups],
            edges,
            fp32_profile.total_seconds,
            int8_profile.total_seconds,
            cls._initial_kappa(int8_profile, value_elements),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [list(g) for g in self.groups],
            "fp32_time": [self.fp32_time[g] for g in self.groups],
            "int8_time": [self.int8_time[g] for g in self.groups],
            "edges": [list(e) for e in self.edge_list],
            "fp32_total": self.fp32_total,
            "int8_total": self.int8_total,
            "kappa": self.kappa,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyModel:
        return cls(
            [tuple(g) for g in data["groups"]],
            data["fp32_time"],
            data["int8_time"],
            [tuple(e) for e in data["edges"]],  # type: ignore[misc]
            data["fp32_total"],
            data["int8_total"],
            data["kappa"],
        )

    @staticmethod
    def _initial_kappa(profile: NodeProfile, elements: Mapping[str, int]) -> float:
        rates = []
        for name, seconds in profile.node_seconds.items():
            if name.endswith("_QuantizeLinear") and seconds > 0:
                count = elements.get(name[: -len("_QuantizeLinear")], 0)
                if count > 0:
                    rates.append(seconds / count)
        # a boundary costs a quantize or dequantize pass and usually a layout change: twice a quantize
        return 2.0 * float(np.median(rates)) if rates else _DEFAULT_KAPPA

    # -- predictions -----------------------------------------------------------------------------

    def revert_seconds(self, group: Group) -> float:
        """Kernel time added by running ``group`` in FP32 instead of INT8, boundaries aside (< 0: INT8 is slower)."""
        return self.fp32_time.get(group, 0.0) - self.int8_time.get(group, 0.0)

    @staticmethod
    def _fp32(side: Group | None, fp32: set[Group]) -> bool:
        return side is None or side in fp32

    def boundary_elements(self, fp32_groups: Iterable[Group]) -> int:
        """Elements of the tensors that cross between FP32 and INT8 when ``fp32_groups`` are FP32."""
        fp32 = set(fp32_groups)
        total = 0
        for a, b, size in self.edge_list:
            side_a = self.groups[a] if a >= 0 else None
            side_b = self.groups[b] if b >= 0 else None
            if self._fp32(side_a, fp32) != self._fp32(side_b, fp32):
                total += size
        return total

    def flip_delta(self, group: Group, fp32_groups: set[Group]) -> float:
        """Predicted seconds added by reverting ``group`` (INT8 now) with ``fp32_groups`` already FP32."""
        before = after = 0
        mine_now = group in fp32_groups
        for other, size in self._edges.get(group, ()):
            other_fp32 = self._fp32(other, fp32_groups)
            before += size if other_fp32 != mine_now else 0
            after += size if other_fp32 != (not mine_now) else 0
        sign = -1.0 if mine_now else 1.0
        return sign * self.revert_seconds(group) + self.kappa * (after - before)

    def predict(self, fp32_groups: Iterable[Group]) -> float:
        """Predicted seconds per run with ``fp32_groups`` in FP32 and the rest of the space in INT8."""
        fp32 = set(fp32_groups)
        extra = self.boundary_elements(fp32) - self.boundary_elements(())
        return self.int8_total + sum(self.revert_seconds(g) for g in fp32) + self.kappa * extra

    def predicted_speedup(self, fp32_groups: Iterable[Group]) -> float:
        """FP32 kernel time / predicted kernel time."""
        predicted = self.predict(fp32_groups)
        return self.fp32_total / predicted if predicted > 0 else math.inf

    def regions(self, fp32_groups: Iterable[Group], *, max_steps: int | None = None) -> set[Group]:
        """``fp32_groups`` grown by every INT8 group whose reversion is predicted to make the model faster.

        Those are INT8 islands between FP32 regions (their boundaries cost more than their integer
        kernels save) and groups whose INT8 kernel is slower than FP32 outright. Reverting a group
        never adds quantization error, so this trades nothing for speed. Greedy, best first, at most
        ``max_steps`` additions (default: the number of groups), so it always ends. On a model whose FP32
        kernels take less than :data:`MIN_REGION_SECONDS` per run, nothing is added: its profile measures
        overheads, not kernels.
        """
        fp32 = set(fp32_groups)
        if self.fp32_total < MIN_REGION_SECONDS:
            return fp32
        limit = len(self.groups) if max_steps is None else max_steps
        margin = REGION_MARGIN * self.int8_total  # below this, a "gain" may be profile noise
        for _ in range(limit):
            best, best_delta = None, -margin
            for group in self.groups:
                if group in fp32:
                    continue
                delta = self.flip_delta(group, fp32)
                if delta < best_delta:
                    best, best_delta = group, delta
            if best is None:
                break
            fp32.add(best)
        return fp32

    # -- refitting -------------------------------------------------------------------------------

    def observe(self, fp32_groups: Iterable[Group], measured_speedup: float) -> None:
        """Refit ``kappa`` to a measured FP32/INT8 latency ratio of the configuration with ``fp32_groups``."""
        if not (math.isfinite(measured_speedup) and measured_speedup > 0):
            return
        fp32 = set(fp32_groups)
        extra = self.boundary_elements(fp32) - self.boundary_elements(())
        if extra <= 0:
            return
        measured = self.fp32_total / measured_speedup
        residual = measured - self.int8_total - sum(self.revert_seconds(g) for g in fp32)
        self._observations.append((float(extra), float(residual)))
        xs = np.array([x for x, _ in self._observations])
        ys = np.array([y for _, y in self._observations])
        fitted = float(np.dot(xs, ys) / np.dot(xs, xs))
        if math.isfinite(fitted):
            self.kappa = max(0.0, fitted)


def build_latency_model(
    fp32_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    groups: Sequence[Group],
    feed: Mapping[str, np.ndarray],
    *,
    seconds: float = 1.0,
) -> LatencyModel:
    """Profile ``fp32_model`` and ``int8_model`` (about ``seconds`` each) on ``feed`` and build the model.

    A model with ``If`` nodes is profiled and read as its copy specialized to ``feed`` (the branches ``feed``
    takes inlined, their nodes keeping their names): the profile attributes kernel times, and the edges
    between groups are found, in the main graph only.
    """
    if any(node.op_type == "If" for node in fp32_model.graph.node):
        fp32_model = specialize(fp32_model, [feed])[0].model
        int8_model = specialize(int8_model, [feed])[0].model
    fp32 = profile_nodes(fp32_model, feed, seconds=seconds)
    int8 = profile_nodes(int8_model, feed, seconds=seconds)
    model = LatencyModel.from_profiles(groups, fp32_model, fp32, int8, value_elements(fp32_model, feed))
    logger.info(
        "latency model: FP32 %.3f ms, all-INT8 %.3f ms of kernel time per run (%d groups)",
        fp32.total_seconds * 1e3, int8.total_seconds * 1e3, len(model.groups),
    )  # fmt: skip
    return model


def cached_latency_model(path: str | os.PathLike[str], key: str, build: Callable[[], LatencyModel]) -> LatencyModel:
    """The latency model stored at ``path`` under ``key``, else ``build()`` stored there (atomically).

    Profiles are measurements: a resumed tuning run must decide with the numbers the first run had.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("key") == key:
            return LatencyModel.from_dict(data["model"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    model = build()
    atomic_write(path, json.dumps({"key": key, "model": model.to_dict()}) + "\n")
    return model
