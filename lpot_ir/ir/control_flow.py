"""Control flow in ONNX graphs: where subgraph values live, and the two rewrites that expose them.

ONNX Runtime returns only main-graph values, so the values computed inside an ``If`` branch or a
``Loop``/``Scan`` body cannot simply be made graph outputs. Two rewrites of a *copy* of a model reach
them (used by calibration and by the tuning loop's sensitivity runs; the quantized model a user gets
keeps its control flow):

* :func:`inline_if` replaces an ``If`` by the branch it takes (for feeds on which its condition is known:
  :mod:`lpot_ir.backends.onnxruntime.specialize` finds out by running the model). The branch's nodes and
  values keep their names, so they become main-graph values that can be graph outputs.
* :func:`expose_per_iteration` adds scan outputs to a ``Loop`` or ``Scan``: each requested body value is
  stacked over the iterations (``[iterations, *shape]``) into a new output of the node, which can be a
  graph output. It needs the value's shape to be the same in every iteration (ONNX Runtime refuses to
  stack it otherwise).

:class:`Location` says where a subgraph value lives (the chain of control-flow nodes from the main graph
down) and whether those rewrites reach it: a chain of ``If`` branches, optionally ending in one
``Loop``/``Scan`` body. An ``If`` inside a loop body can take a different branch in every iteration, and
a loop inside a loop body stacks differently shaped values, so values there are not reached.

Everything here works on ``onnx`` protos (copies are cheap to make and to hand to ONNX Runtime) and
identifies a node by :func:`node_key`: its name, which lpot-ir keeps unique across the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import onnx
import onnx_ir as ir
from onnx import helper

__all__ = [
    "BRANCHES",
    "LOOPS",
    "Step",
    "Location",
    "node_key",
    "subgraphs",
    "subgraph_values",
    "graph_locations",
    "names_read",
    "inline_if",
    "expose_per_iteration",
    "prune_to",
    "model_names",
]

BRANCHES = ("then_branch", "else_branch")
"""The graph attributes of ``If``."""

LOOPS = ("Loop", "Scan")
"""Op types whose ``body`` runs once per iteration."""


@dataclass(frozen=True)
class Step:
    """One control-flow node on the way from the main graph to a subgraph.

    Attributes:
        node: the node's key (:func:`node_key`).
        op_type: ``If``, ``Loop``, ``Scan`` (or another op with a graph attribute).
        attribute: the graph attribute (``then_branch``, ``else_branch``, ``body``).
    """

    node: str
    op_type: str
    attribute: str

    def describe(self) -> str:
        if self.op_type == "If":
            return f"the {self.attribute} of If {self.node!r}"
        return f"the {self.attribute} of {self.op_type} {self.node!r}"


@dataclass(frozen=True)
class Location:
    """Where a subgraph lives: the control-flow nodes from the main graph down (outermost first)."""

    steps: tuple[Step, ...]

    def describe(self) -> str:
        """E.g. ``the else_branch of If 'a' (in the then_branch of If 'b')``."""
        if not self.steps:
            return "the main graph"
        inner, *outer = reversed(self.steps)
        text = inner.describe()
        if outer:
            text += " (in " + ", in ".join(step.describe() for step in outer) + ")"
        return text

    @property
    def loop(self) -> Step | None:
        """The ``Loop``/``Scan`` whose body holds the value directly, if the chain ends in one."""
        last = self.steps[-1] if self.steps else None
        return last if last is not None and last.op_type in LOOPS else None

    def unreachable(self) -> str | None:
        """Why calibration cannot collect values here (``None``: it can)."""
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            if step.op_type == "If" and step.attribute in BRANCHES:
                continue
            if step.op_type in LOOPS and step.attribute == "body" and last:
                continue
            if step.op_type in LOOPS and step.attribute == "body":
                inner = self.steps[i + 1]
                return (
                    f"it is inside {inner.describe()}, within {step.describe()}: a body's per-iteration values "
                    f"are collected only from nodes directly in the body (an If there can take a different "
                    "branch, and a nested loop a different trip count, in every iteration)"
                )
            return f"it is inside {step.describe()}, a kind of subgraph calibration does not enter"
        return None


def node_key(node: onnx.NodeProto | ir.Node) -> str:
    """A node's identity across copies of a model: its name, else its first output's name."""
    if isinstance(node, onnx.NodeProto):
        return node.name or f"output:{node.output[0] if node.output else ''}"
    first = node.outputs[0].name if node.outputs else ""
    return node.name or f"output:{first}"


def subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """``(attribute name, graph)`` of each graph attribute of ``node``."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.name, attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for graph in attribute.graphs:
                yield attribute.name, graph


def subgraph_values(graph: onnx.GraphProto) -> dict[str, Location]:
    """Every value defined inside a subgraph of ``graph`` (node outputs and subgraph inputs) -> its location.

    A name defined in two subgraphs (sibling scopes may repeat names; lpot-ir's loader renames them) keeps
    its first location.
    """
    found: dict[str, Location] = {}

    def visit(g: onnx.GraphProto, steps: tuple[Step, ...]) -> None:
        if steps:
            for value in g.input:
                found.setdefault(value.name, Location(steps))
            for node in g.node:
                for name in node.output:
                    if name:
                        found.setdefault(name, Location(steps))
        for node in g.node:
            for attribute, sub in subgraphs(node):
                visit(sub, (*steps, Step(node_key(node), node.op_type, attribute)))

    visit(graph, ())
    return found


