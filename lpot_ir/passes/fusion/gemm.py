"""Rule set ``fuse-matmul-add``: ``MatMul(A, B) + C`` → ``Gemm(A, B, C)``.

Only where Gemm computes the same thing: ``A`` and ``B`` are statically rank 2, the addend ``C`` is
a constant bias of shape ``[N]`` or ``[1, N]`` (N = columns of ``B``), and the type is a float type.
``C + MatMul(A, B)`` is matched too: ``Add`` is commutative and the engine generates that variant.
"""

from __future__ import annotations

import onnx_ir as ir

from lpot_ir.ir.pattern import Builder, Match, Rule, RuleSet, const, op, var
from lpot_ir.passes.base import register_rule_set

__all__ = ["gemm_rules", "FUSE_MATMUL_ADD_INTO_GEMM"]

_GEMM_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16}


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def _check(m: Match) -> str | None:
    a, b = m["A"], m["B"]
    assert a is not None and b is not None
    if _rank(a) != 2:
        return f"A '{a.name}' is not statically rank 2 (shape {a.shape})"
    if _rank(b) != 2:
        return f"B '{b.name}' is not statically rank 2 (shape {b.shape})"
    if a.type is None or a.dtype not in _GEMM_TYPES:
        return f"type of A '{a.name}' is not a float type Gemm supports"
    n = b.shape[1]  # type: ignore[index]
    c = m.const("C")
    assert c is not None
    if not isinstance(n, int):
        return f"the column count of B '{b.name}' is not static"
    if tuple(c.shape) not in ((n,), (1, n)):
        return f"the addend has shape {tuple(c.shape)}, not ({n},) or (1, {n})"
    return None


def _fuse(b: Builder, m: Match):  # noqa: ANN202
    return [b.op("Gemm", m["A"], m["B"], m["C"], name=m.node("matmul").name)]


FUSE_MATMUL_ADD_INTO_GEMM = Rule(
    "FuseMatMulAddIntoGemm",
    op("Add", op("MatMul", var("A"), var("B"), name="matmul"), const("C"), name="add"),
    _fuse,
    check=_check,
    spec="MatMul(A, B) → Add(·, C) → Gemm(A, B, C)   (A, B rank 2; C of shape [N] or [1, N])",
)


@register_rule_set("fuse-matmul-add")
def gemm_rules() -> RuleSet:
    """MatMul + bias Add into Gemm."""
    return RuleSet("fuse-matmul-add", [FUSE_MATMUL_ADD_INTO_GEMM], "Fuse MatMul + constant bias Add into Gemm")
