"""The mixed-precision step on real models run in ONNX Runtime (and lowered to PyTorch): casts, reasons, numerics.

Numerics are checked against the FP32 model with a first-order bound: each node that runs in a 16-bit type
rounds its output once (relative error at most eps/2; eps = 2^-10 for fp16, 2^-7 for bf16), and these models
are normalized (LayerNorm, small-scale weights), so an error relative to a hidden tensor's size reaches the
output with a gain below 2. The output error is then below ``K * eps * max|y|`` with K the number of 16-bit
nodes. The measured errors are 5 to 200 times smaller; a wrong cast or a wrong type gives errors of the size of
the outputs themselves.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from mp_models import encoder_inputs, transformer_encoder, two_matmuls

from lpot_ir.ir.quant import (
    BF16,
    FP16,
    FP32,
    Backend,
    DType,
    Fp32Category,
    OpOverride,
    ScopeKind,
    TuningConfig,
)
from lpot_ir.quantizer import ModelQuantizer, Recipe, apply_recipe, default_config

EPS = {DType.FP16: 2.0**-10, DType.BF16: 2.0**-7}


def _run(model: onnx.ModelProto, x: np.ndarray, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _tolerance(result, dtype: DType, reference: np.ndarray) -> float:
    k = sum(1 for d in result.decisions.values() if d.float_dtype is dtype)
    assert k > 0, f"no node runs in {dtype}"
    return k * EPS[dtype] * float(np.abs(reference).max())


def _initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


@pytest.fixture(scope="module")
def encoder():
    model = transformer_encoder()
    x = encoder_inputs(8)
    quantizer = ModelQuantizer(model, [x[:4]], progress=False)
    return model, x, _run(model, x), quantizer


def test_fp16_transformer_on_onnxruntime_cpu(encoder):
    model, x, reference, quantizer = encoder
    result = quantizer.quantize(TuningConfig(global_config=FP16))
    onnx.checker.check_model(result.model, full_check=True)
    out = _run(result.model, x)
    assert np.abs(out - reference).max() <= _tolerance(result, DType.FP16, reference)
    assert (out.argmax(1) == reference.argmax(1)).all()
    # the interface never changes
    assert [(v.name, v.type.tensor_type.elem_type) for v in result.model.graph.input] == [("x", onnx.TensorProto.FLOAT)]
    assert [(v.name, v.type.tensor_type.elem_type) for v in result.model.graph.output] == [
        ("logits", onnx.TensorProto.FLOAT)
    ]
    # weights are stored in fp16: half the bytes (LayerNorm parameters stay float32)
    assert _initializer_bytes(result.model) < 0.52 * _initializer_bytes(model)
    decisions = result.decisions
    assert {decisions[f"l{i}/{p}/MatMul"].float_dtype for i in (0, 1) for p in ("q", "k", "v", "fc1", "fc2")} == {DType.FP16}
    assert decisions["l0/gelu/erf"].float_dtype is DType.FP16  # a follower inside the fp16 region
    for name, words in (("l0/attn/softmax", "Softmax"), ("l1/ln2", "normalization"), ("pool/mean", "reduction")):
        assert decisions[name].reason.category is Fp32Category.NUMERICS and words in decisions[name].reason.detail
        assert decisions[name].float_dtype is DType.FP32
    assert decisions["l0/residual1"].reason.category is Fp32Category.NOT_BENEFICIAL  # its other input is FP32
    assert decisions["l0/q/MatMul"].to_dict()["float_dtype"] == "fp16" and decisions["l0/q/MatMul"].precision == "fp16"
    casts = [n for n in result.model.graph.node if n.op_type == "Cast"]
    assert casts and all(n.attribute[0].i in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) for n in casts)


def test_bf16_on_onnxruntime_cpu_keeps_everything_fp32_and_says_why(encoder):
    """ONNX Runtime's CPU provider has no bfloat16 compute kernel: nothing changes, every node has its reason."""
    model, x, reference, quantizer = encoder
    result = quantizer.quantize(TuningConfig(global_config=BF16))
    assert not any(n.op_type == "Cast" for n in result.model.graph.node)
    np.testing.assert_array_equal(_run(result.model, x), _run(onnx.load_from_string(result.model.SerializeToString()), x))
    np.testing.assert_allclose(_run(result.model, x), reference, rtol=0, atol=1e-6)
    reason = result.decisions["l0/q/MatMul"].reason
    assert reason.category is Fp32Category.UNSUPPORTED and "no bf16 kernel for MatMul" in reason.detail
    assert all(d.float_dtype is DType.FP32 for d in result.decisions.values())


