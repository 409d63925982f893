"""Compression stages side by side: dense FP32 -> pruned (shrunk) FP32 -> INT8, with sparsity, size and speed.

:func:`compare_stages` measures each model the same way: the weight sparsity (zero elements of the
Conv/Gemm/MatMul weights, read through ``DequantizeLinear`` for INT8 models), the weight count, the
serialized size, and the latency ratio to the first stage (interleaved rounds, one intra-op thread:
:func:`~lpot_ir.backends.onnxruntime.compare_latency`). ``Quantization`` adds this table to its report
when its model comes from a :class:`~lpot_ir.pruning.Pruning` (see docs/pruning.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from lpot_ir.backends.onnxruntime import compare_latency

__all__ = ["StageMetrics", "compare_stages", "format_stages", "weight_sparsity"]

logger = logging.getLogger(__name__)

_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class StageMetrics:
    """One stage of a compression pipeline.

    Attributes:
        name: the stage (``dense FP32``, ``pruned FP32``, ``INT8``).
        weights: elements of the Conv/Gemm/MatMul weights.
        zeros: how many of them are zero.
        size_bytes: the serialized model's size.
        speedup: latency of the first stage / latency of this one (``None``: not measured).
        accuracy: the stage's accuracy, when known.
    """

    name: str
    weights: int
    zeros: int
    size_bytes: int
    speedup: float | None = None
    accuracy: float | None = None

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.weights, 1)


def weight_sparsity(model: onnx.ModelProto) -> tuple[int, int]:
    """(elements, zeros) of the weights of Conv/ConvTranspose/Gemm/MatMul nodes (through DequantizeLinear)."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    seen: set[str] = set()
    total = zeros = 0
    for node in model.graph.node:
        if node.op_type not in _COMPUTE or len(node.input) < 2:
            continue
        name = node.input[1]
        producer = producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear":
            name = producer.input[0]
            zero_point = inits.get(producer.input[2]) if len(producer.input) > 2 else None
        else:
            zero_point = None
        if name in seen or name not in inits:
            continue
        seen.add(name)
        data = numpy_helper.to_array(inits[name])
        if zero_point is not None:
            zp = numpy_helper.to_array(zero_point).astype(np.int64)
            axis = next((a.i for a in producer.attribute if a.name == "axis"), 1) if producer is not None else 1
            if zp.ndim == 1 and data.ndim > 1:
                shape = [1] * data.ndim
                shape[axis % data.ndim] = -1
                zp = zp.reshape(shape)
            data = data.astype(np.int64) - zp
        total += int(data.size)
        zeros += int(data.size - np.count_nonzero(data))
    return total, zeros


def compare_stages(
    stages: Mapping[str, onnx.ModelProto],
    inputs: Any = None,
    *,
    accuracy: Mapping[str, float | None] | None = None,
    measure_speed: bool = True,
    rounds: int = 10,
) -> list[StageMetrics]:
    """Measure every stage; speedups are relative to the first.

    Args:
        stages: stage name -> model (all taking the same inputs), in pipeline order.
        inputs: one input batch (default: synthetic, from the first model).
        accuracy: stage name -> accuracy, copied into the rows.
        measure_speed: time the models (interleaved rounds, one thread).
        rounds: interleaved rounds.
    """
    speed: dict[str, float] = {}
    if measure_speed and len(stages) > 1:
        try:
            comparison = compare_latency(dict(stages), inputs, rounds=rounds, iterations=10, warmup=5)
            speed = {name: comparison.speedup(name) for name in stages}
        except Exception as exc:  # a timing problem must not lose the report
            logger.warning("could not time the compression stages: %s", exc)
    rows = []
    for name, model in stages.items():
        total, zeros = weight_sparsity(model)
        rows.append(
            StageMetrics(name, total, zeros, model.ByteSize(), speed.get(name), (accuracy or {}).get(name))
        )
    return rows


def format_stages(rows: Sequence[StageMetrics]) -> str:
    """A plain-text table of the stages."""
    width = max([len("stage"), *(len(r.name) for r in rows)])
    lines = [f"{'stage':<{width}}  {'weights':>10} {'sparsity':>9} {'size KiB':>9} {'speedup':>8} {'accuracy':>9}"]
    for r in rows:
        speed = f"{r.speedup:.2f}x" if r.speedup is not None else "-"
        acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
        lines.append(
            f"{r.name:<{width}}  {r.weights:>10} {r.sparsity:>9.2%} {r.size_bytes / 1024:>9.1f} {speed:>8} {acc:>9}"
        )
    return "\n".join(lines)
