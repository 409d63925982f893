"""The accuracy-driven tuning loop behind :class:`lpot_ir.Quantization` and ``lpot tune``.

* :func:`tune` runs the loop (:mod:`lpot_ir.tuning.loop`).
* :class:`Evaluator` measures accuracy with an ``eval_func`` or a dataloader + metric.
* :class:`TuningHistory` is the append-only JSONL history that makes runs resumable.
* :class:`SensitivityMeter` is the per-node error measurement strategies ask for.
* :func:`build_space` turns the YAML ``quantization`` section into the strategies' tuning space.
"""

from __future__ import annotations

from lpot_ir.tuning.evaluation import Evaluator
from lpot_ir.tuning.history import TuningHistory
from lpot_ir.tuning.loop import LoopContext, TuningOutcome, tune
from lpot_ir.tuning.objectives import ObjectiveMeter
from lpot_ir.tuning.sensitivity import SensitivityMeter
from lpot_ir.tuning.space import build_space

__all__ = [
    "Evaluator",
    "LoopContext",
    "ObjectiveMeter",
    "SensitivityMeter",
    "TuningHistory",
    "TuningOutcome",
    "build_space",
    "tune",
]