def test_int8_fp16_and_fp32_in_one_model(encoder):
    """INT8 (default), fp16 (every MatMul) and FP32 (one MatMul, the numerics rule) compose: mixing adds at most
    the fp16 bound to the error of the same INT8 choice with the rest FP32."""
    model, x, reference, quantizer = encoder
    fp32_node = "l1/fc2/MatMul"
    int8_and_fp32 = default_config().with_override(ScopeKind.OP_TYPE, "MatMul", OpOverride(fp32=True))
    mixed = default_config().with_override(ScopeKind.OP_TYPE, "MatMul", OpOverride.from_config(FP16))
    mixed = mixed.with_node(fp32_node, FP32)
    result = quantizer.quantize(mixed)
    onnx.checker.check_model(result.model, full_check=True)
    precisions = {d.precision for d in result.decisions.values()}
    assert {"fp16", "fp32"} <= precisions and precisions & {"int8", "uint8"}
    assert result.decisions[fp32_node].float_dtype is DType.FP32
    assert result.decisions["logits"].quantized  # the Gemm head stays INT8
    baseline = quantizer.quantize(int8_and_fp32)
    assert baseline.decisions["logits"].quantized
    int8_error = np.abs(_run(baseline.model, x) - reference).max()
    error = np.abs(_run(result.model, x) - reference).max()
    assert error <= int8_error + _tolerance(result, DType.FP16, reference)
    assert result.recipe.to_dict()["format_version"] == 4


def test_fp16_overflow_keeps_the_node_fp32_and_the_recipe_replays_it(tmp_path):
    """A MatMul whose output passes 65504 on the calibration data stays FP32 (numerics); the decision is recorded,
    so the recipe rebuilds the same model without data. A weight beyond fp16's range keeps its node FP32 too."""
    rng = np.random.default_rng(0)
    model = two_matmuls(rng.standard_normal((16, 16)) * 3e3, rng.standard_normal((16, 4)) * 0.01)
    x = rng.standard_normal((8, 16)).astype(np.float32) * 10
    quantizer = ModelQuantizer(model, [x], progress=False)
    result = quantizer.quantize(TuningConfig(global_config=FP16))
    assert result.decisions["mm1"].reason.category is Fp32Category.NUMERICS
    assert "65504" in result.decisions["mm1"].reason.detail
    assert result.decisions["mm2"].float_dtype is DType.FP16
    assert result.recipe.records["mixed-precision"] == {"fp16_overflow": ["mm1"]}
    path = tmp_path / "recipe.json"
    result.recipe.save(path)
    assert json.loads(path.read_text())["format_version"] == 4
    replayed = apply_recipe(model, Recipe.load(path))
    assert replayed.model.SerializeToString() == result.model.SerializeToString()
    np.testing.assert_allclose(_run(replayed.model, x), _run(model, x), rtol=0,
                               atol=_tolerance(result, DType.FP16, _run(model, x)))
    big = two_matmuls(np.full((16, 16), 1e5), rng.standard_normal((16, 4)))
    reason = ModelQuantizer(big, [x], progress=False).quantize(TuningConfig(global_config=FP16)).decisions["mm1"].reason
    assert reason.category is Fp32Category.NUMERICS and "beyond fp16's range" in reason.detail


def test_bf16_transformer_lowered_to_pytorch(encoder):
    torch = pytest.importorskip("torch")
    from lpot_ir.frontends import export_to_pytorch

    model, x, reference, quantizer = encoder
    result = quantizer.quantize(TuningConfig(global_config=BF16, backend=Backend.PYTORCH_CPU))
    onnx.checker.check_model(result.model, full_check=True)
    assert result.decisions["l0/q/MatMul"].float_dtype is DType.BF16
    assert any(t.data_type == onnx.TensorProto.BFLOAT16 for t in result.model.graph.initializer)
    with torch.no_grad():
        out = export_to_pytorch(result.model)(torch.from_numpy(x))
    assert out.dtype == torch.float32
    assert np.abs(out.numpy() - reference).max() <= _tolerance(result, DType.BF16, reference)
    assert (out.numpy().argmax(1) == reference.argmax(1)).all()


