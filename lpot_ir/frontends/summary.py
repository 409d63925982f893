"""``lpot summarize``: a model's likely input and output nodes with shapes and dtypes, in every format.

For frozen TensorFlow graphs this is what TensorFlow's ``summarize_graph`` tool told quantization users:
inputs are ``Placeholder`` nodes, outputs are nodes that nothing consumes (constants, NoOp, Assert and
save/restore ops excluded), so ``model.inputs`` / ``model.outputs`` can be filled in.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import onnx

from lpot_ir.errors import ModelLoadError
from lpot_ir.frontends.detect import detect_framework
from lpot_ir.frontends.mxnet import find_symbol_and_params, mxnet_param_names
from lpot_ir.frontends.pytorch import load_torchscript
from lpot_ir.frontends.tensorflow import graph_def_io, load_graph_def
from lpot_ir.optional import import_tensorflow

__all__ = ["Summary", "TensorInfo", "summarize", "mxnet_param_names"]

logger = logging.getLogger(__name__)

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output: name, shape (``None``/str for unknown or symbolic dims), dtype, producing op."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str | None
    op: str | None = None

    def describe(self) -> str:
        """``name  shape=(?, 3, 224, 224)  dtype=float32  op=Placeholder``."""
        shape = (
            "unknown"
            if self.shape is None
            else "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"
        )
        text = f"{self.name}  shape={shape}  dtype={self.dtype or 'unknown'}"
        return text + (f"  op={self.op}" if self.op else "")


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`summarize` found."""

    framework: str
    kind: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()

    def to_text(self) -> str:
        """The report ``lpot summarize`` prints."""
        lines = [
            f"Model kind: {self.kind} ({self.framework})",
            f"Found {len(self.inputs)} possible input(s):",
        ]
        lines += [f"  {t.describe()}" for t in self.inputs]
        lines.append(f"Found {len(self.outputs)} possible output(s):")
        lines += [f"  {t.describe()}" for t in self.outputs]
        if self.op_counts:
            total = sum(c for _, c in self.op_counts)
            lines.append(f"{total} nodes; op types: " + ", ".join(f"{op} {c}" for op, c in self.op_counts))
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(path_or_model: Any, *, framework: str | None = None) -> Summary:
    """Likely inputs and outputs (with shapes and dtypes) of a model in any supported format.

    Raises:
        ModelLoadError: the path does not exist or is not a model.
        ConversionError: the framework is not installed.
    """
    kind = detect_framework(path_or_model, framework)
    is_path = isinstance(path_or_model, (str, os.PathLike))
    if kind == "onnx":
        return _summarize_onnx(path_or_model)
    if kind == "tensorflow":
        if is_path and Path(path_or_model).is_dir():
            return _summarize_saved_model(Path(path_or_model))
        if is_path:
            return _summarize_graph_def(load_graph_def(path_or_model))
        if type(path_or_model).__name__ == "GraphDef":
            return _summarize_graph_def(path_or_model)
    if kind == "keras":
        return _summarize_keras(path_or_model)
    if kind == "pytorch":
        return _summarize_torch(path_or_model)
    if kind == "mxnet" and is_path:
        return _summarize_mxnet(Path(path_or_model))
    raise ModelLoadError(
        f"lpot summarize reads model files and folders; got a {kind} object of type {type(path_or_model).__qualname__}. "
        "Save it to a file first."
    )


_ONNX_DTYPES = {v: onnx.helper.tensor_dtype_to_np_dtype(v).name for v in (1, 2, 3, 5, 6, 7, 9, 10, 11)}


def _summarize_onnx(src: Any) -> Summary:
    if isinstance(src, onnx.ModelProto):
        proto = src
    else:
        try:
            proto = (
                onnx.load(os.fspath(src), load_external_data=False)
                if not isinstance(src, bytes)
                else onnx.load_from_string(src)
            )
        except Exception as exc:
            raise ModelLoadError(f"{src!s:.200} could not be read as an ONNX model ({exc}).") from None
    inits = {i.name for i in proto.graph.initializer}
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}

    def info(vi: onnx.ValueInfoProto, op: str | None) -> TensorInfo:
        tt = vi.type.tensor_type
        shape: tuple[Dim, ...] | None = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            )
        return TensorInfo(
            vi.name, shape, _ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)) if tt.elem_type else None, op
        )

    counts = collections.Counter(n.op_type for n in proto.graph.node)
    return Summary(
        framework="onnx",
        kind="ONNX model",
        inputs=tuple(info(i, None) for i in proto.graph.input if i.name not in inits),
        outputs=tuple(info(o, producers.get(o.name)) for o in proto.graph.output),
        op_counts=tuple(counts.most_common()),
        notes=(f"opset {next((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')), '?')}",),
    )


