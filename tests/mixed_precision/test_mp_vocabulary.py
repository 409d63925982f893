"""Mixed precision in the shared vocabulary, the tuning space, the YAML and the ranking of trials (no model runs)."""

from __future__ import annotations

import pytest

from lpot_ir.backends.onnxruntime.capabilities import QuantizableNode
from lpot_ir.config import load_config
from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import (
    BF16,
    FP16,
    FP32,
    Backend,
    DType,
    OpOverride,
    OpQuantConfig,
    QuantSpec,
    ScopeKind,
    TuningConfig,
)
from lpot_ir.strategies import TrialResult, TuningSpace
from lpot_ir.strategies.space import expected_cost, float_option, model_wise_combinations
from lpot_ir.tuning.objectives import ranking_key
from lpot_ir.tuning.space import build_space, float_choices


def test_float_dtype_implies_not_int8_and_round_trips():
    assert BF16.fp32 and BF16.float_dtype is DType.BF16 and BF16.runs_in is DType.BF16
    assert OpQuantConfig(float_dtype="fp16") == FP16  # a 16-bit type means "not INT8"
    assert OpQuantConfig().runs_in is DType.UINT8
    assert OpQuantConfig.from_dict(BF16.to_dict()) == BF16
    assert BF16.to_dict() == {"fp32": True, "float_dtype": "bf16"}
    with pytest.raises(ValueError, match="int8 or uint8"):
        QuantSpec(dtype=DType.BF16)
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        OpQuantConfig(fp32=True, float_dtype=DType.INT8)


def test_keys_of_int8_and_fp32_configurations_do_not_change():
    """Keys hash to_dict: without bf16/fp16 and with the default backend, nothing new is written."""
    plain = TuningConfig().with_nodes_fp32(["a", "b"])
    data = plain.to_dict()
    assert "backend" not in data
    assert data["overrides"][0]["override"] == {"fp32": True}
    assert not plain.uses_low_precision_float
    mixed = TuningConfig(backend=Backend.PYTORCH_CPU).with_node("a", BF16)
    assert mixed.uses_low_precision_float and mixed.to_dict()["backend"] == "pytorch-cpu"
    assert TuningConfig.from_json(mixed.to_json()) == mixed and mixed.key() != plain.key()


def test_override_precedence_between_int8_fp32_and_16_bit_types():
    config = TuningConfig(global_config=BF16)
    assert config.resolve("n", "MatMul") == BF16
    assert config.with_nodes_fp32(["n"]).resolve("n", "MatMul").float_dtype is DType.FP32  # fp32 means FP32
    int8 = config.with_override(ScopeKind.OP_TYPE, "MatMul", OpOverride(fp32=False)).resolve("n", "MatMul")
    assert not int8.fp32 and int8.float_dtype is DType.FP32
    fp16 = TuningConfig().with_override(ScopeKind.NAME_REGEX, "n.*", OpOverride(float_dtype=DType.FP16))
    assert fp16.resolve("n1", "Conv") == FP16 and not fp16.resolve("m", "Conv").fp32
    # a node scope wins over the op-type scope, whatever the types
    both = fp16.with_override(ScopeKind.OP_TYPE, "Conv", OpOverride(fp32=True)).with_node("n1", FP16)
    assert both.resolve("n1", "Conv") == FP16 and both.resolve("m", "Conv").float_dtype is DType.FP32


def _nodes() -> tuple[QuantizableNode, ...]:
    return (
        QuantizableNode("conv", "Conv", weight_inputs=(1,)),
        QuantizableNode("relu", "Relu"),
        QuantizableNode("mm", "MatMul", weight_inputs=(1,)),
    )


def test_space_offers_16_bit_options_between_int8_and_fp32():
    space = TuningSpace(_nodes(), float_choices={"conv": (DType.BF16, DType.FP16), "mm": (DType.FP16,)})
    conv, relu, mm = space.choices
    assert conv.options[-1] == FP32 and conv.float_indices == {DType.BF16: 1, DType.FP16: 2}
    assert conv.is_int8(0) and not conv.is_int8(1)
    assert relu.float_indices == {} and mm.float_indices == {DType.FP16: 1}
    assert space.size == 4 * 2 * 3 and space.float_dtypes == (DType.BF16, DType.FP16)
    config = space.with_float(space.base, ["conv", "relu", "mm"], DType.FP16)  # relu cannot: left as it was
    assert space.float_nodes(config) == {"conv": DType.FP16, "mm": DType.FP16}
    assert space.fp32_nodes(config) == ("conv", "mm")  # not INT8
    point = (0, (conv.float_indices[DType.BF16], 0, mm.fp32_index))
    chosen = space.config_for(point)
    assert space.float_nodes(chosen) == {"conv": DType.BF16} and chosen.resolve("mm", "MatMul") == FP32
    with pytest.raises(ConfigError, match="bf16 and fp16"):
        TuningSpace(_nodes(), float_choices={"conv": (DType.FP32,)})


