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
:class:`~lpot_ir.ir.pattern.RuleSet`), their own pipelines with :func:`register_pipeline`, and put a
step into an existing pipeline with :func:`insert_step`.

A pass that needs more than the model (the tuning configuration, calibrated ranges, ...) is a
:class:`ContextPass`: it is built with the pipeline's *context object*, which the runner hands to
every such step (``run_pipeline(model, name, context=...)``). The quantization pipelines
(``int8-qdq``, ``int8-qoperator``, ``int8-dynamic``, ``int8-dynamic-qoperator``) are run this way with a
:class:`~lpot_ir.passes.quantization.QuantizationContext`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

import onnx_ir as ir

from lpot_ir.errors import ConfigError, LpotError, PassError, first_line, with_origin
from lpot_ir.ir.model import all_nodes
from lpot_ir.ir.pattern import Rule, RuleSet
from lpot_ir.passes.rewrite import RewriteDriver, RewriteReport, gc_paused
from lpot_ir.registry import DuplicateNameError, add_to_registry

__all__ = [
    "at_node",
    "Pass",
    "PassResult",
    "ContextPass",
    "RuleSetPass",
    "PassManager",
    "PipelineReport",
    "StepReport",
    "PIPELINES",
    "register_pass",
    "register_rule_set",
    "register_pipeline",
    "insert_step",
    "pipeline_steps",
    "pipeline_version",
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
        "fuse-pad",
        "fuse-matmul-add",
        "shrink-pruned-channels",
        "remove-unused",
        "deduplicate-initializers",
        "topological-sort",
    ),
    # -- quantization (lpot_ir.passes.quantization; every step gets the QuantizationContext) --------
    # Stage: FP32 rewrites of the optimized model BEFORE calibration (accuracy recovery: equalization,
    # SmoothQuant). ModelQuantizer runs it once per prepared-model key and calibrates its result.
    "int8-prepare": ("cross-layer-equalization", "smoothquant"),
    # Stage: after Q/DQ insertion (or the dynamic rewrite), before lowering (accuracy recovery: bias
    # correction, weight rounding). Steps may read calibration feeds and the FP32 model from the context.
    "int8-refine": ("weight-rounding", "bias-correction"),
    # range-search: per-tensor calibration algorithm and scheme (RecoveryConfig.range_search), between
    # the annotations and Q/DQ insertion; a no-op when off. mixed-precision: the nodes the configuration
    # puts in bf16/fp16 (lpot_ir.passes.mixed_precision), after the INT8 steps; a no-op without them
    "int8-qdq": (
        "annotate",
        "range-search",
        "insert-qdq",
        "int8-refine",
        "mixed-precision",
        "space-to-depth-stems",
        "avoid-slow-ort-fusions",
    ),
    "int8-qoperator": (
        "annotate",
        "range-search",
        "insert-qdq",
        "int8-refine",
        "mixed-precision",
        "space-to-depth-stems",
        "qoperator",
        "remove-unused",
        "avoid-slow-ort-fusions",
    ),
    "int8-dynamic": ("annotate", "dynamic-quantize", "int8-refine", "mixed-precision", "avoid-slow-ort-fusions"),
    "int8-dynamic-qoperator": (
        "annotate",
        "dynamic-quantize",
        "int8-refine",
        "mixed-precision",
        "qoperator",
        "remove-unused",
        "avoid-slow-ort-fusions",
    ),
}
"""Named pipelines: pipeline name -> the registered step (or pipeline) names it runs, in order."""

_VERSIONS: dict[str, int] = {}
"""Pipeline name -> its version (default 1). Bump a built-in pipeline's version when one of its steps
changes the models it produces: recipes record (name, version, steps) and warn on replay when it differs."""


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


_C = TypeVar("_C")


