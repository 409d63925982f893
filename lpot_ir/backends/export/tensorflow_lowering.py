"""Lower a (Q/DQ) ONNX model to a TensorFlow SavedModel that runs with TensorFlow alone.

No maintained converter handles Q/DQ ONNX models for TensorFlow 2.21 (onnx-tf is archived; onnx2tf
targets TFLite and rewrites Q/DQ), so this is lpot-ir's own lowering: a ``tf.Module`` whose
``tf.function`` (signature from the ONNX inputs, dynamic dims as ``None``) interprets the graph with tf
ops. ONNX is NCHW and TensorFlow's CPU kernels are NHWC, so Conv and pooling transpose around the op.
Q/DQ arithmetic is the ONNX definition (round half to even, saturation, per tensor or per channel),
as in :mod:`lpot_ir.backends.export.torch_lowering`.

Shape-like inputs (Reshape shapes, Slice bounds, axes, pads) are read as constants when the graph
computes them from constants; a shape computed from a dynamic dimension is handled with tf ops.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.export.graph import LoweredGraph, LoweredNode, constant_value, lower_graph, spatial_pads
from lpot_ir.errors import ConversionError
from lpot_ir.optional import import_tensorflow

__all__ = ["export_to_tensorflow", "build_tf_module", "TF_OPS"]

logger = logging.getLogger(__name__)


def _tf() -> Any:
    return import_tensorflow()


def build_tf_module(qdq_model: Any) -> Any:
    """A ``tf.Module`` with a ``serve`` ``tf.function`` computing the model (inputs by ONNX input name)."""
    tf = _tf()
    graph = lower_graph(qdq_model)
    module_base: Any = tf.Module  # tensorflow is imported lazily and untyped

    class OnnxGraphTFModule(module_base):
        def __init__(self, g: LoweredGraph) -> None:
            super().__init__(name="lpot_ir_lowered")
            self._graph = g
            self._consts = {k: tf.constant(v) for k, v in g.constants.items()}
            self._np_consts = dict(g.constants)
            specs = [
                tf.TensorSpec([d for d in dims], tf.as_dtype(dtype), name=_sig_name(name))
                for name, dtype, dims in g.inputs
            ]
            self.serve = tf.function(self._run, input_signature=specs, autograph=False)

        def _run(self, *args: Any) -> Any:
            env: dict[str, Any] = dict(self._consts)
            known: dict[str, np.ndarray] = dict(self._np_consts)  # values computable now (constant folding)
            for (name, _, _), value in zip(self._graph.inputs, args, strict=False):
                env[name] = value
            for node in self._graph.nodes:
                ins = [env[i] if i else None for i in node.inputs]
                ctx = _Ctx(node, ins, [known.get(i) if i else None for i in node.inputs])
                try:
                    outs = TF_OPS[node.op_type](ctx)
                except ConversionError:
                    raise
                except Exception as exc:
                    raise ConversionError(
                        f"Lowering {node.op_type} node {node.name!r} to TensorFlow failed: {exc}"
                    ) from None
                if not isinstance(outs, (list, tuple)):
                    outs = (outs,)
                for name, value in zip(node.outputs, outs, strict=False):
                    if name:
                        env[name] = value
                        folded = _static_value(value)
                        if folded is not None:
                            known[name] = folded
            return {_sig_name(o): tf.identity(env[o], name=_sig_name(o)) for o in self._graph.outputs}

    return OnnxGraphTFModule(graph)


def export_to_tensorflow(qdq_model: Any, path: str | os.PathLike) -> Path:
    """Write ``qdq_model`` as a TensorFlow SavedModel at ``path`` (atomically; replaces an older one).

    The SavedModel's ``serving_default`` signature takes the ONNX inputs by name and returns a dict of the
    ONNX outputs; ``tf.saved_model.load(path).serve(*tensors)`` works too.

    Raises:
        ConversionError: ops the lowering does not run.
    """
    tf = _tf()
    module = build_tf_module(qdq_model)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "m")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote TensorFlow SavedModel %s", target)
    return target


def _sig_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_." else "_" for c in name)
    return cleaned if cleaned and (cleaned[0].isalpha() or cleaned[0] == ".") else f"t_{cleaned}"


def _static_value(value: Any) -> np.ndarray | None:
    tf = _tf()
    try:
        return tf.get_static_value(value)
    except Exception:  # not a tensor
        return None


class _Ctx:
    """One node's inputs (tensors) and, where known at trace time, their constant values."""

    def __init__(self, node: LoweredNode, ins: list[Any], consts: list[np.ndarray | None]) -> None:
        self.node, self.ins, self.consts = node, ins, consts
        self.attrs = node.attrs

    def const(self, i: int, what: str) -> np.ndarray:
        """The constant value of input ``i``, which must be present (callers check :meth:`has` first)."""
        assert self.has(i), f"{self.node.op_type}: input {i} ({what}) is absent"
        value = self.consts[i]
        if value is None:
            value = _static_value(self.ins[i])
        if value is None:
            raise ConversionError(
                f"{self.node.op_type} node {self.node.name!r}: its {what} is computed at run time; the TensorFlow "
                "lowering needs it constant. Export the model with a fixed shape for that input."
            )
        return np.asarray(value)

    def has(self, i: int) -> bool:
        return i < len(self.ins) and self.ins[i] is not None


