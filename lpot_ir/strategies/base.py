"""The tuning space, the strategy base class and the strategy registry.

A strategy searches the :class:`TuningSpace` for a :class:`TuningConfig` whose quantized model meets
the accuracy goal. It only ever edits ``TuningConfig`` data: the tuning loop
(:mod:`lpot_ir.quantization`) quantizes and evaluates what the strategy proposes and reports back::

    strategy = get_strategy("basic")(space, context, seed=1978)
    while (config := strategy.propose()) is not None:      # None: the search space is exhausted
        result = evaluate(config)                          # the loop: quantize, run, measure
        strategy.observe(result)                           # a TrialResult for that config

A strategy is written as one generator, :meth:`TuneStrategy.search`: it yields configurations and each
``yield`` returns that configuration's :class:`TrialResult`. The base class guarantees the loop's
invariants: a configuration whose :meth:`TuningConfig.key` was already proposed or observed is never
proposed again (the generator receives the earlier result instead, without a new trial), a finished
generator means "exhausted" (``propose`` returns ``None`` from then on), and a generator that keeps
yielding known configurations is stopped after a bounded number of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import LOW_PRECISION_FLOATS, Approach, DType, OpQuantConfig, QuantFormat, TuningConfig
from lpot_ir.metrics.relative import relative_loss
from lpot_ir.registry import add_to_registry
from lpot_ir.strategies.space import (
    NodeChoices,
    SpaceNode,
    expected_cost,
    float_option,
    node_aliases,
    node_choices,
)

__all__ = [
    "TuningSpace",
    "TrialResult",
    "StrategyContext",
    "TuneStrategy",
    "Search",
    "STRATEGIES",
    "register_strategy",
    "get_strategy",
    "MAX_KNOWN_PROPOSALS",
    "Point",
    "group_sensitivity",
]

logger = logging.getLogger(__name__)

MAX_KNOWN_PROPOSALS = 10_000
"""How many already-evaluated configurations in a row a strategy may yield before it is stopped."""

Point = tuple[int, tuple[int, ...]]
"""A point of the space: (sampling-size index, option index of each node in ``TuningSpace.nodes``)."""


@dataclass(frozen=True)
class TuningSpace:
    """What a strategy may change, built by the tuning loop from the YAML and the quantizable nodes.

    Attributes:
        nodes: the nodes the strategy may change (quantizable and not pinned by the user), in model
            order; each has ``name`` and ``op_type`` (``QuantizableNode`` from the capability table).
        model_wise: the global candidates (``OpQuantConfig``: INT8 ones, or bf16/fp16 for mixed precision
            without INT8; never FP32); empty means ``(base.global_config,)``.
        sampling_sizes: calibration sampling sizes to try; empty means ``(base.calib_sampling_size,)``.
        approach: the quantization approach (copied into ``base``).
        format: QDQ or QOperator (copied into ``base``).
        base: the user's configuration with their op-wise settings applied; every proposal is built
            from it, so user scopes keep precedence over global candidates.
        groups: names of nodes that must fall back to FP32 together (an op and the data-movement ops
            that share its scale). Nodes in no group form their own group; names that are not in
            ``nodes`` are ignored.
        float_choices: node name -> the 16-bit float types (bf16, fp16) it may run in instead of INT8 or
            FP32 (mixed precision: built from the YAML dtype lists and the declared precision tables); a node
            not listed has none. Each becomes an option between the node's INT8 options and FP32.
    """

    nodes: tuple[SpaceNode, ...]
    model_wise: tuple[OpQuantConfig, ...] = ()
    sampling_sizes: tuple[int, ...] = ()
    approach: Approach = Approach.STATIC
    format: QuantFormat = QuantFormat.QDQ
    base: TuningConfig = field(default_factory=TuningConfig)
    groups: tuple[tuple[str, ...], ...] = ()
    float_choices: Mapping[str, tuple[DType, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("nodes", tuple(self.nodes))
        set_("approach", Approach(self.approach))
        set_("format", QuantFormat(self.format))
        set_("base", dataclasses.replace(self.base, approach=self.approach, format=self.format))
        names = [n.name for n in self.nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"The tuning space lists nodes more than once: {duplicates}. Node names must be unique; "
                "build the space from ModelQuantizer.nodes."
            )
        model_wise = tuple(dict.fromkeys(self.model_wise)) or (self.base.global_config,)
        if any(c.fp32 and not c.low_precision_float for c in model_wise):
            raise ConfigError(
                "A model-wise tuning candidate is FP32, which would quantize nothing. Remove 'fp32' from "
                "the model_wise section; to keep single ops in FP32 use op_wise."
            )
        set_("model_wise", model_wise)
        sizes = tuple(dict.fromkeys(int(s) for s in self.sampling_sizes)) or (self.base.calib_sampling_size,)
        if any(s <= 0 for s in sizes):
            raise ConfigError(
                f"Calibration sampling sizes must be positive integers, got {list(sizes)} "
                "(quantization.calibration.sampling_size)."
            )
        if self.approach is Approach.DYNAMIC:
            sizes = sizes[:1]  # dynamic quantization does not calibrate: one size is enough
        set_("sampling_sizes", sizes)
        set_("groups", tuple(tuple(g) for g in self.groups))
        floats = {str(k): tuple(DType(d) for d in v) for k, v in dict(self.float_choices).items()}
        bad = sorted({str(d) for v in floats.values() for d in v if d not in LOW_PRECISION_FLOATS})
        if bad:
            raise ConfigError(
                f"TuningSpace.float_choices lists {bad}; a node's float options are bf16 and fp16 (FP32 is always "
                "an option, INT8 options come from model_wise)."
            )
        set_("float_choices", MappingProxyType(floats))

    # -- model-wise candidates -------------------------------------------------------------------

    def model_wise_config(self, global_index: int, size_index: int = 0) -> TuningConfig:
        """``base`` with model-wise candidate ``global_index`` as its global setting."""
        return dataclasses.replace(
            self.base,
            global_config=self.model_wise[global_index],
            calib_sampling_size=self.sampling_sizes[size_index],
        )

    @functools.cached_property
    def global_order(self) -> tuple[tuple[int, int], ...]:
        """(candidate index, sampling-size index) pairs, fastest expected first (see ``expected_cost``)."""
        order = sorted(range(len(self.model_wise)), key=lambda g: (expected_cost(self.model_wise[g]), g))
        return tuple((g, s) for g in order for s in range(len(self.sampling_sizes)))

    def model_wise_configs(self) -> tuple[TuningConfig, ...]:
        """The model-wise configurations in :attr:`global_order`."""
        return tuple(self.model_wise_config(g, s) for g, s in self.global_order)

    # -- per-node choices ------------------------------------------------------------------------

    @functools.cached_property
    def choices(self) -> tuple[NodeChoices, ...]:
        """The options of each node (same order as :attr:`nodes`): INT8 ones, bf16/fp16, FP32 last."""
        globals_ = [self.model_wise_config(g) for g in range(len(self.model_wise))]
        return tuple(node_choices(node, globals_, self.float_choices.get(node.name, ())) for node in self.nodes)

    @functools.cached_property
    def node_index(self) -> Mapping[str, int]:
        """Position of each node name in :attr:`nodes`."""
        return MappingProxyType({n.name: i for i, n in enumerate(self.nodes)})

    @property
    def size(self) -> int:
        """The number of distinct points: sampling sizes x the product of every node's options."""
        return len(self.sampling_sizes) * math.prod(len(c.options) for c in self.choices)

    def global_point(self, global_index: int, size_index: int = 0) -> Point:
        """The point of a model-wise configuration."""
        return (size_index, tuple(c.by_global[global_index] for c in self.choices))

    def config_for(self, point: Point) -> TuningConfig:
        """The canonical configuration of a point: equal points always give equal keys.

        The global setting is the model-wise candidate that most nodes follow (ties: fastest
        expected); every other node gets a node-name scope with its option.
        """
        size_index, assignment = point
        if len(assignment) != len(self.choices):
            raise ValueError(f"a point needs {len(self.choices)} node options, got {len(assignment)}")
        ranked = [g for g, s in self.global_order if s == 0]
        best_g = max(
            ranked,
            key=lambda g: (
                sum(a == c.by_global[g] for a, c in zip(assignment, self.choices, strict=True)),
                -ranked.index(g),
            ),
        )
        config = self.model_wise_config(best_g, size_index)
        for option, choice in zip(assignment, self.choices, strict=True):
            if option != choice.by_global[best_g]:
                config = config.with_node(choice.name, choice.options[option])
        return config

    def with_fp32(self, config: TuningConfig, names: Iterable[str]) -> TuningConfig:
        """``config`` with ``names`` in FP32, scopes added in model order (so keys do not depend on
        the order the names are given in)."""
        wanted = sorted(set(names), key=lambda n: self.node_index.get(n, len(self.nodes)))
        return config.with_nodes_fp32(wanted)

    def fp32_nodes(self, config: TuningConfig) -> tuple[str, ...]:
        """The nodes of the space that ``config`` keeps out of INT8 (FP32, or bf16/fp16), in model order."""
        return tuple(n.name for n in self.nodes if config.resolve(n.name, n.op_type, node_aliases(n)).fp32)

    # -- mixed precision -------------------------------------------------------------------------

    @property
    def float_dtypes(self) -> tuple[DType, ...]:
        """The 16-bit float types some node of the space may run in (bf16 first)."""
        present = {d for v in self.float_choices.values() for d in v}
        return tuple(d for d in LOW_PRECISION_FLOATS if d in present)

    def float_candidates(self, names: Iterable[str], dtype: DType) -> tuple[str, ...]:
        """Those of ``names`` that may run in ``dtype``, in model order."""
        dtype = DType(dtype)
        wanted = set(names)
        return tuple(n.name for n in self.nodes if n.name in wanted and dtype in self.float_choices.get(n.name, ()))

    def with_float(self, config: TuningConfig, names: Iterable[str], dtype: DType) -> TuningConfig:
        """``config`` with those of ``names`` that may run in ``dtype`` (bf16/fp16) set to it, in model order;
        the others unchanged (a strategy falls them back to FP32 with :meth:`with_fp32`)."""
        option = float_option(DType(dtype))
        for name in self.float_candidates(names, dtype):
            config = config.with_node(name, option)
        return config

    def float_nodes(self, config: TuningConfig) -> dict[str, DType]:
        """The nodes of the space that ``config`` puts in bf16/fp16, in model order, with their type."""
        out: dict[str, DType] = {}
        for n in self.nodes:
            resolved = config.resolve(n.name, n.op_type, node_aliases(n))
            if resolved.fp32 and resolved.low_precision_float:
                out[n.name] = resolved.float_dtype
        return out

    # -- fallback groups -------------------------------------------------------------------------

    @functools.cached_property
    def fallback_groups(self) -> tuple[tuple[str, ...], ...]:
        """Groups of node names that fall back together, covering every node once, in model order."""
        index = self.node_index
        taken: set[str] = set()
        groups: list[tuple[str, ...]] = []
        for group in self.groups:
            members = tuple(
                sorted({n for n in group if n in index and n not in taken}, key=index.__getitem__)
            )
            if members:
                taken.update(members)
                groups.append(members)
        groups.extend((n.name,) for n in self.nodes if n.name not in taken)
        return tuple(sorted(groups, key=lambda g: index[g[0]]))


