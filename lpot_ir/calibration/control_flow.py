"""Calibration of values inside control flow: ``If`` branches and ``Loop``/``Scan`` bodies.

ONNX Runtime returns only main-graph values, so the one instrumented run of
:mod:`lpot_ir.calibration.collector` cannot see a subgraph's values. :func:`collect_nested` reaches
them on copies of the model, over the same feeds (the model a user gets keeps its control flow):

* **If branches**: :func:`lpot_ir.backends.onnxruntime.specialize.specialize` groups the feeds by the
  branches they take (probe runs that return only the conditions) and inlines, per group, the taken
  branch of every ``If`` that holds a wanted value (nested ``If`` nodes level by level). On its feeds
  the copy computes exactly what the model computes, and the branch's values are main-graph values:
  one run per group exposes them. Statistics of a value are merged over the groups that reach it, i.e.
  over exactly the feeds that executed it. A branch no feed took gets no statistics; its values are
  reported as skipped ("no calibration feed took the else_branch of If 'X'"), and its nodes stay FP32.
* **Loop/Scan bodies**: values directly in a body are collected per iteration: the body gets an extra
  scan output per wanted value (:func:`lpot_ir.ir.control_flow.expose_per_iteration`), so the node returns
  the value stacked over every iteration the feed ran, and the statistics fold in all iterations. This
  needs the value's shape to be the same in each iteration; when ONNX Runtime refuses to stack one, the
  loop's values are reported as skipped with ONNX Runtime's message (loops run separately from the
  branch values, so nothing else is lost).
  A loop the data runs zero times gives no statistics. Values of an ``If`` or a loop nested *inside* a
  body are not reached (:meth:`~lpot_ir.ir.control_flow.Location.unreachable` says why).

Cost: one probe run per nesting level and group, plus one run per group (two when it holds loop
values). Probes are cut down to what the conditions depend on, runs to what the exposed values depend on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.session import make_session, run_feed
from lpot_ir.backends.onnxruntime.specialize import Specialization, specialize
from lpot_ir.calibration.statistics import TensorStatistics
from lpot_ir.errors import LpotError
from lpot_ir.ir.control_flow import LOOPS, Location, expose_per_iteration, model_names, node_key, prune_to

__all__ = ["collect_nested"]

logger = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]


def collect_nested(
    model: onnx.ModelProto,
    feeds: Sequence[tuple[Feed, int]],
    wanted: Mapping[str, Location],
    stats: dict[str, TensorStatistics],
    new_statistics: Callable[[str], TensorStatistics],
    *,
    intra_op_threads: int | None = None,
) -> dict[str, str]:
    """Fold the values ``wanted`` (inside subgraphs of ``model``) over ``feeds`` into ``stats``.

    Args:
        model: the model (not modified); value and node names unique across the model.
        feeds: ``(checked feed, samples it holds)``, as the main calibration run used them.
        wanted: value name -> where it lives (reachable locations only: see ``Location.unreachable``).
        stats: statistics by value name; an entry is added for each value that receives data.
        new_statistics: makes the empty statistics of a value.
        intra_op_threads: ONNX Runtime threads.

    Returns:
        value name -> why it got no statistics, for the wanted values that got none.

    Raises:
        DataError: ONNX Runtime fails on a feed of a probe or of a specialized copy without loop values.
    """
    if not wanted or not feeds:
        return {name: "no calibration feed was run" for name in wanted}
    holders = {step.node for location in wanted.values() for step in location.steps if step.op_type == "If"}
    groups = specialize(
        model, [feed for feed, _ in feeds], select=lambda node: node_key(node) in holders,
        intra_op_threads=intra_op_threads,
    )
    taken: set[tuple[str, str]] = set()
    loop_runs: dict[str, int] = {}  # loop key -> iterations seen
    loop_errors: dict[str, str] = {}
    for group in groups:
        taken.update(group.taken)
        _run_group(group, feeds, wanted, stats, new_statistics, loop_runs, loop_errors, intra_op_threads)
    reasons = {
        name: _reason(location, taken, loop_runs, loop_errors)
        for name, location in wanted.items()
        if name not in stats
    }
    if reasons:
        first = next(iter(reasons))
        logger.info(
            "Calibration reached %d of %d value(s) inside control flow; e.g. %r gets no range: %s.",
            len(wanted) - len(reasons), len(wanted), first, reasons[first],
        )
    return reasons


def _run_group(
    group: Specialization,
    feeds: Sequence[tuple[Feed, int]],
    wanted: Mapping[str, Location],
    stats: dict[str, TensorStatistics],
    new_statistics: Callable[[str], TensorStatistics],
    loop_runs: dict[str, int],
    loop_errors: dict[str, str],
    intra_op_threads: int | None,
) -> None:
    """One run of the group's specialized copy over its feeds, exposing every wanted value it holds."""
    graph = group.model.graph
    direct = [out for node in graph.node for out in node.output if out in wanted]
    loops: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in LOOPS:
            key = node_key(node)
            inside = [n for n, loc in wanted.items() if loc.loop is not None and loc.loop.node == key]
            if inside:
                loops[key] = inside
    if not direct and not loops:
        return
    _run(group, feeds, direct, {}, stats, new_statistics, loop_runs, intra_op_threads)
    usable = {key: names for key, names in loops.items() if key not in loop_errors}
    if not usable:
        return
    try:  # a run of its own: a loop that fails leaves the other values' statistics as they are
        _run(group, feeds, [], usable, stats, new_statistics, loop_runs, intra_op_threads)
    except LpotError as exc:
        message = str(exc).split(". Check that")[0]
        logger.warning(
            "Could not collect the per-iteration values of %s (%s); they get no range.",
            ", ".join(repr(k) for k in usable), message,
        )
        for key, names in usable.items():
            loop_errors[key] = message
            for name in names:
                stats.pop(name, None)


