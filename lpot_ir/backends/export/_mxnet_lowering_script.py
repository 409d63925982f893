"""Run inside the isolated MXNet environment (mxnet 1.9.1, numpy<1.24): a described ONNX graph -> MXNet.

Executed by path with that environment's interpreter; it must not import lpot_ir. argv: request JSON,
reply JSON. The request holds the graph description written by lpot_ir.backends.export.mxnet_lowering
(nodes in topological order, value shapes, constant names) and the paths of the constants (.npz), the
output prefix and, optionally, check inputs (.npz). The script builds the graph with ``mx.sym`` ops,
saves ``<prefix>-symbol.json`` and ``<prefix>-0000.params`` (``arg:`` keys, as ``HybridBlock.export``),
loads them back with ``mx.sym.load`` / ``mx.nd.load``, runs the check inputs, and writes the outputs.

Q/DQ are emulated in float32 (fake quantization): QuantizeLinear is ``clip(round_half_even(x / scale) +
zero_point, qmin, qmax)``, DequantizeLinear ``(q - zero_point) * scale``; quantized weights stay int8 /
uint8 in the params and are cast when used.
reply: {"ok": true, "outputs": [...], "fake_quant": n} or {"ok": false, "kind": "unsupported"|"error", "message"}
"""

import json
import sys
import traceback

QRANGE = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


class Unsupported(Exception):
    pass