def _rank(x: Any) -> int:
    return int(x.shape.rank)


def _bcast(tf: Any, param: Any, rank: int, axis: int) -> Any:
    if param.shape.rank == 0 or (param.shape.rank == 1 and param.shape[0] == 1):
        return tf.reshape(param, [])
    shape = [1] * rank
    shape[axis % rank] = -1
    return tf.reshape(param, shape)


_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


def _quantize(c: _Ctx) -> Any:
    tf = _tf()
    x, scale = c.ins[0], c.ins[1]
    zp = c.ins[2] if c.has(2) else tf.constant(0, tf.uint8)
    axis, rank = c.attrs.get("axis", 1), _rank(x)
    lo, hi = _INT_RANGES[zp.dtype.name]
    q = tf.round(x / _bcast(tf, scale, rank, axis)) + tf.cast(_bcast(tf, zp, rank, axis), tf.float32)
    return tf.cast(tf.clip_by_value(q, float(lo), float(hi)), zp.dtype)


def _dequantize(c: _Ctx) -> Any:
    tf = _tf()
    x, scale = c.ins[0], c.ins[1]
    axis, rank = c.attrs.get("axis", 1), _rank(x)
    q = tf.cast(x, tf.int64)
    if c.has(2):
        q = q - tf.cast(_bcast(tf, c.ins[2], rank, axis), tf.int64)
    return tf.cast(q, tf.float32) * _bcast(tf, scale, rank, axis)


def _to_last(tf: Any, x: Any) -> Any:
    r = _rank(x)
    return tf.transpose(x, [0, *range(2, r), 1])


def _to_first(tf: Any, x: Any) -> Any:
    r = _rank(x)
    return tf.transpose(x, [0, r - 1, *range(1, r - 1)])


def _pad_last(tf: Any, x: Any, pads: Sequence[int], value: float = 0.0) -> Any:
    nd = len(pads) // 2
    if not any(pads):
        return x
    spec = [[0, 0]] + [[pads[i], pads[i + nd]] for i in range(nd)] + [[0, 0]]
    return tf.pad(x, spec, constant_values=value)


def _conv(c: _Ctx) -> Any:
    tf = _tf()
    x, w = c.ins[0], c.ins[1]
    nd = _rank(w) - 2
    kernel = [int(k) for k in w.shape[2:]]
    strides = list(c.attrs.get("strides", [1] * nd))
    dilations = list(c.attrs.get("dilations", [1] * nd))
    pads = spatial_pads(c.node, x.shape[2:], kernel, strides, dilations)
    group = int(c.attrs.get("group", 1))
    xl = _pad_last(tf, _to_last(tf, x), pads)
    wl = tf.transpose(w, [*range(2, nd + 2), 1, 0])  # kernel..., in/group, out
    if group == 1:
        y = tf.nn.convolution(xl, wl, strides=strides, padding="VALID", dilations=dilations)
    else:
        xs = tf.split(xl, group, axis=-1)
        ws = tf.split(wl, group, axis=-1)
        y = tf.concat(
            [
                tf.nn.convolution(a, b, strides=strides, padding="VALID", dilations=dilations)
                for a, b in zip(xs, ws, strict=False)
            ],
            -1,
        )
    if c.has(2):
        y = y + c.ins[2]
    return _to_first(tf, y)