class ContextPass(Pass, Generic[_C]):
    """A pass that needs more than the model: it is built with the pipeline's context object.

    Subclasses set ``context_type`` (the class of the context they read) and read ``self.context``
    in :meth:`call`. The pipeline runner (:func:`run_pipeline` / :class:`PassManager` with
    ``context=``) builds every such step with the one context of the run, so a pass never reaches
    for globals or for state kept on other passes. Results go into the :class:`PassResult` it returns.
    """

    context_type: ClassVar[type] = object

    def __init__(self, context: _C) -> None:
        super().__init__()
        self.context = context


class RuleSetPass(Pass):
    """A pass that applies one rule set with the rewrite driver (in place).

    Nodes of a domain the model does not import yet (``com.microsoft`` ops made by a lowering) get
    that domain imported at version 1.
    """

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
        if report.total:
            for node in all_nodes(model):
                if node.domain not in ("", "ai.onnx") and node.domain not in model.opset_imports:
                    model.opset_imports[node.domain] = 1
        return PassResult(model, report.total > 0, changes=report.total, details=dict(report.counts), rewrite=report)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

_PASSES: dict[str, Callable[[], ir.passes.PassBase]] = {}
_RULE_SETS: dict[str, Callable[[], RuleSet | Sequence[Rule]]] = {}
_T = TypeVar("_T")


def _check_step_name(name: str, kind: str, replace: bool, other: Mapping[str, object]) -> None:
    """Pass and rule-set names share one namespace, apart from the pipelines' (one duplicate-name policy:
    :mod:`lpot_ir.registry`)."""
    if name in PIPELINES:
        raise DuplicateNameError(f"{name!r} is a pipeline name; give the {kind} another name.")
    if name in other and not replace:
        raise DuplicateNameError(
            f"A {'rule set' if kind == 'pass' else 'pass'} named {name!r} is already registered. Pick another name, "
            "or pass replace=True to replace it."
        )


def register_pass(name: str, *, replace: bool = False) -> Callable[[_T], _T]:
    """Class/function decorator: register a pass under ``name``.

    Decorate a :class:`Pass` subclass (instantiated with no arguments; a :class:`ContextPass` with the
    pipeline's context) or a function that returns an ``onnx_ir.passes.PassBase`` (e.g. one of
    ``onnx_ir.passes.common``).

    Raises:
        DuplicateNameError: the name is taken (``replace=True`` replaces it).
    """

    def decorator(factory: _T) -> _T:
        _check_step_name(name, "pass", replace, _RULE_SETS)
        add_to_registry(_PASSES, name, factory, kind="pass", replace=replace)
        if isinstance(factory, type) and issubclass(factory, Pass) and not factory.name:
            factory.name = name
        _RULE_SETS.pop(name, None)
        return factory

    return decorator


def register_rule_set(name: str, *, replace: bool = False) -> Callable[[_T], _T]:
    """Function decorator: register a rule set under ``name``.

    The function takes no arguments and returns a :class:`RuleSet` or a list of rules (wrapped into a
    rule set named ``name``).

    Raises:
        DuplicateNameError: the name is taken (``replace=True`` replaces it).
    """

    def decorator(factory: _T) -> _T:
        _check_step_name(name, "rule set", replace, _PASSES)
        add_to_registry(_RULE_SETS, name, factory, kind="rule set", replace=replace)
        _PASSES.pop(name, None)
        return factory

    return decorator


def _build_rule_set(name: str) -> RuleSet:
    made = _RULE_SETS[name]()
    return made if isinstance(made, RuleSet) else RuleSet(name, made)


def register_pipeline(name: str, steps: Sequence[str], *, version: int = 1, replace: bool = False) -> None:
    """Register a pipeline: a name for a sequence of registered step names (checked when run).

    Args:
        name: the pipeline name.
        steps: registered pass, rule set or pipeline names, in order.
        version: recorded in recipes with the steps; bump it when the pipeline's output changes.
        replace: replace an existing pipeline of that name.

    Raises:
        DuplicateNameError: a different pipeline has that name (``replace=True`` replaces it).
    """
    add_to_registry(PIPELINES, name, tuple(steps), kind="pipeline", replace=replace)
    _VERSIONS[name] = int(version)


