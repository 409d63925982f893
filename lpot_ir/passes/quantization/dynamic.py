"""Dynamic quantization (approach ``post_training_dynamic_quant``): activations quantized at run time.

:class:`DynamicQuantizePass` reads the annotations with ``dynamic=True`` and rewrites, in standard ONNX
ops only (ONNX Runtime fuses them into ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat`` itself):

* ``MatMul(x, W)`` and ``Gemm(x, W, C)`` (transA=0) ->
  ``DynamicQuantizeLinear(x) -> MatMulInteger(xq, Wq, x_zp, W_zp) -> Cast -> Mul(x_scale x W_scale)``
  (+ ``Add(beta x C)`` for Gemm); ``W`` stored int8 offline (transposed first when ``transB=1``; Gemm's
  ``alpha`` folded into the weight scale). Per-column weight scales when per-channel.
  A MatMul of two activations quantizes both at run time.
* ``Conv(x, W, B)`` -> ``DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul(scale) -> Add(B)``
  (ONNX Runtime's ConvInteger takes per-tensor weights only).
* ``Gather(table, indices)`` on a constant float table -> ``Gather(int8 table) -> DequantizeLinear``.
* ``LSTM`` / ``GRU`` / ``RNN``: weights ``W`` and ``R`` stored int8 feeding ``DequantizeLinear``
  (the fused ``DynamicQuantizeLSTM`` is a contrib op: see :mod:`lower_qoperator`).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, OpCategory, constant_value
from lpot_ir.ir.builder import GraphBuilder, move_graph_output, replace_value
from lpot_ir.ir.model import all_graphs, all_nodes
from lpot_ir.ir.quant import (
    ANNOTATION_KEY,
    FP32_REASON_KEY,
    DType,
    Fp32Category,
    Fp32Reason,
    Granularity,
    QuantAnnotation,
    QuantSpec,
)
from lpot_ir.passes.base import at_node, register_pass
from lpot_ir.passes.quantization.context import QuantizationPass, QuantPassResult
from lpot_ir.passes.quantization.qparams import quantize_array, weight_qparams

__all__ = ["DynamicQuantizePass"]

logger = logging.getLogger(__name__)

_IR_DTYPE = {DType.UINT8: ir.DataType.UINT8, DType.INT8: ir.DataType.INT8}


@register_pass("dynamic-quantize")
class DynamicQuantizePass(QuantizationPass):
    """Rewrite the dynamically annotated nodes of every graph (If branches and loop bodies too) into
    integer kernels; new nodes and initializers go into the graph of the node they serve.

    The result's ``fp32`` lists the annotated nodes left FP32 after all, with the reason.
    """

    def call(self, model: ir.Model) -> QuantPassResult:
        builder = GraphBuilder(model)
        changes = 0
        dropped: dict[str, Fp32Reason] = {}
        # one DynamicQuantizeLinear per tensor and graph within this run
        self._shared: dict[tuple[int, ir.Value], tuple[ir.Value, ir.Value, ir.Value]] = {}
        for node in list(all_nodes(model)):
            annotation = node.meta.get(ANNOTATION_KEY)
            if not isinstance(annotation, QuantAnnotation) or not annotation.dynamic:
                continue
            category = CAPABILITIES[node.op_type].category
            local = builder.for_graph(node.graph)
            with at_node(node):
                if category is OpCategory.COMPUTE:
                    reason = self._compute(local, node, annotation)
                elif category is OpCategory.EMBEDDING:
                    reason = self._embedding(local, node, annotation)
                else:
                    reason = self._weights_only(local, node, annotation)
            if reason is not None:
                node.meta.pop(ANNOTATION_KEY, None)
                node.meta[FP32_REASON_KEY] = reason
                dropped[node.name or ""] = reason
            else:
                changes += 1
        for graph in all_graphs(model):
            for name in [n for n, v in graph.initializers.items() if not v.uses() and not v.is_graph_output()]:
                del graph.initializers[name]
        return QuantPassResult(model, changes > 0, changes=changes, fp32=dropped)

    # -- MatMul / Gemm / Conv ----------------------------------------------------------------------

    def _compute(self, b: GraphBuilder, node: ir.Node, annotation: QuantAnnotation) -> Fp32Reason | None:
        graph = b.graph
        x = node.inputs[0]
        w = node.inputs[1]
        assert x is not None and w is not None
        wspec = annotation.input_spec(1)
        w_const = constant_value(w)
        op = node.op_type
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        alpha, beta = 1.0, 1.0
        if op == "Gemm":
            alpha = node.attributes.get_float("alpha", 1.0)
            beta = node.attributes.get_float("beta", 1.0)
            if bias is not None and constant_value(bias) is None and beta != 1.0:
                return Fp32Reason(Fp32Category.UNSUPPORTED, "dynamic Gemm with a non-constant C and beta != 1")
        new_nodes: list[ir.Node] = []
        base = node.name or op
        x_q, x_scale, x_zp = self._dynamic_quantize(b, x, new_nodes)

        if w_const is not None and isinstance(wspec, QuantSpec):
            data = w_const.numpy().astype(np.float32)
            if op == "Gemm" and node.attributes.get_int("transB", 0) != 0:
                data = data.T
            axis = None
            if wspec.granularity is Granularity.PER_CHANNEL and op != "Conv":
                axis = data.ndim - 1
            params = weight_qparams(data, wspec, axis)
            w_q = b.initializer(f"{w.name}_quantized", quantize_array(data, params))
            w_zp = b.initializer(f"{w.name}_zero_point", params.zero_point)
            w_scale = params.scale.astype(np.float32) * np.float32(alpha)
            if op == "Conv" and w_scale.ndim == 1:
                w_scale = w_scale.reshape(-1, *([1] * (data.ndim - 2)))
            w_scale_value = b.initializer(f"{w.name}_scale", w_scale.astype(np.float32))
        else:  # MatMul of two activations
            w_q, w_scale_value, w_zp = self._dynamic_quantize(b, w, new_nodes)

        attrs = [a for a in node.attributes.values()] if op == "Conv" else []
        kernel = CAPABILITIES[op].dynamic
        assert kernel is not None, f"the capability table gives {op} a dynamic kernel (only then is it annotated)"
        integer_op = kernel.op_type
        acc = b.node(integer_op, [x_q, w_q, x_zp, w_zp], outputs=[(f"{base}_int32", ir.DataType.INT32, None)],
                     attributes=attrs, name=f"{base}_{integer_op}")
        cast = b.node("Cast", [acc.outputs[0]], outputs=[(f"{base}_float", ir.DataType.FLOAT, None)],
                      attributes=[ir.AttrInt64("to", ir.DataType.FLOAT.value)], name=f"{base}_Cast")
        scale = b.node("Mul", [x_scale, w_scale_value], outputs=[(f"{base}_scale", ir.DataType.FLOAT, None)],
                       name=f"{base}_scale_Mul")
        out = b.node("Mul", [cast.outputs[0], scale.outputs[0]],
                     outputs=[(f"{base}_output", ir.DataType.FLOAT, node.outputs[0].shape)], name=f"{base}_Mul")
        new_nodes += [acc, cast, scale, out]
        result = out.outputs[0]
        if bias is not None:
            bias_value = bias
            bias_const = constant_value(bias)
            if bias_const is not None:
                data = bias_const.numpy().astype(np.float32)
                if op == "Conv":
                    # [1, C, 1, ...]: one 1 per spatial axis, which the weight [C_out, C_in, k...] tells even
                    # where x's shape is unknown (values inside subgraphs often have none)
                    spatial = len(w_const.shape) - 2 if w_const is not None else (len(x.shape) - 2 if x.shape else 2)
                    data = data.reshape(1, -1, *([1] * spatial))
                elif beta != 1.0:
                    data = data * np.float32(beta)
                bias_value = b.initializer(f"{bias.name}_folded", data)
            add = b.node("Add", [result, bias_value],
                         outputs=[(f"{base}_biased", ir.DataType.FLOAT, node.outputs[0].shape)], name=f"{base}_Add")
            new_nodes.append(add)
            result = add.outputs[0]
        graph.insert_before(node, new_nodes)
        replace_value(node.outputs[0], result, b)
        graph.remove(node, safe=True)
        return None

    def _dynamic_quantize(
        self, b: GraphBuilder, x: ir.Value, new_nodes: list[ir.Node]
    ) -> tuple[ir.Value, ir.Value, ir.Value]:
        """One DynamicQuantizeLinear per tensor, shared by every node of the graph that reads it (placed after its
        producer, or at the start of the graph for a tensor of an outer graph)."""
        key = (id(b.graph), x)
        if key in self._shared:
            return self._shared[key]
        base = x.name or "x"
        dq = b.node(
            "DynamicQuantizeLinear",
            [x],
            outputs=[(f"{base}_quantized", ir.DataType.UINT8, x.shape), (f"{base}_scale", ir.DataType.FLOAT, ()),
                     (f"{base}_zero_point", ir.DataType.UINT8, ())],
            name=f"{base}_DynamicQuantizeLinear",
        )
        b.insert_after_producer(x, [dq])
        self._shared[key] = (dq.outputs[0], dq.outputs[1], dq.outputs[2])
        return self._shared[key]

    # -- Gather / recurrent --------------------------------------------------------------------------

    def _embedding(self, b: GraphBuilder, node: ir.Node, annotation: QuantAnnotation) -> Fp32Reason | None:
        table = node.inputs[0]
        spec = annotation.input_spec(0)
        const = constant_value(table)
        if table is None or const is None or not isinstance(spec, QuantSpec):
            return Fp32Reason(Fp32Category.UNSUPPORTED, "Gather table is not a constant")
        data = const.numpy().astype(np.float32)
        params = weight_qparams(data, spec, None)
        q = b.initializer(f"{table.name}_quantized", quantize_array(data, params))
        node.replace_input_with(0, q)
        out = node.outputs[0]
        out.type = ir.TensorType(_IR_DTYPE[params.dtype])
        scale = b.initializer(f"{table.name}_scale", params.scale)
        zp = b.initializer(f"{table.name}_zero_point", params.zero_point)
        dq = b.node("DequantizeLinear", [out, scale, zp],
                    outputs=[(f"{out.name}_dequantized", ir.DataType.FLOAT, out.shape)],
                    name=f"{node.name}_DequantizeLinear")
        b.graph.insert_after(node, dq)
        for use in list(out.uses()):
            if use.node is not dq:
                use.node.replace_input_with(use.idx, dq.outputs[0])
        move_graph_output(out, dq.outputs[0], b.graph, b.scope)
        return None

    def _weights_only(self, b: GraphBuilder, node: ir.Node, annotation: QuantAnnotation) -> Fp32Reason | None:
        weights: list[tuple[int, ir.Value, ir.TensorProtocol, QuantSpec]] = []
        for index, spec in annotation.inputs:
            value = node.inputs[index]
            const = constant_value(value)
            if value is None or const is None or not isinstance(spec, QuantSpec):
                return Fp32Reason(Fp32Category.UNSUPPORTED, f"input {index} is not a constant weight")
            weights.append((index, value, const, spec))
        for index, value, const, spec in weights:
            data = const.numpy().astype(np.float32)
            params = weight_qparams(data, spec, None)
            q = b.initializer(f"{value.name}_quantized", quantize_array(data, params))
            scale = b.initializer(f"{value.name}_scale", params.scale)
            zp = b.initializer(f"{value.name}_zero_point", params.zero_point)
            dq = b.node("DequantizeLinear", [q, scale, zp],
                        outputs=[(f"{value.name}_dequantized", ir.DataType.FLOAT, data.shape)],
                        name=f"{node.name}_W{index}_DequantizeLinear")
            b.graph.insert_before(node, dq)
            node.replace_input_with(index, dq.outputs[0])
        return None
