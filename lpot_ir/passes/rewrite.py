"""The one rewrite driver: applies rule sets to a fixpoint over every graph, with a step cap.

The driver visits each graph (the main graph and every If/Loop/Scan body) with a worklist seeded in
graph order. For each node it tries the rules whose root op type is the node's, in explicit priority
order (larger benefit first, ties by name). When a rule fires it

1. builds the replacement (new nodes and initializers, named after the matched nodes),
2. inserts the new nodes before the root, redirects every use of the root's outputs (graph outputs
   keep their names: the replacing value takes over the name),
3. removes the matched nodes whose outputs are no longer used,
4. re-queues only the nodes a new match could now be rooted at: the users, up to the largest
   pattern depth, of the values the rewrite touched.

So the cost is linear in graph size times the (small) pattern depth, not quadratic. Every applied
rewrite is a step; when the step cap is hit the driver raises :class:`RewriteLimitError` (or warns
and stops, with ``on_limit="warn"``). With ``trace=True`` (or this module's logger at DEBUG) every
(rule, node) attempt that did not fire is recorded with its reason.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir

from lpot_ir.errors import LpotError, PassError, first_line, with_origin
from lpot_ir.ir.model import all_graphs
from lpot_ir.ir.pattern import Builder, Decline, Match, NameScope, Rule, RuleSet

__all__ = ["RewriteDriver", "RewriteReport", "RewriteLimitError", "TraceEntry", "apply_rules", "gc_paused"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block.

    The IR is a web of reference cycles (nodes <-> values); with the collector on, each collection
    walks the whole model, which makes long rewrites of large models superlinear.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class RewriteLimitError(LpotError):
    """The rewrite driver hit its step cap: some rules keep rewriting each other's output."""


@dataclass(frozen=True)
class TraceEntry:
    """One attempt of one rule on one node.

    Attributes:
        rule: the rule's name.
        node: the node's name.
        op_type: the node's op type.
        graph: the name of the graph the node is in.
        fired: whether the rule rewrote the node.
        reason: why it did not fire (empty when it fired).
    """

    rule: str
    node: str
    op_type: str
    graph: str
    fired: bool
    reason: str = ""

    def __str__(self) -> str:
        verdict = "fired" if self.fired else f"declined: {self.reason}"
        return f"{self.rule} on {self.op_type} '{self.node}': {verdict}"


@dataclass
class RewriteReport:
    """What a driver run did.

    Attributes:
        counts: rewrites applied per rule name (every rule of the set, 0 when it never fired).
        steps: total rewrites applied.
        hit_limit: the step cap was reached (only with ``on_limit="warn"``; otherwise it raised).
        trace: every attempt that was recorded (only with ``trace=True`` or DEBUG logging).
        rule_roots: each rule's root op types (for :meth:`explain`).
    """

    counts: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    hit_limit: bool = False
    trace: list[TraceEntry] = field(default_factory=list)
    rule_roots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    node_ops: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def items(self) -> Iterator[tuple[str, int]]:
        """(rule name, rewrites) pairs, in rule priority order."""
        return iter(self.counts.items())

    def why_not(self, node: str, rule: str | None = None) -> list[TraceEntry]:
        """The recorded attempts on node ``node`` that did not fire (optionally of one rule)."""
        return [e for e in self.trace if e.node == node and not e.fired and (rule is None or e.rule == rule)]

    def explain(self, node: str, rule: str) -> str:
        """A sentence saying why ``rule`` did (not) fire on ``node`` (needs ``trace=True``)."""
        entries = [e for e in self.trace if e.node == node and e.rule == rule]
        if any(e.fired for e in entries):
            return f"{rule} fired on '{node}'"
        if entries:
            return f"{rule} did not fire on '{node}': {entries[-1].reason}"
        roots = self.rule_roots.get(rule)
        if roots is None:
            return f"no rule named {rule!r} was run"
        op_type = self.node_ops.get(node)
        if op_type is None:
            return f"no node named '{node}' was seen (run with trace=True to record nodes)"
        return f"{rule} was never tried on '{node}': its root is {'|'.join(roots)}, the node is {op_type}"

    def __str__(self) -> str:
        width = max([len(n) for n in self.counts] + [4])
        lines = [f"{'rule':<{width}}  rewrites"]
        lines += [f"{name:<{width}}  {count:>8}" for name, count in self.counts.items()]
        lines.append(f"{'total':<{width}}  {self.total:>8}")
        if self.hit_limit:
            lines.append("(stopped at the step cap)")
        return "\n".join(lines)


