"""TensorFlow / Keras frontend: SavedModel, frozen GraphDef ``.pb``, Keras model or file, ``tf.function``
-> ONNX with tf2onnx, with ONNX node -> TensorFlow op name (Keras: layer name).

tf2onnx's ``from_keras`` does not handle Keras 3 models, so a Keras model is first exported to a
SavedModel in a temporary folder (``model.export``) and converted from there. Input and output tensors
are renamed from TensorFlow's ``name:0`` to ``name`` (SavedModel signature names), so feeds are
``{"image": array}``.

Framework names: tf2onnx names an ONNX node after the TensorFlow op it came from, adding ``__N`` to
helper nodes it creates; helper nodes map to the TensorFlow op whose output they compute or whose name
they extend. For Keras models the name is the layer name (``conv1``) when the op lives in a layer.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends.base import ConvertedModel, graph_io_names
from lpot_ir.optional import import_tensorflow

__all__ = [
    "convert_tensorflow",
    "convert_keras",
    "graph_def_io",
    "load_graph_def",
    "import_tensorflow",
    "SKIPPED_OUTPUT_OPS",
]

logger = logging.getLogger(__name__)

SKIPPED_OUTPUT_OPS = frozenset(
    {
        "Const",
        "NoOp",
        "Assert",
        "Placeholder",
        "PlaceholderWithDefault",
        "VariableV2",
        "Variable",
        "VarHandleOp",
        "Assign",
        "AssignVariableOp",
        "SaveV2",
        "RestoreV2",
        "SaveSlices",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "StringJoin",
        "ReadVariableOp",
        "Identity",
        "IdentityN",
    }
)
"""Ops that summarize_graph never reports as outputs when nothing consumes them (``Identity`` only
when its input is a Const or variable read, see :func:`graph_def_io`)."""

_SUFFIX_RE = re.compile(r"__\d+$")


def _import_tf2onnx() -> Any:
    import_tensorflow()
    try:
        import tf2onnx
    except ImportError:
        raise ConversionError(
            "Converting TensorFlow models needs tf2onnx: pip install 'tf2onnx==1.17.0'."
        ) from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx


def load_graph_def(path: str | Path) -> Any:
    """Read a frozen GraphDef from a binary ``.pb`` or text ``.pbtxt`` file.

    Raises:
        ModelLoadError: the file is not a GraphDef.
    """
    tf = import_tensorflow()

    graph_def = tf.compat.v1.GraphDef()
    data = Path(path).read_bytes()
    try:
        if str(path).endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), graph_def)
        else:
            graph_def.ParseFromString(data)
    except (DecodeError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise ModelLoadError(
            f"{str(path)!r} is not a TensorFlow frozen GraphDef ({exc}). A .pb model must be a frozen graph "
            "(tf.compat.v1.graph_util.convert_variables_to_constants); for a SavedModel pass its folder."
        ) from None
    if not graph_def.node:
        raise ModelLoadError(f"{str(path)!r} holds a GraphDef with no nodes; it is not a model.")
    return graph_def


def graph_def_io(graph_def: Any) -> tuple[list[Any], list[Any]]:
    """Likely input and output nodes of a frozen graph, the way TensorFlow's summarize_graph finds them.

    Inputs are ``Placeholder`` nodes. Outputs are nodes that no other node consumes (data or control
    edge), excluding constants, variables, NoOp, Assert and save/restore ops.

    Returns:
        ``(input NodeDefs, output NodeDefs)`` in graph order.
    """
    consumed: set[str] = set()
    for node in graph_def.node:
        for name in node.input:
            consumed.add(name.lstrip("^").split(":")[0])
    by_name = {n.name: n for n in graph_def.node}
    inputs = [n for n in graph_def.node if n.op == "Placeholder"]
    outputs = []
    for n in graph_def.node:
        if n.name in consumed or n.op in ("Const", "NoOp", "Assert", "Placeholder", "PlaceholderWithDefault"):
            continue
        if n.op in SKIPPED_OUTPUT_OPS and n.op not in ("Identity", "IdentityN"):
            continue
        if n.op in ("Identity", "IdentityN"):
            src = by_name.get(n.input[0].lstrip("^").split(":")[0]) if n.input else None
            if src is None or src.op in ("Const", "VariableV2", "VarHandleOp", "ReadVariableOp"):
                continue
        outputs.append(n)
    return inputs, outputs


@contextlib.contextmanager
def _capture_unsupported() -> Any:
    """Collect tf2onnx's ``Unsupported ops`` log records (it goes on with continue_on_error)."""
    found: list[str] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Unsupported ops"):
                found.append(record.getMessage())

    handler = _Handler(level=logging.ERROR)
    log = logging.getLogger("tf2onnx")
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False  # tf2onnx's own error lines would reach the user's console; we raise instead
    try:
        yield found
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _graph_def_to_onnx(
    graph_def: Any,
    input_names: Sequence[str],
    output_names: Sequence[str],
    rename: Mapping[str, str],
    *,
    opset: int,
    name: str,
) -> onnx.ModelProto:
    tf2onnx = _import_tf2onnx()
    with _capture_unsupported() as unsupported:
        try:
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                name=name,
                input_names=list(input_names),
                output_names=list(output_names),
                opset=opset,
                tensors_to_rename=dict(rename),
            )
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(
                f"tf2onnx could not convert the TensorFlow graph {name!r} (inputs {list(input_names)}, outputs "
                f"{list(output_names)}): {type(exc).__name__}: {text}. Check the input/output node names "
                "(lpot summarize MODEL lists them) or export the model to ONNX yourself."
            ) from None
    bad = [n for n in proto.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]
    if bad or unsupported:
        by_type: dict[str, list[str]] = collections.defaultdict(list)
        for n in bad:
            by_type[n.op_type].append(n.name)
        listing = "; ".join(
            f"{op} (TensorFlow node {', '.join(repr(x) for x in names[:3])})" for op, names in by_type.items()
        )
        if not listing:
            listing = "; ".join(unsupported)
        raise ConversionError(
            f"TensorFlow op(s) not supported by tf2onnx at opset {opset}: {listing}. Replace them in the model, "
            "raise the opset, or cut the graph before them with model.inputs/model.outputs in the YAML."
        )
    return proto