def _summarize_graph_def(graph_def: Any) -> Summary:
    tf = import_tensorflow()
    ins, outs = graph_def_io(graph_def)
    shapes: dict[str, tuple[tuple[Dim, ...] | None, str | None]] = {}
    try:
        with tf.Graph().as_default() as g:
            tf.import_graph_def(graph_def, name="")
        for n in [*ins, *outs]:
            op = g.get_operation_by_name(n.name)
            if op.outputs:
                t = op.outputs[0]
                dims = None if t.shape.rank is None else tuple(t.shape.as_list())
                shapes[n.name] = (dims, t.dtype.name)
    except Exception as exc:  # a graph TF cannot import still gets names and op types
        logger.debug("could not import the GraphDef for shapes: %s", exc)
    counts = collections.Counter(n.op for n in graph_def.node)

    def info(n: Any) -> TensorInfo:
        shape, dtype = shapes.get(n.name, (None, None))
        return TensorInfo(n.name, shape, dtype, n.op)

    return Summary(
        framework="tensorflow",
        kind="TensorFlow frozen GraphDef",
        inputs=tuple(info(n) for n in ins),
        outputs=tuple(info(n) for n in outs),
        op_counts=tuple(counts.most_common()),
        notes=("use these names as model.inputs / model.outputs in the YAML if the guess is wrong",),
    )


def _spec_info(name: str, spec: Any, op: str | None = None) -> TensorInfo:
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorInfo(name, shape, spec.dtype.name, op)


def _summarize_saved_model(path: Path) -> Summary:
    tf = import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"{str(path)!r} could not be loaded as a SavedModel ({type(exc).__name__})."
        ) from None
    sigs = dict(loaded.signatures)
    if not sigs:
        raise ModelLoadError(
            f"SavedModel {str(path)!r} has no signatures; save it with signatures=... to quantize it."
        )
    name = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
    fn = sigs[name]
    _, kw = fn.structured_input_signature
    outputs = fn.structured_outputs
    return Summary(
        framework="tensorflow",
        kind="TensorFlow SavedModel",
        inputs=tuple(_spec_info(k, v) for k, v in kw.items()),
        outputs=tuple(
            _spec_info(str(k), v)
            for k, v in (outputs.items() if isinstance(outputs, dict) else enumerate(outputs))
        ),
        notes=(f"signature {name!r} (of {sorted(sigs)})",),
    )


def _summarize_keras(src: Any) -> Summary:
    import_tensorflow()
    import keras

    model = keras.models.load_model(str(src), compile=False) if isinstance(src, (str, os.PathLike)) else src

    def info(t: Any) -> TensorInfo:
        layer = getattr(t, "_keras_history", None)
        op = type(layer[0]).__name__ if layer else None
        return TensorInfo(getattr(t, "name", "?"), tuple(t.shape), str(getattr(t.dtype, "name", t.dtype)), op)

    counts = collections.Counter(type(layer).__name__ for layer in model.layers)
    return Summary(
        framework="keras",
        kind=f"Keras model {model.name!r}",
        inputs=tuple(info(t) for t in model.inputs),
        outputs=tuple(info(t) for t in model.outputs),
        op_counts=tuple(counts.most_common()),
    )


def _summarize_torch(src: Any) -> Summary:
    notes = [
        "PyTorch models store no input shapes; the calibration data's first batch fixes them at conversion"
    ]
    if isinstance(src, (str, os.PathLike)):
        module = load_torchscript(src)
        graph = module.graph
        inputs = tuple(
            TensorInfo(v.debugName().split(".")[0], None, str(v.type()), None)
            for v in list(graph.inputs())[1:]
        )
        outputs = tuple(TensorInfo(v.debugName(), None, str(v.type()), None) for v in graph.outputs())
        kind = "TorchScript module"
    else:
        module = src
        params = inspect.signature(module.forward).parameters.values()
        inputs = tuple(
            TensorInfo(p.name, None, None, None)
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        outputs = ()
        kind = f"torch.nn.Module {type(module).__qualname__}"
    counts = collections.Counter(
        getattr(m, "original_name", type(m).__name__)  # TorchScript keeps the Python class name there
        for n, m in module.named_modules()
        if n and not any(True for _ in m.children())
    )
    return Summary("pytorch", kind, inputs, outputs, tuple(counts.most_common()), tuple(notes))


def _summarize_mxnet(path: Path) -> Summary:
    symbol, params = find_symbol_and_params(path, None)
    try:
        graph = json.loads(symbol.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{str(symbol)!r} is not a readable MXNet symbol JSON ({exc}).") from None
    nodes = graph["nodes"]
    stored = mxnet_param_names(params) if params else set()
    inputs = []
    for idx in graph.get("arg_nodes", []):
        node = nodes[idx]
        if node["name"] in stored:
            continue
        attrs = node.get("attrs", node.get("attr", {})) or {}
        shape = (
            tuple(int(x) for x in attrs["__shape__"].strip("()[] ").split(",") if x.strip())
            if "__shape__" in attrs
            else None
        )
        inputs.append(
            TensorInfo(
                node["name"], shape, attrs.get("__dtype__") and str(attrs["__dtype__"]) or "float32", "null"
            )
        )
    outputs = tuple(
        TensorInfo(nodes[h[0]]["name"] + "_output", None, None, nodes[h[0]]["op"])
        for h in graph.get("heads", [])
    )
    counts = collections.Counter(n["op"] for n in nodes if n["op"] != "null")
    notes = [f"parameters: {params.name}" if params else "no .params file found beside the symbol file"]
    notes.append("MXNet symbol files store no input shapes; the calibration data fixes them at conversion")
    return Summary(
        "mxnet", "MXNet symbol + params", tuple(inputs), outputs, tuple(counts.most_common()), tuple(notes)
    )