class RewriteDriver:
    """Applies a set of rules to a model (or one graph and its subgraphs) until none fires.

    Args:
        rules: a :class:`RuleSet` or any iterable of :class:`Rule` (sorted by priority here).
        max_steps: cap on applied rewrites; default ``10 * nodes + 1000``.
        on_limit: ``"raise"`` (default) a :class:`RewriteLimitError`, or ``"warn"`` and stop.
        trace: record every attempt in :attr:`RewriteReport.trace`.
    """

    def __init__(
        self,
        rules: RuleSet | Iterable[Rule],
        *,
        max_steps: int | None = None,
        on_limit: Literal["raise", "warn"] = "raise",
        trace: bool = False,
    ) -> None:
        if isinstance(rules, RuleSet):
            self.name = rules.name
            ordered = list(rules.rules)
        else:
            ordered = sorted(rules, key=lambda r: r.priority)
            self.name = "rules"
        names = [r.name for r in ordered]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate rule names: {sorted({n for n in names if names.count(n) > 1})}")
        if on_limit not in ("raise", "warn"):
            raise ValueError(f"on_limit must be 'raise' or 'warn', got {on_limit!r}")
        self.rules: tuple[Rule, ...] = tuple(ordered)
        self.max_steps = max_steps
        self.on_limit = on_limit
        self.trace = trace
        self._by_root: dict[tuple[str, str], list[Rule]] = {}
        for rule in self.rules:
            for op_type in rule.pattern.root_op_types:
                self._by_root.setdefault((rule.pattern.root_domain, op_type), []).append(rule)
        self._depth = max((v.depth for r in self.rules for v in r.variants), default=1)

    def run(self, model: ir.Model | ir.Graph) -> RewriteReport:
        """Rewrite ``model`` in place to a fixpoint; return the report."""
        graphs = list(all_graphs(model))
        report = RewriteReport(
            counts={r.name: 0 for r in self.rules},
            rule_roots={r.name: r.pattern.root_op_types for r in self.rules},
        )
        record = self.trace or logger.isEnabledFor(logging.DEBUG)
        if self.trace:
            report.node_ops = {n.name or "": n.op_type for g in graphs for n in g}
        if not self.rules:
            return report
        total_nodes = sum(len(g) for g in graphs)
        cap = self.max_steps if self.max_steps is not None else 10 * total_nodes + 1000
        scope = NameScope.of(graphs)
        with gc_paused():
            for graph in graphs:
                if not self._run_graph(graph, scope, report, cap, record):
                    break
        if report.steps:
            logger.info("%s: %d rewrites %s", self.name, report.steps, {k: v for k, v in report.counts.items() if v})
        return report

    # ----------------------------------------------------------------------------------------------

    def _run_graph(
        self, graph: ir.Graph, scope: NameScope, report: RewriteReport, cap: int, record: bool
    ) -> bool:
        """Run the worklist over one graph; return False when the step cap stopped the run."""
        queue: deque[ir.Node] = deque(graph)
        queued: set[ir.Node] = set(queue)
        graph_name = graph.name or "main"
        while queue:
            node = queue.popleft()
            queued.discard(node)
            if node.graph is not graph:
                continue  # removed by an earlier rewrite
            for rule in self._by_root.get((_norm(node.domain), node.op_type), ()):
                with self._naming(rule, node, graph_name, "match or check"):
                    result = rule.try_match(node, graph)
                if isinstance(result, Match):
                    with self._naming(rule, node, graph_name, "replacement"):
                        touched = self._apply(rule, result, graph, scope)
                    if isinstance(touched, Decline):
                        result = touched
                    else:
                        report.counts[rule.name] += 1
                        report.steps += 1
                        if record:
                            self._record(report, rule, node, graph_name, None)
                        if report.steps >= cap:
                            return self._limit(report, cap)
                        for n in self._affected(touched, graph):
                            if n not in queued:
                                queued.add(n)
                                queue.append(n)
                        break  # the node is gone
                if record:
                    self._record(report, rule, node, graph_name, result)
        return True

    @contextlib.contextmanager
    def _naming(self, rule: Rule, node: ir.Node, graph_name: str, part: str) -> Iterator[None]:
        """Turn an exception of a rule's own code into a :class:`PassError` naming the rule and the node."""
        where = f"Rule {rule.name} of rule set '{self.name}'"
        on = f"{node.op_type} node '{node.name}' (graph '{graph_name}')"
        try:
            yield
        except LpotError as exc:  # bad input found by a rule: the same error, saying which rule and node
            with_origin(exc, f"{where}, in its {part} on {on}")
            raise
        except Exception as exc:
            error = PassError(
                f"{where} raised {first_line(exc)} in its {part} on {on}. Fix the rule (its check must return a "
                "reason instead of raising), or leave the rule set out of the pipeline."
            )
            error.origin = where
            raise error from exc

    def _record(
        self, report: RewriteReport, rule: Rule, node: ir.Node, graph_name: str, result: Decline | None
    ) -> None:
        entry = TraceEntry(
            rule.name, node.name or "", node.op_type, graph_name, result is None,
            "" if result is None else result.reason,
        )
        if self.trace:
            report.trace.append(entry)
        logger.debug("%s", entry)

    def _limit(self, report: RewriteReport, cap: int) -> bool:
        fired = {k: v for k, v in report.counts.items() if v}
        message = (
            f"The rewrite driver for '{self.name}' stopped after {cap} rewrites (its step cap); rewrites so far: "
            f"{fired}. Some rules keep undoing each other or keep matching their own output. Make each rule's "
            "check decline on its own result, or raise max_steps if the model is really that large."
        )
        if self.on_limit == "raise":
            raise RewriteLimitError(message)
        logger.warning("%s", message)
        report.hit_limit = True
        return False

    def _apply(self, rule: Rule, match: Match, graph: ir.Graph, scope: NameScope) -> set[ir.Value] | Decline:
        """Build and commit the replacement of ``match``; return the touched values or a Decline."""
        builder = Builder(match, scope)
        produced = rule.replacement(builder, match)
        if isinstance(produced, Decline):
            return Decline(f"replacement declined: {produced.reason}", len(match.nodes) + 1)
        root = match.root
        replacements = _normalize_outputs(produced, len(root.outputs))
        if isinstance(replacements, Decline):
            raise TypeError(f"rule {rule.name}: {replacements.reason}")
        # Validate before touching the graph.
        renames: list[tuple[ir.Value, str]] = []
        for old, new in zip(root.outputs, replacements, strict=True):
            if new is None:
                if old.uses() or old.is_graph_output():
                    return Decline(
                        f"replacement gives no value for output '{old.name}' of {root.op_type} '{root.name}', "
                        "which is used", len(match.nodes) + 1,
                    )
                continue
            if new is old:
                return Decline(f"replacement returns the root's own output '{old.name}'", len(match.nodes) + 1)
            if old.is_graph_output():
                if new not in builder.created and (
                    new.is_graph_input() or new.is_initializer() or new.is_graph_output()
                    or new.producer() is None or new.producer().graph is not graph  # type: ignore[union-attr]
                ):
                    return Decline(
                        f"output '{old.name}' is a graph output and its replacement '{new.name}' is a graph "
                        "input, initializer, graph output or outer-scope value: removing the node would change "
                        "the model's interface", len(match.nodes) + 1,
                    )
                renames.append((new, old.name or ""))
            elif new in builder.created:
                renames.append((new, old.name or ""))
        # Commit.
        for value in builder.initializers:
            graph.register_initializer(value)
        if builder.nodes:
            graph.insert_before(root, builder.nodes)
        for old, new in zip(root.outputs, replacements, strict=True):
            if new is None:
                continue
            if new in builder.created:
                if new.type is None:
                    new.type = old.type
                if new.shape is None:
                    new.shape = old.shape
            old.replace_all_uses_with(new, replace_graph_outputs=True)
        touched: set[ir.Value] = {v for v in replacements if v is not None}
        for node in builder.nodes:
            touched.update(node.outputs)
        for node in reversed(match.nodes):
            if node.graph is not graph:
                continue
            if any(o.uses() or o.is_graph_output() for o in node.outputs):
                continue
            touched.update(v for v in node.inputs if v is not None)
            graph.remove(node, safe=True)
        for value, name in renames:
            scope.values.discard(value.name or "")
            value.name = name
            scope.values.add(name)
        return touched

    def _affected(self, touched: set[ir.Value], graph: ir.Graph) -> Iterator[ir.Node]:
        """Nodes a new match may be rooted at: producers and users (to the pattern depth) of touched values."""
        seen: set[ir.Node] = set()
        frontier: list[ir.Node] = []
        for value in touched:
            producer = value.producer()
            if producer is not None and producer.graph is graph and producer not in seen:
                seen.add(producer)
                frontier.append(producer)
            for use in value.uses():
                if use.node.graph is graph and use.node not in seen:
                    seen.add(use.node)
                    frontier.append(use.node)
        yield from frontier
        for _ in range(self._depth - 1):
            nxt: list[ir.Node] = []
            for node in frontier:
                for out in node.outputs:
                    for use in out.uses():
                        if use.node.graph is graph and use.node not in seen:
                            seen.add(use.node)
                            nxt.append(use.node)
            yield from nxt
            frontier = nxt