class Builder:
    def __init__(self, mx, np, desc, constants):
        self.mx, self.np = mx, np
        self.sym = mx.sym
        self.desc = desc
        self.constants = constants  # name -> numpy array
        self.shapes = {k: v for k, v in desc["shapes"].items()}  # name -> list (None for unknown dims) or absent
        self.safe = desc["safe_names"]  # value name -> MXNet variable name
        self.env = {}
        self.params = {}
        self.fake_quant = 0

    # ----------------------------------------------------------------------------------------- helpers
    def const(self, name):
        if name not in self.constants:
            raise Unsupported(f"input '{name}' must be a constant for the MXNet lowering")
        return self.constants[name]

    def is_const(self, name):
        return name in self.constants

    def value(self, name):
        """The symbol of a value; constants become parameters (kept in their dtype)."""
        if name in self.env:
            return self.env[name]
        if name in self.constants:
            array = self.constants[name]
            var_name = self.safe[name]
            self.params[var_name] = self.mx.nd.array(array, dtype=array.dtype)
            symbol = self.sym.var(var_name, shape=array.shape, dtype=str(array.dtype))
            if array.dtype != self.np.float32:
                symbol = self.sym.cast(symbol, dtype="float32")
            self.env[name] = symbol
            return symbol
        raise Unsupported(f"value '{name}' is used before it is computed")

    def rank(self, name):
        if name in self.constants:
            return self.constants[name].ndim
        shape = self.shapes.get(name)
        if shape is None:
            raise Unsupported(f"the rank of '{name}' is unknown (run shape inference)")
        return len(shape)

    def param(self, array, hint):
        var_name = f"{hint}_{len(self.params)}"
        array = self.np.ascontiguousarray(array, dtype=self.np.float32)
        self.params[var_name] = self.mx.nd.array(array, dtype="float32")
        return self.sym.var(var_name, shape=array.shape, dtype="float32")

    def scale_like(self, array, x_name, axis, hint):
        """A scale / zero point: a Python float (per tensor) or a parameter shaped to broadcast on ``axis``."""
        array = self.np.asarray(array)
        if array.size == 1:
            return float(array.reshape(()).astype(self.np.float32))
        rank = self.rank(x_name)
        shape = [1] * rank
        shape[axis % rank] = array.size
        return self.param(array.reshape(shape), hint)

    def combine(self, x, other, op):
        if isinstance(other, float):  # Symbol's operators: _minus_scalar, _mul_scalar, ... in float32
            return {"sub": x - other, "mul": x * other, "div": x / other, "add": x + other}[op]
        broadcast_ops = {"sub": self.sym.broadcast_sub, "mul": self.sym.broadcast_mul, "div": self.sym.broadcast_div, "add": self.sym.broadcast_add}
        return broadcast_ops[op](x, other)

    # --------------------------------------------------------------------------------------------- ops
    def QuantizeLinear(self, n):
        x = self.value(n["inputs"][0])
        axis = n["attrs"].get("axis", 1)
        scale = self.scale_like(self.const(n["inputs"][1]), n["inputs"][0], axis, "qscale")
        zp_name = n["inputs"][2] if len(n["inputs"]) > 2 and n["inputs"][2] else None
        zp_array = self.const(zp_name) if zp_name else self.np.zeros((), self.np.uint8)
        qmin, qmax = QRANGE[str(zp_array.dtype)]
        v = self.combine(x, scale, "div")
        floor = self.sym.floor(v)
        frac = v - floor
        parity = floor - 2.0 * self.sym.floor(floor * 0.5)  # 0 or 1
        rounded = floor + (frac > 0.5) + (frac == 0.5) * parity  # round half to even, as ONNX
        if self.np.any(zp_array != 0):
            rounded = self.combine(rounded, self.scale_like(zp_array.astype(self.np.float32), n["inputs"][0], axis, "qzp"), "add")
        self.fake_quant += 1
        return self.sym.clip(rounded, a_min=float(qmin), a_max=float(qmax))

    def DequantizeLinear(self, n):
        x = self.value(n["inputs"][0])
        axis = n["attrs"].get("axis", 1)
        zp_name = n["inputs"][2] if len(n["inputs"]) > 2 and n["inputs"][2] else None
        if zp_name and self.np.any(self.const(zp_name) != 0):
            x = self.combine(x, self.scale_like(self.const(zp_name).astype(self.np.float32), n["inputs"][0], axis, "dqzp"), "sub")
        self.fake_quant += 1
        return self.combine(x, self.scale_like(self.const(n["inputs"][1]), n["inputs"][0], axis, "dqscale"), "mul")

    def _spatial(self, n, kernel):
        nd = len(kernel)
        a = n["attrs"]
        strides = a.get("strides", [1] * nd)
        dilations = a.get("dilations", [1] * nd)
        pads = n["resolved_pads"] if "resolved_pads" in n else a.get("pads", [0] * (2 * nd))
        return strides, dilations, pads

    def _pad_input(self, x, pads, nd, value=0.0):
        begin, end = pads[:nd], pads[nd:]
        if begin == end:
            return x, tuple(begin)
        if nd != 2:
            raise Unsupported(f"asymmetric padding of a {nd}-D convolution or pool")
        width = (0, 0, 0, 0, begin[0], end[0], begin[1], end[1])
        return self.sym.pad(x, mode="constant", pad_width=width, constant_value=value), (0, 0)

    def Conv(self, n):
        x = self.value(n["inputs"][0])
        w_name = n["inputs"][1]
        w_shape = self.shapes.get(w_name) or list(self.const(w_name).shape)
        kernel = n["attrs"].get("kernel_shape", w_shape[2:])
        strides, dilations, pads = self._spatial(n, kernel)
        x, pad = self._pad_input(x, pads, len(kernel))
        has_bias = len(n["inputs"]) > 2 and bool(n["inputs"][2])
        args = [x, self.value(w_name)] + ([self.value(n["inputs"][2])] if has_bias else [])
        return self.sym.Convolution(
            *args, kernel=tuple(kernel), stride=tuple(strides), dilate=tuple(dilations), pad=pad,
            num_filter=int(w_shape[0]), num_group=int(n["attrs"].get("group", 1)), no_bias=not has_bias,
            name=n["safe"],
        )

    def _pool(self, n, kind):
        x = self.value(n["inputs"][0])
        kernel = n["attrs"]["kernel_shape"]
        strides, _, pads = self._spatial(n, kernel)
        pad_value = -3.4e38 if kind == "max" else 0.0
        x, pad = self._pad_input(x, pads, len(kernel), pad_value)
        extra = {}
        if kind == "avg":
            extra["count_include_pad"] = bool(n["attrs"].get("count_include_pad", 0))
        convention = "full" if n["attrs"].get("ceil_mode", 0) else "valid"
        return self.sym.Pooling(x, kernel=tuple(kernel), stride=tuple(strides), pad=pad, pool_type=kind,
                                pooling_convention=convention, name=n["safe"], **extra)

    def MaxPool(self, n):
        return self._pool(n, "max")

    def AveragePool(self, n):
        return self._pool(n, "avg")

    def GlobalAveragePool(self, n):
        return self.sym.Pooling(self.value(n["inputs"][0]), kernel=(1, 1), global_pool=True, pool_type="avg", name=n["safe"])

    def GlobalMaxPool(self, n):
        return self.sym.Pooling(self.value(n["inputs"][0]), kernel=(1, 1), global_pool=True, pool_type="max", name=n["safe"])

    def Gemm(self, n):
        a = n["attrs"]
        y = self.sym.dot(self.value(n["inputs"][0]), self.value(n["inputs"][1]),
                         transpose_a=bool(a.get("transA", 0)), transpose_b=bool(a.get("transB", 0)))
        if a.get("alpha", 1.0) != 1.0:
            y = y * float(a["alpha"])
        if len(n["inputs"]) > 2 and n["inputs"][2]:
            c = self.value(n["inputs"][2])
            if a.get("beta", 1.0) != 1.0:
                c = c * float(a["beta"])
            y = self.sym.broadcast_add(y, c)
        return y

    def MatMul(self, n):
        left, right = n["inputs"][:2]
        if self.rank(right) == 2:
            return self.sym.dot(self.value(left), self.value(right))
        if self.rank(left) == self.rank(right):
            return self.sym.linalg.gemm2(self.value(left), self.value(right))
        raise Unsupported(f"MatMul of ranks {self.rank(left)} and {self.rank(right)}")

    def _binary(self, n, op):
        return op(self.value(n["inputs"][0]), self.value(n["inputs"][1]))

    def Add(self, n):
        return self._binary(n, self.sym.broadcast_add)

    def Sub(self, n):
        return self._binary(n, self.sym.broadcast_sub)

    def Mul(self, n):
        return self._binary(n, self.sym.broadcast_mul)

    def Div(self, n):
        return self._binary(n, self.sym.broadcast_div)

    def Pow(self, n):
        return self._binary(n, self.sym.broadcast_power)

    def _variadic(self, n, op):
        out = self.value(n["inputs"][0])
        for name in n["inputs"][1:]:
            out = op(out, self.value(name))
        return out

    def Sum(self, n):
        return self._variadic(n, self.sym.broadcast_add)

    def Min(self, n):
        return self._variadic(n, self.sym.broadcast_minimum)

    def Max(self, n):
        return self._variadic(n, self.sym.broadcast_maximum)

    def _unary(self, fn):
        return lambda n: fn(self.value(n["inputs"][0]))

    def Relu(self, n):
        return self.sym.relu(self.value(n["inputs"][0]), name=n["safe"])

    def LeakyRelu(self, n):
        return self.sym.LeakyReLU(self.value(n["inputs"][0]), act_type="leaky", slope=float(n["attrs"].get("alpha", 0.01)))

    def Sigmoid(self, n):
        return self.sym.sigmoid(self.value(n["inputs"][0]))

    def Tanh(self, n):
        return self.sym.tanh(self.value(n["inputs"][0]))

    def Exp(self, n):
        return self.sym.exp(self.value(n["inputs"][0]))

    def Log(self, n):
        return self.sym.log(self.value(n["inputs"][0]))

    def Sqrt(self, n):
        return self.sym.sqrt(self.value(n["inputs"][0]))

    def Neg(self, n):
        return self.sym.negative(self.value(n["inputs"][0]))

    def Abs(self, n):
        return self.sym.abs(self.value(n["inputs"][0]))

    def Reciprocal(self, n):
        return self.sym.reciprocal(self.value(n["inputs"][0]))

    def Erf(self, n):
        return self.sym.erf(self.value(n["inputs"][0]))

    def HardSigmoid(self, n):
        a = n["attrs"]
        return self.sym.hard_sigmoid(self.value(n["inputs"][0]), alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5)))

    def HardSwish(self, n):
        x = self.value(n["inputs"][0])
        return x * self.sym.hard_sigmoid(x, alpha=1.0 / 6.0, beta=0.5)

    def Clip(self, n):
        low = float(self.const(n["inputs"][1])) if len(n["inputs"]) > 1 and n["inputs"][1] else -3.4e38
        high = float(self.const(n["inputs"][2])) if len(n["inputs"]) > 2 and n["inputs"][2] else 3.4e38
        return self.sym.clip(self.value(n["inputs"][0]), a_min=low, a_max=high)

    def Softmax(self, n):
        return self.sym.softmax(self.value(n["inputs"][0]), axis=int(n["attrs"].get("axis", -1)))

    def LogSoftmax(self, n):
        return self.sym.log_softmax(self.value(n["inputs"][0]), axis=int(n["attrs"].get("axis", -1)))

    def Flatten(self, n):
        axis = int(n["attrs"].get("axis", 1))
        x = self.value(n["inputs"][0])
        if axis == 1:
            return self.sym.flatten(x)
        if axis == 0:
            return self.sym.reshape(x, shape=(1, -1))
        shape = self.shapes.get(n["inputs"][0])
        if shape is None or any(d is None for d in shape[:axis]):
            raise Unsupported(f"Flatten at axis {axis} of a value whose leading dims are unknown")
        lead = 1
        for d in shape[:axis]:
            lead *= d
        return self.sym.reshape(x, shape=(lead, -1))

    def Reshape(self, n):
        if n["attrs"].get("allowzero", 0):
            raise Unsupported("Reshape with allowzero=1")
        target = [int(v) for v in self.const(n["inputs"][1]).reshape(-1)]
        return self.sym.reshape(self.value(n["inputs"][0]), shape=tuple(target))  # 0 copies, -1 infers: as ONNX

    def Transpose(self, n):
        perm = n["attrs"].get("perm")
        x = self.value(n["inputs"][0])
        return self.sym.transpose(x, axes=tuple(perm)) if perm else self.sym.transpose(x)

    def Concat(self, n):
        return self.sym.concat(*[self.value(i) for i in n["inputs"]], dim=int(n["attrs"]["axis"]))

    def _axes(self, n):
        if "axes" in n["attrs"]:
            return [int(a) for a in n["attrs"]["axes"]]
        if len(n["inputs"]) > 1 and n["inputs"][1]:
            return [int(a) for a in self.const(n["inputs"][1]).reshape(-1)]
        return None

    def Squeeze(self, n):
        axes = self._axes(n)
        x = self.value(n["inputs"][0])
        return self.sym.squeeze(x, axis=tuple(axes)) if axes else self.sym.squeeze(x)

    def Unsqueeze(self, n):
        x = self.value(n["inputs"][0])
        rank = self.rank(n["inputs"][0]) + len(self._axes(n))
        for axis in sorted(a % rank for a in self._axes(n)):
            x = self.sym.expand_dims(x, axis=axis)
        return x

    def Identity(self, n):
        return self.sym.identity(self.value(n["inputs"][0]))

    def Dropout(self, n):
        return self.sym.identity(self.value(n["inputs"][0]))

    def Cast(self, n):
        names = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}
        to = int(n["attrs"]["to"])
        if to not in names:
            raise Unsupported(f"Cast to ONNX type {to}")
        return self.sym.cast(self.value(n["inputs"][0]), dtype=names[to])

    def BatchNormalization(self, n):
        gamma, beta, mean, var = (self.value(i) for i in n["inputs"][1:5])  # constants or dequantized ones
        factor = gamma / self.sym.sqrt(var + float(n["attrs"].get("epsilon", 1e-5)))
        shape = (1, -1) + (1,) * (self.rank(n["inputs"][0]) - 2)
        x = self.value(n["inputs"][0])
        shift = beta - mean * factor
        return self.sym.broadcast_add(self.sym.broadcast_mul(x, self.sym.reshape(factor, shape=shape)), self.sym.reshape(shift, shape=shape))

    def LayerNormalization(self, n):
        axis = int(n["attrs"].get("axis", -1))
        rank = self.rank(n["inputs"][0])
        if axis % rank != rank - 1:
            raise Unsupported("LayerNormalization over more than the last axis")
        gamma = self.value(n["inputs"][1])
        beta = self.value(n["inputs"][2]) if len(n["inputs"]) > 2 and n["inputs"][2] else self.param(self.np.zeros(self.const(n["inputs"][1]).shape), "ln_beta")
        return self.sym.LayerNorm(self.value(n["inputs"][0]), gamma, beta, axis=-1, eps=float(n["attrs"].get("epsilon", 1e-5)))

    def _reduce(self, n, op):
        axes = self._axes(n)
        keep = bool(n["attrs"].get("keepdims", 1))
        x = self.value(n["inputs"][0])
        return op(x, axis=tuple(axes), keepdims=keep) if axes else op(x, keepdims=keep)

    def ReduceMean(self, n):
        return self._reduce(n, self.sym.mean)

    def ReduceSum(self, n):
        return self._reduce(n, self.sym.sum)

    def ReduceMax(self, n):
        return self._reduce(n, self.sym.max)

    def Pad(self, n):
        mode = n["attrs"].get("mode", "constant")
        pads = [int(p) for p in self.const(n["inputs"][1]).reshape(-1)]
        value = float(self.const(n["inputs"][2])) if len(n["inputs"]) > 2 and n["inputs"][2] else 0.0
        rank = len(pads) // 2
        if rank not in (4, 5):
            raise Unsupported(f"Pad of a {rank}-D tensor (MXNet pads 4-D and 5-D ones)")
        width = []
        for i in range(rank):
            width += [pads[i], pads[rank + i]]
        return self.sym.pad(self.value(n["inputs"][0]), mode=mode, pad_width=tuple(width), constant_value=value)

    def Gather(self, n):
        indices = self.const(n["inputs"][1])
        index = self.param(indices.astype(self.np.float32), "gather_indices")
        out = self.sym.take(self.value(n["inputs"][0]), index, axis=int(n["attrs"].get("axis", 0)), mode="clip")
        return out

    def Slice(self, n):
        starts, ends = (self.const(i).reshape(-1) for i in n["inputs"][1:3])
        rank = self.rank(n["inputs"][0])
        axes = self.const(n["inputs"][3]).reshape(-1) if len(n["inputs"]) > 3 and n["inputs"][3] else range(len(starts))
        steps = self.const(n["inputs"][4]).reshape(-1) if len(n["inputs"]) > 4 and n["inputs"][4] else [1] * len(starts)
        begin, end, step = [None] * rank, [None] * rank, [None] * rank
        big = 2 ** 31 - 1
        for a, s, e, t in zip(axes, starts, ends, steps):  # noqa: B905 (runs on Python 3.8 too)
            a = int(a) % rank
            begin[a] = int(max(min(int(s), big), -big))
            end[a] = None if int(e) >= big or (int(t) < 0 and int(e) <= -big) else int(e)
            step[a] = int(t)
        return self.sym.slice(self.value(n["inputs"][0]), begin=tuple(begin), end=tuple(end), step=tuple(step))

    def build(self):
        for spec in self.desc["inputs"]:
            self.env[spec["name"]] = self.sym.var(spec["safe"], dtype=spec["dtype"])
        for n in self.desc["nodes"]:
            fn = getattr(self, n["op"], None)
            if fn is None:
                raise Unsupported(f"op {n['op']}")
            out = fn(n)
            self.env[n["outputs"][0]] = out
        outputs = [self.sym.identity(self.value(o), name=self.safe[o]) for o in self.desc["outputs"]]
        return outputs[0] if len(outputs) == 1 else self.sym.Group(outputs)


