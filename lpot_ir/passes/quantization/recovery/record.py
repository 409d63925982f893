""":class:`RecoveryRecord`: what the data-driven recovery passes decided, stored in the recipe.

``apply_recipe`` rebuilds a quantized model bit for bit without calibration data, so every decision that
came from data (or that would be costly or fragile to recompute) is stored, compactly:

* range search: the chosen ranges are the recipe's ``ranges`` already; the record adds the activations
  whose scheme changed (``schemes``) and, for reports, the algorithm chosen per activation (``algorithms``);
* MSE clipping: one clip ratio per output channel (float32) per weight-bearing node (``clip_ratios``);
* AdaRound: per node, a bit mask of the weights whose integer moved one step away from the rounding
  the model had before (nearest or clipped), packed 8 per byte and zlib-compressed (``roundings``); the
  direction is implied: towards the other neighbour of ``weight / scale``;
* bias correction: per node, the int32 change of its bias, or (a MatMul whose bias is a float ``Add``
  after it) the float32 change of that bias (``biases``).

Arrays are written as ``{"dtype", "shape", "data"}`` with ``data`` base64 of zlib-compressed little-endian
bytes. For a 5M-weight CNN the record is tens of kilobytes without AdaRound; AdaRound adds about
one bit per weight before compression (~0.1 byte per weight after it).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpot_ir.ir.quant import Scheme

__all__ = ["RecoveryRecord", "BiasChange", "encode_array", "decode_array", "pack_mask", "unpack_mask"]


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


@dataclass
class RecoveryRecord:
    """The data-driven decisions of the recovery passes for one quantized model.

    Attributes:
        schemes: activation value -> the scheme range search chose, where it differs from the configuration.
        algorithms: activation value -> the calibration algorithm range search chose (for reports).
        clip_ratios: node -> per-channel clip ratios of its weight (MSE clipping).
        roundings: node -> mask of the weights AdaRound moved one step from the previous rounding.
        biases: node -> its bias change (bias correction).
    """

    schemes: dict[str, Scheme] = field(default_factory=dict)
    algorithms: dict[str, str] = field(default_factory=dict)
    clip_ratios: dict[str, np.ndarray] = field(default_factory=dict)
    roundings: dict[str, np.ndarray] = field(default_factory=dict)
    biases: dict[str, BiasChange] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.schemes or self.algorithms or self.clip_ratios or self.roundings or self.biases)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.schemes:
            out["schemes"] = {k: v.value for k, v in sorted(self.schemes.items())}
        if self.algorithms:
            out["algorithms"] = dict(sorted(self.algorithms.items()))
        if self.clip_ratios:
            out["clip_ratios"] = {k: encode_array(v) for k, v in sorted(self.clip_ratios.items())}
        if self.roundings:
            out["roundings"] = {k: pack_mask(v) for k, v in sorted(self.roundings.items())}
        if self.biases:
            out["biases"] = {k: v.to_dict() for k, v in sorted(self.biases.items())}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecoveryRecord:
        return cls(
            schemes={str(k): Scheme(v) for k, v in dict(data.get("schemes", {})).items()},
            algorithms={str(k): str(v) for k, v in dict(data.get("algorithms", {})).items()},
            clip_ratios={str(k): decode_array(v) for k, v in dict(data.get("clip_ratios", {})).items()},
            roundings={str(k): unpack_mask(v) for k, v in dict(data.get("roundings", {})).items()},
            biases={str(k): BiasChange.from_dict(v) for k, v in dict(data.get("biases", {})).items()},
        )
