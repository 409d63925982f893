"""Mixed precision as data: which ops may run in bf16/fp16 (the numerics rule) and where they have kernels.

Two declarative tables, read by the ``mixed-precision`` step
(:mod:`lpot_ir.passes.mixed_precision`) and by the tuning space (which nodes get a bf16/fp16 option):

* :data:`PRECISION_RULES` -- op type -> :class:`PrecisionRule`, the numerics rule, the same on every backend:

  - ``compute`` ops (MatMul, Gemm, Conv, ConvTranspose) are where a 16-bit type pays (half the weight bytes;
    AMX/tensor-core kernels accumulate in FP32); they run in bf16/fp16 when the configuration says so;
  - ``follow`` ops (element-wise, activations, data movement) run in bf16/fp16 only inside a low-precision
    region: when every float input already arrives in that type and some consumer reads it in that type, so
    no cast is added for them;
  - ``fp32`` ops are numerically fragile and always stay FP32, with the reason given: accumulating
    reductions, Softmax, the statistics of normalizations, Exp/Log/Pow/Sqrt/Reciprocal.

  An op type missing from the table stays FP32 (its numerics in 16 bits are not known).

* :data:`FLOAT_KERNELS` -- :class:`~lpot_ir.ir.quant.Backend` -> dtype -> op type -> :class:`FloatKernel`: the
  ops that backend runs in that type. ONNX Runtime's CPU provider was measured (ONNX Runtime 1.32, x86-64 with
  AVX-512 FP16 and AMX-BF16; ``tests/mixed_precision/test_mp_tables.py`` re-checks it against the installed
  ONNX Runtime): it has **no** bfloat16 kernel for any compute op or activation, and runs most float16 ops by
  casting them to float32 and back (``fp32_arithmetic``), so there fp16 saves model size, not time. The CUDA
  provider's entries come from ONNX Runtime's registered kernels (``docs/OperatorKernels.md``; bf16 Conv only
  from opset 22); they are checked only where a GPU is present. PyTorch's CPU kernels take bf16 and fp16 for
  every op the PyTorch lowering runs (:mod:`lpot_ir.backends.export.torch_lowering`).

Besides the tables, the ONNX standard itself decides (:func:`onnx_allows`, read from ``onnx.defs``): at opset 17
there is no bfloat16 Conv, ConvTranspose, MaxPool, AveragePool, GlobalMaxPool, HardSigmoid or HardSwish (opset 22
adds them), so a bf16 model keeps those in FP32 unless it is exported at opset 22.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import onnx

from lpot_ir.backends.export.graph import SUPPORTED_OPS as TORCH_LOWERING_OPS
from lpot_ir.ir.quant import Backend, DType, Fp32Category, Fp32Reason

__all__ = [
    "FloatRole",
    "PrecisionRule",
    "FloatKernel",
    "PRECISION_RULES",
    "FLOAT_KERNELS",
    "FP16_MAX",
    "BACKEND_NAMES",
    "rule_for",
    "kernel_for",
    "onnx_allows",
    "supported",
    "precision_blocker",
]

FP16_MAX = 65504.0
"""The largest finite float16 value: a tensor beyond it becomes inf in fp16."""


class FloatRole(str, enum.Enum):
    """What mixed precision does with an op type."""

    COMPUTE = "compute"  # runs in bf16/fp16 when the configuration asks: where 16 bits pay
    FOLLOW = "follow"  # runs in bf16/fp16 only inside a low-precision region (no cast added for it)
    FP32 = "fp32"  # numerically fragile: always FP32

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PrecisionRule:
    """The numerics rule of one op type.

    Attributes:
        op_type: the ONNX op type (default domain).
        role: compute, follow or fp32.
        typed_inputs: the inputs that share the node's float type ``T`` (converted with it); ``None`` means every
            float input. Other float inputs keep float32 (Resize's ``scales``, Dropout's ``ratio``).
        reason: why an ``fp32`` op stays FP32 (shown in reports).
    """

    op_type: str
    role: FloatRole
    typed_inputs: tuple[int, ...] | None = None
    reason: str = ""


@dataclass(frozen=True)
class FloatKernel:
    """A backend's kernel for one op type in one 16-bit type.

    Attributes:
        since: the first opset version that has it.
        fp32_arithmetic: the backend runs it by casting to float32 and back (ONNX Runtime's CPU provider inserts
            the casts itself): the values are rounded to 16 bits, the arithmetic and the time are float32's.
    """

    since: int = 1
    fp32_arithmetic: bool = False


_C, _F, _X = FloatRole.COMPUTE, FloatRole.FOLLOW, FloatRole.FP32

_REDUCE = "an accumulating reduction: in 16 bits a long sum loses the small terms (bf16 keeps 8 significant bits)"
_REDUCE_FP16 = f"{_REDUCE} and overflows fp16 past {FP16_MAX:g}"
_EXP = "exp overflows fp16 above x = 11.1 and loses relative precision in bf16"
_NORM = "a normalization: its mean and variance are statistics over many values and need FP32"


def _rule(op_type: str, role: FloatRole, typed_inputs: tuple[int, ...] | None = None, reason: str = "") -> tuple[str, PrecisionRule]:
    return op_type, PrecisionRule(op_type, role, typed_inputs, reason)


PRECISION_RULES: Mapping[str, PrecisionRule] = MappingProxyType(dict(
    [
        # compute: the weight is stored in 16 bits, the kernel accumulates in FP32
        _rule("MatMul", _C),
        _rule("Gemm", _C),
        _rule("Conv", _C),
        _rule("ConvTranspose", _C),
        # follow: element-wise arithmetic and bounded activations
        _rule("Add", _F), _rule("Sub", _F), _rule("Mul", _F), _rule("Div", _F), _rule("Neg", _F), _rule("Abs", _F),
        _rule("Max", _F), _rule("Min", _F), _rule("Sum", _F),
        _rule("Relu", _F), _rule("LeakyRelu", _F), _rule("PRelu", _F), _rule("Clip", _F),
        _rule("Sigmoid", _F), _rule("Tanh", _F), _rule("Erf", _F), _rule("HardSigmoid", _F), _rule("HardSwish", _F),
        _rule("Where", _F, (1, 2)),
        # follow: data movement (values are copied, never computed)
        _rule("Identity", _F), _rule("Dropout", _F, (0,)),
        _rule("Reshape", _F, (0,)), _rule("Flatten", _F), _rule("Squeeze", _F, (0,)), _rule("Unsqueeze", _F, (0,)),
        _rule("Transpose", _F), _rule("Concat", _F), _rule("Split", _F, (0,)), _rule("Slice", _F, (0,)),
        _rule("Gather", _F, (0,)), _rule("Expand", _F, (0,)), _rule("Tile", _F, (0,)), _rule("Pad", _F, (0, 2)),
        _rule("Resize", _F, (0,)), _rule("DepthToSpace", _F), _rule("SpaceToDepth", _F),
        _rule("MaxPool", _F), _rule("GlobalMaxPool", _F),
        _rule("AveragePool", _F),  # a mean over a small window (k x k values)
        # fp32: numerically fragile
        _rule("ReduceMean", _X, reason=_REDUCE),
        _rule("ReduceSum", _X, reason=_REDUCE_FP16),
        _rule("ReduceSumSquare", _X, reason=_REDUCE_FP16),
        _rule("ReduceL1", _X, reason=_REDUCE_FP16),
        _rule("ReduceL2", _X, reason=_REDUCE_FP16),
        _rule("ReduceLogSumExp", _X, reason=f"{_REDUCE}; {_EXP}"),
        _rule("ReduceProd", _X, reason="a product of many values leaves the 16-bit range"),
        _rule("CumSum", _X, reason=_REDUCE_FP16),
        _rule("GlobalAveragePool", _X, reason=f"{_REDUCE} (a mean over the whole feature map)"),
        _rule("Softmax", _X, reason=f"Softmax: {_EXP}; its normalizing sum is an accumulating reduction"),
        _rule("LogSoftmax", _X, reason=f"LogSoftmax: {_EXP}; its normalizing sum is an accumulating reduction"),
        _rule("LayerNormalization", _X, reason=_NORM),
        _rule("GroupNormalization", _X, reason=_NORM),
        _rule("InstanceNormalization", _X, reason=_NORM),
        _rule("BatchNormalization", _X, reason=f"{_NORM} (fold it into the Conv before: fp32-optimize does)"),
        _rule("LpNormalization", _X, reason=_NORM),
        _rule("Exp", _X, reason=_EXP),
        _rule("Softplus", _X, reason=f"Softplus computes log(1 + exp(x)): {_EXP}"),
        _rule("Log", _X, reason="log near 0 needs the small values 16 bits round away (fp16's smallest normal is 6.1e-5)"),
        _rule("Pow", _X, reason="x^y overflows fp16 quickly (x^2 for |x| > 256) and squares the rounding error"),
        _rule("Sqrt", _X, reason="usually the root of a variance: it inherits the statistic's need for FP32"),
        _rule("Reciprocal", _X, reason="1/x of small values overflows fp16 (x < 1.5e-5)"),
    ]
))
"""op type -> its mixed-precision rule (the one numerics table)."""

_ORT_CPU_NATIVE = ("Clip", "Concat", "Flatten", "Gather", "Identity", "Reshape", "Slice", "Split", "Squeeze",
                   "Transpose", "Unsqueeze")
"""Ops ONNX Runtime 1.32's CPU provider has real 16-bit kernels for, in both types (measured; LayerNormalization
too, which the rule keeps FP32)."""
_ORT_CPU_FP16_NATIVE = ("Expand", "Max", "Min")
"""Ops with a real float16 kernel only."""
_ORT_CPU_FP16_UPCAST = (
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sum", "Relu", "LeakyRelu",
    "PRelu", "Sigmoid", "Tanh", "Erf", "HardSigmoid", "HardSwish", "Dropout", "Tile", "Pad", "Resize", "Where",
    "DepthToSpace", "SpaceToDepth", "MaxPool", "GlobalMaxPool", "AveragePool",
)
"""Ops the CPU provider accepts in float16 by inserting Cast to float32 and back around them (measured)."""

_CUDA_FP16 = tuple(op for op, rule in PRECISION_RULES.items() if rule.role is not FloatRole.FP32)
"""The CUDA provider registers float16 kernels for every compute and follow op of the table (OperatorKernels.md)."""
_CUDA_BF16 = {  # op -> first opset with a bfloat16 kernel (OperatorKernels.md); the rest have none
    "MatMul": 13, "Gemm": 13, "Conv": 22, "AveragePool": 22, "HardSigmoid": 22, "HardSwish": 22,
    "Add": 14, "Sub": 14, "Mul": 14, "Div": 14, "Relu": 14, "Neg": 13, "Abs": 13, "Max": 12, "Min": 12, "Sum": 6,
    "Sigmoid": 13, "Tanh": 13, "Erf": 13, "Where": 16, "Identity": 1, "Dropout": 13, "Reshape": 5, "Flatten": 1,
    "Squeeze": 1, "Unsqueeze": 1, "Transpose": 1, "Concat": 4, "Split": 2, "Slice": 1, "Gather": 1, "Expand": 8,
    "Tile": 13,
}

FLOAT_KERNELS: Mapping[Backend, Mapping[DType, Mapping[str, FloatKernel]]] = MappingProxyType({
    Backend.ONNXRUNTIME_CPU: MappingProxyType({
        DType.FP16: MappingProxyType({
            **{op: FloatKernel() for op in (*_ORT_CPU_NATIVE, *_ORT_CPU_FP16_NATIVE)},
            **{op: FloatKernel(fp32_arithmetic=True) for op in _ORT_CPU_FP16_UPCAST},
        }),
        DType.BF16: MappingProxyType({op: FloatKernel() for op in _ORT_CPU_NATIVE}),
    }),
    Backend.ONNXRUNTIME_CUDA: MappingProxyType({
        DType.FP16: MappingProxyType({op: FloatKernel() for op in _CUDA_FP16}),
        DType.BF16: MappingProxyType({op: FloatKernel(since) for op, since in _CUDA_BF16.items()}),
    }),
    Backend.PYTORCH_CPU: MappingProxyType({
        dtype: MappingProxyType({
            op: FloatKernel() for op, rule in PRECISION_RULES.items()
            if rule.role is not FloatRole.FP32 and op in TORCH_LOWERING_OPS
        })
        for dtype in (DType.BF16, DType.FP16)
    }),
})
"""backend -> 16-bit dtype -> op type -> its kernel (op types that are missing have none there)."""

BACKEND_NAMES: Mapping[Backend, str] = MappingProxyType({
    Backend.ONNXRUNTIME_CPU: "ONNX Runtime's CPU provider",
    Backend.ONNXRUNTIME_CUDA: "ONNX Runtime's CUDA provider",
    Backend.PYTORCH_CPU: "PyTorch on the CPU",
})


def rule_for(op_type: str, domain: str = "") -> PrecisionRule | None:
    """The rule of an op type (``None``: not in the table, or not the default domain)."""
    if domain not in ("", "ai.onnx"):
        return None
    return PRECISION_RULES.get(op_type)


def kernel_for(backend: Backend, dtype: DType, op_type: str, opset: int) -> FloatKernel | None:
    """The backend's kernel for ``op_type`` in ``dtype`` at ``opset``, or ``None``."""
    kernel = FLOAT_KERNELS[Backend(backend)].get(DType(dtype), {}).get(op_type)
    return kernel if kernel is not None and opset >= kernel.since else None


