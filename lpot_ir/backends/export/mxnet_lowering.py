"""Lower a (Q/DQ) ONNX model to an MXNet symbol + params, built and checked in the isolated MXNet environment.

MXNet 1.9.1 cannot share lpot-ir's environment (see :mod:`lpot_ir.frontends.mxnet`), so this module
describes the graph as data (nodes in order, value shapes from ONNX shape inference, constants in an
``.npz``) and runs :mod:`lpot_ir.backends.export._mxnet_lowering_script` with the isolated environment's
interpreter: MXNet itself builds the ``mx.sym`` graph, writes ``<prefix>-symbol.json`` and
``<prefix>-0000.params`` (``HybridBlock.export``'s naming, loadable with ``mx.sym.load`` +
``mx.nd.load``, ``SymbolBlock.imports`` or ``mx.model.load_checkpoint``), loads them back and runs check
inputs, whose outputs are compared here with ONNX Runtime's.

**Fake quantization.** MXNet's INT8 operators (``quantized_conv``, ``quantized_fully_connected``) take
tensors quantized by a symmetric min/max range, with uint8 only for non-negative data; ONNX Q/DQ models
carry a scale and any zero point, per tensor or per channel, which those operators cannot express. So the
export runs in FP32 arithmetic and keeps the INT8 rounding: ``QuantizeLinear`` becomes
``clip(round_half_even(x / scale) + zero_point)`` and ``DequantizeLinear`` ``(q - zero_point) * scale``,
both ops in the symbol graph; quantized weights stay int8/uint8 in the params (the model stays a quarter of
the FP32 size) and are cast when used. int32 biases are dequantized into float32 params at export.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from lpot_ir.backends.export.graph import LoweredNode, as_model_proto, spatial_pads
from lpot_ir.backends.mxnet_env import ensure_mxnet_env
from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.backends.onnxruntime.synthetic import synthetic_inputs
from lpot_ir.errors import ConversionError

__all__ = ["MXNET_OPS", "MXNetExport", "export_to_mxnet", "describe_graph"]

logger = logging.getLogger(__name__)

_SCRIPT = Path(__file__).with_name("_mxnet_lowering_script.py")

MXNET_OPS = frozenset(
    {
        "QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow",
        "Sum", "Min", "Max", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Neg", "Abs",
        "Reciprocal", "Erf", "HardSigmoid", "HardSwish", "Clip", "Softmax", "LogSoftmax", "MaxPool",
        "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Concat",
        "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast", "BatchNormalization", "LayerNormalization",
        "ReduceMean", "ReduceSum", "ReduceMax", "Pad", "Gather", "Slice", "Constant",
    }
)  # fmt: skip
"""ONNX ops the MXNet lowering builds (default domain); anything else makes the export fail with its name."""


@dataclasses.dataclass(frozen=True)
class MXNetExport:
    """What :func:`export_to_mxnet` wrote and how it compares with ONNX Runtime.

    Attributes:
        symbol: ``<prefix>-symbol.json``.
        params: ``<prefix>-0000.params``.
        input_names: the MXNet data names, in the ONNX inputs' order (ONNX names made MXNet-safe).
        output_names: the symbol's outputs.
        fake_quant: Q/DQ ops emulated in FP32 (0: an FP32 model).
        max_abs_diff: largest |MXNet - ONNX Runtime| over the check inputs (ORT as it runs the model).
        max_abs_diff_reference: the same against ORT with graph optimizations off (the ONNX reference
            semantics of each op, without the fused integer kernels).
        notes: what the export did.
    """

    symbol: Path
    params: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    fake_quant: int
    max_abs_diff: float | None = None
    max_abs_diff_reference: float | None = None
    notes: tuple[str, ...] = ()


def _safe_names(names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        if name in out:
            continue
        base = re.sub(r"[^A-Za-z0-9_.]", "_", name).strip("_") or "value"
        if base[0].isdigit():
            base = "v_" + base
        candidate, k = base, 1
        while candidate in used:
            candidate, k = f"{base}_{k}", k + 1
        used.add(candidate)
        out[name] = candidate
    return out


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if attr.type == onnx.AttributeProto.TENSOR:
            continue  # Constant's value: folded into the constants
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, list):
            value = [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
        out[attr.name] = value
    return out


def describe_graph(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str]]:
    """The graph as data for the lowering script: ``(description, constants, notes)``.

    Raises:
        ConversionError: ops the MXNet lowering does not build (each named with its nodes), or subgraphs.
    """
    proto = as_model_proto(model)
    unsupported: dict[str, list[str]] = {}
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in MXNET_OPS or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
        ):
            unsupported.setdefault(node.op_type, []).append(node.name or node.output[0])
    if unsupported:
        listing = "; ".join(f"{op} (node {', '.join(repr(n) for n in names[:3])})" for op, names in unsupported.items())
        raise ConversionError(
            f"The model has ops the MXNet lowering does not build: {listing}. Run the Q/DQ ONNX model with ONNX "
            "Runtime, or lower it to PyTorch / TensorFlow (export('pytorch') / export('tensorflow'))."
        )
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:  # shape inference raises onnx's own errors; ranks then come from constants only
        logger.warning("MXNet export: ONNX shape inference failed (%s); only constant shapes are known", exc)
        inferred = proto
    graph = inferred.graph
    shapes: dict[str, list[int | None]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    notes: list[str] = []
    nodes: list[dict[str, Any]] = []
    folded = 0
    for index, node in enumerate(graph.node):
        attrs = _attrs(node)
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is None:
                raise ConversionError(f"Constant node {node.name!r}: only 'value' tensors are read by the MXNet lowering.")
            constants[node.output[0]] = numpy_helper.to_array(value.t)
            continue
        if (
            node.op_type == "DequantizeLinear"
            and node.input[0] in constants
            and constants[node.input[0]].dtype == np.int32
            and all(i in constants for i in node.input[1:] if i)
        ):  # int32 biases: dequantized once, as ORT computes them (float32(q - zp) * scale)
            q = constants[node.input[0]].astype(np.int64)
            scale = constants[node.input[1]].astype(np.float32)
            zp = constants[node.input[2]].astype(np.int64) if len(node.input) > 2 and node.input[2] else 0
            constants[node.output[0]] = ((q - zp).astype(np.float32) * scale).astype(np.float32)
            folded += 1
            continue
        entry = {
            "op": node.op_type,
            "name": node.name or f"{node.op_type}_{index}",
            "inputs": list(node.input),
            "outputs": list(node.output),
            "attrs": attrs,
        }
        if node.op_type in ("Conv", "MaxPool", "AveragePool"):
            shape = shapes.get(node.input[0])
            kernel = attrs.get("kernel_shape")
            if kernel is None and node.op_type == "Conv":
                weight = constants.get(node.input[1])
                kernel = list(weight.shape[2:]) if weight is not None else None
            if kernel is not None:
                spatial = list(shape[2:]) if shape else [None] * len(kernel)
                nd = len(kernel)
                lowered = LoweredNode(node.op_type, entry["name"], tuple(node.input), tuple(node.output), attrs)
                entry["resolved_pads"] = spatial_pads(
                    lowered, spatial, kernel, attrs.get("strides", [1] * nd), attrs.get("dilations", [1] * nd)
                )
        nodes.append(entry)
    if folded:
        notes.append(f"dequantized {folded} int32 bias(es) into float32 params")
    names = [vi.name for vi in graph.input] + list(constants) + [o for n in nodes for o in n["outputs"]] + [n["name"] for n in nodes]
    safe = _safe_names(names)
    for n in nodes:
        n["safe"] = safe[n["name"]]
    inputs = []
    for vi in graph.input:
        if vi.name in constants:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        inputs.append({"name": vi.name, "safe": safe[vi.name], "dtype": np.dtype(dtype).name})
    description = {
        "inputs": inputs,
        "outputs": [o.name for o in graph.output],
        "nodes": nodes,
        "shapes": shapes,
        "safe_names": safe,
    }
    return description, constants, notes


def _prefix(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    for suffix in ("-symbol.json", "-0000.params", ".json", ".params"):
        if text.endswith(suffix):
            return Path(text[: -len(suffix)])
    return Path(text)


def export_to_mxnet(
    qdq_model: Any,
    path: str | os.PathLike[str],
    *,
    check_inputs: Mapping[str, np.ndarray] | None = None,
    check: bool = True,
    timeout: float = 600.0,
) -> MXNetExport:
    """Write ``qdq_model`` as ``<path>-symbol.json`` + ``<path>-0000.params`` for MXNet 1.9.

    Args:
        qdq_model: a ModelProto, bytes, path, ``onnx_ir.Model`` or a ``QuantizedModel`` (its ``.model``).
        path: the prefix (``out/net`` writes ``out/net-symbol.json`` and ``out/net-0000.params``); a path
            ending in ``-symbol.json`` or ``.params`` is taken as that prefix.
        check_inputs: ``{ONNX input name: array}`` run by MXNet after loading the files back and by ONNX
            Runtime here (default: synthetic inputs of batch 2 when ``check``).
        check: load the written files in MXNet, run them and compare with ONNX Runtime.
        timeout: seconds allowed for the MXNet subprocess.

    Returns:
        :class:`MXNetExport`: the files, the names, the number of emulated Q/DQ ops and the agreement.

    Raises:
        ConversionError: ops the lowering does not build, or MXNet failed (the isolated environment cannot
            be created, or it rejected the graph); the message says which.
    """
    proto = as_model_proto(qdq_model)
    description, constants, notes = describe_graph(proto)
    if check and check_inputs is None:
        check_inputs = synthetic_inputs(proto, batch_size=2, seed=0)
    prefix = _prefix(path)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    python = ensure_mxnet_env()
    with tempfile.TemporaryDirectory(prefix=f".{prefix.name}.", dir=prefix.parent) as tmp:
        folder = Path(tmp)
        keys = {f"c{i}": name for i, name in enumerate(constants)}
        np.savez(folder / "constants.npz", **{k: constants[name] for k, name in keys.items()})  # type: ignore[arg-type]
        request: dict[str, Any] = {
            "graph": description,
            "constants": str(folder / "constants.npz"),
            "constant_keys": keys,
            "prefix": str(folder / "model"),
        }
        if check_inputs is not None:
            safe = description["safe_names"]
            arrays = {safe[name]: np.asarray(value) for name, value in check_inputs.items() if name in safe}
            np.savez(folder / "check.npz", **arrays)  # type: ignore[arg-type]
            request.update(check=str(folder / "check.npz"), check_out=str(folder / "check_out.npz"))
        (folder / "request.json").write_text(json.dumps(request))
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [str(python), "-I", str(_SCRIPT), str(folder / "request.json"), str(folder / "reply.json")],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ConversionError(f"The MXNet lowering subprocess did not finish in {timeout:.0f} s.") from None
        reply_path = folder / "reply.json"
        if not reply_path.exists():
            tail = " ".join(proc.stderr.strip().splitlines()[-2:])
            raise ConversionError(f"The MXNet lowering subprocess ({python}) crashed (exit {proc.returncode}): {tail}")
        reply = json.loads(reply_path.read_text())
        if not reply["ok"]:
            what = "could not build" if reply.get("kind") == "unsupported" else "failed on"
            raise ConversionError(f"MXNet {what} the model: {reply['message'][:500]}")
        outputs = None
        if reply.get("outputs"):
            with np.load(reply["outputs"]) as data:
                outputs = [data[f"arr_{i}"] for i in range(len(data.files))]
        symbol, params = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
        os.replace(folder / "model-symbol.json", symbol)
        os.replace(folder / "model-0000.params", params)
    seconds = time.monotonic() - start
    fake_quant = int(reply["fake_quant"])
    if fake_quant:
        notes.append(
            f"MXNet has no INT8 kernel for ONNX's scale/zero-point quantization: {fake_quant} QuantizeLinear/"
            "DequantizeLinear ops run in FP32 arithmetic with the INT8 rounding kept (fake quantization); "
            "quantized weights are stored int8/uint8"
        )
        logger.warning("MXNet export: %s", notes[-1])
    notes.append(f"built, saved and reloaded with MXNet 1.9.1 in the isolated environment in {seconds:.1f} s")
    diff = reference = None
    if outputs is not None and check_inputs is not None:
        diff, reference = _agreement(proto, dict(check_inputs), outputs)
        notes.append(f"on the check inputs: max |MXNet - ORT| = {diff:.3g} ({reference:.3g} against ORT's reference semantics)")
    logger.info("wrote MXNet symbol %s and params %s", symbol, params)
    safe = description["safe_names"]
    return MXNetExport(
        symbol=symbol,
        params=params,
        input_names=tuple(spec["safe"] for spec in description["inputs"]),
        output_names=tuple(safe[o] for o in description["outputs"]),
        fake_quant=fake_quant,
        max_abs_diff=diff,
        max_abs_diff_reference=reference,
        notes=tuple(notes),
    )


def _agreement(proto: onnx.ModelProto, feed: dict[str, np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    results = []
    for level in ("all", "disable"):
        session = make_session(proto, intra_op_threads=1, optimization_level=level)
        expected = session.run(None, {k: v for k, v in feed.items() if k in {i.name for i in session.get_inputs()}})
        if len(expected) != len(outputs):
            raise ConversionError(f"MXNet gave {len(outputs)} output(s) where ONNX Runtime gives {len(expected)}.")
        results.append(
            max(
                float(np.max(np.abs(np.asarray(e, np.float64) - np.asarray(o, np.float64)))) if np.size(e) else 0.0
                for e, o in zip(expected, outputs, strict=True)
            )
        )
    return results[0], results[1]
