"""Helpers of the tuning tests (the digits model's outlier ops, a configuration builder, INT8 margins)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.capabilities import CpuFeatures, default_op_config
from lpot_ir.config import load_config
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.quantizer import default_config

# the two ops around the outlier tensor (see lpot_ir.examples_data)
OUTLIER_OPS = ("/stem/stem.0/Conv", "/dw1/dw1.0/Conv")
# the outlier tensor's producer and reader groups: these nodes in FP32 recover the accuracy
OUTLIER_FALLBACK = (*OUTLIER_OPS, "/stem/stem.2/Relu", "/dw1/dw1.2/Relu")

# Every CPU quantizes with one of two default weight formats: 8 bits (VNNI, AMX, ARM) or 7 bits (x86 without
# VNNI: `reduce_range`). Tests of the example's margins check both, whatever CPU runs them.
WEIGHT_FORMATS = {
    "8-bit weights": CpuFeatures(arch="x86_64", vnni=True, avx512=True, avx2=True),
    "7-bit weights": CpuFeatures(arch="x86_64", avx2=True),
}

SAFETY = 10.0
"""Margins are asked to exceed SAFETY x what they are compared with (kernel noise, the allowed drop)."""


def default_config_for(features: CpuFeatures) -> TuningConfig:
    """The default configuration a CPU with ``features`` quantizes with."""
    return dataclasses.replace(default_config(), global_config=default_op_config(features))


def logits(model: onnx.ModelProto, data: np.ndarray) -> np.ndarray:
    """The model's output on ``data`` in ONNX Runtime (one thread, one batch, as the accuracy proxy runs it)."""
    from lpot_ir.backends.onnxruntime.session import make_session

    session = make_session(model.SerializeToString(), intra_op_threads=1)
    return np.asarray(session.run(None, {"input": data})[0])


def reference_logits(model: onnx.ModelProto, data: np.ndarray) -> np.ndarray:
    """The model's output computed by onnx's reference evaluator (Q/DQ in numpy, no fused integer kernels).

    Next to :func:`logits` it shows how far two correct implementations of one INT8 model disagree;
    another CPU's kernels are another such implementation.
    """
    from onnx.reference import ReferenceEvaluator

    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    for opset in reference.opset_import:  # the reference evaluator implements Q/DQ from opset 19 (same semantics)
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 19)
    return np.asarray(ReferenceEvaluator(reference).run(None, {"input": data})[0])


def rounding_floor(model: onnx.ModelProto) -> float:
    """SAFETY x how far one INT8 rounding step of one classifier input can move a top-1 lead.

    Every correct INT8 kernel sums integers exactly; implementations (another CPU's VNNI/AMX/AVX2 kernels, the
    reference evaluator) differ only in how they round a requantized value, by one step at a time. The model's
    output is an FP32 ``Gemm`` reading a quantized tensor (step ``s``): one feature ``k`` one step off moves the
    lead of class ``c`` over ``c'`` by at most ``s * |W[c, k] - W[c', k]|``. The floor allows SAFETY such steps
    (earlier tensors' steps reach the classifier input averaged over the 8x8 pixels of the global average pool,
    far below one of its steps), so a margin of at least this much holds for any CPU's kernels.
    """
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    gemm = producers[model.graph.output[0].name]
    feature_dq, weight_dq = producers[gemm.input[0]], producers[gemm.input[1]]
    if gemm.op_type != "Gemm" or feature_dq.op_type != "DequantizeLinear" or weight_dq.op_type != "DequantizeLinear":
        raise ValueError(f"expected an FP32 Gemm reading DequantizeLinear outputs, got {gemm.op_type}")
    step = float(initializers[feature_dq.input[1]])
    quantized = initializers[weight_dq.input[0]].astype(np.float64)
    zero = initializers[weight_dq.input[2]].astype(np.float64) if len(weight_dq.input) > 2 else np.zeros(1)
    scale = initializers[weight_dq.input[1]].astype(np.float64)
    axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
    shape = [-1 if d == axis % quantized.ndim else 1 for d in range(quantized.ndim)] if scale.size > 1 else [1]
    weights = (quantized - np.reshape(zero, shape)) * np.reshape(scale, shape)
    trans_b = any(a.name == "transB" and a.i == 1 for a in gemm.attribute)
    weights = weights if trans_b else weights.T  # [classes, features]
    return SAFETY * step * float(np.max(weights.max(axis=0) - weights.min(axis=0)))


def leads(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per sample: the logit of ``classes`` minus the largest other logit (negative: another class wins)."""
    rows = np.arange(len(values))
    others = values.copy()
    others[rows, classes] = -np.inf
    return values[rows, classes] - others.max(axis=-1)

PLAIN = {"proxy": False, "speed": False, "recovery": False}
"""basic without advice: all-INT8 first, then sensitivity-ordered fallback in growing batches. The
digits model's stem is faster in FP32 (3x3 conv on one channel), so with ``speed`` on the first trial
already keeps it FP32 and meets the goal; tests of the fallback mechanics turn the advice off."""


def make_config(workspace: Any, strategy: str = "basic", *, resume: Any = None, **tuning: Any) -> Any:
    """A configuration for the digits model with a 1% relative criterion."""
    exit_policy = {"timeout": tuning.pop("timeout", 0), "max_trials": tuning.pop("max_trials", 20)}
    strategy_section = {"name": strategy, **tuning.pop("strategy_options", {})}
    return load_config(
        {
            "model": {"name": "digits", "framework": "onnxrt_qdq"},
            "tuning": {
                "strategy": strategy_section,
                "accuracy_criterion": {"relative": 0.01},
                "exit_policy": exit_policy,
                "workspace": {"path": str(workspace), **({"resume": str(resume)} if resume else {})},
                **tuning,
            },
        }
    )
