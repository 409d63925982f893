""":class:`SegmentRunner`: run a model piece by piece over fixed inputs, so a piece can be changed in between.

Layer-wise recovery corrects layer ``k`` from the output of the quantized model in which layers
``0..k-1`` are already corrected. Re-running the whole model per layer costs a full inference per layer
(ONNX Runtime computes every node whatever outputs are fetched). The runner instead executes only the
nodes not yet run that a requested tensor depends on (a *segment*), keeps the tensors later segments
read, and frees each tensor once all its consumers have run. Over a whole model every node runs once,
so correcting all layers costs about one inference plus one small session per segment.

Between segments the caller may replace an initializer (:meth:`SegmentRunner.set_initializer`, read by
nodes not yet run) or shift a computed tensor (:meth:`SegmentRunner.add_to`), which is how a corrected
layer's output reaches the layers after it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.errors import QuantizationError

__all__ = ["SegmentRunner"]

logger = logging.getLogger(__name__)


def _subgraph_reads(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    reads: list[str] = []
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
            for inner in graph.node:
                for name in [*inner.input, *_subgraph_reads(inner)]:
                    if name and name not in defined:
                        reads.append(name)
                defined.update(o for o in inner.output if o)
    return reads


class SegmentRunner:
    """Runs a model over fixed batches of inputs, one segment at a time.

    Args:
        model: the model (its nodes in topological order, as ONNX requires).
        feeds: batches of graph inputs, ``{input name: array}`` each.
        threads: ONNX Runtime intra-op threads (``None``: all cores).
        keep: tensors the caller will request, possibly after every node reading them has run: they are
            kept until :meth:`release` (a tensor is otherwise freed once its consumers have run).

    Attributes:
        segments: how many segments (sessions) have run.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        threads: int | None = 1,
        keep: Iterable[str] = (),
    ) -> None:
        graph = model.graph
        self._opsets = list(model.opset_import)
        self._ir_version = model.ir_version
        self._functions = list(model.functions)
        self._nodes = list(graph.node)
        self._initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self._reads: list[list[str]] = [[n for n in (*node.input, *_subgraph_reads(node)) if n] for node in self._nodes]
        self._producer: dict[str, int] = {}
        self._consumers: dict[str, set[int]] = {}
        for index, node in enumerate(self._nodes):
            for name in node.output:
                if name:
                    self._producer[name] = index
            for name in self._reads[index]:
                self._consumers.setdefault(name, set()).add(index)
        self._graph_outputs = {o.name for o in graph.output}
        self._batches = len(feeds)
        self._store: dict[str, list[np.ndarray]] = {}
        for value in graph.input:
            if value.name in self._initializers:
                continue
            self._store[value.name] = [np.asarray(feed[value.name]) for feed in feeds]
        self._done: set[int] = set()
        self._keep = set(keep)
        self.threads = threads
        self.segments = 0

    @property
    def num_batches(self) -> int:
        return self._batches

    def initializer(self, name: str) -> np.ndarray:
        """The current array of initializer ``name``."""
        return numpy_helper.to_array(self._initializers[name])

    def set_initializer(self, name: str, array: np.ndarray) -> None:
        """Replace initializer ``name``; nodes that have not run yet read the new array."""
        if name not in self._initializers:
            raise KeyError(f"{name!r} is not an initializer of the model")
        self._initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)

    def add_to(self, name: str, delta: np.ndarray) -> None:
        """Add ``delta`` (broadcast) to every batch of the computed tensor ``name`` (before its consumers run)."""
        for batch in self._store[name]:
            np.add(batch, delta.astype(batch.dtype), out=batch)

    def release(self, name: str) -> None:
        """``name`` will not be requested again: free it as soon as nothing still to run reads it."""
        self._keep.discard(name)
        consumers = self._consumers.get(name, set())
        if name in self._store and name not in self._graph_outputs and self.has_run(name) and consumers <= self._done:
            del self._store[name]

    def has_run(self, name: str) -> bool:
        """Whether the node producing ``name`` has run (graph inputs and initializers: True)."""
        index = self._producer.get(name)
        return index is None or index in self._done

    def run_to(self, names: Sequence[str]) -> list[list[np.ndarray]]:
        """Run what ``names`` depend on (once), and return each tensor's batches.

        The returned arrays are the runner's own: a caller that changes them changes what later
        segments read (use :meth:`add_to` for that on purpose).
        """
        segment = self._segment(names)
        if segment:
            self._run(segment, set(names))
        missing = [n for n in names if n not in self._store]
        if missing:
            raise QuantizationError(f"Layer-wise recovery could not compute tensor(s) {missing}.")
        return [self._store[n] for n in names]

    def _segment(self, names: Iterable[str]) -> list[int]:
        needed: set[int] = set()
        stack = [n for n in names if n not in self._store]
        while stack:
            name = stack.pop()
            index = self._producer.get(name)
            if index is None or index in self._done or index in needed:
                continue
            needed.add(index)
            stack.extend(n for n in self._reads[index] if n not in self._store and n not in self._initializers)
        return sorted(needed)

    def _run(self, segment: list[int], requested: set[str]) -> None:
        members = set(segment)
        after = self._done | members
        produced: list[str] = []
        inputs: dict[str, None] = {}
        initializers: dict[str, None] = {}
        for index in segment:
            for name in self._reads[index]:
                if self._producer.get(name) in members:
                    continue
                if name in self._store:
                    inputs[name] = None
                elif name in self._initializers:
                    initializers[name] = None
                else:
                    raise QuantizationError(f"Layer-wise recovery: tensor {name!r} is needed but was not computed.")
            produced.extend(o for o in self._nodes[index].output if o)
        outputs = [
            name
            for name in produced
            if name in requested or any(c not in after for c in self._consumers.get(name, ()))
        ]
        first = {name: self._store[name][0] for name in inputs}
        graph = helper.make_graph(
            [self._nodes[i] for i in segment],
            f"segment_{self.segments}",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), None) for n, a in first.items()],
            [onnx.ValueInfoProto(name=n) for n in outputs],
            [self._initializers[n] for n in initializers],
        )
        model = helper.make_model(graph, opset_imports=self._opsets, functions=self._functions)
        model.ir_version = self._ir_version
        session = make_session(model, intra_op_threads=self.threads)
        results: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for batch in range(self._batches):
            feed = {name: self._store[name][batch] for name in inputs}
            for name, array in zip(outputs, session.run(outputs, feed), strict=True):
                results[name].append(array)
        self._store.update(results)
        self._done |= members
        self.segments += 1
        for name in list(self._store):
            if name in requested or name in self._graph_outputs or name in self._keep:
                continue
            consumers = self._consumers.get(name, set())
            if consumers and consumers <= self._done:
                del self._store[name]
