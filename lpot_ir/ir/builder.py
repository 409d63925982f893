"""Building in a graph: fresh names, initializers, nodes, and the one way a value takes over a graph output.

Everything that adds to a graph uses these: the rewrite driver's :class:`~lpot_ir.ir.pattern.Builder`
(a rule's replacement, committed by the driver) and :class:`GraphBuilder` (passes that edit the graph
directly: Q/DQ insertion, the dynamic rewrite) share :class:`NameScope` for names and
:func:`make_initializer` for constants. :func:`move_graph_output` is the one place where a new value
takes over an old one's place and name among the graph outputs (so a model's interface never changes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from lpot_ir.ir.model import all_graphs

__all__ = ["NameScope", "GraphBuilder", "make_initializer", "move_graph_output", "replace_value"]


class NameScope:
    """Node and value names in use in a model (all graphs: ONNX forbids shadowing across scopes)."""

    def __init__(self, nodes: Iterable[str] = (), values: Iterable[str] = ()) -> None:
        self.nodes: set[str] = set(nodes)
        self.values: set[str] = set(values)

    @classmethod
    def of(cls, graphs: Iterable[ir.Graph]) -> NameScope:
        scope = cls()
        for graph in graphs:
            scope.values.update(v.name for v in graph.inputs if v.name)
            scope.values.update(name for name in graph.initializers)
            for node in graph:
                if node.name:
                    scope.nodes.add(node.name)
                scope.values.update(v.name for v in node.outputs if v.name)
        return scope

    @staticmethod
    def _unique(base: str, taken: set[str] | Iterable[set[str]], free: frozenset[str] = frozenset()) -> str:
        sets = [taken] if isinstance(taken, set) else list(taken)
        if base in free or not any(base in s for s in sets):
            return base
        k = 1
        while any(f"{base}_{k}" in s for s in sets):
            k += 1
        return f"{base}_{k}"

    def node_name(self, base: str, free: frozenset[str] = frozenset()) -> str:
        """A node name not yet used by a node (``base``, else ``base_<k>``); reserved."""
        name = self._unique(base, self.nodes, free)
        self.nodes.add(name)
        return name

    def value_name(self, base: str) -> str:
        """A value name not yet used by a value; reserved."""
        name = self._unique(base, self.values)
        self.values.add(name)
        return name

    def fresh(self, base: str) -> str:
        """A name used by no node and no value (for a node or a value); reserved for both."""
        name = self._unique(base, (self.nodes, self.values))
        self.nodes.add(name)
        self.values.add(name)
        return name


def make_initializer(name: str, array: np.ndarray) -> ir.Value:
    """A new (not yet registered) initializer value named ``name`` holding a C-contiguous copy of ``array``.

    The copy keeps a 0-d array 0-d, and keeps the value independent of arrays shared elsewhere (caches).
    """
    tensor = ir.Tensor(np.array(array, order="C", copy=True), name=name)
    return ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)


class GraphBuilder:
    """Creates uniquely named initializers and nodes in one graph of a model, right away.

    Args:
        model: the model (names are made unique across all its graphs).
        graph: the graph to build in (the main graph by default).
        scope: the names in use, when another builder of the same model already holds them (builders of
            several graphs of one model share one scope).
    """

    def __init__(self, model: ir.Model, graph: ir.Graph | None = None, *, scope: NameScope | None = None) -> None:
        self.model = model
        self.graph = graph if graph is not None else model.graph
        self.scope = scope if scope is not None else NameScope.of(all_graphs(model))

    def for_graph(self, graph: ir.Graph | None) -> GraphBuilder:
        """A builder of ``graph`` (another graph of the same model: a subgraph) sharing this one's names."""
        if graph is None or graph is self.graph:
            return self
        return GraphBuilder(self.model, graph, scope=self.scope)

    def fresh(self, base: str) -> str:
        """Return ``base`` (or ``base_<n>``) not yet used as a value or node name."""
        return self.scope.fresh(base)

    def initializer(self, base: str, array: np.ndarray) -> ir.Value:
        """Register a new initializer holding ``array`` and return its value."""
        value = make_initializer(self.fresh(base), array)
        self.graph.register_initializer(value)
        return value

    def node(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        *,
        outputs: Sequence[tuple[str, ir.DataType | None, ir.Shape | Sequence[int] | None]],
        attributes: Sequence[ir.Attr] = (),
        domain: str = "",
        name: str | None = None,
    ) -> ir.Node:
        """Create (not insert) a node whose outputs get fresh names, element types and shapes."""
        node = ir.Node(
            domain,
            op_type,
            list(inputs),
            attributes,
            num_outputs=len(outputs),
            name=self.fresh(name or op_type),
        )
        for value, (base, dtype, shape) in zip(node.outputs, outputs, strict=True):
            value.name = self.fresh(base)
            if dtype is not None:
                value.type = ir.TensorType(dtype)
            if shape is not None:
                value.shape = ir.Shape(shape)
        return node

    def insert_after_producer(self, value: ir.Value, new_nodes: Sequence[ir.Node]) -> None:
        """Insert ``new_nodes`` right after ``value``'s producer (at the start for inputs, initializers and
        values of an outer graph)."""
        producer = value.producer()
        if producer is not None and producer.graph is self.graph:
            self.graph.insert_after(producer, list(new_nodes))
            return
        first = next(iter(self.graph), None)
        if first is None:
            self.graph.extend(list(new_nodes))
        else:
            self.graph.insert_before(first, list(new_nodes))


def move_graph_output(old: ir.Value, new: ir.Value, graph: ir.Graph, scope: NameScope) -> None:
    """Make ``new`` take ``old``'s place and name among ``graph``'s outputs (``old`` is renamed
    ``<name>_prequant``); nothing happens when ``old`` is not a graph output."""
    if not old.is_graph_output():
        return
    name = old.name
    for i, out in enumerate(graph.outputs):
        if out is old:
            graph.outputs[i] = new
    old.name = scope.fresh(f"{name}_prequant")
    new.name = name


def replace_value(old: ir.Value, new: ir.Value, builder: GraphBuilder) -> None:
    """Point every use of ``old`` at ``new``; a graph output moves to ``new`` and keeps its name."""
    move_graph_output(old, new, builder.graph, builder.scope)
    old.replace_all_uses_with(new)
