"""Conv, Gemm and MatMul seen as grouped matrix products, at sampled output positions.

Layer-wise recovery (AdaRound, bias correction) needs a layer's output as a matrix product: for each
group ``g`` of a layer, ``y[g] = X[g] @ W[g].T`` where ``W[g]`` is ``[out channels of the group, K]`` and
``X[g]`` holds one row of ``K`` input values per output position (``im2col`` for a convolution; kept
positions-major, so taking a batch of positions is a contiguous slice). Only the output positions asked
for are materialized, so a layer's inputs fit in memory whatever its feature map size.

:class:`LinearLayer` describes one node (its groups, kernel, strides, pads, transposes) and converts
between the ONNX weight layout and the matrix layout, and between activations and rows. Every row of
the matrix layout is one output channel, the axis along which weights are quantized per channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

__all__ = ["LinearLayer", "linear_layer", "activation_channel_axis"]


def activation_channel_axis(op_type: str) -> int:
    """The axis of a Conv/ConvTranspose (1) or Gemm/MatMul (-1) output *activation* that holds the output
    channels (the weight's output-channel axis is
    :func:`lpot_ir.backends.onnxruntime.capabilities.output_channel_axis`)."""
    return 1 if op_type in ("Conv", "ConvTranspose") else -1


@dataclass(frozen=True)
class LinearLayer:
    """One Conv (1-D to 3-D), Gemm or 2-D-weight MatMul as grouped matrix products.

    Attributes:
        op_type: ``Conv``, ``Gemm`` or ``MatMul``.
        weight_shape: the ONNX weight's shape.
        groups: convolution groups (1 otherwise).
        kernel, strides, dilations: per spatial axis (convolutions).
        pads: ``[begin..., end...]`` (convolutions; ``auto_pad`` is resolved per input shape).
        auto_pad: the node's ``auto_pad``.
        trans_a, trans_b, alpha: Gemm's attributes.
    """

    op_type: str
    weight_shape: tuple[int, ...]
    groups: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"
    trans_a: bool = False
    trans_b: bool = False
    alpha: float = 1.0

    # -- weights -----------------------------------------------------------------------------------

    @property
    def out_channels(self) -> int:
        if self.op_type == "Conv":
            return self.weight_shape[0]
        if self.op_type == "Gemm" and self.trans_b:
            return self.weight_shape[0]
        return self.weight_shape[-1]

    @property
    def weight_channel_axis(self) -> int:
        """The weight axis holding output channels (the per-channel quantization axis)."""
        if self.op_type == "Conv" or (self.op_type == "Gemm" and self.trans_b):
            return 0
        return len(self.weight_shape) - 1

    @property
    def output_axis(self) -> int:
        """The output axis holding output channels."""
        return activation_channel_axis(self.op_type)

    def weight_matrix(self, weight: np.ndarray) -> np.ndarray:
        """ONNX layout -> ``[groups, out channels per group, K]``."""
        if self.op_type == "Conv":
            return weight.reshape(self.groups, weight.shape[0] // self.groups, -1)
        matrix = weight if (self.op_type == "Gemm" and self.trans_b) else weight.T
        return matrix[None]

    def weight_from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """``[groups, out channels per group, K]`` -> ONNX layout."""
        if self.op_type == "Conv":
            return matrix.reshape(self.weight_shape)
        flat = matrix[0]
        return flat if (self.op_type == "Gemm" and self.trans_b) else flat.T

    def channel_vector(self, values: np.ndarray) -> np.ndarray:
        """A per-output-channel vector (or a scalar) shaped to broadcast over the matrix layout."""
        values = np.asarray(values)
        if values.ndim == 0:
            return values.reshape(1, 1, 1)
        return values.reshape(self.groups, -1, 1)

    # -- activations -------------------------------------------------------------------------------

    def _conv_geometry(self, spatial: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """(pads begin, pads end, output sizes) for an input of spatial size ``spatial``."""
        nd = len(self.kernel)
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for i in range(nd):
                out = math.ceil(spatial[i] / self.strides[i])
                total = max((out - 1) * self.strides[i] + (self.kernel[i] - 1) * self.dilations[i] + 1 - spatial[i], 0)
                small, big = total // 2, total - total // 2
                begin.append(small if self.auto_pad == "SAME_UPPER" else big)
                end.append(big if self.auto_pad == "SAME_UPPER" else small)
        elif self.auto_pad == "VALID":
            begin, end = [0] * nd, [0] * nd
        else:
            pads = list(self.pads) or [0] * (2 * nd)
            begin, end = pads[:nd], pads[nd:]
        outs = [
            (spatial[i] + begin[i] + end[i] - self.dilations[i] * (self.kernel[i] - 1) - 1) // self.strides[i] + 1
            for i in range(nd)
        ]
        return begin, end, outs

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The (batch, positions...) part of the output's shape, without the channel axis."""
        if self.op_type == "Conv":
            _b, _e, outs = self._conv_geometry(input_shape[2:])
            return (int(input_shape[0]), *outs)
        if self.op_type == "Gemm":
            return (int(input_shape[1] if self.trans_a else input_shape[0]),)
        return tuple(int(d) for d in input_shape[:-1])

    def num_positions(self, input_shape: Sequence[int]) -> int:
        """How many output positions (rows) one input of this shape gives."""
        return int(np.prod(self.output_shape(input_shape)))

    def rows(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Input rows ``[groups, len(positions), K]`` for flat output ``positions`` of input ``x``."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.op_type == "Conv":
            return self._conv_rows(x, positions)
        if self.op_type == "Gemm":
            rows = (x.T if self.trans_a else x)[positions]
            if self.alpha != 1.0:
                rows = rows * np.float32(self.alpha)
            return np.ascontiguousarray(rows)[None]
        return np.ascontiguousarray(x.reshape(-1, x.shape[-1])[positions])[None]

    def _conv_rows(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        nd = len(self.kernel)
        begin, end, outs = self._conv_geometry(x.shape[2:])
        padded = np.pad(x, [(0, 0), (0, 0), *zip(begin, end, strict=True)]) if any(begin) or any(end) else x
        index = np.unravel_index(positions, (x.shape[0], *outs))
        count = len(positions)
        trailing = (1,) * nd
        gather: list[np.ndarray] = [index[0].reshape(count, 1, *trailing), np.arange(x.shape[1]).reshape(1, -1, *trailing)]
        for d in range(nd):
            taps = index[1 + d][:, None] * self.strides[d] + np.arange(self.kernel[d])[None, :] * self.dilations[d]
            shape = [count, 1] + [1] * nd
            shape[2 + d] = self.kernel[d]
            gather.append(taps.reshape(shape))
        patches = padded[tuple(gather)]  # [P, C_in, *kernel]
        per_group = patches.reshape(count, self.groups, -1)  # [P, g, C_in/g * prod(kernel)]
        return np.ascontiguousarray(per_group.transpose(1, 0, 2))

    def row_sum(self, x: np.ndarray) -> np.ndarray:
        """The sum of the input rows over every output position of ``x``: ``[groups, K]`` (float64).

        ``W @ row_sum(x) / num_positions(x.shape)`` is the mean output without bias, computed per
        kernel tap from strided slices, without materializing the rows.
        """
        return self.row_sums(x).sum(axis=0)

    def row_sums(self, x: np.ndarray) -> np.ndarray:
        """:meth:`row_sum` per sample (the first axis of ``x``; Gemm: per row): ``[samples, groups, K]``."""
        if self.op_type == "Gemm":
            rows = x.T if self.trans_a else x
            return (rows.astype(np.float64) * float(self.alpha))[:, None, :]
        if self.op_type == "MatMul":
            samples = x.shape[0] if x.ndim > 2 else x.reshape(-1, x.shape[-1]).shape[0]
            return x.reshape(samples, -1, x.shape[-1]).sum(axis=1, dtype=np.float64)[:, None, :]
        nd = len(self.kernel)
        begin, end, outs = self._conv_geometry(x.shape[2:])
        padded = np.pad(x, [(0, 0), (0, 0), *zip(begin, end, strict=True)]) if any(begin) or any(end) else x
        sums = np.zeros((x.shape[0], x.shape[1], *self.kernel), dtype=np.float64)
        for tap in np.ndindex(*self.kernel):
            window = tuple(
                slice(tap[d] * self.dilations[d], tap[d] * self.dilations[d] + self.strides[d] * (outs[d] - 1) + 1,
                      self.strides[d])
                for d in range(nd)
            )
            part = padded[(slice(None), slice(None)) + window]
            sums[(slice(None), slice(None)) + tuple(tap)] = part.sum(axis=tuple(range(2, 2 + nd)), dtype=np.float64)
        return sums.reshape(x.shape[0], self.groups, -1)

    def outputs(self, y: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Output values ``[groups, len(positions), out channels per group]`` at flat output ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.op_type == "Conv":
            moved = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
        else:
            moved = y.reshape(-1, y.shape[-1])
        picked = moved[positions]  # [P, C]
        return np.ascontiguousarray(picked.reshape(len(positions), self.groups, -1).transpose(1, 0, 2))


def _ints(node: ir.Node, name: str, default: Sequence[int]) -> tuple[int, ...]:
    attr = node.attributes.get(name)
    return tuple(int(v) for v in attr.as_ints()) if attr is not None else tuple(default)


def linear_layer(node: ir.Node, weight_shape: Sequence[int]) -> LinearLayer | None:
    """The :class:`LinearLayer` of ``node`` (weight input 1 of shape ``weight_shape``), or ``None`` when the
    node is not a plain matrix product over its input 0 (ConvTranspose, a MatMul with a batched or 1-D
    weight, a Gemm whose weight is input 0)."""
    shape = tuple(int(d) for d in weight_shape)
    if node.op_type == "Conv" and len(shape) >= 3:
        nd = len(shape) - 2
        kernel = _ints(node, "kernel_shape", shape[2:])
        auto_pad = node.attributes.get_string("auto_pad", "NOTSET") or "NOTSET"
        return LinearLayer(
            "Conv",
            shape,
            groups=node.attributes.get_int("group", 1),
            kernel=kernel,
            strides=_ints(node, "strides", [1] * nd),
            dilations=_ints(node, "dilations", [1] * nd),
            pads=_ints(node, "pads", [0] * (2 * nd)),
            auto_pad=auto_pad,
        )
    if node.op_type == "Gemm" and len(shape) == 2:
        return LinearLayer(
            "Gemm",
            shape,
            trans_a=bool(node.attributes.get_int("transA", 0)),
            trans_b=bool(node.attributes.get_int("transB", 0)),
            alpha=float(node.attributes.get_float("alpha", 1.0)),
        )
    if node.op_type == "MatMul" and len(shape) == 2:
        return LinearLayer("MatMul", shape)
    return None