def pipeline_version(name: str) -> int:
    """The version of the pipeline ``name`` (1 unless registered with another)."""
    if name not in PIPELINES:
        raise ConfigError(f"No pipeline is named '{name}'. Pipelines: {', '.join(sorted(PIPELINES))}.")
    return _VERSIONS.get(name, 1)


def pipeline_steps(pipeline: str | Sequence[str]) -> tuple[str, ...]:
    """The step names a pipeline runs, nested pipelines expanded (an empty stage gives nothing)."""
    return tuple(s for s in _resolve(pipeline) if isinstance(s, str))


def insert_step(pipeline: str, step: str, *, before: str | None = None, after: str | None = None) -> None:
    """Put the registered step ``step`` into the pipeline ``pipeline`` (its own list, not a nested one).

    With neither ``before`` nor ``after`` the step is appended. Inserting a step that is already
    there does nothing, so a module that inserts on import can be imported twice.

    Example: ``insert_step("int8-qdq", "my-check", after="insert-qdq")``.

    Raises:
        ConfigError: the pipeline does not exist, or ``before``/``after`` is not one of its steps.
    """
    if pipeline not in PIPELINES:
        raise ConfigError(f"No pipeline is named '{pipeline}'. Pipelines: {', '.join(sorted(PIPELINES))}.")
    if before is not None and after is not None:
        raise ConfigError("insert_step takes before= or after=, not both.")
    steps = list(PIPELINES[pipeline])
    if step in steps:
        return
    anchor = before if before is not None else after
    if anchor is None:
        steps.append(step)
    elif anchor not in steps:
        raise ConfigError(
            f"Pipeline '{pipeline}' has no step '{anchor}' to insert '{step}' "
            f"{'before' if before is not None else 'after'}; its steps are: {', '.join(steps) or '(none)'}."
        )
    else:
        steps.insert(steps.index(anchor) + (0 if before is not None else 1), step)
    PIPELINES[pipeline] = tuple(steps)


def available_passes() -> dict[str, str]:
    """Every registered step name -> ``"pass"`` or ``"rule set"``."""
    names = {n: "pass" for n in _PASSES}
    names.update({n: "rule set" for n in _RULE_SETS})
    return dict(sorted(names.items()))


def get_pass(
    name: str, *, trace: bool = False, max_steps: int | None = None, context: Any = None
) -> ir.passes.PassBase:
    """Build the registered pass or rule-set pass ``name``.

    Args:
        name: the registered name.
        trace: build a rule-set pass with the driver's trace on.
        max_steps: the driver's step cap for a rule-set pass.
        context: the context object a :class:`ContextPass` is built with (ignored by other passes).

    Raises:
        ConfigError: no pass or rule set has that name (the message lists the available ones), or the
            pass is a :class:`ContextPass` and ``context`` is missing or of the wrong type.
    """
    if name in _RULE_SETS:
        return RuleSetPass(_build_rule_set(name), trace=trace, max_steps=max_steps)
    if name in _PASSES:
        factory = _PASSES[name]
        if isinstance(factory, type) and issubclass(factory, ContextPass):
            wanted = factory.context_type
            if not isinstance(context, wanted):
                given = "no context" if context is None else f"a {type(context).__name__}"
                raise ConfigError(
                    f"Pass '{name}' needs a {wanted.__name__} and was given {given}. Run it inside a pipeline "
                    f"that provides one (e.g. lpot_ir.passes.quantization.quantize_model for quantization passes)."
                )
            return factory(context)
        made = factory()
        if not isinstance(made, ir.passes.PassBase):
            raise TypeError(f"the factory registered as pass {name!r} returned {made!r}, not an onnx_ir pass")
        return made

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
    """What one pipeline step did: changes, per-rule counts (rule sets), wall time, and the pass's result.

    ``result`` is the step's own :class:`PassResult` (a subclass may carry more, e.g. the quantization
    passes' :class:`~lpot_ir.passes.quantization.QuantPassResult`)."""

    name: str
    changes: int
    modified: bool
    seconds: float
    details: dict[str, int] = dataclasses.field(default_factory=dict)
    rewrite: RewriteReport | None = None
    result: ir.passes.PassResult | None = None


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


