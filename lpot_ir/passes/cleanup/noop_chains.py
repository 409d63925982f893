"""Rule set ``remove-noop-chains``: Cast, Reshape and Transpose nodes (or chains) that do nothing.

* ``Cast(x, to=T)`` with ``x`` already of type ``T`` → ``x``.
* ``Cast(Cast(x, to=T1), to=T2)`` → ``Cast(x, to=T2)`` (or ``x``) when ``x → T1`` is lossless (every
  value of ``x``'s type is exactly representable in ``T1``), so the outer cast sees the same numbers.
* ``Reshape(x, s)`` whose result provably has ``x``'s shape → ``x``.
* ``Reshape(Reshape(x, s1), s2)`` → ``Reshape(x, s2)`` when ``s2`` is constant and has no 0 (a 0 would
  copy a dimension of the intermediate shape).
* ``Transpose(x)`` with the identity permutation → ``x``; ``Transpose(Transpose(x, p1), p2)`` →
  ``Transpose(x, p1∘p2)`` or ``x`` when that is the identity.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from lpot_ir.ir.pattern import Builder, Decline, Match, Rule, RuleSet, const, op, var
from lpot_ir.passes.base import register_rule_set

__all__ = [
    "noop_chain_rules",
    "LOSSLESS_CASTS",
    "REMOVE_SAME_TYPE_CAST",
    "FOLD_LOSSLESS_CAST_CHAIN",
    "REMOVE_NOOP_RESHAPE",
    "FOLD_RESHAPE_CHAIN",
    "REMOVE_IDENTITY_TRANSPOSE",
    "FOLD_TRANSPOSE_CHAIN",
]

_D = ir.DataType
_INTS_TO_FLOAT16 = {_D.FLOAT16, _D.BFLOAT16, _D.FLOAT, _D.DOUBLE}
LOSSLESS_CASTS: dict[ir.DataType, frozenset[ir.DataType]] = {
    _D.BOOL: frozenset({
        _D.UINT8, _D.INT8, _D.UINT16, _D.INT16, _D.UINT32, _D.INT32, _D.UINT64, _D.INT64,
        _D.FLOAT16, _D.BFLOAT16, _D.FLOAT, _D.DOUBLE,
    }),
    _D.UINT8: frozenset({_D.UINT16, _D.INT16, _D.UINT32, _D.INT32, _D.UINT64, _D.INT64} | _INTS_TO_FLOAT16),
    _D.INT8: frozenset({_D.INT16, _D.INT32, _D.INT64} | _INTS_TO_FLOAT16),
    _D.UINT16: frozenset({_D.UINT32, _D.INT32, _D.UINT64, _D.INT64, _D.FLOAT, _D.DOUBLE}),
    _D.INT16: frozenset({_D.INT32, _D.INT64, _D.FLOAT, _D.DOUBLE}),
    _D.UINT32: frozenset({_D.UINT64, _D.INT64, _D.DOUBLE}),
    _D.INT32: frozenset({_D.INT64, _D.DOUBLE}),
    _D.FLOAT16: frozenset({_D.FLOAT, _D.DOUBLE}),
    _D.BFLOAT16: frozenset({_D.FLOAT, _D.DOUBLE}),
    _D.FLOAT: frozenset({_D.DOUBLE}),
}
"""source type -> target types that represent every source value exactly."""


def _dtype(value: ir.Value | None) -> ir.DataType | None:
    if value is None or value.type is None:
        return None
    try:
        return value.dtype
    except Exception:  # sequence/optional types have no element dtype
        return None


# ---- Cast ------------------------------------------------------------------------------------------


def _same_type_cast(m: Match) -> str | None:
    source = _dtype(m["x"])
    if source is None:
        return f"the type of '{m['x'].name}' is unknown"  # type: ignore[union-attr]
    target = ir.DataType(m.attr("Cast", "to"))
    if source != target:
        return f"casts {source.name} to {target.name}"
    return None


REMOVE_SAME_TYPE_CAST = Rule(
    "RemoveSameTypeCast",
    op("Cast", var("x")),
    lambda b, m: [m["x"]],
    check=_same_type_cast,
    spec="Cast(x: T, to=T) → x",
)


def _lossless_chain(m: Match) -> str | None:
    source = _dtype(m["x"])
    if source is None:
        return f"the type of '{m['x'].name}' is unknown"  # type: ignore[union-attr]
    middle = ir.DataType(m.attr("inner", "to"))
    if middle != source and middle not in LOSSLESS_CASTS.get(source, ()):
        return f"the first cast {source.name} → {middle.name} may lose information"
    return None


def _fold_cast_chain(b: Builder, m: Match):  # noqa: ANN202
    target = ir.DataType(m.attr("outer", "to"))
    if _dtype(m["x"]) == target:
        return [m["x"]]
    outer = m.node("outer")
    saturate = outer.attributes.get("saturate")
    return [b.op("Cast", m["x"], to=int(target), name=outer.name, saturate=saturate)]


FOLD_LOSSLESS_CAST_CHAIN = Rule(
    "FoldLosslessCastChain",
    op("Cast", op("Cast", var("x"), name="inner"), name="outer"),
    _fold_cast_chain,
    check=_lossless_chain,
    spec="Cast(Cast(x, to=T1), to=T2) → Cast(x, to=T2)   (x → T1 lossless)",
)


# ---- Reshape ---------------------------------------------------------------------------------------


def _noop_reshape(m: Match) -> str | None:
    x = m["x"]
    assert x is not None
    if x.shape is None:
        return f"the shape of '{x.name}' is unknown"
    target_array = m.const("shape")
    assert target_array is not None
    target = [int(d) for d in np.asarray(target_array).reshape(-1)]
    allowzero = int(m.attr("Reshape", "allowzero", 0) or 0)
    if len(target) != len(x.shape):
        return f"rank changes from {len(x.shape)} to {len(target)}"
    free = 0
    for i, (t, d) in enumerate(zip(target, x.shape, strict=True)):
        if t == 0 and not allowzero:
            continue
        if t == -1:
            free += 1
            continue
        if isinstance(d, int) and d == t:
            continue
        return f"dimension {i} becomes {t} (input has {d})"
    if free > 1:
        return "more than one -1 in the target shape"
    return None


REMOVE_NOOP_RESHAPE = Rule(
    "RemoveNoopReshape",
    op("Reshape", var("x"), const("shape")),
    lambda b, m: [m["x"]],
    check=_noop_reshape,
    spec="Reshape(x, shape(x)) → x",
)


def _reshape_chain(m: Match) -> str | None:
    target = m.const("shape2")
    assert target is not None
    allowzero = int(m.attr("outer", "allowzero", 0) or 0)
    if not allowzero and np.any(np.asarray(target) == 0):
        return "the outer target shape has a 0, which copies a dimension of the intermediate shape"
    return None


def _fold_reshape_chain(b: Builder, m: Match):  # noqa: ANN202
    outer = m.node("outer")
    return [b.op("Reshape", m["x"], m["shape2"], name=outer.name, allowzero=outer.attributes.get("allowzero"))]


FOLD_RESHAPE_CHAIN = Rule(
    "FoldReshapeChain",
    op("Reshape", op("Reshape", var("x"), var("shape1"), name="inner"), const("shape2"), name="outer"),
    _fold_reshape_chain,
    check=_reshape_chain,
    spec="Reshape(Reshape(x, s1), s2) → Reshape(x, s2)   (s2 constant, no 0)",
)


# ---- Transpose -------------------------------------------------------------------------------------


def _perm(m: Match, label: str, x: ir.Value | None) -> list[int] | None:
    perm = m.attr(label, "perm")
    if perm is not None:
        return [int(p) for p in perm]
    if x is None or x.shape is None:
        return None
    return list(range(len(x.shape)))[::-1]


def _identity_transpose(m: Match) -> str | None:
    perm = _perm(m, "Transpose", m["x"])
    if perm is None:
        return "no perm attribute and the input rank is unknown"
    if perm != sorted(perm):
        return f"perm {perm} is not the identity"
    return None


REMOVE_IDENTITY_TRANSPOSE = Rule(
    "RemoveIdentityTranspose",
    op("Transpose", var("x")),
    lambda b, m: [m["x"]],
    check=_identity_transpose,
    spec="Transpose(x, perm=identity) → x",
)


def _fold_transpose_chain(b: Builder, m: Match):  # noqa: ANN202
    x = m["x"]
    inner = _perm(m, "inner", x)
    outer_perm = m.attr("outer", "perm")
    if inner is None:
        return Decline("the inner Transpose has no perm and the input rank is unknown")
    outer = [int(p) for p in outer_perm] if outer_perm is not None else list(range(len(inner)))[::-1]
    if len(outer) != len(inner):
        return Decline(f"perm lengths differ: {inner} and {outer}")
    combined = [inner[p] for p in outer]
    if combined == list(range(len(combined))):
        return [x]
    return [b.op("Transpose", x, perm=combined, name=m.node("outer").name)]


FOLD_TRANSPOSE_CHAIN = Rule(
    "FoldTransposeChain",
    op("Transpose", op("Transpose", var("x"), name="inner"), name="outer"),
    _fold_transpose_chain,
    spec="Transpose(Transpose(x, p1), p2) → Transpose(x, p1∘p2)  (or x when the identity)",
)


@register_rule_set("remove-noop-chains")
def noop_chain_rules() -> RuleSet:
    """No-op Cast / Reshape / Transpose nodes and chains."""
    return RuleSet(
        "remove-noop-chains",
        [
            REMOVE_SAME_TYPE_CAST, FOLD_LOSSLESS_CAST_CHAIN, REMOVE_NOOP_RESHAPE, FOLD_RESHAPE_CHAIN,
            REMOVE_IDENTITY_TRANSPOSE, FOLD_TRANSPOSE_CHAIN,
        ],
        "Remove no-op Cast, Reshape and Transpose nodes and chains",
    )