@dataclass(frozen=True)
class TrialResult:
    """One evaluated configuration, as the tuning loop reports it to the strategy.

    Attributes:
        index: the trial's number in the tuning run (0-based).
        config: the evaluated configuration.
        accuracy: the measured accuracy, ``None`` if the trial failed.
        objectives: measured objectives (``"performance"`` latency in seconds, ``"modelsize"``, ...).
        meets_goal: the accuracy meets the user's criterion.
        failed: why the trial failed (quantization or evaluation raised), else ``None``.
        seconds: wall time of the trial.
    """

    index: int
    config: TuningConfig
    accuracy: float | None
    objectives: dict[str, float] = field(default_factory=dict)
    meets_goal: bool = False
    failed: str | None = None
    seconds: float = 0.0


@runtime_checkable
class StrategyContext(Protocol):
    """What the tuning loop tells a strategy besides trial results.

    Attributes:
        baseline_accuracy: the FP32 model's accuracy.

    A context may also have ``higher_is_better: bool`` (default ``True``: read with ``getattr``),
    the direction of the metric, and (read with ``getattr``; the tuning loop's context has them):

    * ``tensor_sensitivity(config) -> list`` of objects with ``tensor``, ``nodes`` (the nodes that make
      that tensor quantized: they fall back together) and ``error``, largest first (same run as
      ``op_sensitivity``);
    * ``estimate(config) -> float``: a label-free accuracy proxy, the fraction of calibration samples
      whose top-1 differs from FP32's (no evaluation; NaN when it does not apply), and
      ``estimate_threshold: float | None``, the largest value predicted to meet the goal (``None``:
      do not use the proxy).
    """

    baseline_accuracy: float

    def meets_goal(self, accuracy: float) -> bool:
        """True if ``accuracy`` meets the user's accuracy criterion."""
        ...

    def op_sensitivity(self, config: TuningConfig) -> dict[str, float]:
        """Per-node error between FP32 and INT8 tensors under ``config`` (one instrumented run, no trial).

        Larger is more sensitive; nodes that ``config`` keeps in FP32 may be missing or 0.
        """
        ...


