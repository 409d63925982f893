"""Lower a (Q/DQ) ONNX model to a ``torch.nn.Module`` that runs with PyTorch alone.

:class:`OnnxGraphModule` keeps the graph's initializers as buffers (so ``state_dict``/``torch.save``
work) and interprets the nodes with torch ops. ``QuantizeLinear`` is ``round_half_even(x / scale) + zp``
saturated to the integer range and stored in the integer dtype (uint8/int8); ``DequantizeLinear`` is
``(q - zp) * scale``, per tensor or per channel (``axis``), int32 biases included: the same arithmetic
ONNX Runtime's reference kernels use, so outputs match the ONNX Runtime candidate within one
quantization step (ORT fuses DQ->Conv->Q into integer kernels whose requantization may round an
output one step differently).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.export.graph import LoweredGraph, LoweredNode, constant_value, lower_graph, spatial_pads
from lpot_ir.errors import ConversionError

__all__ = ["export_to_pytorch", "TORCH_OPS", "bind_graph_inputs", "run_torch_node"]

logger = logging.getLogger(__name__)


def export_to_pytorch(qdq_model: Any) -> Any:
    """A ``torch.nn.Module`` computing ``qdq_model`` with torch ops (no ONNX Runtime).

    Args:
        qdq_model: a ModelProto, bytes, path, ``onnx_ir.Model`` or a ``QuantizedModel`` (its ``.model``).

    Returns:
        An ``nn.Module`` in eval mode: ``module(*inputs)`` takes torch tensors in graph-input order and
        returns one tensor, or a tuple for several outputs.

    Raises:
        ConversionError: the model uses ops outside :data:`~lpot_ir.backends.export.graph.SUPPORTED_OPS`.
    """
    graph = lower_graph(qdq_model)
    return _module_class()(graph).eval()


def _module_class() -> type:
    import torch

    class OnnxGraphModule(torch.nn.Module):
        """Interprets an ONNX graph with torch ops; initializers are buffers ``c0``, ``c1``..."""

        def __init__(self, graph: LoweredGraph) -> None:
            super().__init__()
            self.graph_inputs = [name for name, _, _ in graph.inputs]
            self.graph_outputs = list(graph.outputs)
            self.nodes = list(graph.nodes)
            self.constant_names: dict[str, str] = {}
            for i, (name, value) in enumerate(graph.constants.items()):
                attr = f"c{i}"
                self.register_buffer(attr, _tensor(value))
                self.constant_names[name] = attr

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            env: dict[str, Any] = {name: getattr(self, attr) for name, attr in self.constant_names.items()}
            bind_graph_inputs(env, self.graph_inputs, args, kwargs)
            for node in self.nodes:
                ins = [env[i] if i else None for i in node.inputs]
                for name, value in zip(node.outputs, run_torch_node(node, ins), strict=False):
                    if name:
                        env[name] = value
            result = [env[o] for o in self.graph_outputs]
            return result[0] if len(result) == 1 else tuple(result)

    return OnnxGraphModule


def bind_graph_inputs(
    env: dict[str, Any], graph_inputs: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """Put a forward call's inputs into ``env`` by graph-input name (positional first, then keywords).

    Raises:
        TypeError: more positional inputs than the graph has, or a graph input left without a value.
    """
    if len(args) > len(graph_inputs):
        raise TypeError(f"expected at most {len(graph_inputs)} inputs {list(graph_inputs)}, got {len(args)}")
    for name, value in zip(graph_inputs, args, strict=False):
        env[name] = value
    env.update(kwargs)
    missing = [n for n in graph_inputs if n not in env]
    if missing:
        raise TypeError(f"missing model input(s) {missing}")


def run_torch_node(node: LoweredNode, ins: list[Any]) -> Sequence[Any]:
    """Run one lowered node with its torch op; its outputs as a sequence (one per ONNX output).

    Raises:
        RuntimeError: the op failed (the message names the node).
    """
    try:
        outs = TORCH_OPS[node.op_type](node, ins)
    except Exception as exc:
        raise RuntimeError(f"{node.op_type} node {node.name!r}: {exc}") from exc
    return outs if isinstance(outs, (list, tuple)) else (outs,)


# ---------------------------------------------------------------------------------------------- ops


def _t() -> Any:
    import torch

    return torch


def _ints(x: Any) -> list[int]:
    return [int(v) for v in (x.tolist() if hasattr(x, "tolist") else x)] if x is not None else []


def _bcast(param: Any, x: Any, axis: int) -> Any:
    """Shape a per-channel parameter to broadcast along ``axis`` of ``x``."""
    if param.dim() == 0 or param.numel() == 1 and param.dim() <= 1:
        return param.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return param.reshape(shape)


def _range_of(dtype: Any) -> tuple[int, int]:
    info = _t().iinfo(dtype)
    return info.min, info.max


def _quantize(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else torch.zeros((), dtype=torch.uint8)
    axis = n.attrs.get("axis", 1)
    lo, hi = _range_of(zp.dtype)
    q = torch.round(x / _bcast(scale, x, axis)) + _bcast(zp, x, axis).to(torch.float32)
    return torch.clamp(q, lo, hi).to(zp.dtype)


def _dequantize(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else None
    axis = n.attrs.get("axis", 1)
    q = x.to(torch.int64)
    if zp is not None:
        q = q - _bcast(zp, x, axis).to(torch.int64)
    return q.to(torch.float32) * _bcast(scale, x, axis)


def _torch_pad_arg(pads: Sequence[int]) -> list[int]:
    nd = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


def _conv(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    F = torch.nn.functional
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = w.dim() - 2
    kernel = list(w.shape[2:])
    strides = n.attrs.get("strides", [1] * nd)
    dilations = n.attrs.get("dilations", [1] * nd)
    pads = spatial_pads(n, x.shape[2:], kernel, strides, dilations)
    if pads[:nd] != pads[nd:]:
        x = F.pad(x, _torch_pad_arg(pads))
        padding: Any = 0
    else:
        padding = pads[:nd]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(x, w, b, stride=strides, padding=padding, dilation=dilations, groups=n.attrs.get("group", 1))


def _pool(n: LoweredNode, ins: list[Any], kind: str) -> Any:
    torch = _t()
    F = torch.nn.functional
    x = ins[0]
    kernel = list(n.attrs["kernel_shape"])
    nd = len(kernel)
    strides = n.attrs.get("strides", [1] * nd)
    dilations = n.attrs.get("dilations", [1] * nd)
    pads = spatial_pads(n, x.shape[2:], kernel, strides, dilations)
    ceil = bool(n.attrs.get("ceil_mode", 0))
    symmetric = pads[:nd] == pads[nd:] and all(p <= k // 2 for p, k in zip(pads[:nd], kernel, strict=False))
    if kind == "max":
        padding: Any = pads[:nd]
        if not symmetric:
            x = F.pad(x, _torch_pad_arg(pads), value=float("-inf"))
            padding = 0
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        return fn(x, kernel, strides, padding, dilation=dilations, ceil_mode=ceil)
    include = bool(n.attrs.get("count_include_pad", 0))
    if not symmetric:
        if not include:
            raise ConversionError(
                f"AveragePool {n.name!r}: asymmetric pads with count_include_pad=0 are not lowered."
            )
        x = F.pad(x, _torch_pad_arg(pads))
        pads = [0] * (2 * nd)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return fn(x, kernel, strides, pads[:nd], ceil_mode=ceil, count_include_pad=include)


def _gemm(n: LoweredNode, ins: list[Any]) -> Any:
    a, b = ins[0], ins[1]
    if n.attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if n.attrs.get("transB", 0):
        b = b.transpose(0, 1)
    y = n.attrs.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + n.attrs.get("beta", 1.0) * ins[2]
    return y


def _axes(n: LoweredNode, ins: list[Any], index: int = 1) -> list[int] | None:
    if len(ins) > index and ins[index] is not None:
        return _ints(ins[index])
    if "axes" in n.attrs:
        return list(n.attrs["axes"])
    return None


def _reshape(n: LoweredNode, ins: list[Any]) -> Any:
    x, shape = ins[0], _ints(ins[1])
    if not n.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(n: LoweredNode, ins: list[Any]) -> Any:
    x = ins[0]
    axis = n.attrs.get("axis", 1) % max(x.dim(), 1) if x.dim() else 0
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return x.reshape(lead, -1)


def _squeeze(n: LoweredNode, ins: list[Any]) -> Any:
    x = ins[0]
    axes = _axes(n, ins)
    if axes is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _unsqueeze(n: LoweredNode, ins: list[Any]) -> Any:
    x = ins[0]
    axes = _axes(n, ins) or []
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _gather(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    x, idx = ins[0], ins[1].to(torch.int64)
    axis = n.attrs.get("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))


def _slice(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    x = ins[0]
    if len(ins) > 1:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    else:
        starts, ends = list(n.attrs["starts"]), list(n.attrs["ends"])
        axes = list(n.attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        a %= x.dim()
        idx = range(*slice(s, e, st).indices(x.shape[a]))
        if st == 1:
            x = x.narrow(a, idx.start, max(len(idx), 0))
        else:
            x = torch.index_select(x, a, torch.tensor(list(idx), dtype=torch.int64))
    return x


def _split(n: LoweredNode, ins: list[Any]) -> Any:
    x = ins[0]
    axis = n.attrs.get("axis", 0) % x.dim()
    sizes = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(n.attrs.get("split", []))
    if not sizes:
        parts = n.attrs.get("num_outputs", len(n.outputs))
        chunk = -(-x.shape[axis] // parts)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(parts)]
    return list(x.split(sizes, dim=axis))


def _reduce(fn_name: str) -> Callable[[LoweredNode, list[Any]], Any]:
    def run(n: LoweredNode, ins: list[Any]) -> Any:
        x = ins[0]
        axes = _axes(n, ins)
        keep = bool(n.attrs.get("keepdims", 1))
        if not axes:
            if n.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        axes = [a % x.dim() for a in axes]
        if fn_name == "max":
            out = x
            for a in sorted(axes, reverse=True):
                out = out.amax(dim=a, keepdim=keep)
            return out
        return getattr(x, fn_name)(dim=axes, keepdim=keep)

    return run


def _tensor(array: np.ndarray) -> Any:
    """A torch tensor holding a copy of ``array``; bfloat16 arrays (``ml_dtypes``, which torch does not read)
    go through float32, which holds every bfloat16 value exactly."""
    torch = _t()
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.asarray(array, dtype=np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def _torch_dtype(onnx_type: int) -> Any:
    torch = _t()
    if onnx_type == onnx.TensorProto.BFLOAT16:
        return torch.bfloat16
    return torch.from_numpy(np.zeros(0, dtype=onnx.helper.tensor_dtype_to_np_dtype(onnx_type))).dtype


def _cast(n: LoweredNode, ins: list[Any]) -> Any:
    return ins[0].to(_torch_dtype(n.attrs["to"]))


def _constant(n: LoweredNode, ins: list[Any]) -> Any:
    return _tensor(constant_value(n))


def _constant_of_shape(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    value = n.attrs.get("value")
    v = torch.from_numpy(np.array(value, copy=True)).reshape(()) if value is not None else torch.tensor(0.0)
    return torch.full(_ints(ins[0]), v.item(), dtype=v.dtype)


def _div(n: LoweredNode, ins: list[Any]) -> Any:
    a, b = ins
    if not a.is_floating_point() and not b.is_floating_point():
        return _t().div(a, b, rounding_mode="trunc")
    return a / b


def _mod(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    return torch.fmod(ins[0], ins[1]) if n.attrs.get("fmod", 0) else torch.remainder(ins[0], ins[1])


def _clip(n: LoweredNode, ins: list[Any]) -> Any:
    x = ins[0]
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else n.attrs.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else n.attrs.get("max")
    if lo is None and hi is None:
        return x
    return _t().clamp(x, min=lo, max=hi)


def _layer_norm(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    axis = n.attrs.get("axis", -1) % x.dim()
    shape = list(x.shape[axis:])
    return torch.nn.functional.layer_norm(
        x, shape, w.expand(shape), None if b is None else b.expand(shape), n.attrs.get("epsilon", 1e-5)
    )


def _batch_norm(n: LoweredNode, ins: list[Any]) -> Any:
    x, scale, bias, mean, var = ins[:5]
    return _t().nn.functional.batch_norm(x, mean, var, scale, bias, False, 0.0, n.attrs.get("epsilon", 1e-5))


def _space_to_depth(n: LoweredNode, ins: list[Any]) -> Any:
    x, b = ins[0], int(n.attrs["blocksize"])
    batch, c, h, w = x.shape
    blocks = x.reshape(batch, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return blocks.reshape(batch, c * b * b, h // b, w // b)


def _pad(n: LoweredNode, ins: list[Any]) -> Any:
    torch = _t()
    x = ins[0]
    pads = _ints(ins[1]) if len(ins) > 1 else list(n.attrs["pads"])
    value = float(ins[2].item()) if len(ins) > 2 and ins[2] is not None else float(n.attrs.get("value", 0.0))
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.dim()))
    full = [0] * (2 * x.dim())
    k = len(axes)
    for i, a in enumerate(axes):
        full[a % x.dim()] = pads[i]
        full[a % x.dim() + x.dim()] = pads[i + k]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[
        n.attrs.get("mode", "constant")
    ]
    arg = _torch_pad_arg(full)
    if mode == "constant":
        return torch.nn.functional.pad(x, arg, value=value)
    return torch.nn.functional.pad(x, arg[: 2 * (x.dim() - 2)], mode=mode)


def _softmax(log: bool) -> Callable[[LoweredNode, list[Any]], Any]:
    def run(n: LoweredNode, ins: list[Any]) -> Any:
        F = _t().nn.functional
        return (F.log_softmax if log else F.softmax)(ins[0], dim=n.attrs.get("axis", -1))

    return run


def _binary(name: str) -> Callable[[LoweredNode, list[Any]], Any]:
    def run(n: LoweredNode, ins: list[Any]) -> Any:
        return getattr(_t(), name)(ins[0], ins[1])

    return run


def _unary(fn: Callable[[Any], Any]) -> Callable[[LoweredNode, list[Any]], Any]:
    return lambda n, ins: fn(ins[0])


def _variadic(name: str) -> Callable[[LoweredNode, list[Any]], Any]:
    def run(n: LoweredNode, ins: list[Any]) -> Any:
        out = ins[0]
        for x in ins[1:]:
            out = getattr(_t(), name)(out, x)
        return out

    return run


TORCH_OPS: dict[str, Callable[[LoweredNode, list[Any]], Any]] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _binary("matmul"),
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _div,
    "Pow": _binary("pow"),
    "Mod": _mod,
    "Equal": _binary("eq"),
    "Less": _binary("lt"),
    "Greater": _binary("gt"),
    "Not": _unary(lambda x: ~x),
    "Min": _variadic("minimum"),
    "Max": _variadic("maximum"),
    "Sum": _variadic("add"),
    "Where": lambda n, ins: _t().where(ins[0], ins[1], ins[2]),
    "Sqrt": _unary(lambda x: x.sqrt()),
    "Exp": _unary(lambda x: x.exp()),
    "Log": _unary(lambda x: x.log()),
    "Neg": _unary(lambda x: -x),
    "Abs": _unary(lambda x: x.abs()),
    "Reciprocal": _unary(lambda x: 1.0 / x),
    "Erf": _unary(lambda x: _t().erf(x)),
    "Relu": _unary(lambda x: _t().relu(x)),
    "Sigmoid": _unary(lambda x: _t().sigmoid(x)),
    "Tanh": _unary(lambda x: _t().tanh(x)),
    "LeakyRelu": lambda n, ins: _t().nn.functional.leaky_relu(ins[0], n.attrs.get("alpha", 0.01)),
    "HardSigmoid": lambda n, ins: _t().clamp(
        n.attrs.get("alpha", 0.2) * ins[0] + n.attrs.get("beta", 0.5), 0, 1
    ),
    "HardSwish": _unary(lambda x: _t().nn.functional.hardswish(x)),
    "Gelu": lambda n, ins: _t().nn.functional.gelu(ins[0], approximate=n.attrs.get("approximate", "none")),
    "Clip": _clip,
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "MaxPool": lambda n, ins: _pool(n, ins, "max"),
    "AveragePool": lambda n, ins: _pool(n, ins, "avg"),
    "GlobalAveragePool": _unary(lambda x: x.mean(dim=list(range(2, x.dim())), keepdim=True)),
    "GlobalMaxPool": _unary(lambda x: x.amax(dim=list(range(2, x.dim())), keepdim=True)),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda n, ins: ins[0].permute(*(n.attrs.get("perm") or reversed(range(ins[0].dim())))),
    "Concat": lambda n, ins: _t().cat([x for x in ins if x is not None], dim=n.attrs.get("axis", 0)),
    "Split": _split,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "Slice": _slice,
    "Shape": lambda n, ins: _t().tensor(list(ins[0].shape), dtype=_t().int64)[
        n.attrs.get("start", 0) : n.attrs.get("end")
    ],
    "Cast": _cast,
    "Identity": _unary(lambda x: x),
    "Dropout": _unary(lambda x: x),
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Expand": lambda n, ins: ins[0].expand(_t().broadcast_shapes(tuple(ins[0].shape), tuple(_ints(ins[1])))),
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "Pad": _pad,
    "SpaceToDepth": _space_to_depth,
    "Range": lambda n, ins: _t().arange(ins[0].item(), ins[1].item(), ins[2].item(), dtype=ins[0].dtype),
    "Tile": lambda n, ins: ins[0].repeat(*_ints(ins[1])),
}
