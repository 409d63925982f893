"""The declared tables of lpot_ir.backends.precision agree with the installed backends.

Each op of the numerics table gets a one-node model in float16 and in bfloat16; ONNX Runtime's CPU provider
must accept exactly the ops :data:`FLOAT_KERNELS` lists for it (so the table is updated when ONNX Runtime adds
kernels), insert float32 casts exactly around those marked ``fp32_arithmetic``, and PyTorch must run every op
listed for it through the lowering. The CUDA entries are checked where a GPU is present.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.backends.precision import FLOAT_KERNELS, PRECISION_RULES, FloatRole
from lpot_ir.ir.quant import Backend, DType

_I64 = np.int64
# op -> (typed input shapes, extra (name, array) inputs, attributes)
_SPECS: dict[str, tuple[list[list[int]], list[tuple[str, np.ndarray]], dict]] = {
    "MatMul": ([[4, 8], [8, 4]], [], {}),
    "Gemm": ([[4, 8], [8, 4], [4]], [], {}),
    "Conv": ([[1, 3, 8, 8], [4, 3, 3, 3], [4]], [], {}),
    "ConvTranspose": ([[1, 3, 8, 8], [3, 4, 3, 3]], [], {}),
    "Where": ([], [], {}),  # built separately (a bool condition)
    "Reshape": ([[4, 8]], [("shape", np.array([8, 4], _I64))], {}),
    "Squeeze": ([[1, 4, 8]], [("axes", np.array([0], _I64))], {}),
    "Unsqueeze": ([[4, 8]], [("axes", np.array([0], _I64))], {}),
    "Slice": ([[4, 8]], [("starts", np.array([0], _I64)), ("ends", np.array([2], _I64))], {}),
    "Gather": ([[4, 8]], [("indices", np.array([0, 1], _I64))], {}),
    "Expand": ([[1, 8]], [("shape", np.array([4, 8], _I64))], {}),
    "Tile": ([[4, 8]], [("repeats", np.array([1, 2], _I64))], {}),
    "Pad": ([[4, 8]], [("pads", np.array([0, 1, 0, 1], _I64))], {}),
    "Resize": ([[1, 1, 4, 8]], [("roi", np.array([], np.float32)), ("scales", np.array([1, 1, 2, 2], np.float32))], {}),
    "DepthToSpace": ([[1, 4, 2, 2]], [], {"blocksize": 2}),
    "SpaceToDepth": ([[1, 1, 4, 4]], [], {"blocksize": 2}),
    "MaxPool": ([[1, 3, 8, 8]], [], {"kernel_shape": [2, 2]}),
    "AveragePool": ([[1, 3, 8, 8]], [], {"kernel_shape": [2, 2]}),
    "GlobalMaxPool": ([[1, 3, 4, 4]], [], {}),
    "Concat": ([[4, 8], [4, 8]], [], {"axis": 0}),
    "Split": ([[4, 8]], [], {"axis": 0}),
    "PRelu": ([[4, 8], [8]], [], {}),
}
_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"}


def _spec(op: str) -> tuple[list[list[int]], list[tuple[str, np.ndarray]], dict]:
    if op in _SPECS:
        return _SPECS[op]
    return ([[4, 8], [4, 8]] if op in _BINARY else [[4, 8]]), [], {}


def _one_node(op: str, elem: int) -> onnx.ModelProto:
    if op == "Where":
        inputs = [helper.make_tensor_value_info("c", TensorProto.BOOL, [4, 8])] + [
            helper.make_tensor_value_info(n, elem, [4, 8]) for n in ("a", "b")
        ]
        node = helper.make_node("Where", ["c", "a", "b"], ["y0"])
        inits: list[onnx.TensorProto] = []
        outputs = 1
    else:
        shapes, extra, attrs = _spec(op)
        inputs = [helper.make_tensor_value_info(f"i{k}", elem, s) for k, s in enumerate(shapes)]
        inits = [numpy_helper.from_array(a, n) for n, a in extra]
        outputs = 2 if op == "Split" else 1
        node = helper.make_node(op, [f"i{k}" for k in range(len(shapes))] + [n for n, _ in extra],
                                [f"y{k}" for k in range(outputs)], **attrs)
    graph = helper.make_graph([node], op, inputs, [helper.make_tensor_value_info(f"y{k}", elem, None) for k in range(outputs)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


_ELEM = {DType.FP16: TensorProto.FLOAT16, DType.BF16: TensorProto.BFLOAT16}
_CONVERTIBLE = sorted(op for op, rule in PRECISION_RULES.items() if rule.role is not FloatRole.FP32)


def _ort_kernel(model: onnx.ModelProto, providers: list[str], tmp_path) -> list[str] | None:
    """The op types ONNX Runtime runs after its (basic) optimizations, or ``None`` without a kernel."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as exc:
        if "NOT_IMPLEMENTED" not in str(exc) and "INVALID_GRAPH" not in str(exc):
            raise
        return None  # no kernel, or not a valid ONNX type at this opset
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


