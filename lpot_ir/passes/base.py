"""Passes, the registry of named passes and rule sets, pipelines as data, and the pass manager.

A pass is an :class:`onnx_ir.passes.PassBase` (the ONNX project's pass infrastructure). lpot-ir's
:class:`Pass` is that base class with three additions: a ``name``, ``in_place`` declared as a plain
class attribute, and a :class:`PassResult` that also counts the changes it made (``changes``) and,
for rule sets, per rule (``details``).

Pipelines are data: :data:`PIPELINES` maps a pipeline name to a tuple of registered pass or rule
set names. :func:`run_pipeline` resolves the names, runs the steps in order and returns a
:class:`PipelineReport` saying how many changes each pass and each rule made::

    report = run_pipeline(model, "fp32-optimize")
    print(report)                      # a table
    for step, changes in report.items():
        ...

Users register their own steps with :func:`register_pass` (a :class:`Pass` subclass or a factory
returning any ``onnx_ir`` pass) and :func:`register_rule_set` (a function returning a
:class:`~lpot_ir.ir.pattern.RuleSet`), and their own pipelines with :func:`register_pipeline`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, Literal, TypeVar

import onnx_ir as ir

from lpot_ir.errors import ConfigError
from lpot_ir.ir.pattern import RuleSet
from lpot_ir.passes.rewrite import RewriteDriver, RewriteReport, gc_paused

__all__ = [
    "Pass",
    "PassResult",
    "RuleSetPass",
    "PassManager",
    "PipelineReport",
    "StepReport",
    "PIPELINES",
    "register_pass",
    "register_rule_set",
    "register_pipeline",
    "get_pass",
    "available_passes",
    "run_pipeline",
]

logger = logging.getLogger(__name__)

PIPELINES: dict[str, tuple[str, ...]] = {
    "fp32-optimize": (
        "constant-folding",
        "remove-identity",
        "remove-noop-chains",
        "canonicalize",
        "fuse-batchnorm",
        "fuse-matmul-add",
        "shrink-pruned-channels",
        "remove-unused",
        "deduplicate-initializers",
        "topological-sort",
    ),
}
"""Named pipelines: pipeline name -> the registered step names it runs, in order."""

# Modules that register the built-in steps; imported on first lookup (they import this module).
_BUILTIN_MODULES = ("lpot_ir.passes.cleanup", "lpot_ir.passes.fusion", "lpot_ir.passes.pruning")


@dataclasses.dataclass
class PassResult(ir.passes.PassResult):
    """``onnx_ir``'s PassResult (``model``, ``modified``) plus how many changes the pass made.

    Attributes:
        changes: the number of changes (nodes folded, rewrites applied, initializers removed ...).
        details: per-rule counts for rule-set passes (rule name -> rewrites).
        rewrite: the driver's report for rule-set passes (with the trace when requested).
    """

    changes: int = 0
    details: dict[str, int] = dataclasses.field(default_factory=dict)
    rewrite: RewriteReport | None = None


class Pass(ir.passes.PassBase):
    """Base class of lpot-ir passes.

    Subclasses set ``name`` (the registry name), declare ``in_place`` (True: the pass modifies and
    returns the model it gets; False: it returns a new model and leaves its input alone) and
    implement :meth:`call`, returning ``PassResult(model, modified=changes > 0, changes=changes)``.
    """

    name: ClassVar[str] = ""
    in_place: ClassVar[bool] = True  # type: ignore[misc]  # overrides PassBase's abstract property

    @property
    def changes_input(self) -> bool:
        return self.in_place

    # call(self, model) -> PassResult stays abstract (inherited from onnx_ir's PassBase).

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class RuleSetPass(Pass):
    """A pass that applies one rule set with the rewrite driver (in place)."""

    def __init__(
        self,
        rule_set: RuleSet,
        *,
        trace: bool = False,
        max_steps: int | None = None,
        on_limit: Literal["raise", "warn"] = "raise",
    ) -> None:
        self.rule_set = rule_set
        self.name = rule_set.name  # type: ignore[misc]
        self._driver = RewriteDriver(rule_set, trace=trace, max_steps=max_steps, on_limit=on_limit)

    def call(self, model: ir.Model) -> PassResult:
        report = self._driver.run(model)
        return PassResult(model, report.total > 0, changes=report.total, details=dict(report.counts), rewrite=report)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

_PASSES: dict[str, Callable[[], ir.passes.PassBase]] = {}
_RULE_SETS: dict[str, Callable[[], RuleSet]] = {}
_T = TypeVar("_T")


def _check_free(name: str, kind: str, replace: bool) -> None:
    if not replace and (name in _PASSES or name in _RULE_SETS):
        raise ValueError(f"a pass or rule set named {name!r} is already registered; pass replace=True to replace it")
    if not name or name in PIPELINES:
        raise ValueError(f"{kind} name {name!r} is empty or is a pipeline name")


def register_pass(name: str, *, replace: bool = False) -> Callable[[_T], _T]:
    """Class/function decorator: register a pass under ``name``.

    Decorate a :class:`Pass` subclass (instantiated with no arguments) or a function that returns an
    ``onnx_ir.passes.PassBase`` (e.g. one of ``onnx_ir.passes.common``).
    """

    def decorator(factory: _T) -> _T:
        _check_free(name, "pass", replace)
        if isinstance(factory, type) and issubclass(factory, Pass) and not factory.name:
            factory.name = name
        _RULE_SETS.pop(name, None)
        _PASSES[name] = factory  # type: ignore[assignment]
        return factory

    return decorator


def register_rule_set(name: str, *, replace: bool = False) -> Callable[[_T], _T]:
    """Function decorator: register a rule set under ``name``.

    The function takes no arguments and returns a :class:`RuleSet` or a list of rules (wrapped into a
    rule set named ``name``).
    """

    def decorator(factory: _T) -> _T:
        _check_free(name, "rule set", replace)

        def build() -> RuleSet:
            made = factory()  # type: ignore[operator]
            return made if isinstance(made, RuleSet) else RuleSet(name, made)

        _PASSES.pop(name, None)
        _RULE_SETS[name] = build
        return factory

    return decorator


def register_pipeline(name: str, steps: Sequence[str], *, replace: bool = False) -> None:
    """Register a pipeline: a name for a sequence of registered step names (checked when run)."""
    if name in PIPELINES and not replace:
        raise ValueError(f"a pipeline named {name!r} already exists; pass replace=True to replace it")
    PIPELINES[name] = tuple(steps)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_passes() -> dict[str, str]:
    """Every registered step name -> ``"pass"`` or ``"rule set"``."""
    _load_builtins()
    names = {n: "pass" for n in _PASSES}
    names.update({n: "rule set" for n in _RULE_SETS})
    return dict(sorted(names.items()))


def get_pass(name: str, *, trace: bool = False, max_steps: int | None = None) -> ir.passes.PassBase:
    """Build the registered pass or rule-set pass ``name``.

    Raises:
        ConfigError: no pass or rule set has that name (the message lists the available ones).
    """
    _load_builtins()
    if name in _RULE_SETS:
        return RuleSetPass(_RULE_SETS[name](), trace=trace, max_steps=max_steps)
    if name in _PASSES:
        made = _PASSES[name]()
        if not isinstance(made, ir.passes.PassBase):
            raise TypeError(f"the factory registered as pass {name!r} returned {made!r}, not an onnx_ir pass")
        return made
    import difflib

    close = difflib.get_close_matches(name, list(_PASSES) + list(_RULE_SETS), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"No pass or rule set is registered as '{name}'.{hint} Registered: {', '.join(available_passes())}; "
        f"pipelines: {', '.join(sorted(PIPELINES))}. Register your own with @register_pass or @register_rule_set."
    )


def _resolve(
    pipeline: str | Sequence[str | ir.passes.PassBase], _seen: tuple[str, ...] = ()
) -> list[str | ir.passes.PassBase]:
    """Expand pipeline names (recursively) into step names and pass objects."""
    items: Sequence[str | ir.passes.PassBase] = [pipeline] if isinstance(pipeline, str) else pipeline
    steps: list[str | ir.passes.PassBase] = []
    for step in items:
        if isinstance(step, str) and step in PIPELINES:
            if step in _seen:
                raise ConfigError(f"Pipeline '{step}' includes itself (via {' → '.join(_seen)}); remove the cycle.")
            steps.extend(_resolve(PIPELINES[step], (*_seen, step)))
        else:
            steps.append(step)
    return steps


# --------------------------------------------------------------------------------------------------
# Reports and the pass manager
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StepReport:
    """What one pipeline step did: changes, per-rule counts (rule sets) and wall time."""

    name: str
    changes: int
    modified: bool
    seconds: float
    details: dict[str, int] = dataclasses.field(default_factory=dict)
    rewrite: RewriteReport | None = None


@dataclasses.dataclass
class PipelineReport:
    """The result of :func:`run_pipeline`.

    Attributes:
        model: the resulting model (the input model itself when every step is in place).
        steps: one :class:`StepReport` per step, in order.
    """

    model: ir.Model
    steps: list[StepReport] = dataclasses.field(default_factory=list)

    @property
    def modified(self) -> bool:
        return any(s.modified for s in self.steps)

    @property
    def total(self) -> int:
        return sum(s.changes for s in self.steps)

    def items(self) -> Iterator[tuple[str, int]]:
        """(step name, changes) pairs in pipeline order."""
        return ((s.name, s.changes) for s in self.steps)

    def rules(self) -> Iterator[tuple[str, str, int]]:
        """(step name, rule name, rewrites) for every rule of every rule-set step."""
        for s in self.steps:
            for rule, count in s.details.items():
                yield s.name, rule, count

    def __getitem__(self, name: str) -> StepReport:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def __str__(self) -> str:
        rows: list[tuple[str, str, str]] = []
        for s in self.steps:
            rows.append((s.name, str(s.changes), f"{s.seconds * 1000:.1f} ms"))
            for rule, count in s.details.items():
                rows.append((f"  {rule}", str(count), ""))
        rows.append(("total", str(self.total), f"{sum(s.seconds for s in self.steps) * 1000:.1f} ms"))
        w0 = max(len(r[0]) for r in rows + [("pass / rule", "", "")])
        w1 = max(len(r[1]) for r in rows + [("", "changes", "")])
        header = f"{'pass / rule':<{w0}}  {'changes':>{w1}}  time"
        lines = [header, "-" * len(header)]
        lines += [f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
        return "\n".join(lines)


class PassManager(ir.passes.PassManager):
    """Runs a pipeline (a sequence of step names and/or pass objects) once, recording a report.

    Args:
        steps: registered step names, pipeline names (expanded) or ``onnx_ir`` pass objects.
        trace: build rule-set steps with the driver's trace on.
        max_steps: the driver's step cap for rule-set steps (default: its own).
    """

    def __init__(
        self, steps: str | Sequence[str | ir.passes.PassBase], *, trace: bool = False, max_steps: int | None = None
    ) -> None:
        resolved = _resolve(steps)
        self.step_names = [s if isinstance(s, str) else getattr(s, "name", "") or type(s).__name__ for s in resolved]
        passes = [get_pass(s, trace=trace, max_steps=max_steps) if isinstance(s, str) else s for s in resolved]
        if not passes:
            raise ConfigError("The pipeline is empty: give at least one pass, rule set or pipeline name.")
        super().__init__(passes, steps=1, early_stop=True)
        self.last_report: PipelineReport | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        report = self.run(model)
        return ir.passes.PassResult(report.model, report.modified)

    def run(self, model: ir.Model) -> PipelineReport:
        """Run every step in order; return the :class:`PipelineReport`."""
        report = PipelineReport(model)
        with gc_paused():  # collections would walk the whole model again and again
            self._run_steps(model, report)
        self.last_report = report
        return report

    def _run_steps(self, model: ir.Model, report: PipelineReport) -> None:
        for name, pass_ in zip(self.step_names, self.passes, strict=True):
            start = time.perf_counter()
            result = pass_(model)
            seconds = time.perf_counter() - start
            model = result.model
            if isinstance(result, PassResult):
                step = StepReport(name, result.changes, result.modified, seconds, dict(result.details), result.rewrite)
            else:
                step = StepReport(name, int(result.modified), result.modified, seconds)
            report.steps.append(step)
            logger.debug("pass %s: %d changes in %.3f s", name, step.changes, seconds)
        report.model = model


def run_pipeline(
    model: ir.Model,
    pipeline: str | Sequence[str | ir.passes.PassBase],
    *,
    trace: bool = False,
    max_steps: int | None = None,
) -> PipelineReport:
    """Run a named pipeline (or a list of step names / passes) on ``model``; return the report.

    In-place steps modify ``model``; the final model is ``report.model`` (``model`` itself when
    every step is in place, as all built-in ones are).

    Raises:
        ConfigError: a name is neither a pipeline nor a registered pass or rule set.
    """
    return PassManager(pipeline, trace=trace, max_steps=max_steps).run(model)