def _norm(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _normalize_outputs(produced: object, n_outputs: int) -> list[ir.Value | None] | Decline:
    if isinstance(produced, ir.Value):
        values: list[ir.Value | None] = [produced]
    elif isinstance(produced, Sequence) and not isinstance(produced, str):
        values = list(produced)
    else:
        return Decline(f"the replacement must return a Value, a sequence of Values or a Decline, got {produced!r}")
    if len(values) > n_outputs:
        return Decline(f"the replacement returned {len(values)} values for a root with {n_outputs} outputs")
    for v in values:
        if v is not None and not isinstance(v, ir.Value):
            return Decline(f"the replacement returned {v!r}, which is not an onnx_ir.Value")
    return values + [None] * (n_outputs - len(values))


def apply_rules(
    model: ir.Model | ir.Graph,
    rules: RuleSet | Iterable[Rule],
    *,
    max_steps: int | None = None,
    on_limit: Literal["raise", "warn"] = "raise",
    trace: bool = False,
) -> RewriteReport:
    """Apply ``rules`` to ``model`` in place, to a fixpoint; return the :class:`RewriteReport`.

    Shorthand for ``RewriteDriver(rules, ...).run(model)``.
    """
    return RewriteDriver(rules, max_steps=max_steps, on_limit=on_limit, trace=trace).run(model)
