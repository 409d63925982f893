"""Model rewrites a determined peer user applies before quantizing (onnx + onnxruntime: any peer venv).

**Specializing control flow to the task's feeds.** Silero VAD (``silero_vad.onnx``) keeps its whole
network inside an ``If`` on ``sr == 16000`` (one branch per sample rate), and inside it more ``If``s
that PyTorch's exporter made of shape tests (``squeeze(dim)`` when that dimension is 1). INC 2.6
cannot load such a graph (its ``ONNXModel.topological_sort`` looks up the consumers of every graph
input in the top graph only: ``KeyError('input')``; once the top If is gone, its QDQ rewrite removes a
tensor that a subgraph still reads: ``INVALID_GRAPH``), and NNCF 3.4 finds no quantizable op in the
top graph and returns the FP32 model. What a user does about it is what ``onnxsim`` with fixed input
shapes does to control flow: :func:`inline_constant_ifs` runs the model on every calibration and
evaluation feed with the condition of each top-level ``If`` as an extra output, replaces each ``If``
whose condition had the same value on every feed by the branch it took, and repeats on what the
inlined branches exposed; then it removes what became dead and drops graph inputs nothing reads any
more (``sr``), and turns Constant nodes into initializers (NNCF looks for Conv weights among
initializers only; ``onnxsim`` does this too). On the task's feeds the result computes exactly what the original computes.
:meth:`PeerModel.restore_interface` puts the dropped inputs back (unused) on a quantized model, so it
takes the task's feeds like ``model.onnx`` does and the suite scores and times it unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

__all__ = ["PeerModel", "inline_constant_ifs", "prepare_peer_model"]

logger = logging.getLogger("peer_graph_fixes")


@dataclass
class PeerModel:
    """The model a peer gets, and how to give its results the task's interface back.

    Attributes:
        model: what the peer quantizes (the task's model, or its rewrite).
        dropped_inputs: graph inputs the rewrite removed (``ValueInfoProto``s of the original).
        notes: what was rewritten, for the result JSON.
    """

    model: onnx.ModelProto
    dropped_inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def feed(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """A task feed for :attr:`model`: without the inputs the rewrite dropped."""
        dropped = {i.name for i in self.dropped_inputs}
        return {name: value for name, value in feed.items() if name not in dropped}

    def restore_interface(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` with the dropped inputs back (unused), so it takes the task's feeds; a copy if needed."""
        present = {i.name for i in model.graph.input}
        missing = [i for i in self.dropped_inputs if i.name not in present]
        if not missing:
            return model
        restored = copy.deepcopy(model)
        restored.graph.input.extend(missing)
        return restored


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name the graph's nodes read, subgraphs (outer-scope references) included."""
    read: set[str] = set()
    for node in graph.node:
        read.update(name for name in node.input if name)
        for sub in _subgraphs(node):
            read |= _names_read(sub)
    return read


def _constant_conditions(model: onnx.ModelProto, feeds: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """``{first output of the If: its condition}`` for the top-level Ifs whose condition is the same on every
    feed (an If is known by its first output: node names may be empty or repeated)."""
    ifs = [node for node in model.graph.node if node.op_type == "If"]
    if not ifs or not feeds:
        return {}
    probe = copy.deepcopy(model)
    outputs = {o.name for o in probe.graph.output}
    conditions = list(dict.fromkeys(node.input[0] for node in ifs))
    probe.graph.output.extend(
        helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, None)
        for name in conditions
        if name not in outputs
    )
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    seen: dict[str, set[bool]] = {name: set() for name in conditions}
    for feed in feeds:
        values = session.run(conditions, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(conditions, values, strict=True):
            seen[name].add(bool(np.asarray(value).reshape(-1)[0]))
    return {node.output[0]: next(iter(seen[node.input[0]])) for node in ifs if len(seen[node.input[0]]) == 1}


def _inline(graph: onnx.GraphProto, index: int, branch: onnx.GraphProto) -> None:
    """Replace the If node at ``index`` by ``branch``'s nodes (its outputs renamed through Identity)."""
    node = graph.node[index]
    existing = {out for n in graph.node for out in n.output} | {i.name for i in graph.initializer}
    existing |= {i.name for i in graph.input}
    produced = {out for n in branch.node for out in n.output} | {i.name for i in branch.initializer}
    clash = (produced & existing) - set(node.output)
    if clash:
        raise ValueError(f"cannot inline If {node.name!r}: names {sorted(clash)[:5]} exist in both scopes")
    replacement = list(branch.node)
    for out, branch_out in zip(node.output, branch.output, strict=True):
        replacement.append(
            helper.make_node("Identity", [branch_out.name], [out], name=f"{node.name}/{out}/inlined")
        )
    graph.initializer.extend(branch.initializer)
    graph.value_info.extend(branch.value_info)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[:index] + replacement + nodes[index + 1 :])


def _constants_to_initializers(graph: onnx.GraphProto) -> int:
    """Turn top-level ``Constant`` nodes holding a tensor into initializers (NNCF finds Conv weights and
    biases only among initializers; the exporter put them in Constant nodes inside the branches)."""
    moved = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = copy.deepcopy(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved.append(node)
    kept = [node for node in graph.node if not any(node is m for m in moved)]
    del graph.node[:]
    graph.node.extend(kept)
    return len(moved)


def _remove_dead(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        read = _names_read(graph) | outputs
        alive = [n for n in graph.node if any(out in read for out in n.output)]
        if len(alive) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(alive)
    read = _names_read(graph) | outputs
    kept = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def inline_constant_ifs(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, Any]]
) -> tuple[onnx.ModelProto, list[str], list[onnx.ValueInfoProto]]:
    """Inline every If whose condition is the same on all ``feeds``, top level first, then what that exposes.

    Returns:
        (the rewritten copy, the inlined If nodes as "name -> branch", the graph inputs dropped because
        nothing reads them any more). The model is returned unchanged when there is nothing to inline.
    """
    rewritten = copy.deepcopy(model)
    graph = rewritten.graph
    inlined: list[str] = []
    while True:
        constant = _constant_conditions(rewritten, feeds)
        if not constant:
            break
        for output, value in constant.items():
            index = next(
                i for i, node in enumerate(graph.node) if node.op_type == "If" and node.output[0] == output
            )
            node = graph.node[index]
            branch_name = "then_branch" if value else "else_branch"
            branch = next(a.g for a in node.attribute if a.name == branch_name)
            inlined.append(f"{node.name or output} -> {branch_name}")
            _inline(graph, index, branch)
    if not inlined:
        return model, [], []
    _constants_to_initializers(graph)
    _remove_dead(graph)
    read = _names_read(graph) | {o.name for o in graph.output}
    dropped = [copy.deepcopy(i) for i in graph.input if i.name not in read]
    kept = [i for i in graph.input if i.name in read]
    del graph.input[:]
    graph.input.extend(kept)
    onnx.checker.check_model(rewritten)
    return rewritten, inlined, dropped


def prepare_peer_model(model: onnx.ModelProto, feeds: Sequence[Mapping[str, Any]]) -> PeerModel:
    """The model a peer should quantize: ``model`` with the Ifs that every one of ``feeds`` takes the same
    way inlined, if there are any (``feeds``: all calibration and evaluation feeds of the task)."""
    if not any(node.op_type == "If" for node in model.graph.node):
        return PeerModel(model)
    rewritten, inlined, dropped = inline_constant_ifs(model, feeds)
    if not inlined:
        return PeerModel(model)
    left = sum(1 for node in _all_nodes(rewritten.graph) if node.op_type == "If")
    note = (
        f"workaround: the tool cannot quantize inside If subgraphs, so it got the model with the {len(inlined)} "
        f"If nodes that take the same branch on every calibration and evaluation feed inlined ({left} If left; "
        f"inputs dropped, and put back unused on the result: {', '.join(d.name for d in dropped) or 'none'})"
    )
    logger.info(note)
    return PeerModel(rewritten, dropped, [note, "inlined: " + "; ".join(inlined)])


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)
