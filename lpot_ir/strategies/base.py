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

**Batches** (several evaluations at once, :mod:`lpot_ir.tuning.executors`). A generator may also yield

* a ``list`` of configurations: it receives the list of their results, in the same order, once all are
  evaluated (they run in parallel as far as the loop has workers);
* :class:`UntilGoal` ``(configs)``: alternatives in order of preference; it receives the results up to and
  including the first that meets the goal (all of them if none does). With one worker they are
  evaluated one at a time and nothing after the first success is evaluated, exactly as a ``for`` loop of
  single yields that breaks at the first success; with more, later ones run speculatively, and those
  that turn out to come after the first success are *superseded* (:attr:`TuneStrategy.superseded`: the
  loop cancels them if they still run and leaves them out of the choice of the best model).

:attr:`TuneStrategy.batch_size` (set by the loop: the number of workers) says how many evaluations can
run at once; the loop asks :meth:`TuneStrategy.propose_batch` for up to as many configurations as it has
free workers. A strategy that yields single configurations works unchanged, one evaluation at a time.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
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
    "BatchSearch",
    "UntilGoal",
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
        seconds: wall time of the trial (quantization, evaluation and objectives).
        worker: where it was evaluated (``in-process``, ``process:<slot>:<pid>``, ``ray:<node>:<pid>``;
            ``None`` when not evaluated or recorded before workers existed).
    """

    index: int
    config: TuningConfig
    accuracy: float | None
    objectives: dict[str, float] = field(default_factory=dict)
    meets_goal: bool = False
    failed: str | None = None
    seconds: float = 0.0
    worker: str | None = None


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


@dataclass(frozen=True, init=False)
class UntilGoal:
    """Configurations a search yields as alternatives, in order of preference (see the module docstring).

    ``results = yield UntilGoal(configs)`` returns the results of ``configs`` up to and including the
    first that meets the goal, or all of them if none does.
    """

    configs: tuple[TuningConfig, ...]

    def __init__(self, configs: Iterable[TuningConfig]) -> None:
        object.__setattr__(self, "configs", tuple(configs))


Request = TuningConfig | list[TuningConfig] | UntilGoal
"""What a search may yield: one configuration, a batch, or ordered alternatives."""

BatchSearch = Generator[Request, Any, None]
"""The type of a :meth:`TuneStrategy.search` that yields batches (a list of results comes back for a
list or an :class:`UntilGoal`, one result for one configuration)."""


@dataclass
class _Open:
    """The request the search is waiting on: its configurations and the results known so far."""

    configs: list[TuningConfig]
    keys: list[str]
    kind: str  # "single", "list" or "until_goal"
    results: list[TrialResult | None]
    handed: set[int] = field(default_factory=set)  # positions given to the loop (evaluations)


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
        self.batch_size = 1
        """How many evaluations can run at once (the loop sets it to its number of workers)."""
        self.superseded: set[str] = set()
        """Keys of configurations evaluated speculatively (an :class:`UntilGoal` batch) after the first one
        that met the goal: not part of the search's result."""
        self.notes: dict[str, str] = {}
        """Node name -> why this strategy kept it in FP32, when it knows better than "a trial lost accuracy"."""
        self._results: dict[str, TrialResult] = {}
        self._proposed: set[str] = set()
        self._inflight: set[str] = set()
        self._open: _Open | None = None
        self._reply: Any = None
        self._search: Generator[Any, Any, None] | None = None
        self._exhausted = False

    # -- what subclasses implement ---------------------------------------------------------------

    @abstractmethod
    def search(self) -> Search | BatchSearch:
        """Yield configurations to evaluate; each ``yield`` returns the :class:`TrialResult`.

        Returning ends the search (the space is exhausted for this strategy). Yielding a
        configuration that was already evaluated costs no trial: the earlier result comes back.
        A search may also yield a list of configurations or an :class:`UntilGoal` (module docstring).
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
        """The next configuration to evaluate, or ``None`` when the search is over (one at a time).

        Raises:
            RuntimeError: the previous proposal was not observed yet.
        """
        if self._inflight:
            raise RuntimeError("observe() the result of the previous proposal before proposing again")
        batch = self.propose_batch(1)
        return batch[0] if batch else None

    def propose_batch(self, n: int) -> list[TuningConfig] | None:
        """Up to ``n`` configurations to evaluate now, in the search's order.

        Returns:
            ``None`` when the search is over; an empty list when the search waits for results of
            configurations already proposed (observe them, then ask again); else 1 to ``n`` configurations,
            none of them proposed or observed before.
        """
        if self._exhausted:
            return None
        out: list[TuningConfig] = []
        known_only = 0
        while len(out) < n:
            if self._open is None:
                if known_only >= MAX_KNOWN_PROPOSALS:
                    self._finish(f"it proposed {MAX_KNOWN_PROPOSALS} already-evaluated configurations in a row")
                    break
                if not self._next_request():
                    break
            request = self._open
            assert request is not None
            self._hand_out(request, n - len(out), out)
            reply = self._reply_of(request)
            if reply is None:
                break  # waiting for results of evaluations in flight
            known_only = 0 if request.handed else known_only + 1
            self._close(request, reply)
        if not out and self._exhausted:
            return None
        return out

    def observe(self, result: TrialResult) -> None:
        """Record the result of a proposal (or of an earlier run's trial, when resuming)."""
        key = result.config.key()
        self.history.append(result)
        self._results[key] = result
        self._proposed.add(key)
        self._inflight.discard(key)
        request = self._open
        if request is not None:
            for position, k in enumerate(request.keys):
                if k == key and request.results[position] is None:
                    request.results[position] = result

    def evaluate_all(self, configs: Iterable[TuningConfig]) -> BatchSearch:
        """Evaluate ``configs`` (possibly endless) in order, for a search whose next proposals do not
        depend on results (random, exhaustive): ``yield from self.evaluate_all(configs)``.

        They are yielded in lists of twice :attr:`batch_size`, so the loop can quantize the next ones while
        the workers evaluate; with one worker the trials are those of yielding them one by one.
        """
        iterator = iter(configs)
        while True:
            chunk = list(itertools.islice(iterator, 2 * max(1, self.batch_size)))
            if not chunk:
                return
            yield chunk

    def withdraw(self, config: TuningConfig) -> None:
        """Forget a proposal the loop will not evaluate (it was cancelled): it may be proposed again."""
        key = config.key()
        if key in self._results:
            return
        self._inflight.discard(key)
        self._proposed.discard(key)
        request = self._open
        if request is not None:
            request.handed -= {p for p, k in enumerate(request.keys) if k == key}

    # -- the batch protocol's machinery ------------------------------------------------------------

    def _next_request(self) -> bool:
        """Resume the search with the last reply and open what it yields next; ``False`` once it ends."""
        reply, self._reply = self._reply, None
        try:
            if self._search is None:
                self._search = self.search()
                item = next(self._search)
            else:
                item = self._search.send(reply)
        except StopIteration:
            self._finish("its search space is exhausted")
            return False
        if isinstance(item, TuningConfig):
            configs, kind = [item], "single"
        elif isinstance(item, UntilGoal):
            configs, kind = list(item.configs), "until_goal"
        elif isinstance(item, list) and all(isinstance(c, TuningConfig) for c in item):
            configs, kind = list(item), "list"
        else:
            raise TypeError(
                f"{type(self).__name__}.search() yielded {type(item).__name__}; a search yields a TuningConfig, "
                "a list of them, or UntilGoal(configs)"
            )
        keys = [c.key() for c in configs]
        results: list[TrialResult | None] = [self._results.get(k) for k in keys]
        self._open = _Open(configs, keys, kind, results)
        for key in keys:
            self.superseded.discard(key)  # asked for again: its result is part of the search now
        return True

    def _hand_out(self, request: _Open, room: int, out: list[TuningConfig]) -> None:
        """Add to ``out`` (at most ``room``) the request's configurations that need an evaluation, in order."""
        for position, (config, key) in enumerate(zip(request.configs, request.keys, strict=True)):
            if room <= 0:
                return
            known = request.results[position]
            if known is not None:
                if request.kind == "until_goal" and known.meets_goal:
                    return  # this alternative meets the goal: nothing after it is needed
                continue
            if key in self._inflight or position in request.handed:
                continue
            if key in request.keys[:position]:
                continue  # the same configuration earlier in this request: one evaluation serves both
            request.handed.add(position)
            self._inflight.add(key)
            self._proposed.add(key)
            out.append(config)
            room -= 1

    @staticmethod
    def _reply_of(request: _Open) -> Any:
        """What the search receives for ``request`` once it is decided, else ``None``."""
        if request.kind == "until_goal":
            for position, result in enumerate(request.results):
                if result is None:
                    return None
                if result.meets_goal:
                    return request.results[: position + 1]
            return list(request.results)
        if any(r is None for r in request.results):
            return None
        return request.results[0] if request.kind == "single" else list(request.results)

    def _close(self, request: _Open, reply: Any) -> None:
        """Hand ``reply`` to the search next time; mark speculative evaluations past a success superseded."""
        if request.kind == "until_goal":
            used = set(request.keys[: len(reply)])
            self.superseded.update(
                request.keys[p] for p in request.handed if p >= len(reply) and request.keys[p] not in used
            )
        self._open = None
        self._reply = reply

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
        self._open = None
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