Search = Generator[TuningConfig, TrialResult, None]
"""The type of :meth:`TuneStrategy.search`: yields configurations, each ``yield`` returns its result."""


class TuneStrategy(ABC):
    """Base class of tuning strategies.

    Subclasses implement :meth:`search` and may declare ``default_options`` (the keyword options they
    accept, with defaults; unknown options raise :class:`ConfigError`). They are registered by name
    with :func:`register_strategy`.

    Args:
        space: what may be changed.
        context: the loop's baseline accuracy, goal test and sensitivity measurement.
        seed: the random seed (``random_seed`` in the YAML); the same seed gives the same trials.
        **options: strategy options (``tuning.strategy`` keys in the YAML besides ``name``).
    """

    name: ClassVar[str] = ""
    default_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(
        self, space: TuningSpace, context: StrategyContext, *, seed: int = 1978, **options: Any
    ) -> None:
        self.check_options(options)
        self.space = space
        self.context = context
        self.seed = int(seed)
        self.options: dict[str, Any] = {**self.default_options, **options}
        self.rng = np.random.default_rng(self.seed)
        self.history: list[TrialResult] = []
        self.notes: dict[str, str] = {}
        """Node name -> why this strategy kept it in FP32, when it knows better than "a trial lost accuracy"."""
        self._results: dict[str, TrialResult] = {}
        self._proposed: set[str] = set()
        self._pending: TuningConfig | None = None
        self._reply: TrialResult | None = None
        self._search: Search | None = None
        self._exhausted = False

    # -- what subclasses implement ---------------------------------------------------------------

    @abstractmethod
    def search(self) -> Search:
        """Yield configurations to evaluate; each ``yield`` returns the :class:`TrialResult`.

        Returning ends the search (the space is exhausted for this strategy). Yielding a
        configuration that was already evaluated costs no trial: the earlier result comes back.
        """

    # -- the loop's interface --------------------------------------------------------------------

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` for an option the strategy does not take (before anything runs)."""
        unknown = sorted(set(options) - set(cls.default_options))
        if unknown:
            valid = sorted(cls.default_options)
            close = difflib.get_close_matches(unknown[0], valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Strategy {cls.name or cls.__name__!r} has no option {unknown[0]!r} "
                f"(tuning.strategy.{unknown[0]}).{hint} Valid options: {valid or 'none'}."
            )

    def propose(self) -> TuningConfig | None:
        """The next configuration to evaluate, or ``None`` when the search is over.

        Raises:
            RuntimeError: the previous proposal was not observed yet.
        """
        if self._pending is not None:
            raise RuntimeError("observe() the result of the previous proposal before proposing again")
        if self._exhausted:
            return None
        reply = self._reply
        self._reply = None
        for _ in range(MAX_KNOWN_PROPOSALS):
            try:
                if self._search is None:
                    self._search = self.search()
                    config = next(self._search)
                else:
                    config = self._search.send(reply)  # type: ignore[arg-type]
            except StopIteration:
                self._finish("its search space is exhausted")
                return None
            key = config.key()
            known = self._results.get(key)
            if known is None:
                self._pending = config
                self._proposed.add(key)
                return config
            reply = known  # already evaluated: answer from history, no trial
        self._finish(f"it proposed {MAX_KNOWN_PROPOSALS} already-evaluated configurations in a row")
        return None

    def observe(self, result: TrialResult) -> None:
        """Record the result of the last proposal (or of an earlier run's trial, when resuming)."""
        key = result.config.key()
        self.history.append(result)
        self._results[key] = result
        self._proposed.add(key)
        if self._pending is not None and key == self._pending.key():
            self._pending = None
            self._reply = result

    @property
    def exhausted(self) -> bool:
        """True once :meth:`propose` returned ``None``."""
        return self._exhausted

    @property
    def best(self) -> TrialResult | None:
        """The best observed trial: meets the goal first, then the highest accuracy, then the earliest."""
        if not self.history:
            return None
        return max(self.history, key=lambda r: (r.meets_goal, self.relative_accuracy(r), -r.index))

    # -- helpers for subclasses ------------------------------------------------------------------

    def result_of(self, config: TuningConfig) -> TrialResult | None:
        """The observed result of ``config`` (by key), if any."""
        return self._results.get(config.key())

    @property
    def higher_is_better(self) -> bool:
        return bool(getattr(self.context, "higher_is_better", True))

    def relative_accuracy(self, result: TrialResult) -> float:
        """Accuracy relative to the baseline, sign-adjusted so larger is better (``-inf`` if failed)."""
        loss = relative_loss(float(self.context.baseline_accuracy), result.accuracy, higher_is_better=self.higher_is_better)
        return -math.inf if loss is None else -loss

    def loss(self, result: TrialResult, fp32_penalty: float) -> float:
        """A loss to minimize for model-based searches (tpe, bayesian).

        ``relative accuracy drop + fp32_penalty x (fraction of space nodes in FP32)``, plus 1 if the
        goal is not met; a failed trial costs 10.
        """
        if result.failed is not None or result.accuracy is None:
            return 10.0
        nodes = max(1, len(self.space.nodes))
        fp32_fraction = len(self.space.fp32_nodes(result.config)) / nodes
        drop = -self.relative_accuracy(result)
        return float(min(drop, 5.0) + fp32_penalty * fp32_fraction + (0.0 if result.meets_goal else 1.0))

    def _finish(self, why: str) -> None:
        self._exhausted = True
        if self._search is not None:
            self._search.close()
        logger.info("strategy %s stops: %s", self.name or type(self).__name__, why)


# -- registry ------------------------------------------------------------------------------------

STRATEGIES: dict[str, type[TuneStrategy]] = {}
"""Registered strategies by name."""

_S = TypeVar("_S", bound=type[TuneStrategy])


def register_strategy(name: str, *, replace: bool = False) -> Callable[[_S], _S]:
    """Class decorator: register a :class:`TuneStrategy` subclass under ``name`` (case-insensitive).

    Args:
        name: the name users write in ``tuning.strategy.name``.
        replace: allow replacing a different class registered under the same name.

    Raises:
        ConfigError: ``name`` is taken by another class and ``replace`` is false.
        TypeError: the decorated object is not a ``TuneStrategy`` subclass.
    """
    key = name.strip().lower()

    def decorator(cls: _S) -> _S:
        if not (isinstance(cls, type) and issubclass(cls, TuneStrategy)):
            raise TypeError(f"@register_strategy({name!r}) decorates TuneStrategy subclasses, not {cls!r}")
        add_to_registry(STRATEGIES, key, cls, kind="tuning strategy", replace=replace)
        cls.name = key
        return cls

    return decorator


def get_strategy(name: str) -> type[TuneStrategy]:
    """The strategy class registered as ``name``.

    Raises:
        ConfigError: no such strategy (the message names the closest valid one).
    """
    key = str(name).strip().lower()
    if key in STRATEGIES:
        return STRATEGIES[key]
    valid = sorted(STRATEGIES)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"Unknown tuning strategy {name!r} (tuning.strategy.name).{hint} Valid strategies: {valid}. "
        "A strategy of your own must be registered with @register_strategy before tuning starts."
    )


def group_sensitivity(groups: Sequence[tuple[str, ...]], sensitivity: Mapping[str, float]) -> list[float]:
    """The sensitivity of each group: the largest of its members' (missing or NaN members count 0)."""
    out = []
    for group in groups:
        values = [float(sensitivity.get(n, 0.0)) for n in group]
        values = [v if math.isfinite(v) else (math.inf if v > 0 else 0.0) for v in values]
        out.append(max(values, default=0.0))
    return out
