"""Fusion rule sets: BatchNormalization into Conv / ConvTranspose / Gemm, MatMul + Add into Gemm."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from passes_testutil import RNG, build, histogram, rewrite_and_compare, tensor, vi

from lpot_ir.passes import apply_rules
from lpot_ir.passes.fusion import batchnorm_rules, gemm_rules


def _bn_inits(c: int, prefix: str = "bn") -> list:
    return [
        tensor(f"{prefix}_scale", RNG.uniform(0.5, 2.0, c).astype(np.float32)),
        tensor(f"{prefix}_bias", RNG.standard_normal(c).astype(np.float32)),
        tensor(f"{prefix}_mean", RNG.standard_normal(c).astype(np.float32)),
        tensor(f"{prefix}_var", RNG.uniform(0.1, 3.0, c).astype(np.float32)),
    ]


def _bn(inp: str, out: str, prefix: str = "bn", **attrs) -> object:
    return helper.make_node(
        "BatchNormalization", [inp, f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean", f"{prefix}_var"],
        [out], name=prefix, **attrs,
    )


@pytest.mark.parametrize(("bias", "group"), [(True, 1), (False, 1), (True, 2)])
def test_fuse_batchnorm_into_conv(bias: bool, group: int) -> None:
    w = RNG.standard_normal((6, 4 // group, 3, 3)).astype(np.float32)
    inits = [tensor("W", w), *_bn_inits(6)]
    conv_inputs = ["x", "W"]
    if bias:
        inits.append(tensor("B", RNG.standard_normal(6).astype(np.float32)))
        conv_inputs.append("B")
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], name="conv", group=group, pads=[1, 1, 1, 1]),
        _bn("c", "y", epsilon=1e-3),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    model = build(nodes, [vi("x", shape=[2, 4, 5, 5])], [vi("z")], inits)
    feeds = {"x": RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)}
    rewrite_and_compare(
        model, batchnorm_rules(), feeds, counts={"FuseBatchNormIntoConv": 1}, ops={"Conv": 1, "Relu": 1}
    )
    conv = next(iter(model.graph))
    assert conv.name == "conv" and conv.attributes["group"].as_int() == group
    assert conv.outputs[0].name == "y"  # the fused Conv's output keeps BN's output name


@pytest.mark.parametrize("group", [1, 2])
def test_fuse_batchnorm_into_conv_transpose(group: int) -> None:
    w = RNG.standard_normal((4, 6 // group, 3, 3)).astype(np.float32)  # [C_in, M/g, k, k]
    inits = [tensor("W", w), tensor("B", RNG.standard_normal(6).astype(np.float32)), *_bn_inits(6)]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "W", "B"], ["c"], name="deconv", group=group, strides=[2, 2]),
        _bn("c", "y"),
    ]
    model = build(nodes, [vi("x", shape=[1, 4, 5, 5])], [vi("y")], inits)
    feeds = {"x": RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)}
    rewrite_and_compare(
        model, batchnorm_rules(), feeds, counts={"FuseBatchNormIntoConvTranspose": 1}, ops={"ConvTranspose": 1}
    )


@pytest.mark.parametrize(("trans_b", "with_c", "beta"), [(0, True, 0.5), (1, True, 1.0), (1, False, 1.0)])
def test_fuse_batchnorm_into_gemm(trans_b: int, with_c: bool, beta: float) -> None:
    w = RNG.standard_normal((5, 8) if trans_b else (8, 5)).astype(np.float32)
    inits = [tensor("W", w), *_bn_inits(5)]
    gemm_inputs = ["a", "W"]
    if with_c:
        inits.append(tensor("C", RNG.standard_normal(5).astype(np.float32)))
        gemm_inputs.append("C")
    nodes = [
        helper.make_node("Gemm", gemm_inputs, ["g"], name="gemm", transB=trans_b, alpha=0.7, beta=beta),
        _bn("g", "y"),
    ]
    model = build(nodes, [vi("a", shape=[3, 8])], [vi("y")], inits)
    feeds = {"a": RNG.standard_normal((3, 8)).astype(np.float32)}
    rewrite_and_compare(model, batchnorm_rules(), feeds, counts={"FuseBatchNormIntoGemm": 1}, ops={"Gemm": 1})


def test_batchnorm_not_fused_when_conv_output_is_shared() -> None:
    inits = [tensor("W", RNG.standard_normal((3, 3, 1, 1)).astype(np.float32)), *_bn_inits(3)]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        _bn("c", "y"),
        helper.make_node("Add", ["y", "c"], ["z"], name="add"),
    ]
    model = build(nodes, [vi("x", shape=[1, 3, 4, 4])], [vi("z")], inits)
    report = apply_rules(model, batchnorm_rules(), trace=True)
    assert report.total == 0
    assert "also used by Add 'add' outside the pattern" in report.explain("bn", "FuseBatchNormIntoConv")


def test_batchnorm_not_fused_when_weights_are_inputs() -> None:
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), _bn("c", "y")]
    model = build(nodes, [vi("x", shape=[1, 3, 4, 4]), vi("W", shape=[3, 3, 1, 1])], [vi("y")], _bn_inits(3))
    report = apply_rules(model, batchnorm_rules(), trace=True)
    assert report.total == 0
    assert "must be constant (W) but is graph input 'W'" in report.explain("bn", "FuseBatchNormIntoConv")


@pytest.mark.parametrize(("order", "bias_shape"), [("matmul_first", (4,)), ("bias_first", (1, 4))])
def test_fuse_matmul_add_into_gemm(order: str, bias_shape: tuple[int, ...]) -> None:
    inits = [tensor("B", RNG.standard_normal((6, 4)).astype(np.float32)),
             tensor("C", RNG.standard_normal(bias_shape).astype(np.float32))]
    add_inputs = ["m", "C"] if order == "matmul_first" else ["C", "m"]
    nodes = [
        helper.make_node("MatMul", ["a", "B"], ["m"], name="matmul"),
        helper.make_node("Add", add_inputs, ["y"], name="add"),
    ]
    model = build(nodes, [vi("a", shape=[3, 6])], [vi("y")], inits)
    feeds = {"a": RNG.standard_normal((3, 6)).astype(np.float32)}
    rewrite_and_compare(model, gemm_rules(), feeds, counts={"FuseMatMulAddIntoGemm": 1}, ops={"Gemm": 1})
    assert next(iter(model.graph)).name == "matmul"


@pytest.mark.parametrize(
    ("a_shape", "bias_shape", "reason"),
    [
        ([2, 3, 6], (4,), "is not statically rank 2"),
        ([3, 6], (3, 4), "the addend has shape (3, 4)"),
    ],
)
def test_matmul_add_not_fused_when_gemm_differs(a_shape: list[int], bias_shape: tuple[int, ...], reason: str) -> None:
    inits = [tensor("B", RNG.standard_normal((6, 4)).astype(np.float32)),
             tensor("C", RNG.standard_normal(bias_shape).astype(np.float32))]
    nodes = [
        helper.make_node("MatMul", ["a", "B"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "C"], ["y"], name="add"),
    ]
    model = build(nodes, [vi("a", shape=a_shape)], [vi("y")], inits)
    report = apply_rules(model, gemm_rules(), trace=True)
    assert report.total == 0 and histogram(model) == {"MatMul": 1, "Add": 1}
    assert reason in report.explain("add", "FuseMatMulAddIntoGemm")


def _pad_conv(pads: list[int], *, value: float | None = None, mode: str = "constant", conv_pads=None, group: int = 1):
    c = 4
    inits = [
        tensor("W", RNG.standard_normal((c, c // group, 3, 3)).astype(np.float32)),
        tensor("B", RNG.standard_normal(c).astype(np.float32)),
        tensor("pads", np.asarray(pads, dtype=np.int64)),
    ]
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits.append(tensor("value", np.asarray(value, dtype=np.float32)))
        pad_inputs.append("value")
    conv_attrs = {"group": group, "strides": [2, 2]}
    if conv_pads is not None:
        conv_attrs["pads"] = conv_pads
    nodes = [
        helper.make_node("Pad", pad_inputs, ["p"], name="pad", mode=mode),
        helper.make_node("Conv", ["p", "W", "B"], ["y"], name="conv", **conv_attrs),
    ]
    return build(nodes, [vi("x", shape=[2, c, 9, 9])], [vi("y")], inits), {
        "x": RNG.standard_normal((2, c, 9, 9)).astype(np.float32)
    }


@pytest.mark.parametrize(
    ("pads", "value", "conv_pads", "group"),
    [
        ([0, 0, 0, 0, 0, 0, 1, 1], None, None, 1),  # TF "SAME" for stride 2: pad only at the end
        ([0, 0, 1, 2, 0, 0, 2, 1], 0.0, [1, 0, 0, 1], 4),  # depthwise, adding to the Conv's own pads
    ],
)
def test_fuse_pad_into_conv(pads, value, conv_pads, group) -> None:
    from lpot_ir.passes.fusion import pad_rules

    model, feeds = _pad_conv(pads, value=value, conv_pads=conv_pads, group=group)
    rewrite_and_compare(model, pad_rules(), feeds, counts={"FusePadIntoConv": 1}, ops={"Conv": 1})
    conv = next(iter(model.graph))
    assert conv.name == "conv" and conv.attributes["group"].as_int() == group


@pytest.mark.parametrize(
    ("pads", "value", "mode", "reason"),
    [
        ([0, 0, 0, 0, 0, 0, 1, 1], 1.5, "constant", "fills with 1.5"),
        ([0, 0, 1, 1, 0, 0, 1, 1], None, "reflect", "not 'constant'"),
        ([0, 1, 0, 0, 0, 0, 0, 0], None, "constant", "batch or channel axis"),
        ([0, 0, -1, 0, 0, 0, 0, 0], None, "constant", "crops"),
    ],
)
def test_pad_not_fused_when_conv_differs(pads, value, mode, reason) -> None:
    from lpot_ir.passes.fusion import pad_rules

    model, _ = _pad_conv(pads, value=value, mode=mode)
    report = apply_rules(model, pad_rules(), trace=True)
    assert report.total == 0 and histogram(model) == {"Pad": 1, "Conv": 1}
    assert reason in report.explain("conv", "FusePadIntoConv")