_ONNX_TYPE_NAMES = {DType.BF16: "tensor(bfloat16)", DType.FP16: "tensor(float16)"}


@functools.cache
def onnx_allows(op_type: str, dtype: DType, opset: int) -> bool:
    """Whether the ONNX standard at ``opset`` lets ``op_type``'s float type ``T`` be ``dtype`` (bf16 Conv, pools and
    hard activations only from opset 22): a model that breaks it is not valid ONNX."""
    try:
        schema = onnx.defs.get_schema(op_type, opset)
    except onnx.defs.SchemaError:
        return False
    rule = PRECISION_RULES.get(op_type)
    index = (rule.typed_inputs or (0,))[0] if rule is not None else 0
    if index >= len(schema.inputs):
        return False
    constraint = schema.inputs[index].type_str
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    return _ONNX_TYPE_NAMES[DType(dtype)] in allowed.get(constraint, {constraint})


def supported(op_type: str, dtype: DType, backend: Backend, opset: int) -> bool:
    """The ONNX standard allows ``op_type`` in ``dtype`` at ``opset`` and the backend has a kernel for it."""
    return onnx_allows(op_type, DType(dtype), opset) and kernel_for(backend, dtype, op_type, opset) is not None


def precision_blocker(op_type: str, dtype: DType, backend: Backend, opset: int, domain: str = "") -> Fp32Reason | None:
    """Why ``op_type`` cannot run in ``dtype`` on ``backend`` (the rule, the ONNX standard or the missing kernel),
    else ``None``."""
    rule = rule_for(op_type, domain)
    if rule is None:
        name = f"{domain}.{op_type}" if domain not in ("", "ai.onnx") else op_type
        return Fp32Reason(
            Fp32Category.UNSUPPORTED,
            f"{name} is not in the mixed-precision table (lpot_ir.backends.precision.PRECISION_RULES), so its "
            "numerics in 16 bits are unknown",
        )
    if rule.role is FloatRole.FP32:
        return Fp32Reason(Fp32Category.NUMERICS, rule.reason)
    if not onnx_allows(op_type, DType(dtype), opset):
        return Fp32Reason(
            Fp32Category.UNSUPPORTED,
            f"ONNX opset {opset} defines no {dtype} {op_type} (bf16 Conv, ConvTranspose, pools and hard activations "
            "come with opset 22)",
        )
    if kernel_for(backend, dtype, op_type, opset) is None:
        return Fp32Reason(
            Fp32Category.UNSUPPORTED, f"{BACKEND_NAMES[Backend(backend)]} has no {dtype} kernel for {op_type} (opset {opset})"
        )
    return None