def _pool(c: _Ctx, kind: str) -> Any:
    tf = _tf()
    x = c.ins[0]
    kernel = list(c.attrs["kernel_shape"])
    nd = len(kernel)
    strides = list(c.attrs.get("strides", [1] * nd))
    dilations = list(c.attrs.get("dilations", [1] * nd))
    if any(d != 1 for d in dilations):
        raise ConversionError(
            f"{c.node.op_type} node {c.node.name!r}: dilated pooling is not lowered to TensorFlow."
        )
    pads = spatial_pads(c.node, x.shape[2:], kernel, strides, dilations)
    if c.attrs.get("ceil_mode", 0):
        for i in range(nd):
            size = x.shape[2 + i]
            if size is None:
                raise ConversionError(
                    f"{c.node.op_type} node {c.node.name!r}: ceil_mode needs static spatial sizes."
                )
            span = size + pads[i] + pads[i + nd] - kernel[i]
            if span % strides[i]:
                pads[i + nd] += strides[i] - span % strides[i]
    xl = _to_last(tf, x)
    if kind == "max":
        y = tf.nn.pool(
            _pad_last(tf, xl, pads, float(np.finfo(np.float32).min)),
            kernel,
            "MAX",
            strides=strides,
            padding="VALID",
        )
        return _to_first(tf, y)
    include = bool(c.attrs.get("count_include_pad", 0))
    summed = tf.nn.pool(_pad_last(tf, xl, pads), kernel, "AVG", strides=strides, padding="VALID") * float(
        np.prod(kernel)
    )
    if include or not any(pads):
        y = summed / float(np.prod(kernel))
    else:
        ones = _pad_last(tf, tf.ones_like(xl[..., :1]), pads)
        count = tf.nn.pool(ones, kernel, "AVG", strides=strides, padding="VALID") * float(np.prod(kernel))
        y = summed / count
    return _to_first(tf, y)


def _gemm(c: _Ctx) -> Any:
    tf = _tf()
    y = tf.linalg.matmul(
        c.ins[0],
        c.ins[1],
        transpose_a=bool(c.attrs.get("transA", 0)),
        transpose_b=bool(c.attrs.get("transB", 0)),
    )
    y = y * c.attrs.get("alpha", 1.0) if c.attrs.get("alpha", 1.0) != 1.0 else y
    if c.has(2):
        y = y + c.attrs.get("beta", 1.0) * c.ins[2]
    return y


def _axes(c: _Ctx, index: int = 1) -> list[int] | None:
    if c.has(index):
        return [int(a) for a in c.const(index, "axes")]
    if "axes" in c.attrs:
        return list(c.attrs["axes"])
    return None


def _shape_vector(tf: Any, x: Any) -> Any:
    return tf.shape(x, out_type=tf.int64)


