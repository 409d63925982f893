"""The capability table: CPU-dependent defaults, choices per node, reasons for the rest."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from qhelpers import make_model

from lpot_ir.backends.onnxruntime.capabilities import (
    CAPABILITIES,
    CpuFeatures,
    OpCategory,
    cpu_features,
    default_op_config,
    features_from_cpuinfo,
    quantizable_nodes,
)
from lpot_ir.ir.model import load_model
from lpot_ir.ir.quant import Approach, DType, Granularity, QuantSpec, Scheme


def test_defaults_follow_cpu_features():
    vnni = default_op_config(CpuFeatures(arch="x86_64", vnni=True, avx512=True, avx2=True))
    assert vnni.activation.dtype is DType.UINT8 and vnni.activation.scheme is Scheme.ASYM
    assert vnni.weight.dtype is DType.INT8 and vnni.weight.granularity is Granularity.PER_CHANNEL
    assert not vnni.weight.reduce_range
    avx2 = default_op_config(CpuFeatures(arch="x86_64", vnni=False, avx2=True))
    assert avx2.weight.reduce_range and not avx2.activation.reduce_range
    arm = default_op_config(CpuFeatures(arch="aarch64"))
    assert not arm.weight.reduce_range
    assert isinstance(cpu_features(), CpuFeatures)


def test_cpu_features_name_the_int8_extensions():
    sapphire = features_from_cpuinfo(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx2 avx512f avx512_vnni avx_vnni amx_tile amx_int8\nprocessor\t: 1\nflags\t\t: fpu\n",
        "x86_64",
    )
    assert sapphire.int8_extensions == ("AMX-INT8", "AVX-512 VNNI", "AVX-VNNI", "AVX-512", "AVX2")
    assert sapphire.vnni and not sapphire.needs_reduce_range
    assert sapphire.describe().startswith("Intel(R) Xeon(R) Platinum 8480+ (x86_64); INT8 extensions: AMX-INT8")
    rome = features_from_cpuinfo("model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse4_2 avx2 fma\n", "x86_64")
    assert rome.int8_extensions == ("AVX2",) and rome.needs_reduce_range
    assert "7-bit weights (reduce_range: no VNNI)" in rome.describe()
    graviton = features_from_cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n", "aarch64")
    assert graviton.int8_extensions == ("ARM dot product",) and not graviton.needs_reduce_range
    assert features_from_cpuinfo("", "x86_64").int8_extensions == ()


def test_choices_per_node_and_approach():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "M"], ["y"], name="mm")]
    model = load_model(make_model(nodes, [("x", ["N", 3, 4, 4])], [("y", None)],
                                  {"W": np.ones((2, 3, 1, 1), np.float32), "M": np.ones((18, 5), np.float32)}))
    static, unsupported = quantizable_nodes(model, Approach.STATIC)
    assert [n.name for n in static] == ["conv", "pool", "flat", "mm"] and not unsupported
    conv = static[0]
    assert conv.category is OpCategory.COMPUTE and conv.weight_inputs == (1,)
    assert conv.weight_choices.allows(QuantSpec(DType.INT8, Scheme.SYM, Granularity.PER_CHANNEL))
    assert conv.activation_choices.allows(QuantSpec(DType.INT8, Scheme.SYM))
    dynamic, unsupported = quantizable_nodes(model, Approach.DYNAMIC)
    assert [n.name for n in dynamic] == ["conv", "mm"]
    assert set(unsupported) == {"pool", "flat"} and "dynamic" in unsupported["pool"].detail
    assert not dynamic[0].activation_choices.allows(QuantSpec(DType.INT8, Scheme.SYM))  # DynamicQuantizeLinear is u8
    assert Granularity.PER_CHANNEL not in dynamic[0].weight_choices.granularities  # ConvInteger: per tensor


def test_aliases_from_a_name_map():
    nodes = [helper.make_node("MatMul", ["x", "M"], ["y"], name="mm")]
    model = load_model(make_model(nodes, [("x", ["N", 4])], [("y", None)], {"M": np.ones((4, 2), np.float32)}))
    found, _ = quantizable_nodes(model, name_map={"mm": "encoder.fc"})
    assert found[0].aliases == ("encoder.fc",)


def test_table_is_declarative_and_consistent():
    for op_type, cap in CAPABILITIES.items():
        assert cap.op_type == op_type
        if cap.category is OpCategory.COMPUTE:
            assert cap.weight_inputs == (1,)
        if cap.bias_input is not None:
            assert cap.category is OpCategory.COMPUTE


def test_every_category_of_the_table_has_one_annotator():
    from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, OpCategory
    from lpot_ir.passes.quantization.annotate import ANNOTATORS

    assert {c.category for c in CAPABILITIES.values()} <= set(ANNOTATORS)
    assert set(ANNOTATORS) == set(OpCategory)


def test_a_second_annotator_for_a_category_follows_the_registry_policy():
    from lpot_ir.passes.quantization.annotate import ANNOTATORS, annotates
    from lpot_ir.registry import DuplicateNameError

    original = ANNOTATORS[OpCategory.POOL]
    with pytest.raises(DuplicateNameError, match="quantization annotator named 'pool' is already registered"):
        annotates(OpCategory.POOL)(lambda site: ([], []))
    assert ANNOTATORS[OpCategory.POOL] is original
    annotates(OpCategory.POOL)(original)  # the same definition again is not a duplicate
    try:
        replacement = annotates(OpCategory.POOL, replace=True)(lambda site: original(site))
        assert ANNOTATORS[OpCategory.POOL] is replacement
    finally:
        ANNOTATORS[OpCategory.POOL] = original
