"""Pass ``constant-folding``: evaluate nodes whose inputs are all constant and store the results as
initializers.

Old exporters compute weights at run time (``ConstantOfShape``, ``Constant`` + ``Unsqueeze`` ...);
folding them turns those into initializers, which BatchNorm fusion and quantization need. Written
here because ``onnx_ir`` has no constant folding (onnxscript's optimizer has one, but the core must
not depend on onnxscript).

* ``Constant`` nodes become initializers (same value name).
* ``Shape`` (and ``Size``) of a value whose shape is fully static fold without evaluating anything.
* Any other default-domain node whose inputs are all constant is evaluated with ONNX's reference
  evaluator, at the model's opset, unless it is non-deterministic (Random*, Multinomial, Bernoulli),
  holds a subgraph or would produce more than ``size_limit`` elements
  (default 2**27).
* An ``If`` whose condition is constant is replaced by the nodes of the branch it always takes
  (which are then folded in turn); ``Loop`` and ``Scan`` are left alone.
* Outputs that are graph outputs are not folded (the model's outputs stay computed).

Nodes are visited in graph order, so chains fold in one sweep; every graph (subgraphs too) is folded.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from lpot_ir.ir.model import all_graphs
from lpot_ir.ir.pattern import attribute_value, constant_array
from lpot_ir.passes.base import Pass, PassResult, register_pass

__all__ = ["ConstantFoldingPass", "NON_DETERMINISTIC_OPS"]

logger = logging.getLogger(__name__)

NON_DETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
_DEFAULT_LIMIT = 2**27  # elements: VGG-19's 25088 x 4096 fc6 weights (old exporters build it) fit


@register_pass("constant-folding")
class ConstantFoldingPass(Pass):
    """Fold constant subexpressions into initializers (see the module docstring).

    Args:
        size_limit: the largest number of elements one folded output may have (default 2**27,
            about 134 M: large enough for the biggest weight of the ONNX model zoo's VGG-19).
    """

    name = "constant-folding"
    in_place = True

    def __init__(self, size_limit: int = _DEFAULT_LIMIT) -> None:
        self.size_limit = size_limit

    def call(self, model: ir.Model) -> PassResult:
        opsets = dict(model.opset_imports)
        changes = 0
        for graph in list(all_graphs(model)):
            pending = deque(graph)
            while pending:
                node = pending.popleft()
                if node.graph is not graph:
                    continue
                if node.op_type == "If" and node.domain in ("", "ai.onnx"):
                    inlined = self._inline_if(node, graph)
                    if inlined is not None:
                        changes += 1
                        pending.extendleft(reversed(inlined))  # fold what the branch computes next
                    continue
                if self._fold(node, graph, opsets):
                    changes += 1
        if changes:
            logger.info("constant folding: %d nodes folded", changes)
        return PassResult(model, changes > 0, changes=changes)

    # ----------------------------------------------------------------------------------------------

    def _fold(self, node: ir.Node, graph: ir.Graph, opsets: dict[str, int]) -> bool:
        if node.domain not in ("", "ai.onnx") or not node.outputs:
            return False
        if any(o.is_graph_output() for o in node.outputs):
            return False
        if node.op_type == "Constant":
            attr = node.attributes.get("value")
            if len(node.attributes) == 1 and attr is not None and attr.type == ir.AttributeType.TENSOR:
                return self._lift(node, graph, attr.value)  # reuse the tensor: no copy of the weights
            array = constant_array(node.outputs[0])
            return array is not None and self._replace(node, graph, [array])
        if node.op_type in ("Shape", "Size"):
            return self._fold_shape(node, graph)
        if node.op_type in NON_DETERMINISTIC_OPS or _has_subgraph(node) or not node.inputs:
            return False
        if node.op_type == "Identity" and node.inputs[0] is not None and _is_initializer(node.inputs[0]):
            # Identity of a constant: reuse the constant instead of copying it (torch exports these).
            node.outputs[0].replace_all_uses_with(node.inputs[0])
            graph.remove(node, safe=True)
            return True
        inputs: list[np.ndarray | None] = []
        for value in node.inputs:
            if value is None:
                inputs.append(None)
                continue
            array = constant_array(value)
            if array is None:
                return False
            inputs.append(array)
        if not self._small_enough(node, inputs):
            return False
        try:
            outputs = _evaluate(node, inputs, opsets)
        except Exception as exc:  # the reference evaluator raises many types; keep the node then
            logger.debug("not folding %s '%s': evaluation failed: %s", node.op_type, node.name, exc)
            return False
        if any(o is None or not isinstance(o, np.ndarray) for o in outputs):
            return False
        if sum(o.size for o in outputs) > self.size_limit:
            return False
        return self._replace(node, graph, outputs)

    def _inline_if(self, node: ir.Node, graph: ir.Graph) -> list[ir.Node] | None:
        """Replace an If whose condition is constant by the nodes of the branch it always takes.

        Returns the inlined nodes, or None when the If stays (condition not constant, or an If output
        that is a graph output would have to be renamed onto a value that cannot take its name).
        """
        cond = constant_array(node.inputs[0]) if node.inputs else None
        if cond is None or cond.size != 1:
            return None
        attr = node.attributes.get("then_branch" if bool(cond.reshape(-1)[0]) else "else_branch")
        if attr is None or attr.type != ir.AttributeType.GRAPH:
            return None
        body = attr.as_graph()
        results = list(body.outputs)
        if len(results) != len(node.outputs):
            return None
        renames: list[tuple[ir.Value, str]] = []
        for old, new in zip(node.outputs, results, strict=True):
            if not old.is_graph_output():
                continue
            produced_inside = new.producer() is not None and new.producer().graph is body  # type: ignore[union-attr]
            is_body_initializer = body.initializers.get(new.name or "") is new
            if not (produced_inside or is_body_initializer) or any(new is v for v, _ in renames):
                return None  # the model's output name cannot move onto an outer value
            renames.append((new, old.name or ""))
        inlined = list(body)
        body.outputs.clear()
        for name in list(body.initializers):
            graph.register_initializer(body.initializers.pop(name))
        body.remove(inlined)
        graph.insert_before(node, inlined)
        for old, new in zip(node.outputs, results, strict=True):
            if new.type is None:
                new.type = old.type
            if new.shape is None:
                new.shape = old.shape
            old.replace_all_uses_with(new, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        for value, name in renames:
            value.name = name
        logger.debug("inlined If '%s' (constant condition)", node.name)
        return inlined

    def _small_enough(self, node: ir.Node, inputs: Sequence[np.ndarray | None]) -> bool:
        if node.op_type == "ConstantOfShape" and inputs and inputs[0] is not None:
            size = int(np.prod(inputs[0].astype(np.int64))) if inputs[0].size else 1
            if size > self.size_limit:
                logger.info("not folding ConstantOfShape '%s': %d elements over the limit", node.name, size)
                return False
            return True
        for out in node.outputs:
            shape = out.shape
            if shape is not None and all(isinstance(d, int) for d in shape):
                if int(np.prod(list(shape))) > self.size_limit:  # type: ignore[arg-type]
                    return False
        return True

    def _fold_shape(self, node: ir.Node, graph: ir.Graph) -> bool:
        value = node.inputs[0] if node.inputs else None
        if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
            return False
        dims = [int(d) for d in value.shape]  # type: ignore[arg-type]
        if node.op_type == "Size":
            return self._replace(node, graph, [np.array(int(np.prod(dims)), dtype=np.int64)])
        start = int(attribute_value(node, "start", 0) or 0)
        end = attribute_value(node, "end", None)
        selected = dims[start:] if end is None else dims[start : int(end)]
        return self._replace(node, graph, [np.array(selected, dtype=np.int64)])

    def _lift(self, node: ir.Node, graph: ir.Graph, tensor: ir.TensorProtocol) -> bool:
        """Turn a Constant node holding a tensor into an initializer with the same value name."""
        out = node.outputs[0]
        value = ir.Value(
            name=out.name, shape=ir.Shape(tensor.shape.numpy()), type=ir.TensorType(tensor.dtype), const_value=tensor
        )
        out.replace_all_uses_with(value)
        graph.remove(node, safe=True)
        graph.register_initializer(value)
        return True

    def _replace(self, node: ir.Node, graph: ir.Graph, arrays: Sequence[np.ndarray]) -> bool:
        if len(arrays) != len(node.outputs):
            return False
        new_values: list[ir.Value] = []
        try:
            for out, array in zip(node.outputs, arrays, strict=True):
                expected = out.type.dtype if out.type is not None else None
                if expected is not None and expected != ir.DataType.UNDEFINED:
                    if ir.DataType.from_numpy(array.dtype) != expected:
                        array = array.astype(expected.numpy())
                new_values.append(
                    ir.Value(
                        name=out.name,
                        shape=ir.Shape(array.shape),
                        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                        const_value=ir.Tensor(np.ascontiguousarray(array), name=out.name),
                    )
                )
        except (TypeError, ValueError) as exc:  # strings, sequences or types numpy cannot hold
            logger.debug("not folding %s '%s': %s", node.op_type, node.name, exc)
            return False
        for out, new in zip(node.outputs, new_values, strict=True):
            out.replace_all_uses_with(new)
        graph.remove(node, safe=True)
        for new in new_values:
            graph.register_initializer(new)
        return True


def _is_initializer(value: ir.Value) -> bool:
    return value.is_initializer() and not value.is_graph_input() and value.const_value is not None


def _has_subgraph(node: ir.Node) -> bool:
    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())


def _evaluate(node: ir.Node, inputs: Sequence[np.ndarray | None], opsets: dict[str, int]) -> list[np.ndarray]:
    """Run one node with ONNX's reference evaluator at the model's opset."""
    if node.op_type == "ConstantOfShape":
        # Fast path for the old-exporter weight pattern (hundreds of nodes per model).
        attr = node.attributes.get("value")
        fill = attr.value.numpy().reshape(-1) if attr is not None else np.zeros(1, dtype=np.float32)
        return [np.full(tuple(int(d) for d in inputs[0]), fill[0], dtype=fill.dtype)]  # type: ignore[union-attr]
    proto = ir.serde.serialize_node(node)
    in_names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    out_names = [f"o{k}" for k in range(len(node.outputs))]
    del proto.input[:]
    proto.input.extend(in_names)
    del proto.output[:]
    proto.output.extend(out_names)
    proto.name = "fold"
    graph = onnx.helper.make_graph(
        [proto],
        "fold",
        [onnx.helper.make_tensor_value_info(n, 0, None) for n in in_names if n],
        [onnx.helper.make_tensor_value_info(n, 0, None) for n in out_names],
    )
    opset_imports = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
    model = onnx.helper.make_model(graph, opset_imports=opset_imports)
    feeds = {n: a for n, a in zip(in_names, inputs, strict=True) if n}
    results = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(r) for r in results]
