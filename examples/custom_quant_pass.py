"""Put your own pass into a quantization pipeline.

Run it:  python examples/custom_quant_pass.py

It registers ``report-weight-error``, a pass that runs right after ``insert-qdq`` in the ``int8-qdq``
pipeline and measures, for every quantized weight, how far the INT8 weight (dequantized) is from the
FP32 weight: the relative RMS error. It reads what it needs from the pipeline's
:class:`~lpot_ir.passes.quantization.QuantizationContext` (the FP32 model) and from the metadata
``insert-qdq`` leaves on each weight ``DequantizeLinear`` (:class:`QuantizedWeight`), and returns its
findings in its result (``details``: weight -> error in parts per million).

The model is one MatMul whose weight has one outlier column. Quantized per tensor, the outlier sets the
scale of every column, so the error is large; per channel (one scale per output column) it is not.
The recipe of each quantized model records the pipeline, its version and the steps that ran.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.ir.quant import Granularity, OpQuantConfig, QuantSpec, Scheme, TuningConfig
from lpot_ir.passes import PIPELINES, insert_step, register_pass
from lpot_ir.passes.quantization import (
    QUANTIZED_WEIGHT_KEY,
    QuantizationPass,
    QuantizedWeight,
    QuantPassResult,
)
from lpot_ir.quantizer import ModelQuantizer

logger = logging.getLogger("custom_quant_pass")


@register_pass("report-weight-error")
class ReportWeightError(QuantizationPass):
    """Relative RMS error of every quantized weight (an analysis pass: it does not change the model)."""

    in_place = True

    def call(self, model: ir.Model) -> QuantPassResult:
        fp32 = self.context.fp32_model  # the FP32 model this quantization started from (a proto)
        assert fp32 is not None, "ModelQuantizer always provides the FP32 model"
        originals = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
        errors: dict[str, int] = {}
        for node in model.graph:
            weight = node.meta.get(QUANTIZED_WEIGHT_KEY)
            if not isinstance(weight, QuantizedWeight):
                continue
            q, scale, zero_point = (v.const_value.numpy() for v in node.inputs)  # type: ignore[union-attr]
            if weight.axis is not None:  # per channel: broadcast the scales along the channel axis
                shape = [1] * q.ndim
                shape[weight.axis] = -1
                scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
            dequantized = (q.astype(np.float32) - zero_point.astype(np.float32)) * scale
            w = originals[weight.source]
            rel = float(np.sqrt(np.mean((dequantized - w) ** 2)) / np.sqrt(np.mean(w**2)))
            errors[weight.source] = round(rel * 1e6)
            logger.info("%s (%s): relative RMS error %.2e", weight.source, weight.spec.granularity, rel)
        return QuantPassResult(model, False, details=errors)


def build_model() -> bytes:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 16)) * 0.05).astype(np.float32)
    w[:, 5] *= 40.0  # one output column 40x larger than the others
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
        "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 16])],
        [numpy_helper.from_array(w, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> None:
    insert_step("int8-qdq", "report-weight-error", after="insert-qdq")
    print("int8-qdq:", " -> ".join(PIPELINES["int8-qdq"]))
    calib = [np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)]  # 8 samples
    quantizer = ModelQuantizer(build_model(), calib)
    for granularity in (Granularity.PER_TENSOR, Granularity.PER_CHANNEL):
        weight = QuantSpec(scheme=Scheme.SYM, granularity=granularity)
        config = TuningConfig(global_config=OpQuantConfig(weight=weight), calib_sampling_size=8)
        quantized = quantizer.quantize(config)
        errors = quantized.step("report-weight-error").details  # what the pass returned
        print(f"{granularity.value}: W error {errors['W'] / 1e6:.2e}")
        record = quantized.recipe.pipeline
        assert record is not None
        print(f"recipe: {record.name} v{record.version}: {', '.join(record.steps)}")


if __name__ == "__main__":
    main()