_NODE_ATTR = "_lpot_node"
"""The attribute :func:`at_node` sets on an exception: which node the pass was working on."""


@contextlib.contextmanager
def at_node(node: ir.Node) -> Iterator[None]:
    """Inside a pass, mark an exception raised in the block with ``node``, so the error the pass manager
    reports names the node as well as the pass (the innermost ``at_node`` wins)::

        for node in model.graph:
            with at_node(node):
                ...
    """
    try:
        yield
    except Exception as exc:
        if getattr(exc, _NODE_ATTR, None) is None:
            setattr(exc, _NODE_ATTR, f"{node.op_type} node '{node.name}'")
        raise


def _node_phrase(exc: BaseException) -> str:
    """`` on Conv node 'c1'`` when :func:`at_node` marked ``exc``, else ``""``."""
    node = getattr(exc, _NODE_ATTR, None)
    return f" on {node}" if node else ""


class PassManager(ir.passes.PassManager):
    """Runs a pipeline (a sequence of step names and/or pass objects) once, recording a report.

    Args:
        steps: registered step names, pipeline names (expanded) or ``onnx_ir`` pass objects.
        trace: build rule-set steps with the driver's trace on.
        max_steps: the driver's step cap for rule-set steps (default: its own).
        context: the context object every :class:`ContextPass` step is built with.
    """

    def __init__(
        self,
        steps: str | Sequence[str | ir.passes.PassBase],
        *,
        trace: bool = False,
        max_steps: int | None = None,
        context: Any = None,
    ) -> None:
        resolved = _resolve(steps)
        self.step_names = [s if isinstance(s, str) else getattr(s, "name", "") or type(s).__name__ for s in resolved]
        passes = [
            get_pass(s, trace=trace, max_steps=max_steps, context=context) if isinstance(s, str) else s
            for s in resolved
        ]
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
            try:
                result = pass_(model)
            except LpotError as exc:  # bad input found by a pass: the same error, saying which pass and node
                with_origin(exc, f"Pass '{name}'{_node_phrase(exc)}")
                raise
            except Exception as exc:  # a bug in a pass: say which pass, keep the traceback chained
                error = PassError(
                    f"Pass '{name}' raised {first_line(exc)}{_node_phrase(exc)}. The model is left as the previous "
                    f"steps made it; run with --debug (or look at the chained exception) for the traceback, and "
                    f"fix the pass or leave it out of the pipeline."
                )
                error.origin = f"Pass '{name}'"
                raise error from exc
            seconds = time.perf_counter() - start
            model = result.model
            if isinstance(result, PassResult):
                step = StepReport(
                    name, result.changes, result.modified, seconds, dict(result.details), result.rewrite, result
                )
            else:
                step = StepReport(name, int(result.modified), result.modified, seconds, result=result)
            report.steps.append(step)
            logger.debug("pass %s: %d changes in %.3f s", name, step.changes, seconds)
        report.model = model


def run_pipeline(
    model: ir.Model,
    pipeline: str | Sequence[str | ir.passes.PassBase],
    *,
    trace: bool = False,
    max_steps: int | None = None,
    context: Any = None,
) -> PipelineReport:
    """Run a named pipeline (or a list of step names / passes) on ``model``; return the report.

    In-place steps modify ``model``; the final model is ``report.model`` (``model`` itself when
    every step is in place, as all built-in ones are). ``context`` is handed to every
    :class:`ContextPass` step.

    Raises:
        ConfigError: a name is neither a pipeline nor a registered pass or rule set, or a step needs a
            context that was not given.
    """
    return PassManager(pipeline, trace=trace, max_steps=max_steps, context=context).run(model)
