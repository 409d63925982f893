"""Rule set ``fuse-pad``: a zero ``Pad`` in front of a ``Conv`` becomes the Conv's own ``pads``.

Exporters of TensorFlow-style "SAME" padding (EfficientNet-Lite, MobileNet ports, tf2onnx output) write
an explicit ``Pad`` before many convolutions. In FP32 ONNX Runtime folds it into the Conv by itself. In a
quantized model it cannot: the Pad sits between a QuantizeLinear and a DequantizeLinear, so ONNX Runtime
keeps a DequantizeLinear -> Pad -> QuantizeLinear chain around it (22 of them in EfficientNet-Lite2,
which left that model no faster in INT8 than in FP32). Folding the Pad into the Conv before
quantization removes the chain.

Only where the Conv computes the same thing: the Pad is ``constant`` mode with value 0, pads only the
spatial axes (not batch or channels), by non-negative amounts, and the Conv pads explicitly
(``auto_pad`` absent or ``NOTSET``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from lpot_ir.ir.pattern import Builder, Match, Rule, RuleSet, const, op, var
from lpot_ir.passes.base import register_rule_set

__all__ = ["pad_rules", "FUSE_PAD_INTO_CONV"]


def _mode(node: ir.Node) -> str:
    attr = node.attributes.get("mode")
    value = attr.value if attr is not None else "constant"
    return value.decode() if isinstance(value, bytes) else str(value)


def _conv_pads(conv: ir.Node, spatial: int) -> list[int]:
    attr = conv.attributes.get("pads")
    return [int(p) for p in attr.value] if attr is not None else [0] * (2 * spatial)


def _check(m: Match) -> str | None:
    pad, conv = m.node("pad"), m.node("conv")
    if _mode(pad) != "constant":
        return f"Pad mode is '{_mode(pad)}', not 'constant'"
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        return "the Pad lists its axes (opset 18): only a Pad over every axis is folded"
    value = m.const("value")
    if value is not None and value.size and float(np.asarray(value).reshape(-1)[0]) != 0.0:
        return f"the Pad fills with {float(np.asarray(value).reshape(-1)[0])}, not 0"
    auto_pad = conv.attributes.get("auto_pad")
    if auto_pad is not None and str(auto_pad.value) not in ("NOTSET", "b'NOTSET'"):
        return f"the Conv uses auto_pad={auto_pad.value}"
    pads = m.const("pads")
    assert pads is not None
    pads = np.asarray(pads).reshape(-1)
    rank = pads.size // 2
    if rank < 3:
        return f"the Pad has {rank} axes; a Conv input has at least 3"
    if np.any(pads < 0):
        return "the Pad crops (negative pads)"
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return "the Pad pads the batch or channel axis"
    return None


def _fuse(b: Builder, m: Match):  # noqa: ANN202
    conv = m.node("conv")
    pads = np.asarray(m.const("pads")).reshape(-1).astype(np.int64)
    rank = pads.size // 2
    spatial = rank - 2
    old = _conv_pads(conv, spatial)
    new = [old[i] + int(pads[2 + i]) for i in range(spatial)] + [
        old[spatial + i] + int(pads[rank + 2 + i]) for i in range(spatial)
    ]
    attributes: dict[str, Any] = {k: v for k, v in conv.attributes.items() if k not in ("pads", "auto_pad")}
    inputs = [m["x"], *conv.inputs[1:]]
    return [b.op("Conv", *inputs, name=conv.name, pads=new, **attributes)]


FUSE_PAD_INTO_CONV = Rule(
    "FusePadIntoConv",
    op(
        "Conv",
        op("Pad", var("x"), const("pads"), const("value", optional=True), name="pad"),
        var("W"),
        var("B", optional=True),
        name="conv",
    ),
    _fuse,
    check=_check,
    spec="Pad(x, pads, 0) → Conv(·, W, B) → Conv(x, W, B, pads += spatial pads)",
)


@register_rule_set("fuse-pad")
def pad_rules() -> RuleSet:
    """Zero Pad folded into the Conv that reads it."""
    return RuleSet("fuse-pad", [FUSE_PAD_INTO_CONV], "Fold a zero constant Pad into the following Conv's pads")
