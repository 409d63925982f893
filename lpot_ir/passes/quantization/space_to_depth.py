"""Rewrite stride-2 convolutions with few input channels and a large kernel into space-to-depth form.

ONNX Runtime's ``QLinearConv`` is slow on a ResNet stem (7x7, stride 2, 3 input channels): its 147-long
reduction suits the integer kernels badly. The same convolution on ``SpaceToDepth(Pad(x), 2)`` (12 channels,
half the spatial size) with the kernel zero-padded to an even size and rearranged is a 4x4 stride-1
convolution with a 192-long reduction, which computes the same sums.

Rules (spec in arrow form):

* ``Conv(x, W[Cout, Cin<=4, k>=5, k>=5], stride 2) → Conv(SpaceToDepth(Pad(x), 2), W', stride 1)``
  (:data:`SPACE_TO_DEPTH_CONV`, FP32; not in any pipeline, it shows the equivalence).
* ``Conv(DQ(Q(x)), DQ(Wq), B) → Conv(DQ(Q(SpaceToDepth(Pad(x), 2))), DQ(Wq'), B)``
  (:data:`SPACE_TO_DEPTH_QUANTIZED_CONV`): the quantized form, applied by
  the step ``space-to-depth-stems`` of the static pipelines, after Q/DQ insertion (before QOperator lowering).
  The float input is padded with zeros, which quantize exactly to the zero point the original
  convolution pads with; the int8 weights are rearranged and padded with their zero point, so the
  per-channel scales, the bias and every integer product are unchanged: the outputs are bit-identical.

``W'[o, (dy * 2 + dx) * Cin + c, a, b] = W0[o, c, 2a + dy, 2b + dx]`` where ``W0`` is ``W`` zero-padded to
``2 * ceil(k / 2)`` (the channel order of ONNX ``SpaceToDepth``). Conditions: 2-D, ``group`` 1, dilations 1,
strides 2, no ``auto_pad``, ``Cin <= 4``, kernel ``>= 5`` on both axes, static input height and width.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from lpot_ir.ir.pattern import Builder, Decline, Match, Pattern, Rule, RuleSet, const, op, var
from lpot_ir.passes.base import register_rule_set
from lpot_ir.passes.rewrite import RewriteReport, apply_rules

__all__ = [
    "SPACE_TO_DEPTH_CONV",
    "SPACE_TO_DEPTH_QUANTIZED_CONV",
    "rearrange_kernel",
    "space_to_depth_rules",
    "space_to_depth_stems",
]

logger = logging.getLogger(__name__)

MAX_IN_CHANNELS = 4
MIN_KERNEL = 5


def rearrange_kernel(w: np.ndarray, fill: np.ndarray | float = 0) -> np.ndarray:
    """``W[Cout, Cin, kh, kw]`` → ``W'[Cout, 4 * Cin, ceil(kh / 2), ceil(kw / 2)]`` (see the module docstring).

    ``fill`` is the value of the padded taps: 0 for float weights, the per-output-channel zero point
    (shape ``[Cout]`` or scalar) for quantized ones.
    """
    cout, cin, kh, kw = w.shape
    ah, aw = -(-kh // 2), -(-kw // 2)
    fill_arr = np.broadcast_to(np.asarray(fill, dtype=w.dtype).reshape(-1, 1, 1, 1), (cout, 1, 1, 1))
    padded = np.broadcast_to(fill_arr, (cout, cin, 2 * ah, 2 * aw)).copy()
    padded[:, :, :kh, :kw] = w
    # [o, c, a, dy, b, dx] -> [o, dy, dx, c, a, b]
    out = padded.reshape(cout, cin, ah, 2, aw, 2).transpose(0, 3, 5, 1, 2, 4)
    return np.ascontiguousarray(out.reshape(cout, 4 * cin, ah, aw))


def _plan(m: Match, w_shape: tuple[int, ...]) -> list[int] | str:
    """The ``pads`` of the Pad before ``SpaceToDepth``, or why the Conv is not rewritten."""
    if len(w_shape) != 4:
        return f"not a 2-D convolution (weight rank {len(w_shape)})"
    if m.attr("conv", "group", 1) != 1:
        return "group is not 1"
    if str(m.attr("conv", "auto_pad", "NOTSET")) not in ("NOTSET", "b'NOTSET'"):
        return "auto_pad is set"
    strides = list(m.attr("conv", "strides", None) or [1, 1])
    dilations = list(m.attr("conv", "dilations", None) or [1, 1])
    if strides != [2, 2]:
        return f"strides are {strides}, not [2, 2]"
    if dilations != [1, 1]:
        return f"dilations are {dilations}, not [1, 1]"
    cin, kh, kw = w_shape[1], w_shape[2], w_shape[3]
    if cin > MAX_IN_CHANNELS:
        return f"{cin} input channels (more than {MAX_IN_CHANNELS}: the reduction is already long enough)"
    if kh < MIN_KERNEL or kw < MIN_KERNEL:
        return f"kernel {kh}x{kw} is smaller than {MIN_KERNEL}x{MIN_KERNEL}"
    x = m["x"]
    shape = None if x is None else x.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[2], int) or not isinstance(shape[3], int):
        return "the input height and width are not static"
    height, width = int(shape[2]), int(shape[3])
    pads = list(m.attr("conv", "pads", None) or [0, 0, 0, 0])
    begin, end = [0, 0], [0, 0]
    for axis, (size, k) in enumerate(((height, kh), (width, kw))):
        p0, p1 = int(pads[axis]), int(pads[axis + 2])
        out = (size + p0 + p1 - k) // 2 + 1
        if out < 1:
            return f"the output would be empty on spatial axis {axis}"
        tail = 2 * (out + (k + 1) // 2 - 1) - size - p0  # end padding making the padded size exact
        if tail < 0:
            return f"the space-to-depth form would need cropping on spatial axis {axis}"
        begin[axis], end[axis] = p0, tail
    return [0, 0, begin[0], begin[1], 0, 0, end[0], end[1]]


def _space_to_depth_input(b: Builder, x: ir.Value | None, pads: list[int]) -> ir.Value:
    padded = b.op("Pad", x, b.initializer(np.asarray(pads, dtype=np.int64), "s2d_pads"), mode="constant")
    assert x is not None and x.shape is not None  # _plan checked the static spatial shape
    shape = x.shape
    dims = [shape[0], shape[1], shape[2] + pads[2] + pads[6], shape[3] + pads[3] + pads[7]]
    padded.shape, padded.type = ir.Shape(dims), x.type
    out = b.op("SpaceToDepth", padded, blocksize=2)
    c = dims[1] * 4 if isinstance(dims[1], int) else None
    out.shape, out.type = ir.Shape([dims[0], c, dims[2] // 2, dims[3] // 2]), x.type
    return out


def _attrs(node: ir.Node) -> dict[str, Any]:
    return dict(node.attributes.items())


def _conv_attrs(conv: ir.Node, w_new: np.ndarray) -> dict[str, Any]:
    attrs: dict[str, Any] = {k: v for k, v in conv.attributes.items() if k not in ("strides", "pads", "kernel_shape")}
    attrs["kernel_shape"] = [int(w_new.shape[2]), int(w_new.shape[3])]
    attrs["strides"] = [1, 1]
    return attrs


def _fp32_rule() -> Rule:
    root = op("Conv", var("x"), const("W"), var("B", optional=True), name="conv")

    def check(m: Match) -> str | None:
        w = m.const("W")
        assert w is not None
        plan = _plan(m, w.shape)
        return plan if isinstance(plan, str) else None

    def replace(b: Builder, m: Match) -> ir.Value | Decline:
        w = m.const("W")
        assert w is not None
        plan = _plan(m, w.shape)
        if isinstance(plan, str):
            return Decline(plan)
        w_new = rearrange_kernel(w)
        conv = m.node("conv")
        s2d = _space_to_depth_input(b, m["x"], plan)
        return b.op("Conv", s2d, b.initializer(w_new, "W_s2d"), m["B"], name=conv.name, **_conv_attrs(conv, w_new))

    return Rule("SpaceToDepthConv", Pattern(root), replace, check, commute=False,
                spec="Conv(x, W[Cout, Cin<=4, k>=5, k>=5], stride 2) → Conv(SpaceToDepth(Pad(x), 2), W', stride 1)")


def _quantized_rule() -> Rule:
    q = op("QuantizeLinear", var("x"), var("xs"), var("xzp", optional=True), name="q")
    dq_x = op("DequantizeLinear", q, var("xs2"), var("xzp2", optional=True), name="dqx")
    dq_w = op("DequantizeLinear", const("Wq"), const("ws"), const("wzp", optional=True), name="dqw")
    root = op("Conv", dq_x, dq_w, var("B", optional=True), name="conv")

    def check(m: Match) -> str | None:
        wq = m.const("Wq")
        assert wq is not None
        plan = _plan(m, wq.shape)
        if isinstance(plan, str):
            return plan
        if m.attr("dqw", "axis", 1) not in (0, -4) and np.asarray(m.const("ws")).size != 1:
            return "the weight is not quantized per output channel (axis 0) or per tensor"
        if m.attr("dqw", "block_size", 0) not in (0, None):
            return "the weight is block-quantized"
        return None

    def replace(b: Builder, m: Match) -> ir.Value | Decline:
        wq = m.const("Wq")
        assert wq is not None
        plan = _plan(m, wq.shape)
        if isinstance(plan, str):
            return Decline(plan)
        wzp = m.const("wzp")
        w_new = rearrange_kernel(wq, 0 if wzp is None else wzp)
        q_node, dqx_node, dqw_node, conv = m.node("q"), m.node("dqx"), m.node("dqw"), m.node("conv")
        s2d = _space_to_depth_input(b, m["x"], plan)
        xq = b.op("QuantizeLinear", s2d, m["xs"], m["xzp"], name=q_node.name, **_attrs(q_node))
        xq.shape, xq.type = s2d.shape, q_node.outputs[0].type
        xdq = b.op("DequantizeLinear", xq, m["xs2"], m["xzp2"], name=dqx_node.name,
                   **_attrs(dqx_node))
        xdq.shape, xdq.type = s2d.shape, dqx_node.outputs[0].type
        w_value = b.initializer(w_new, "Wq_s2d")
        wdq = b.op("DequantizeLinear", w_value, m["ws"], m["wzp"], name=dqw_node.name,
                   **_attrs(dqw_node))
        wdq.shape, wdq.type = ir.Shape(w_new.shape), dqw_node.outputs[0].type
        return b.op("Conv", xdq, wdq, m["B"], name=conv.name, **_conv_attrs(conv, w_new))

    return Rule("SpaceToDepthQuantizedConv", Pattern(root), replace, check, commute=False,
                spec="Conv(DQ(Q(x)), DQ(Wq), B) → Conv(DQ(Q(SpaceToDepth(Pad(x), 2))), DQ(Wq'), B)")


SPACE_TO_DEPTH_CONV = _fp32_rule()
SPACE_TO_DEPTH_QUANTIZED_CONV = _quantized_rule()


@register_rule_set("space-to-depth-stems")
def space_to_depth_rules() -> RuleSet:
    """The rule set ``space-to-depth-stems`` (a step of ``int8-qdq`` and ``int8-qoperator``)."""
    return RuleSet(
        "space-to-depth-stems",
        [SPACE_TO_DEPTH_QUANTIZED_CONV],
        "quantized stride-2 small-channel convolutions as stride-1 convolutions on SpaceToDepth",
    )


def space_to_depth_stems(model: ir.Model) -> RewriteReport:
    """Rewrite ``model``'s quantized stride-2 stems (Q/DQ form) in place; return the rewrite report."""
    return apply_rules(model, space_to_depth_rules())