@pytest.mark.parametrize("dtype", [DType.FP16, DType.BF16], ids=str)
def test_onnxruntime_cpu_kernels_are_what_the_table_says(dtype, tmp_path):
    declared = FLOAT_KERNELS[Backend.ONNXRUNTIME_CPU][dtype]
    wrong = []
    for op in _CONVERTIBLE:
        ran = _ort_kernel(_one_node(op, _ELEM[dtype]), ["CPUExecutionProvider"], tmp_path)
        kernel = declared.get(op)
        if (ran is None) != (kernel is None):
            wrong.append(f"{op}: ONNX Runtime {'has no' if ran is None else 'has a'} {dtype} kernel")
        elif ran is not None and kernel is not None and ("Cast" in ran) != kernel.fp32_arithmetic:
            wrong.append(f"{op}: ONNX Runtime {'inserts' if 'Cast' in ran else 'does not insert'} float32 casts")
    assert not wrong, f"update FLOAT_KERNELS[onnxruntime-cpu][{dtype}] for ONNX Runtime {ort.__version__}: {wrong}"


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA provider here")
@pytest.mark.parametrize("dtype", [DType.FP16, DType.BF16], ids=str)
def test_onnxruntime_cuda_kernels_exist(dtype, tmp_path):  # pragma: no cover - needs a GPU
    missing = [
        op for op in FLOAT_KERNELS[Backend.ONNXRUNTIME_CUDA][dtype]
        if op in _CONVERTIBLE and FLOAT_KERNELS[Backend.ONNXRUNTIME_CUDA][dtype][op].since <= 17
        and _ort_kernel(_one_node(op, _ELEM[dtype]), ["CUDAExecutionProvider"], tmp_path) is None
    ]
    assert not missing


def test_pytorch_runs_every_op_it_is_listed_for():
    torch = pytest.importorskip("torch")
    from lpot_ir.backends.export import export_to_pytorch

    failures = []
    for dtype, torch_dtype in ((DType.BF16, torch.bfloat16), (DType.FP16, torch.float16)):
        for op in FLOAT_KERNELS[Backend.PYTORCH_CPU][dtype]:
            model = _one_node(op, _ELEM[dtype])  # bf16 Conv/pools are not valid ONNX at opset 17: the lowering still runs them
            feeds = []
            for vi in model.graph.input:
                shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
                if vi.type.tensor_type.elem_type == TensorProto.BOOL:
                    feeds.append(torch.rand(shape) > 0.5)
                else:
                    feeds.append(torch.rand(shape).to(torch_dtype) + 0.5)
            try:
                with torch.no_grad():
                    out = export_to_pytorch(model)(*feeds)
                out = out[0] if isinstance(out, tuple) else out
                if out.dtype != torch_dtype:
                    failures.append(f"{op} {dtype}: output {out.dtype}")
            except Exception as exc:  # noqa: BLE001 - collect every failing op
                failures.append(f"{op} {dtype}: {exc}")
    assert not failures