def _reshape(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    shape_const = c.consts[1] if c.consts[1] is not None else _static_value(c.ins[1])
    allow_zero = bool(c.attrs.get("allowzero", 0))
    if shape_const is not None:
        dims: list[Any] = []
        dyn = tf.shape(x, out_type=tf.int64)
        for i, s in enumerate(np.asarray(shape_const).tolist()):
            if s == 0 and not allow_zero:
                dims.append(x.shape[i] if x.shape[i] is not None else dyn[i])
            else:
                dims.append(int(s))
        if all(isinstance(d, int) for d in dims):
            return tf.reshape(x, dims)
        return tf.reshape(x, tf.stack([tf.cast(d, tf.int64) for d in dims]))
    shape = tf.cast(c.ins[1], tf.int64)
    if not allow_zero:
        n = tf.size(shape)
        src = tf.concat([_shape_vector(tf, x), tf.zeros([tf.maximum(n - tf.rank(x), 0)], tf.int64)], 0)[:n]
        shape = tf.where(tf.equal(shape, 0), src, shape)
    return tf.reshape(x, shape)


def _flatten(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    r = _rank(x)
    axis = c.attrs.get("axis", 1) % r if r else 0
    shape = _shape_vector(tf, x)
    lead = tf.reduce_prod(shape[:axis]) if axis else tf.constant(1, tf.int64)
    static_tail = x.shape[axis:]
    tail = int(np.prod(static_tail)) if static_tail.is_fully_defined() else -1
    return tf.reshape(x, tf.stack([lead, tf.constant(tail, tf.int64)]))


def _squeeze(c: _Ctx) -> Any:
    tf = _tf()
    axes = _axes(c)
    return tf.squeeze(c.ins[0], axis=axes) if axes else tf.squeeze(c.ins[0])


def _unsqueeze(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    axes = _axes(c) or []
    rank = _rank(x) + len(axes)
    for a in sorted(a % rank for a in axes):
        x = tf.expand_dims(x, a)
    return x


def _gather(c: _Ctx) -> Any:
    tf = _tf()
    x, idx = c.ins[0], c.ins[1]
    axis = c.attrs.get("axis", 0) % _rank(x)
    idx = tf.cast(idx, tf.int64)
    dim = tf.shape(x, out_type=tf.int64)[axis]
    idx = tf.where(idx < 0, idx + dim, idx)
    return tf.gather(x, idx, axis=axis)


def _slice(c: _Ctx) -> Any:
    x = c.ins[0]
    r = _rank(x)
    if c.has(1):
        axes = c.const(3, "axes").tolist() if c.has(3) else None
        steps = c.const(4, "steps").tolist() if c.has(4) else None
        s_val = c.consts[1] if c.consts[1] is not None else _static_value(c.ins[1])
        e_val = c.consts[2] if c.consts[2] is not None else _static_value(c.ins[2])
        if s_val is None or e_val is None:
            return _dynamic_slice(c, axes, steps)
        starts, ends = np.asarray(s_val).tolist(), np.asarray(e_val).tolist()
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
    else:
        starts, ends = list(c.attrs["starts"]), list(c.attrs["ends"])
        axes = list(c.attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    big = 2**62
    index: list[Any] = [slice(None)] * r
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        s = None if (st > 0 and s <= -big) or (st < 0 and s >= big) else int(s)
        e = None if abs(int(e)) >= big else int(e)
        index[int(a) % r] = slice(s, e, int(st))
    return x[tuple(index)]


def _dynamic_slice(c: _Ctx, axes: list[int] | None, steps: list[int] | None) -> Any:
    """Slice with run-time starts/ends: one ``tf.strided_slice`` over all axes."""
    tf = _tf()
    x = c.ins[0]
    r = _rank(x)
    starts = tf.reshape(tf.cast(c.ins[1], tf.int64), [-1])
    ends = tf.reshape(tf.cast(c.ins[2], tf.int64), [-1])
    n = int(starts.shape[0]) if starts.shape[0] is not None else len(axes or [])
    axes = [a % r for a in (axes if axes is not None else list(range(n)))]
    steps = steps if steps is not None else [1] * n
    shape = tf.shape(x, out_type=tf.int64)
    begin = [tf.constant(0, tf.int64)] * r
    end = [shape[i] for i in range(r)]
    stride = [1] * r
    for i, a in enumerate(axes):
        begin[a], end[a], stride[a] = starts[i], ends[i], int(steps[i])
    return tf.strided_slice(x, tf.stack(begin), tf.stack(end), tf.constant(stride, tf.int64))


def _split(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    axis = c.attrs.get("axis", 0) % _rank(x)
    if c.has(1):
        sizes = [int(s) for s in c.const(1, "split sizes")]
    else:
        sizes = list(c.attrs.get("split", []))
    if not sizes:
        return tf.split(x, c.attrs.get("num_outputs", len(c.node.outputs)), axis=axis)
    return tf.split(x, sizes, axis=axis)


def _reduce(kind: str) -> Callable[[_Ctx], Any]:
    def run(c: _Ctx) -> Any:
        tf = _tf()
        x = c.ins[0]
        axes = _axes(c)
        if not axes:
            if c.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(_rank(x)))
        fn = {"mean": tf.reduce_mean, "sum": tf.reduce_sum, "max": tf.reduce_max}[kind]
        return fn(x, axis=axes, keepdims=bool(c.attrs.get("keepdims", 1)))

    return run


def _cast(c: _Ctx) -> Any:
    tf = _tf()
    return tf.cast(c.ins[0], tf.as_dtype(onnx.helper.tensor_dtype_to_np_dtype(c.attrs["to"])))


def _constant_of_shape(c: _Ctx) -> Any:
    tf = _tf()
    value = np.asarray(c.attrs.get("value", np.zeros(1, np.float32))).reshape(())
    return tf.fill(tf.cast(c.ins[0], tf.int64), tf.constant(value))


def _div(c: _Ctx) -> Any:
    tf = _tf()
    a, b = c.ins
    if a.dtype.is_integer:
        return tf.truncatediv(a, b)
    return a / b


def _mod(c: _Ctx) -> Any:
    tf = _tf()
    return (
        tf.truncatemod(c.ins[0], c.ins[1]) if c.attrs.get("fmod", 0) else tf.math.floormod(c.ins[0], c.ins[1])
    )


def _clip(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    lo = c.ins[1] if c.has(1) else c.attrs.get("min")
    hi = c.ins[2] if c.has(2) else c.attrs.get("max")
    if lo is not None:
        x = tf.maximum(x, tf.cast(lo, x.dtype))
    if hi is not None:
        x = tf.minimum(x, tf.cast(hi, x.dtype))
    return x


def _layer_norm(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    r = _rank(x)
    axes = list(range(c.attrs.get("axis", -1) % r, r))
    mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
    y = (x - mean) * tf.math.rsqrt(var + c.attrs.get("epsilon", 1e-5)) * c.ins[1]
    return y + c.ins[2] if c.has(2) else y


def _batch_norm(c: _Ctx) -> Any:
    tf = _tf()
    x, scale, bias, mean, var = c.ins[:5]
    r = _rank(x)
    shape = [1, -1] + [1] * (r - 2)
    inv = tf.reshape(scale * tf.math.rsqrt(var + c.attrs.get("epsilon", 1e-5)), shape)
    return (x - tf.reshape(mean, shape)) * inv + tf.reshape(bias, shape)


def _space_to_depth(c: _Ctx) -> Any:
    tf = _tf()
    x, b = c.ins[0], int(c.attrs["blocksize"])
    s = tf.shape(x)
    blocks = tf.transpose(tf.reshape(x, [s[0], s[1], s[2] // b, b, s[3] // b, b]), [0, 3, 5, 1, 2, 4])
    return tf.reshape(blocks, [s[0], s[1] * b * b, s[2] // b, s[3] // b])


def _pad(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    r = _rank(x)
    pads = [int(p) for p in (c.const(1, "pads") if c.has(1) else c.attrs["pads"])]
    value = c.const(2, "pad value").item() if c.has(2) else c.attrs.get("value", 0.0)
    axes = [int(a) % r for a in c.const(3, "axes")] if c.has(3) else list(range(r))
    spec = [[0, 0] for _ in range(r)]
    for i, a in enumerate(axes):
        spec[a] = [pads[i], pads[i + len(axes)]]
    mode = {"constant": "CONSTANT", "reflect": "REFLECT", "edge": "SYMMETRIC"}[
        c.attrs.get("mode", "constant")
    ]
    if mode == "SYMMETRIC" and any(max(p) > 1 for p in spec):
        raise ConversionError(
            f"Pad node {c.node.name!r}: edge padding wider than 1 is not lowered to TensorFlow."
        )
    return (
        tf.pad(x, spec, mode=mode, constant_values=value)
        if mode == "CONSTANT"
        else tf.pad(x, spec, mode=mode)
    )


def _softmax(log: bool) -> Callable[[_Ctx], Any]:
    def run(c: _Ctx) -> Any:
        tf = _tf()
        fn = tf.nn.log_softmax if log else tf.nn.softmax
        return fn(c.ins[0], axis=c.attrs.get("axis", -1))

    return run


def _fn(name: str, n_args: int = 1) -> Callable[[_Ctx], Any]:
    def run(c: _Ctx) -> Any:
        tf = _tf()
        obj: Any = tf
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj(*c.ins[:n_args])

    return run


def _variadic(name: str) -> Callable[[_Ctx], Any]:
    def run(c: _Ctx) -> Any:
        tf = _tf()
        out = c.ins[0]
        for x in c.ins[1:]:
            out = getattr(tf, name)(out, x)
        return out

    return run


def _shape(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    static = x.shape
    if static.is_fully_defined():
        full: Any = tf.constant(static.as_list(), tf.int64)
    else:
        full = tf.shape(x, out_type=tf.int64)
    return full[c.attrs.get("start", 0) : c.attrs.get("end")]


def _expand(c: _Ctx) -> Any:
    tf = _tf()
    x = c.ins[0]
    shape = tf.cast(c.ins[1], tf.int64)
    return tf.broadcast_to(x, tf.broadcast_dynamic_shape(tf.shape(x, out_type=tf.int64), shape))


TF_OPS: dict[str, Callable[[_Ctx], Any]] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _fn("linalg.matmul", 2),
    "Add": _fn("math.add", 2),
    "Sub": _fn("math.subtract", 2),
    "Mul": _fn("math.multiply", 2),
    "Div": _div,
    "Pow": _fn("math.pow", 2),
    "Mod": _mod,
    "Equal": _fn("math.equal", 2),
    "Less": _fn("math.less", 2),
    "Greater": _fn("math.greater", 2),
    "Not": _fn("math.logical_not"),
    "Min": _variadic("minimum"),
    "Max": _variadic("maximum"),
    "Sum": _variadic("add"),
    "Where": _fn("where", 3),
    "Sqrt": _fn("math.sqrt"),
    "Exp": _fn("math.exp"),
    "Log": _fn("math.log"),
    "Neg": _fn("math.negative"),
    "Abs": _fn("math.abs"),
    "Reciprocal": _fn("math.reciprocal"),
    "Erf": _fn("math.erf"),
    "Relu": _fn("nn.relu"),
    "Sigmoid": _fn("math.sigmoid"),
    "Tanh": _fn("math.tanh"),
    "LeakyRelu": lambda c: _tf().nn.leaky_relu(c.ins[0], alpha=c.attrs.get("alpha", 0.01)),
    "HardSigmoid": lambda c: _tf().clip_by_value(
        c.attrs.get("alpha", 0.2) * c.ins[0] + c.attrs.get("beta", 0.5), 0.0, 1.0
    ),
    "HardSwish": lambda c: c.ins[0] * _tf().clip_by_value(c.ins[0] / 6.0 + 0.5, 0.0, 1.0),
    "Gelu": lambda c: _tf().nn.gelu(c.ins[0], approximate=c.attrs.get("approximate", "none") == "tanh"),
    "Clip": _clip,
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "MaxPool": lambda c: _pool(c, "max"),
    "AveragePool": lambda c: _pool(c, "avg"),
    "GlobalAveragePool": lambda c: _tf().reduce_mean(
        c.ins[0], axis=list(range(2, _rank(c.ins[0]))), keepdims=True
    ),
    "GlobalMaxPool": lambda c: _tf().reduce_max(
        c.ins[0], axis=list(range(2, _rank(c.ins[0]))), keepdims=True
    ),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda c: _tf().transpose(
        c.ins[0], c.attrs.get("perm") or list(reversed(range(_rank(c.ins[0]))))
    ),
    "Concat": lambda c: _tf().concat([x for x in c.ins if x is not None], axis=c.attrs.get("axis", 0)),
    "Split": _split,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "Slice": _slice,
    "Shape": _shape,
    "Cast": _cast,
    "Identity": _fn("identity"),
    "Dropout": _fn("identity"),
    "Constant": lambda c: _tf().constant(constant_value(c.node)),
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "Pad": _pad,
    "SpaceToDepth": _space_to_depth,
    "Range": lambda c: _tf().range(c.ins[0], c.ins[1], c.ins[2]),
    "Tile": lambda c: _tf().tile(c.ins[0], _tf().cast(c.ins[1], _tf().int64)),
}