def test_space_with_16_bit_global_candidates():
    """Mixed precision without INT8: the global candidate is bf16; FP32 is the fallback."""
    space = TuningSpace(_nodes(), model_wise=(BF16,))
    assert all(c.options == (BF16, FP32) and c.by_global == (0,) for c in space.choices)
    with pytest.raises(ConfigError, match="FP32"):
        TuningSpace(_nodes(), model_wise=(FP32,))
    int8 = model_wise_combinations()[0]
    assert expected_cost(int8) < expected_cost(BF16) < expected_cost(FP16) < expected_cost(FP32)
    assert float_option(DType.FP32) == FP32


def _yaml_space(model_wise: str) -> TuningSpace:
    config = load_config(f"model: {{name: m, framework: onnxrt_qdq}}\nquantization:\n  model_wise: {model_wise}\n")
    return build_space(config, _nodes()).space


def test_yaml_dtype_lists_with_fp16_give_compute_nodes_the_option():
    space = _yaml_space("{activation: {dtype: [uint8, fp16, fp32]}, weight: {dtype: [int8, fp16, fp32]}}")
    assert dict(space.float_choices) == {"conv": (DType.FP16,), "mm": (DType.FP16,)}  # Relu follows its Conv
    assert not space.model_wise[0].fp32  # INT8 candidates stay first


def test_yaml_bf16_on_onnxruntime_cpu_gives_no_option(caplog):
    """ONNX Runtime's CPU provider has no bf16 kernel for Conv/MatMul: LPOT's default dtype list gives nothing."""
    space = _yaml_space("{activation: {dtype: [int8, bf16, fp32]}}")
    assert dict(space.float_choices) == {}
    assert "no bf16 kernel" in caplog.text
    # PyTorch has bf16 kernels, but ONNX defines bf16 Conv only from opset 22
    assert float_choices(_nodes(), (DType.BF16,), backend=Backend.PYTORCH_CPU) == {"mm": (DType.BF16,)}
    assert float_choices(_nodes(), (DType.BF16,), backend=Backend.PYTORCH_CPU, opset=22) == {
        "conv": (DType.BF16,), "mm": (DType.BF16,)
    }


def test_yaml_16_bit_only_lists_are_mixed_precision_without_int8_and_op_wise_pins():
    space = _yaml_space("{activation: {dtype: [fp16, fp32]}}")
    assert space.model_wise == (FP16,)
    build = build_space(load_config("""
model: {name: m, framework: onnxrt_qdq}
quantization:
  op_wise:
    conv: {activation: {dtype: fp16}}
    mm: {activation: {dtype: [fp16, fp32]}}
"""), _nodes())
    assert "pins it to fp16" in build.pinned["conv"].detail
    assert [n.name for n in build.space.nodes] == ["relu", "mm"]
    assert build.space.base.resolve("conv", "Conv") == FP16 and build.space.base.resolve("mm", "MatMul") == FP16


def _trial(index: int, config: TuningConfig, latency: float, accuracy: float) -> TrialResult:
    return TrialResult(index, config, accuracy, {"performance": latency}, meets_goal=True)


def test_a_16_bit_candidate_that_is_not_faster_is_not_preferred():
    """Equal latency (within the tie tolerance) and better accuracy: the FP32-fallback candidate still wins;
    clearly faster: the 16-bit one wins."""
    weights, baseline = [("performance", 1.0)], {"performance": 1.0}
    fallback = _trial(0, TuningConfig().with_node("mm", FP32), 0.50, 0.90)
    fp16_same_speed = _trial(1, TuningConfig().with_node("mm", FP16), 0.501, 0.95)
    fp16_faster = _trial(2, TuningConfig().with_node("mm", FP16), 0.40, 0.90)
    assert min([fallback, fp16_same_speed], key=lambda t: ranking_key(t, weights, baseline)) is fallback
    assert min([fallback, fp16_faster], key=lambda t: ranking_key(t, weights, baseline)) is fp16_faster


def test_mixed_precision_section_under_both_names():
    """LPOT 1.x's graph_optimization and Neural Compressor's mixed_precision: precisions without INT8 in
    model_wise is mixed precision alone; with INT8, a fallback option."""
    for section in ("mixed_precision", "graph_optimization"):
        config = load_config(f"model: {{name: m}}\n{section}: {{precisions: 'fp16, fp32'}}\n")
        assert build_space(config, _nodes()).space.model_wise == (FP16,)
    both = load_config("model: {name: m}\nquantization: {model_wise: {activation: {dtype: uint8}}}\n"
                       "mixed_precision: {precisions: [fp16]}\n")
    space = build_space(both, _nodes()).space
    assert not space.model_wise[0].fp32 and space.float_choices["mm"] == (DType.FP16,)
    with pytest.raises(ConfigError, match="one section under two names"):
        load_config("model: {name: m}\nmixed_precision: {precisions: bf16}\ngraph_optimization: {precisions: bf16}\n")
    with pytest.raises(ConfigError, match="fp32, bf16 and fp16"):
        load_config("model: {name: m}\nmixed_precision: {precisions: [int8]}\n")
