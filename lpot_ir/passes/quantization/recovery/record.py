"""How the recovery passes store their data-driven decisions in the recipe, compactly and exactly.

``apply_recipe`` rebuilds a quantized model bit for bit without calibration data, so every decision that
came from data (or would be costly or fragile to recompute) is in the recipe, under the step's name
(``QuantPassResult.record``, handed back as ``QuantizationContext.replay``):

* ``range-search``: the chosen ranges are the recipe's ``ranges`` already; the record adds the activations
  whose scheme changed (``schemes``) and the algorithm chosen per activation (``algorithms``, for reports);
* ``weight-rounding``: MSE clipping's ratio per output channel (float32, per weight ``DequantizeLinear``:
  ``clip_ratios``), and AdaRound's bit mask of the weights whose integer moved one step from the rounding
  before it, packed 8 per byte (``roundings``; the direction is implied: towards the other neighbour of
  ``weight / scale``);
* ``bias-correction``: per node, the change of its int32 bias (narrowest integer type that holds it), or
  of the float bias ``Add`` after a MatMul (float32), and whether the bias was created (``biases``).

Arrays are written as ``{"dtype", "shape", "data"}`` with ``data`` base64 of zlib-compressed little-endian
bytes. Sizes on EfficientNet-Lite0 (4.7M weights): bias corrections and clip ratios are tens of kilobytes;
AdaRound moves 30-45% of the weights it rounds, nearly at random, so its masks stay at about one bit per
rounded weight (~0.5 MB for 3.4M).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BiasChange", "encode_array", "decode_array", "pack_mask", "unpack_mask"]


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A JSON-able, compressed form of ``array`` (exact: the bytes round-trip)."""
    data = np.ascontiguousarray(array)
    little = data.astype(data.dtype.newbyteorder("<"), copy=False)
    payload = base64.b64encode(zlib.compress(little.tobytes(), 9)).decode("ascii")
    return {"dtype": data.dtype.name, "shape": list(data.shape), "data": payload}


def decode_array(data: Mapping[str, Any]) -> np.ndarray:
    """The array :func:`encode_array` encoded."""
    dtype = np.dtype(str(data["dtype"])).newbyteorder("<")
    raw = zlib.decompress(base64.b64decode(str(data["data"])))
    array = np.frombuffer(raw, dtype=dtype).reshape([int(d) for d in data["shape"]])
    return array.astype(array.dtype.newbyteorder("="))


def pack_mask(mask: np.ndarray) -> dict[str, Any]:
    """A boolean mask as packed bits (8 per byte), compressed."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    packed = encode_array(np.packbits(flat))
    packed["bits"] = int(flat.size)
    packed["mask_shape"] = list(np.shape(mask))
    return packed


def unpack_mask(data: Mapping[str, Any]) -> np.ndarray:
    """The boolean mask :func:`pack_mask` packed."""
    bits = np.unpackbits(decode_array(data), count=int(data["bits"])).astype(bool)
    return bits.reshape([int(d) for d in data["mask_shape"]])


@dataclass(frozen=True)
class BiasChange:
    """How bias correction changed one node's bias.

    Attributes:
        kind: ``int32`` (the node's int32 bias, or one created for it) or ``add`` (the float constant of
            the ``Add`` after a MatMul).
        delta: int32 change of the integer bias, or float32 change of the ``Add`` constant.
        created: the node had no bias; one was created (int32, scale = activation x weight scale).
    """

    kind: str
    delta: np.ndarray
    created: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "delta": encode_array(_narrowest(self.delta))}
        if self.created:
            out["created"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasChange:
        kind = str(data["kind"])
        if kind not in ("int32", "add"):
            raise ValueError(f"unknown bias change kind {kind!r}")
        delta = decode_array(data["delta"])
        delta = delta.astype(np.int32) if kind == "int32" else delta.astype(np.float32)
        return cls(kind, delta, bool(data.get("created", False)))


def _narrowest(delta: np.ndarray) -> np.ndarray:
    """Integer deltas in the smallest integer type that holds them (exact; decoded back to int32)."""
    if delta.dtype.kind != "i" or delta.size == 0:
        return delta
    lo, hi = int(delta.min()), int(delta.max())
    for dtype in (np.int8, np.int16):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return delta.astype(dtype)
    return delta