def test_two_16_bit_types_meet_through_float32():
    """A bf16 node feeding an fp16 node: the value goes bf16 -> float32 -> fp16 (ONNX has no direct meaning for
    mixing them), lowered to PyTorch."""
    torch = pytest.importorskip("torch")
    from lpot_ir.frontends import export_to_pytorch

    rng = np.random.default_rng(1)
    model = two_matmuls(rng.standard_normal((16, 32)) / 4, rng.standard_normal((32, 4)) / 6)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    config = TuningConfig(backend=Backend.PYTORCH_CPU).with_node("mm1", BF16).with_node("mm2", FP16)
    result = ModelQuantizer(model, [x], progress=False).quantize(config)
    onnx.checker.check_model(result.model, full_check=True)
    to = [a.i for n in result.model.graph.node if n.op_type == "Cast" for a in n.attribute]
    assert to.count(onnx.TensorProto.FLOAT) == 2  # out of bf16 before fp16, and the graph output
    with torch.no_grad():
        out = export_to_pytorch(result.model)(torch.from_numpy(x)).numpy()
    reference = _run(model, x)
    assert np.abs(out - reference).max() <= 2 * EPS[DType.BF16] * float(np.abs(reference).max()) * 2


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA provider here")
def test_fp16_and_bf16_on_onnxruntime_cuda(encoder):  # pragma: no cover - needs a GPU
    model, x, reference, quantizer = encoder
    for dtype in (FP16, BF16):
        result = quantizer.quantize(TuningConfig(global_config=dtype, backend=Backend.ONNXRUNTIME_CUDA))
        out = _run(result.model, x, ("CUDAExecutionProvider", "CPUExecutionProvider"))
        assert np.abs(out - reference).max() <= _tolerance(result, dtype.float_dtype, reference)


@pytest.mark.slow
def test_digits_example_in_fp16_and_bf16():
    """The bundled digits CNN: fp16 in ONNX Runtime, bf16 lowered to PyTorch (at opset 22, the first with bf16
    Conv); logits within the bound, and no digit whose FP32 top-1 margin exceeds twice the bound changes class."""
    torch = pytest.importorskip("torch")
    from lpot_ir.examples_data import digits_example
    from lpot_ir.frontends import export_to_pytorch
    from lpot_ir.ir.model import upgrade_opset

    example = digits_example()
    model = onnx.load(str(example.model_path))
    x, calib = np.load(example.eval_data_path), np.load(example.calib_data_path)[:50]
    reference = _run(model, x)
    top2 = np.sort(reference, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]

    fp16 = ModelQuantizer(model, [calib], progress=False).quantize(TuningConfig(global_config=FP16))
    onnx.checker.check_model(fp16.model, full_check=True)
    assert fp16.decisions["/gap/GlobalAveragePool"].reason.category is Fp32Category.NUMERICS
    runs = [(fp16, _run(fp16.model, x), DType.FP16)]
    bf16 = ModelQuantizer(upgrade_opset(model, 22), [calib], progress=False).quantize(
        TuningConfig(global_config=BF16, backend=Backend.PYTORCH_CPU)
    )
    onnx.checker.check_model(bf16.model, full_check=True)
    assert {d.op_type for d in bf16.decisions.values() if d.float_dtype is DType.BF16} >= {"Conv", "Gemm"}
    with torch.no_grad():
        runs.append((bf16, export_to_pytorch(bf16.model)(torch.from_numpy(x)).numpy(), DType.BF16))
    for result, out, dtype in runs:
        bound = _tolerance(result, dtype, reference)
        assert np.abs(out - reference).max() <= bound
        sure = margin > 2 * bound
        assert (out.argmax(1)[sure] == reference.argmax(1)[sure]).all()


def test_control_flow_bodies_stay_fp32_and_main_graph_values_they_read_are_cast_back():
    """The step rewrites the main graph: nodes in If branches keep FP32 with the reason, and a main-graph fp16
    value a branch reads from the outer scope reaches it as float32 (the model stays valid for both branches)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["m", "W2"], ["t"], name="then_mm")], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 4])], [numpy_helper.from_array(weight(8, 4), "W2")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["m2"], ["e"], name="else_neg")], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["N", 4])],
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"), helper.make_node("MatMul", ["m", "W3"], ["m2"], name="mm2"),
         helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph, name="if")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(weight(16, 8), "W"), numpy_helper.from_array(weight(8, 4), "W3")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": rng.standard_normal((2, 16)).astype(np.float32), "c": np.array(flag)} for flag in (True, False)]
    result = ModelQuantizer(model, feeds, progress=False).quantize(TuningConfig(global_config=FP16))
    onnx.checker.check_model(result.model, full_check=True)
    assert result.decisions["mm"].float_dtype is DType.FP16 and result.decisions["mm2"].float_dtype is DType.FP16
    for name in ("then_mm", "else_neg"):
        reason = result.decisions[name].reason
        assert reason.category is Fp32Category.UNSUPPORTED and "control-flow subgraph" in reason.detail
    for feed in feeds:  # two fp16 roundings of unit-scale values through two products: well inside 8 ulps
        reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        out = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        assert np.abs(out - reference).max() <= 8 * EPS[DType.FP16] * float(np.abs(reference).max())