def main(request_path, reply_path):
    with open(request_path, encoding="utf-8") as f:
        req = json.load(f)
    try:
        import mxnet as mx
        import numpy as np

        with np.load(req["constants"]) as data:
            constants = {req["constant_keys"][k]: data[k] for k in data.files}
        builder = Builder(mx, np, req["graph"], constants)
        symbol = builder.build()
        prefix = req["prefix"]
        symbol.save(prefix + "-symbol.json")
        mx.nd.save(prefix + "-0000.params", {"arg:" + k: v for k, v in builder.params.items()})
        reply = {"ok": True, "fake_quant": builder.fake_quant, "params": len(builder.params), "outputs": None}
        if req.get("check"):
            loaded = mx.sym.load(prefix + "-symbol.json")
            saved = mx.nd.load(prefix + "-0000.params")
            args = {k.split(":", 1)[1]: v for k, v in saved.items()}
            with np.load(req["check"]) as data:
                feeds = {spec["safe"]: mx.nd.array(data[spec["safe"]], dtype=spec["dtype"]) for spec in req["graph"]["inputs"]}
            executor = loaded.bind(mx.cpu(), args={**args, **feeds}, grad_req="null")
            outputs = [o.asnumpy() for o in executor.forward(is_train=False)]
            np.savez(req["check_out"], *outputs)
            reply["outputs"] = req["check_out"]
    except Exception as exc:  # reported to the parent, which raises a ConversionError
        reply = {
            "ok": False,
            "kind": "unsupported" if type(exc).__name__ == "Unsupported" else "error",
            "message": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=6),
        }
    with open(reply_path, "w", encoding="utf-8") as f:
        json.dump(reply, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