def graph_locations(model: ir.Model) -> dict[int, Location]:
    """``id(graph)`` -> :class:`Location` for every graph of an IR model (the main graph: no steps)."""
    found: dict[int, Location] = {}

    def visit(g: ir.Graph, steps: tuple[Step, ...]) -> None:
        found[id(g)] = Location(steps)
        for node in g:
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    visit(attr.as_graph(), (*steps, Step(node_key(node), node.op_type, attr.name)))
                elif attr.type == ir.AttributeType.GRAPHS:
                    for sub in attr.as_graphs():
                        visit(sub, (*steps, Step(node_key(node), node.op_type, attr.name)))

    visit(model.graph, ())
    return found


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every name the graph's nodes read, subgraphs (outer-scope references) included."""
    read: set[str] = set()
    for node in graph.node:
        read.update(name for name in node.input if name)
        for _attribute, sub in subgraphs(node):
            read |= names_read(sub)
            read.update(out.name for out in sub.output)
    return read


def model_names(graph: onnx.GraphProto) -> set[str]:
    """Every value and node name used anywhere in ``graph`` (subgraphs included)."""
    names: set[str] = {v.name for v in graph.input} | {v.name for v in graph.output}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names.add(node.name)
        names.update(node.output)
        names.update(node.input)
        for _attribute, sub in subgraphs(node):
            names |= model_names(sub)
    names.discard("")
    return names


def _fresh(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    taken.add(name)
    return name


def inline_if(graph: onnx.GraphProto, index: int, branch: str, taken: set[str]) -> None:
    """Replace the ``If`` at ``graph.node[index]`` by the nodes of its ``branch`` (``then_branch``/``else_branch``).

    The branch's nodes, initializers and value infos move into ``graph`` under their own names; each output
    of the ``If`` is produced by an ``Identity`` of the branch's output. ``taken`` holds the names in use
    (new node names are added to it).

    Raises:
        ValueError: the node is not an ``If``, or a branch name is already defined in ``graph``.
    """
    node = graph.node[index]
    if node.op_type != "If" or branch not in BRANCHES:
        raise ValueError(f"node {node_key(node)!r} is a {node.op_type}, not an If with a {branch}")
    body = next(sub for attribute, sub in subgraphs(node) if attribute == branch)
    defined = {out for n in graph.node for out in n.output} | {t.name for t in graph.initializer}
    defined |= {i.name for i in graph.input}
    produced = {out for n in body.node for out in n.output} | {t.name for t in body.initializer}
    clash = (produced & defined) - set(node.output)
    if clash:
        raise ValueError(f"cannot inline If {node_key(node)!r}: {sorted(clash)[:3]} are defined in both scopes")
    replacement = [_copy(n) for n in body.node]
    for i, (out, branch_out) in enumerate(zip(node.output, body.output, strict=True)):
        if out:
            name = _fresh(f"{node_key(node)}/{branch}/output_{i}", taken)
            replacement.append(helper.make_node("Identity", [branch_out.name], [out], name=name))
    graph.initializer.extend(body.initializer)
    graph.value_info.extend(body.value_info)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[:index] + replacement + nodes[index + 1 :])


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _elem_type(graph: onnx.GraphProto, name: str) -> int:
    """The element type the graph declares for ``name`` (float when it declares none)."""
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.name == name and info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            return int(info.type.tensor_type.elem_type)
    return onnx.TensorProto.FLOAT


def expose_per_iteration(graph: onnx.GraphProto, index: int, values: Sequence[str], taken: set[str]) -> list[str]:
    """Stack body values of the ``Loop``/``Scan`` at ``graph.node[index]`` over its iterations.

    Each name in ``values`` (a node output or an input of the body) becomes an extra scan output of the
    body (through an ``Identity``) and an extra output of the node: ``[iterations, *shape]`` (``Scan``:
    stacked on axis 0, forward).

    Returns:
        The names of the node's new outputs, one per value, in order.
    """
    node = graph.node[index]
    if node.op_type not in LOOPS:
        raise ValueError(f"node {node_key(node)!r} is a {node.op_type}, not a Loop or Scan")
    body = next(sub for attribute, sub in subgraphs(node) if attribute == "body")
    outputs = []
    for value in values:
        inside = _fresh(f"{value}__iteration", taken)
        outside = _fresh(f"{value}__per_iteration", taken)
        body.node.append(helper.make_node("Identity", [value], [inside], name=_fresh(f"{inside}/Identity", taken)))
        body.output.append(helper.make_tensor_value_info(inside, _elem_type(body, value), None))
        node.output.append(outside)
        outputs.append(outside)
    if node.op_type == "Scan":
        for attribute in node.attribute:
            if attribute.name in ("scan_output_axes", "scan_output_directions"):
                attribute.ints.extend([0] * len(values))
    return outputs


def prune_to(graph: onnx.GraphProto, outputs: Iterable[str]) -> None:
    """Keep only the nodes of ``graph`` that ``outputs`` depend on, and make ``outputs`` its outputs (in place).

    Graph inputs stay (feeds name them all). Outputs are declared without a type.
    """
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
            for _attribute, sub in subgraphs(node):
                needed |= names_read(sub)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    names = list(dict.fromkeys(outputs))
    del graph.output[:]
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
