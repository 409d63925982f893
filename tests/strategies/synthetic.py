"""A deterministic, documented accuracy model over the real nodes of ResNet-50, to test search logic.

This is a test of the search algorithms, not a stand-in for ONNX Runtime: the nodes, op types, names
and fallback groups come from the real ResNet-50 graph that ships with onnx, and the accuracy of a
configuration is this documented function of which nodes are quantized with which option:

* every quantizable node ``i`` has a harm ``h_i``: ``CRITICAL`` nodes harm 0.012-0.03 each (more than
  the whole 1% budget alone), every other node a small harm ``0.00004 x u_i`` (``u_i`` uniform [0, 1)
  from ``numpy.random.default_rng(7)``), together well inside the budget;
* a node quantized with option ``k`` of its choices harms ``h_i x (1 + 0.5 k)`` (option 0 is the
  fastest-expected model-wise candidate), an FP32 node harms 0;
* ``accuracy = BASELINE - sum of harms``; the goal is at most 1% relative loss;
* ``op_sensitivity`` reports, for each quantized node, its own harm plus 0.8 x the harm of the
  quantized node two positions earlier in model order (error leaking downstream), so the first
  ranking is imperfect and re-ranking after a revert improves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, OpCategory, QuantizableNode, SpecChoices
from lpot_ir.ir.model import load_model
from lpot_ir.ir.quant import (
    CalibAlgorithm,
    DType,
    Granularity,
    OpQuantConfig,
    Scheme,
    TuningConfig,
)
from lpot_ir.strategies.base import TrialResult, TuneStrategy, TuningSpace
from tests.conftest import ZOO_DIR

BASELINE = 0.76
TOLERANCE = 0.01  # relative
_WEIGHTS = SpecChoices(
    (DType.INT8, DType.UINT8),
    (Scheme.SYM, Scheme.ASYM),
    (Granularity.PER_CHANNEL, Granularity.PER_TENSOR),
    (CalibAlgorithm.MINMAX,),
)


def resnet_nodes_and_groups() -> tuple[tuple[QuantizableNode, ...], tuple[tuple[str, ...], ...]]:
    """The real ResNet-50 nodes the capability table covers, and (Conv, Relu) groups through BN."""
    model = load_model(ZOO_DIR / "light_resnet50.onnx")
    nodes = []
    for node in model.graph:
        cap = CAPABILITIES.get(node.op_type)
        if cap is None:
            continue
        compute = cap.category is OpCategory.COMPUTE
        nodes.append(
            QuantizableNode(
                name=node.name,
                op_type=node.op_type,
                weight_inputs=cap.weight_inputs if compute else (),
                weight_choices=_WEIGHTS if compute else None,
                category=cap.category,
            )
        )
    groups = []
    for node in model.graph:
        if node.op_type != "Relu":
            continue
        producer = node.inputs[0].producer() if node.inputs[0] is not None else None
        if producer is not None and producer.op_type == "BatchNormalization":
            producer = producer.inputs[0].producer()
        if producer is not None and producer.op_type == "Conv":
            groups.append((producer.name, node.name))
    return tuple(nodes), tuple(groups)


@dataclass
class SyntheticContext:
    """The documented accuracy model (see the module docstring) as a ``StrategyContext``."""

    space: TuningSpace
    critical: Sequence[str]
    baseline_accuracy: float = BASELINE
    sensitivity_calls: int = 0
    harm: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(7)
        u = rng.random(len(self.space.nodes))
        self.harm = {n.name: 0.00004 * float(v) for n, v in zip(self.space.nodes, u, strict=True)}
        for k, name in enumerate(self.critical):
            self.harm[name] = 0.012 + 0.006 * (k % 4)

    def meets_goal(self, accuracy: float) -> bool:
        return accuracy >= self.baseline_accuracy * (1 - TOLERANCE)

    def options(self, config: TuningConfig) -> list[int]:
        """The option index each space node takes under ``config``."""
        out = []
        for node, choice in zip(self.space.nodes, self.space.choices, strict=True):
            resolved = config.resolve(node.name, node.op_type)
            if resolved.fp32:
                out.append(choice.fp32_index)
                continue
            for k, option in enumerate(choice.options):
                if option == resolved or (
                    not node.weight_inputs and option.activation == resolved.activation
                ):
                    out.append(k)
                    break
            else:
                raise AssertionError(f"{node.name}: {resolved} is not one of its options")
        return out

    def harms(self, config: TuningConfig) -> list[float]:
        out = []
        for node, choice, k in zip(self.space.nodes, self.space.choices, self.options(config), strict=True):
            out.append(0.0 if k == choice.fp32_index else self.harm[node.name] * (1 + 0.5 * k))
        return out

    def accuracy(self, config: TuningConfig) -> float:
        return self.baseline_accuracy - float(sum(self.harms(config)))

    def op_sensitivity(self, config: TuningConfig) -> dict[str, float]:
        self.sensitivity_calls += 1
        harms = self.harms(config)
        out = {}
        for i, node in enumerate(self.space.nodes):
            if harms[i] > 0:
                out[node.name] = harms[i] + (0.8 * harms[i - 2] if i >= 2 else 0.0)
        return out


class Scores(Protocol):
    """What :func:`drive` and :func:`inc_basic_trials` need of a context: synthetic or real (ORT)."""

    def accuracy(self, config: TuningConfig) -> float: ...

    def meets_goal(self, accuracy: float) -> bool: ...


def drive(strategy: TuneStrategy, context: Scores, max_trials: int = 10_000) -> list[TrialResult]:
    """The tuning loop's protocol: propose, evaluate, observe, until None or ``max_trials``."""
    results: list[TrialResult] = []
    while len(results) < max_trials:
        config = strategy.propose()
        if config is None:
            break
        accuracy = context.accuracy(config)
        result = TrialResult(len(results), config, accuracy, {}, context.meets_goal(accuracy), None, 0.0)
        strategy.observe(result)
        results.append(result)
    return results


def first_success(results: Sequence[TrialResult]) -> int | None:
    """1-based number of the first trial that meets the goal."""
    return next((r.index + 1 for r in results if r.meets_goal), None)


def inc_basic_trials(space: TuningSpace, context: Scores) -> int:
    """Trials Intel Neural Compressor 2.6's basic strategy spends to reach the goal, simulated.

    Generously for INC (its op-type-wise stage is skipped): one trial with the default model-wise
    configuration, then each fallback group alone (last op first, as INC), then accumulating groups in the order of their
    single-fallback accuracy until the goal is met.
    """
    base = space.model_wise_configs()[0]
    trials = 1
    if context.meets_goal(context.accuracy(base)):
        return trials
    single = []
    for group in reversed(space.fallback_groups):  # INC: "from bottom to up"
        trials += 1
        accuracy = context.accuracy(space.with_fp32(base, group))
        if context.meets_goal(accuracy):
            return trials
        single.append((-accuracy, group))
    reverted: list[str] = []
    for _, group in sorted(single):
        reverted.extend(group)
        trials += 1
        if context.meets_goal(context.accuracy(space.with_fp32(base, reverted))):
            return trials
    return trials


def default_model_wise() -> tuple[OpQuantConfig, ...]:
    """Two global candidates: per-channel (fastest, option 0) and per-tensor weights."""
    from lpot_ir.strategies.space import model_wise_combinations

    return model_wise_combinations(weight_granularities=(Granularity.PER_CHANNEL, Granularity.PER_TENSOR))