def _run(
    group: Specialization,
    feeds: Sequence[tuple[Feed, int]],
    direct: list[str],
    loops: Mapping[str, list[str]],
    stats: dict[str, TensorStatistics],
    new_statistics: Callable[[str], TensorStatistics],
    loop_runs: dict[str, int],
    intra_op_threads: int | None,
) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(group.model)
    graph = model.graph
    names = model_names(graph)
    exposed: list[tuple[str, str, str | None]] = [(name, name, None) for name in direct]  # (output, value, loop)
    for index, node in enumerate(graph.node):
        values = loops.get(node_key(node)) if node.op_type in LOOPS else None
        if values:
            outputs = expose_per_iteration(graph, index, values, names)
            exposed += [(out, value, node_key(node)) for out, value in zip(outputs, values, strict=True)]
    if not exposed:
        return
    prune_to(graph, [out for out, _value, _loop in exposed])
    session = make_session(model, intra_op_threads=intra_op_threads)
    inputs = {i.name for i in session.get_inputs()}
    for member in group.members:
        feed, samples = feeds[member]
        arrays = run_feed(session, {k: v for k, v in feed.items() if k in inputs}, where=f"calibration feed {member}")
        for (_out, value, loop), array in zip(exposed, arrays, strict=True):
            if not (isinstance(array, np.ndarray) and array.dtype.kind == "f"):
                continue  # a value whose type was unknown turned out not to be float
            if loop is not None:
                loop_runs[loop] = loop_runs.get(loop, 0) + (int(array.shape[0]) if array.ndim else 0)
            if array.size == 0:
                continue
            if value not in stats:
                stats[value] = new_statistics(value)
            stats[value].update(array, samples)


def _reason(
    location: Location, taken: set[tuple[str, str]], loop_runs: Mapping[str, int], loop_errors: Mapping[str, str]
) -> str:
    for step in location.steps:
        if step.op_type == "If" and (step.node, step.attribute) not in taken:
            return (
                f"no calibration data reached this branch: no calibration feed took {step.describe()}, which holds "
                f"it{_where(location, step)}"
            )
    loop = location.loop
    if loop is not None and loop.node in loop_errors:
        return (
            f"its values in {loop.describe()} could not be collected per iteration (its shape changes between "
            f"iterations?): {loop_errors[loop.node]}"
        )
    if loop is not None and not loop_runs.get(loop.node):
        return f"no calibration data reached it: the calibration feeds ran no iteration of {loop.describe()}"
    return f"no calibration data reached it (inside {location.describe()})"


def _where(location: Location, step: object) -> str:
    inner = location.steps[-1]
    return "" if inner is step else f" (it is inside {location.describe()})"