def _finish(
    proto: onnx.ModelProto,
    framework: str,
    tf_names: Iterable[str],
    notes: list[str],
    *,
    dynamic_batch: bool,
    layer_names: Iterable[str] = (),
) -> ConvertedModel:
    if dynamic_batch:
        _name_batch_axis(proto)
    name_map = tf_name_map(proto, set(tf_names), layer_names)
    ins, outs = graph_io_names(proto)
    notes.append(f"converted with tf2onnx to opset {_opset(proto)}: {len(proto.graph.node)} ONNX nodes")
    return ConvertedModel(
        model=proto,
        framework=framework,
        name_map=name_map,
        input_names=ins,
        output_names=outs,
        notes=tuple(notes),
    )


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """Give unknown leading dims of graph inputs/outputs the symbolic name ``batch`` (fixed dims stay)."""
    for vi in [*proto.graph.input, *proto.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def tf_name_map(
    proto: onnx.ModelProto, tf_names: set[str], layer_names: Iterable[str] = ()
) -> dict[str, str]:
    """ONNX node name -> TensorFlow op name (or Keras layer name) for a tf2onnx-converted model."""
    layers = sorted(set(layer_names), key=len, reverse=True)
    layer_re = [(lay, re.compile(rf"(^|/){re.escape(lay)}(_\d+)?(/|$)")) for lay in layers]
    out: dict[str, str] = {}
    for node in proto.graph.node:
        tf_name = None
        for cand in (node.name, _SUFFIX_RE.sub("", node.name)):
            if cand in tf_names:
                tf_name = cand
                break
        if tf_name is None:
            for o in node.output:
                base = o.rsplit(":", 1)[0]
                if base in tf_names:
                    tf_name = base
                    break
        if tf_name is None:
            stem = _SUFFIX_RE.sub("", node.name)
            tf_name = next((t for t in _prefixes(stem) if t in tf_names), node.name)
        if layer_re:
            layer = next((lay for lay, rx in layer_re if rx.search(tf_name)), None)
            if layer is not None:
                tf_name = layer
        out[node.name] = tf_name
    return out


def _prefixes(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _strip_port(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def convert_tensorflow(
    model: Any,
    *,
    example_inputs: Any = None,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> ConvertedModel:
    """Convert a SavedModel folder, a frozen ``.pb``/``.pbtxt`` file, a ``GraphDef`` or a ``tf.function``.

    Args:
        model: the model (path or object).
        example_inputs: for a ``tf.function`` without ``input_signature``: one example batch (array or
            tuple of arrays) that fixes dtypes and ranks.
        inputs: frozen graphs only: input node names (default: every Placeholder).
        outputs: frozen graphs only: output node names (default: nodes nothing consumes).
        opset: ONNX opset.
        dynamic_batch: name unknown leading dims ``batch``.

    Raises:
        ConversionError: unsupported ops (named with their TensorFlow node names), no inputs/outputs found.
        ModelLoadError: a path that is not a TensorFlow model.
    """
    tf = import_tensorflow()
    notes: list[str] = []
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir():
            return _convert_saved_model(path, opset=opset, dynamic_batch=dynamic_batch, notes=notes)
        graph_def = load_graph_def(path)
        notes.append(f"read frozen GraphDef {path.name} ({len(graph_def.node)} TensorFlow nodes)")
        return _convert_graph_def(
            graph_def, inputs, outputs, opset=opset, dynamic_batch=dynamic_batch, notes=notes
        )
    if isinstance(model, tf.compat.v1.GraphDef):
        return _convert_graph_def(
            model, inputs, outputs, opset=opset, dynamic_batch=dynamic_batch, notes=notes
        )
    if hasattr(model, "get_concrete_function"):
        return _convert_function(model, example_inputs, opset=opset, dynamic_batch=dynamic_batch, notes=notes)
    raise ConversionError(
        f"The TensorFlow frontend takes a SavedModel folder, a frozen .pb file, a GraphDef, a tf.function or a "
        f"Keras model; got {type(model).__qualname__}. Save a tf.Module with tf.saved_model.save(module, dir) "
        "and pass the folder."
    )


def _convert_saved_model(
    path: Path,
    *,
    opset: int,
    dynamic_batch: bool,
    notes: list[str],
    framework: str = "tensorflow",
    layer_names: Iterable[str] = (),
) -> ConvertedModel:
    _import_tf2onnx()
    from tf2onnx import tf_loader

    try:
        graph_def, ins, outs, rename = tf_loader.from_saved_model(
            str(path), None, None, return_tensors_to_rename=True
        )
    except Exception as exc:
        raise ModelLoadError(
            f"{str(path)!r} could not be loaded as a TensorFlow SavedModel with a 'serve' signature "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}). Save it with "
            "tf.saved_model.save(module, dir, signatures=...) or keras_model.export(dir)."
        ) from None
    notes.append(
        f"loaded SavedModel {path.name}, signature 'serving_default': inputs {list(rename.get(i, i) for i in ins)}"
    )
    proto = _graph_def_to_onnx(graph_def, ins, outs, rename, opset=opset, name=path.name)
    return _finish(
        proto,
        framework,
        (n.name for n in graph_def.node),
        notes,
        dynamic_batch=dynamic_batch,
        layer_names=layer_names,
    )


def _convert_graph_def(
    graph_def: Any,
    inputs: Sequence[str] | None,
    outputs: Sequence[str] | None,
    *,
    opset: int,
    dynamic_batch: bool,
    notes: list[str],
) -> ConvertedModel:
    found_in, found_out = graph_def_io(graph_def)
    in_names = [_strip_port(i) for i in inputs] if inputs else [n.name for n in found_in]
    out_names = [_strip_port(o) for o in outputs] if outputs else [n.name for n in found_out]
    if not in_names or not out_names:
        raise ConversionError(
            "Could not find the frozen graph's "
            + ("input Placeholders" if not in_names else "output nodes")
            + "; give them in the YAML as model.inputs / model.outputs (lpot summarize MODEL lists candidates)."
        )
    known = {n.name for n in graph_def.node}
    missing = [n for n in [*in_names, *out_names] if n not in known]
    if missing:
        raise ConversionError(
            f"Node(s) {missing} given as model.inputs/model.outputs are not in the frozen graph. "
            "lpot summarize MODEL lists the graph's likely inputs and outputs."
        )
    if not inputs:
        notes.append(f"inputs found automatically (Placeholders): {in_names}")
    if not outputs:
        notes.append(f"outputs found automatically (nodes nothing consumes): {out_names}")
    tensors_in = [f"{n}:0" for n in in_names]
    tensors_out = [f"{n}:0" for n in out_names]
    rename = {t: t[:-2] for t in [*tensors_in, *tensors_out]}
    proto = _graph_def_to_onnx(graph_def, tensors_in, tensors_out, rename, opset=opset, name="frozen_graph")
    return _finish(proto, "tensorflow", known, notes, dynamic_batch=dynamic_batch)


def _convert_function(
    fn: Any, example_inputs: Any, *, opset: int, dynamic_batch: bool, notes: list[str]
) -> ConvertedModel:
    tf = import_tensorflow()
    signature = getattr(fn, "input_signature", None)
    if not signature:
        if example_inputs is None:
            raise ConversionError(
                "Converting a tf.function needs an input_signature on the function or example inputs (one batch)."
            )
        examples = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        signature = [
            tf.TensorSpec(
                [None, *tuple(x.shape)[1:]] if dynamic_batch else tuple(x.shape), tf.as_dtype(x.dtype)
            )
            for x in examples
        ]
    with tempfile.TemporaryDirectory(prefix="lpot-tf-") as tmp:
        module = tf.Module()
        module.f = fn
        concrete = fn.get_concrete_function(*signature)
        tf.saved_model.save(module, tmp, signatures=concrete)
        notes.append("saved the tf.function as a SavedModel to convert it")
        return _convert_saved_model(Path(tmp), opset=opset, dynamic_batch=dynamic_batch, notes=notes)


def convert_keras(
    model: Any,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> ConvertedModel:
    """Convert a ``keras.Model`` or a ``.keras``/``.h5`` file (exported to a SavedModel first).

    Framework names are the Keras layer names.

    Raises:
        ModelLoadError: the file cannot be loaded by Keras.
        ConversionError: unsupported ops.
    """
    import_tensorflow()
    import keras

    notes: list[str] = []
    if isinstance(model, (str, os.PathLike)):
        try:
            model = keras.models.load_model(str(model), compile=False)
        except Exception as exc:
            raise ModelLoadError(
                f"{str(model)!r} could not be loaded by keras.models.load_model ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}). Custom layers need to be registered "
                "(keras.saving.register_keras_serializable) before loading."
            ) from None
        notes.append(f"loaded Keras model {model.name!r}")
    layer_names = [layer.name for layer in _all_layers(model)]
    with tempfile.TemporaryDirectory(prefix="lpot-keras-") as tmp:
        try:
            model.export(tmp, verbose=False)
        except TypeError:
            model.export(tmp)
        except Exception as exc:
            raise ConversionError(
                f"Keras could not export model {model.name!r} to a SavedModel ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}). Build the model with defined input "
                "shapes (keras.Input) or call it once on a batch first."
            ) from None
        notes.append(
            "exported the Keras model to a SavedModel (tf2onnx's from_keras does not support Keras 3)"
        )
        return _convert_saved_model(
            Path(tmp),
            opset=opset,
            dynamic_batch=dynamic_batch,
            notes=notes,
            framework="keras",
            layer_names=layer_names,
        )


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers") and layer is not model:
            out.extend(_all_layers(layer))
    return out
