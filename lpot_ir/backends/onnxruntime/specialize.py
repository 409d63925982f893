"""Specialize a model's ``If`` nodes to feeds: which branch each feed takes, and copies with it inlined.

A value inside an ``If`` branch exists only for the feeds that take that branch, and ONNX Runtime cannot
return it as an output. :func:`specialize` splits the feeds by the branches they take and gives, for each
group, a copy of the model in which those branches are inlined (:func:`lpot_ir.ir.control_flow.inline_if`):
on the group's feeds the copy computes exactly what the model computes, and the branch's values are
main-graph values that can be graph outputs.

It works level by level: one *probe* run per group of feeds returns the condition of every ``If`` of the
main graph (the probe is the model cut down to what the conditions depend on, so it is cheap when they
are computed early); feeds are grouped by the branches they take, and each group's copy has those ``If``
nodes inlined, which may bring the ``If`` nodes nested in the branches up into the main graph: the next
level probes those. The number of levels is bounded by the nesting depth; the number of groups by the
number of different paths the feeds take. Used by calibration (values inside branches) and by the
tuning loop's sensitivity runs (per-node errors inside branches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from lpot_ir.backends.onnxruntime.session import make_session, run_feed
from lpot_ir.ir.control_flow import inline_if, model_names, node_key, prune_to, subgraphs

__all__ = ["Specialization", "specialize", "if_depth"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Specialization:
    """A copy of a model specialized to some feeds.

    Attributes:
        model: the copy, with the ``If`` nodes these feeds take the same way inlined.
        members: indices (into the feeds given to :func:`specialize`) of the feeds it holds for.
        taken: ``(If key, branch attribute)`` of every ``If`` inlined, outermost first.
    """

    model: onnx.ModelProto
    members: tuple[int, ...]
    taken: tuple[tuple[str, str], ...]


def if_depth(graph: onnx.GraphProto) -> int:
    """How deeply ``If`` nodes nest in ``graph`` (0: none)."""
    depth = 0
    for node in graph.node:
        for _attribute, sub in subgraphs(node):
            inner = if_depth(sub)
            depth = max(depth, inner + 1 if node.op_type == "If" else inner)
    return depth


def _conditions(
    model: onnx.ModelProto,
    ifs: Sequence[onnx.NodeProto],
    feeds: Sequence[Mapping[str, np.ndarray]],
    intra_op_threads: int | None,
) -> list[tuple[bool, ...]]:
    """The condition of each of ``ifs`` (main-graph nodes of ``model``) on each feed: one probe run per feed."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    taken = model_names(probe.graph)
    outputs = []
    for node in ifs:
        name = f"{node_key(node)}/condition"
        while name in taken:
            name += "_"
        taken.add(name)
        probe.graph.node.append(helper.make_node("Identity", [node.input[0]], [name], name=name))
        outputs.append(name)
    prune_to(probe.graph, outputs)
    session = make_session(probe, intra_op_threads=intra_op_threads)
    inputs = {i.name for i in session.get_inputs()}
    result = []
    for index, feed in enumerate(feeds):
        values = run_feed(session, {k: v for k, v in feed.items() if k in inputs}, where=f"feed {index} (If probe)")
        result.append(tuple(bool(np.asarray(v).reshape(-1)[0]) for v in values))
    return result


def specialize(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    select: Callable[[onnx.NodeProto], bool] | None = None,
    intra_op_threads: int | None = 1,
) -> list[Specialization]:
    """Group ``feeds`` by the ``If`` branches they take and inline those branches in a copy per group.

    Args:
        model: the model (not modified); node names unique across the model (as lpot-ir's loader makes them).
        feeds: checked ONNX Runtime feeds (``{input name: array}``).
        select: which ``If`` nodes to inline (default: all); an ``If`` not selected stays as it is, and so
            does everything inside it.
        intra_op_threads: ONNX Runtime threads of the probe sessions.

    Returns:
        One :class:`Specialization` per group, covering every feed exactly once (in feed order of their first
        member). A model without a selected ``If`` gives one group: the model itself.

    Raises:
        DataError: ONNX Runtime fails on a feed.
    """
    work = [Specialization(model, tuple(range(len(feeds))), ())]
    done: list[Specialization] = []
    for _level in range(if_depth(model.graph) + 1):
        pending: list[Specialization] = []
        for item in work:
            ifs = [n for n in item.model.graph.node if n.op_type == "If" and (select is None or select(n))]
            if not ifs or not item.members:
                done.append(item)
                continue
            conditions = _conditions(item.model, ifs, [feeds[i] for i in item.members], intra_op_threads)
            groups: dict[tuple[bool, ...], list[int]] = {}
            for member, condition in zip(item.members, conditions, strict=True):
                groups.setdefault(condition, []).append(member)
            for condition, members in groups.items():
                copy = onnx.ModelProto()
                copy.CopyFrom(item.model)
                names = model_names(copy.graph)
                keys = [node_key(n) for n in ifs]
                taken = list(item.taken)
                for key, value in zip(keys, condition, strict=True):
                    index = next(i for i, n in enumerate(copy.graph.node) if n.op_type == "If" and node_key(n) == key)
                    branch = "then_branch" if value else "else_branch"
                    inline_if(copy.graph, index, branch, names)
                    taken.append((key, branch))
                pending.append(Specialization(copy, tuple(members), tuple(taken)))
        work = pending
        if not work:
            break
    done.extend(work)  # not reached: the depth bounds the levels; kept so no feed is ever dropped
    done.sort(key=lambda s: s.members[0] if s.members else -1)
    logger.debug("Specialized %d feed(s) into %d group(s).", len(feeds), len(done))
    return done
