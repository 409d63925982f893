"""Small graph-building helpers shared by the quantization passes (fresh names, initializers, nodes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from lpot_ir.ir.model import all_graphs

__all__ = ["GraphBuilder", "rename_for_graph_output", "replace_value"]


class GraphBuilder:
    """Creates uniquely named initializers and nodes in one graph of a model.

    Args:
        model: the model (names are made unique across all its graphs).
        graph: the graph to build in (the main graph by default).
    """

    def __init__(self, model: ir.Model, graph: ir.Graph | None = None) -> None:
        self.graph = graph if graph is not None else model.graph
        self._names: set[str] = set()
        for g in all_graphs(model):
            self._names.update(v.name for v in g.inputs if v.name)
            self._names.update(g.initializers)
            for node in g:
                if node.name:
                    self._names.add(node.name)
                self._names.update(v.name for v in node.outputs if v.name)

    def fresh(self, base: str) -> str:
        """Return ``base`` (or ``base_<n>``) not yet used as a value or node name."""
        name, n = base, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def initializer(self, base: str, array: np.ndarray) -> ir.Value:
        """Register a new initializer holding ``array`` and return its value."""
        name = self.fresh(base)
        tensor = ir.Tensor(np.array(array, order="C", copy=True), name=name)
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
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
        """Insert ``new_nodes`` right after ``value``'s producer (at the start for inputs/initializers)."""
        producer = value.producer()
        if producer is not None and producer.graph is self.graph:
            self.graph.insert_after(producer, list(new_nodes))
            return
        first = next(iter(self.graph), None)
        if first is None:
            self.graph.extend(list(new_nodes))
        else:
            self.graph.insert_before(first, list(new_nodes))


def rename_for_graph_output(old: ir.Value, new: ir.Value, graph: ir.Graph, builder: GraphBuilder) -> None:
    """Make ``new`` take ``old``'s place (and name) among the graph outputs."""
    if not old.is_graph_output():
        return
    name = old.name
    for i, out in enumerate(graph.outputs):
        if out is old:
            graph.outputs[i] = new
    old.name = builder.fresh(f"{name}_prequant")
    new.name = name


def replace_value(old: ir.Value, new: ir.Value, builder: GraphBuilder) -> None:
    """Point every use of ``old`` (graph outputs included) at ``new``; a graph output keeps its name."""
    was_output = old.is_graph_output()
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output and name:
        old.name = builder.fresh(f"{name}_prequant")
        new.name = name
