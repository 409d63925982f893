"""Load, normalize, save and traverse models in lpot-ir's IR (the ONNX project's ``onnx_ir``).

Every model that enters lpot-ir goes through :func:`load_model`, so later passes see one dialect:

* opsets older than the target (default 17) are converted up with ONNX's version converter;
* graph inputs that are really initializers (old exporters list them) are removed from the inputs;
* every node in every graph (If/Loop/Scan bodies included) gets a unique, deterministic name that
  survives a save/load round trip;
* shapes and types are inferred.

Weights in external data files stay there: their tensors are memory-mapped when first read (a model of
several GB is not copied into memory on load). Inside lpot-ir such tensors refer to their file by an
absolute path, which ONNX Runtime and the checker refuse, so a model
leaves lpot-ir only through :func:`save_model`, :func:`portable_proto` or
:func:`lpot_ir.backends.onnxruntime.make_session`, which resolve them.

:func:`save_model` is atomic: the model (and its external data, for models over 2 GB) is written to a
temporary file in the destination folder and renamed into place, so no half-written model is ever seen.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from lpot_ir.errors import ModelLoadError, paragraph
from lpot_ir.fileio import atomic_paths, fsync_file, temporary_prefix

__all__ = [
    "DEFAULT_OPSET",
    "ModelSource",
    "load_model",
    "read_model_proto",
    "save_model",
    "to_proto",
    "from_proto",
    "clone_model",
    "upgrade_opset",
    "normalize_initializer_inputs",
    "assign_node_names",
    "assign_value_names",
    "infer_shapes",
    "all_graphs",
    "all_nodes",
    "model_digest",
    "opset_version",
    "PROTOBUF_LIMIT",
    "has_external_tensors",
    "weight_bytes",
    "external_data_bytes",
    "release_external_tensors",
    "drop_weights",
    "portable_proto",
    "SessionParts",
    "session_parts",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PROTOBUF_LIMIT = 2**31 - 1
"""Protobuf's hard limit on one serialized message: a model whose weights exceed it needs external data."""
EXTERNAL_DATA_ALIGNMENT = 65536
"""Offsets of large tensors in external data files: page-aligned, so readers can memory-map them."""

ModelSource = str | os.PathLike | bytes | onnx.ModelProto | ir.Model
"""Anything :func:`load_model` accepts."""


def load_model(
    source: ModelSource,
    *,
    target_opset: int | None = DEFAULT_OPSET,
    check: bool = True,
    infer: bool = True,
) -> ir.Model:
    """Load a model from a path, bytes, an ``onnx.ModelProto`` or an ``onnx_ir.Model`` and normalize it.

    Args:
        source: the model. A path may point to a model with external data beside it.
        target_opset: convert the default-domain opset up to this version (never down). ``None`` keeps it.
        check: run ``onnx.checker`` and raise :class:`ModelLoadError` when the model is invalid.
        infer: run ONNX shape inference so values carry shapes and types.

    Returns:
        The normalized ``onnx_ir.Model`` (a new object; ``source`` is never modified).

    Raises:
        ModelLoadError: the file is missing, is not an ONNX model, is truncated, or fails the checker.
    """
    label, proto = _read_proto(source)
    proto = normalize_initializer_inputs(proto)
    # The checker, the version converter and shape inference each serialize the whole model; with
    # ~100 MB of weights that costs seconds. They only need the weights' names, types and shapes, so
    # they run on a light copy whose large initializers are declared as graph inputs instead.
    light, large = _split_large_initializers(proto)
    if check:
        _check(light, label)
    if target_opset is not None:
        light = upgrade_opset(light, target_opset, label=label)
    if infer:
        light = infer_shapes(light)
    model = ir.serde.deserialize_model(_restore_large_initializers(light, large))
    assign_node_names(model)
    assign_value_names(model)
    return model


_LARGE_TENSOR_BYTES = 4096


def _tensor_nbytes(tensor: onnx.TensorProto) -> int:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        length = _external_entry(tensor, "length")
        return int(length) if length is not None else (_declared_nbytes(tensor) or 0)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * 8  # an upper bound for typed fields; only the order of magnitude matters here


def _split_large_initializers(
    proto: onnx.ModelProto,
) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """Return a copy of ``proto`` whose large main-graph initializers are graph inputs, and those tensors."""
    _lift_large_constants(proto)
    large = [
        t for t in proto.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL or _tensor_nbytes(t) > _LARGE_TENSOR_BYTES
    ]  # fmt: skip
    if not large:
        return proto, []
    large_names = {t.name for t in large}
    light = _without_initializers(proto)
    light.graph.initializer.extend(t for t in proto.graph.initializer if t.name not in large_names)
    input_names = {i.name for i in proto.graph.input}
    light.graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in large
        if t.name not in input_names
    )
    return light, large


def _without_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose main graph has no initializers (copying them is what costs)."""
    light = onnx.ModelProto()
    for descriptor, value in proto.ListFields():
        if descriptor.name == "graph":
            continue
        repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 5.29; older ones have only label
        if repeated if repeated is not None else descriptor.label == descriptor.LABEL_REPEATED:
            getattr(light, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(light, descriptor.name).CopyFrom(value)
        else:
            setattr(light, descriptor.name, value)
    graph = proto.graph
    light_graph = light.graph
    light_graph.name = graph.name
    light_graph.doc_string = graph.doc_string
    light_graph.node.extend(graph.node)
    light_graph.input.extend(graph.input)
    light_graph.sparse_initializer.extend(graph.sparse_initializer)
    light_graph.output.extend(graph.output)
    light_graph.value_info.extend(graph.value_info)
    light_graph.quantization_annotation.extend(graph.quantization_annotation)
    light_graph.metadata_props.extend(graph.metadata_props)
    return light


def _lift_large_constants(proto: onnx.ModelProto) -> None:
    """Turn main-graph ``Constant`` nodes that hold large tensors into initializers (old exporters' weights)."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    lifted = 0
    for node in graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(
            node.attribute
        ) == 1 else None
        if (
            attr is not None
            and attr.name == "value"
            and node.output[0] not in outputs
            and _tensor_nbytes(attr.t) > _LARGE_TENSOR_BYTES
        ):
            tensor = graph.initializer.add()
            tensor.CopyFrom(attr.t)
            tensor.name = node.output[0]
            lifted += 1
        else:
            kept.append(node)
    if lifted:
        del graph.node[:]
        graph.node.extend(kept)


def _restore_large_initializers(light: onnx.ModelProto, large: list[onnx.TensorProto]) -> onnx.ModelProto:
    """Undo :func:`_split_large_initializers` on the (possibly converted and inferred) light copy."""
    if not large:
        return light
    names = {t.name for t in large}
    kept = [i for i in light.graph.input if i.name not in names]
    del light.graph.input[:]
    light.graph.input.extend(kept)
    light.graph.initializer.extend(large)
    return light


def read_model_proto(source: ModelSource) -> onnx.ModelProto:
    """Read ``source`` as an ``onnx.ModelProto`` as it is (a copy; no normalization, no check).

    Raises:
        ModelLoadError: the file is missing, a folder, not ONNX, or truncated.
    """
    return _read_proto(source)[1]


def _read_proto(source: object) -> tuple[str, onnx.ModelProto]:
    """Return a label for messages and a ModelProto (a copy when given a proto)."""
    if isinstance(source, ir.Model):
        return "the given onnx_ir.Model", to_proto(source)
    if isinstance(source, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(source)
        return "the given onnx.ModelProto", copy
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the given bytes", _parse(bytes(source), "the given bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = f"'{path}'"
        if not path.exists():
            raise ModelLoadError(
                f"Model file {label} does not exist. Check the path (relative paths are resolved from "
                f"'{Path.cwd()}') and pass the .onnx file itself."
            )
        if path.is_dir():
            raise ModelLoadError(
                f"{label} is a folder, not an ONNX model file. Pass the path of the .onnx file; a TensorFlow "
                "SavedModel folder needs the TensorFlow frontend (install lpot-ir[tensorflow])."
            )
        proto = _parse(path.read_bytes(), label)
        try:
            _bind_external_data(proto, path.parent)
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelLoadError(
                f"Model {label} stores weights in external data files that cannot be read ({paragraph(exc)}). "
                "Keep the external data files beside the model file, with the names the model records."
            ) from None
        return label, proto
    raise ModelLoadError(
        f"Cannot load a model from an object of type {type(source).__name__}. Pass a path to an .onnx file, "
        "its bytes, an onnx.ModelProto or an onnx_ir.Model (framework models go through lpot_ir.frontends)."
    )


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{label} is not a readable ONNX model: protobuf could not parse it ({exc}). The file may be "
            "truncated (an interrupted download or copy) or not an ONNX file at all; re-export or re-copy it."
        ) from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelLoadError(
            f"{label} is not an ONNX model: it has no graph or no opset_import. If it is truncated, "
            "re-export or re-copy it; if it is another format, convert it to ONNX first."
        )
    return proto


def _external_entry(tensor: onnx.TensorProto, key: str) -> str | None:
    for entry in tensor.external_data:
        if entry.key == key:
            return entry.value
    return None


def _set_external_entry(tensor: onnx.TensorProto, key: str, value: str) -> None:
    for entry in tensor.external_data:
        if entry.key == key:
            entry.value = value
            return
    entry = tensor.external_data.add()
    entry.key, entry.value = key, value


def _external_span(tensor: onnx.TensorProto) -> tuple[str, int, int | None]:
    """Where an external tensor's bytes are: (file, offset, length or ``None`` for the rest of the file)."""
    length = _external_entry(tensor, "length")
    return (
        _external_entry(tensor, "location") or "",
        int(_external_entry(tensor, "offset") or 0),
        int(length) if length is not None else None,
    )


_READ_CHUNK = 64 << 20


def _external_chunks(tensor: onnx.TensorProto) -> Iterator[bytes]:
    """The bytes of an external tensor (absolute location), read in chunks of at most 64 MiB."""
    location, offset, length = _external_span(tensor)
    with open(location, "rb") as handle:
        handle.seek(offset)
        remaining = length if length is not None else os.fstat(handle.fileno()).st_size - offset
        while remaining > 0:
            chunk = handle.read(min(_READ_CHUNK, remaining))
            if not chunk:
                break
            yield chunk
            remaining -= len(chunk)


def _external_header(tensor: onnx.TensorProto, location: str | None = None) -> onnx.TensorProto:
    """A data-less copy of ``tensor`` (name, type, shape) marked external, at ``location`` if given."""
    header = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
    header.data_location = onnx.TensorProto.EXTERNAL
    if location is not None:
        _set_external_entry(header, "location", location)
    return header


def _numpy_dtype(tensor: onnx.TensorProto) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")


def _bind_external_data(proto: onnx.ModelProto, folder: Path) -> None:
    """Check the external data ``proto`` refers to (files inside ``folder``, ranges inside the files) and make
    the main graph's initializers refer to it by absolute path; tensors elsewhere (subgraphs, attributes:
    small in practice) are read into the proto."""
    main = len(proto.graph.initializer)  # every tensor, the main graph's initializers first
    root = folder.resolve()
    for index, tensor in enumerate(onnx.external_data_helper._get_all_tensors(proto)):  # noqa: SLF001
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = _external_entry(tensor, "location") or ""
        if not location or os.path.isabs(location):
            raise ValueError(f"tensor '{tensor.name}' has external data location {location!r}, not a relative path")
        target = (root / location).resolve()
        if root not in target.parents:
            raise ValueError(f"tensor '{tensor.name}' refers to '{location}', outside the model's folder")
        size = target.stat().st_size  # raises FileNotFoundError with the path
        offset = int(_external_entry(tensor, "offset") or 0)
        length = _external_entry(tensor, "length")
        expected = _declared_nbytes(tensor)
        if length is None and expected is not None:
            _set_external_entry(tensor, "length", str(expected))
            length = str(expected)
        if length is not None and offset + int(length) > size:
            raise ValueError(
                f"tensor '{tensor.name}' needs bytes {offset}..{offset + int(length)} of '{location}', which has {size}"
            )
        if index < main:
            _set_external_entry(tensor, "location", str(target))
        else:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(root))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


_MEMORY_INITIALIZER_BYTES = 1 << 20
"""In-memory initializers at least this large go to ONNX Runtime as arrays when the weights held in memory
reach :data:`_ARRAYS_FROM_BYTES`."""
_ARRAYS_FROM_BYTES = 1 << 28
"""From 256 MiB of in-memory weights on, serializing them into the message (and ONNX Runtime parsing it)
costs two extra copies at once; as arrays, ONNX Runtime copies them once."""


@dataclass(frozen=True)
class SessionParts:
    """A model in the pieces ONNX Runtime loads without one message over :data:`PROTOBUF_LIMIT`.

    Attributes:
        data: the serialized model (external tensors as references relative to ``folder``).
        folder: the folder of the external data files (ONNX Runtime's session option
            ``session.model_external_initializers_file_folder_path``), ``None`` when nothing is external.
        arrays: initializers handed over as arrays (``SessionOptions.add_external_initializers``): external
            tensors of another folder, and large in-memory ones when the in-memory weights are large.
    """

    data: bytes
    folder: Path | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def session_parts(model: ir.Model | onnx.ModelProto) -> SessionParts:
    """Split ``model`` for an ONNX Runtime session (see :class:`SessionParts`).

    A model without external tensors and with less than 256 MiB of weights is just serialized. Otherwise
    its external tensors stay in their files (ONNX Runtime maps them into memory itself), and from 256 MiB
    of in-memory weights on the large ones are passed as arrays (read in place, not serialized).
    """
    proto = model if isinstance(model, onnx.ModelProto) else to_proto(model)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    inline_bytes = sum(_tensor_nbytes(t) for t in proto.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL)
    as_arrays = inline_bytes >= min(_ARRAYS_FROM_BYTES, PROTOBUF_LIMIT)
    if not external and not as_arrays:
        return SessionParts(proto.SerializeToString())
    folders: dict[Path, int] = {}
    for tensor in external:
        parent = Path(_external_entry(tensor, "location") or "").parent
        folders[parent] = folders.get(parent, 0) + _tensor_nbytes(tensor)
    folder = max(folders, key=folders.__getitem__) if folders else None
    arrays: dict[str, np.ndarray] = {}
    light = _without_initializers(proto)
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            path = Path(_external_entry(tensor, "location") or "")
            if path.parent == folder:
                reference = light.graph.initializer.add()
                reference.CopyFrom(tensor)
                _set_external_entry(reference, "location", path.name)
                continue
            arrays[tensor.name] = _mapped_array(tensor)
        elif as_arrays and _tensor_nbytes(tensor) >= _MEMORY_INITIALIZER_BYTES and tensor.raw_data:
            arrays[tensor.name] = _raw_array(tensor)
        else:
            light.graph.initializer.append(tensor)
            continue
        # a placeholder: ONNX Runtime replaces it by name with the array
        light.graph.initializer.append(_external_header(tensor, "lpot-ir-array"))
    return SessionParts(light.SerializeToString(), folder, arrays)


def _mapped_array(tensor: onnx.TensorProto) -> np.ndarray:
    location, offset, _length = _external_span(tensor)
    return np.memmap(location, dtype=_numpy_dtype(tensor), mode="r", offset=offset, shape=tuple(tensor.dims))


def _raw_array(tensor: onnx.TensorProto) -> np.ndarray:
    return np.frombuffer(tensor.raw_data, dtype=_numpy_dtype(tensor)).reshape(tuple(tensor.dims))


def _declared_nbytes(tensor: onnx.TensorProto) -> int | None:
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * itemsize


def has_external_tensors(model: ir.Model | onnx.ModelProto) -> bool:
    """Whether some main-graph initializer of ``model`` still lives in an external data file."""
    if isinstance(model, onnx.ModelProto):
        return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    return any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())


def weight_bytes(model: ir.Model | onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers, wherever they are stored (in the model or external)."""
    if isinstance(model, onnx.ModelProto):
        return sum(_tensor_nbytes(t) for t in model.graph.initializer)
    return _initializer_bytes(model)


def external_data_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers stored in external data files (not counted by ``ByteSize``)."""
    return sum(_tensor_nbytes(t) for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)


def release_external_tensors(model: ir.Model) -> None:
    """Unmap the external data files ``model``'s tensors have read (they map again when read next).

    Pages of a memory-mapped weight file count in the process's resident memory for as long as the map
    is open; the IR graph holds reference cycles, so without this they stay until the garbage collector
    runs. A map that numpy arrays still view stays open until those arrays are gone.
    """
    for graph in all_graphs(model):
        for value in graph.initializers.values():
            _unmap(value.const_value)


def _unmap(tensor: object) -> None:
    if isinstance(tensor, ir.ExternalTensor):
        with contextlib.suppress(BufferError):  # numpy arrays still view it: it closes when they are gone
            tensor.release()


def drop_weights(model: ir.Model) -> None:
    """Drop ``model``'s initializer tensors (unmapping external ones) once nothing will read the model again.

    An IR graph holds reference cycles (nodes and values point at each other), so a discarded model's
    tensors would stay in memory until the garbage collector runs, which counts objects, not bytes: on a
    model of several GB, a few discarded copies double the peak memory. Tensors are shared, not copied,
    with the protos they came from, which keep theirs.
    """
    for graph in all_graphs(model):
        for value in graph.initializers.values():
            _unmap(value.const_value)
            value.const_value = None


def portable_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its external tensors read into it: a model any tool can run or serialize.

    Returns ``proto`` itself when nothing is external. The caller checks the size: a model whose weights
    exceed :data:`PROTOBUF_LIMIT` cannot be one message (save it with :func:`save_model` instead).
    """
    if not has_external_tensors(proto):
        return proto
    portable = _without_initializers(proto)
    portable.graph.initializer.extend(
        _read_external(t) if t.data_location == onnx.TensorProto.EXTERNAL else t for t in proto.graph.initializer
    )
    return portable


def _read_external(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """A copy of the external ``tensor`` with its bytes (read from its absolute location) as raw data."""
    copy = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
    copy.doc_string = tensor.doc_string
    copy.raw_data = b"".join(_external_chunks(tensor))
    return copy


def _check(proto: onnx.ModelProto, label: str) -> None:
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{label} fails the ONNX checker: {first}. The model is not valid ONNX; re-export it with a "
            "current exporter, or fix the reported node, then load it again."
        ) from None


def normalize_initializer_inputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop graph inputs that only exist because an old exporter listed every initializer as an input.

    Such inputs let a caller override weights at run time, which blocks constant folding and fusion.
    The IR version is raised to at least 4 (the first that allows initializers that are not inputs).
    """
    init_names = {t.name for t in proto.graph.initializer}
    if not init_names:
        return proto
    kept = [i for i in proto.graph.input if i.name not in init_names]
    if len(kept) == len(proto.graph.input):
        return proto
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.ir_version = max(proto.ir_version, 4)
    return proto


def opset_version(model: onnx.ModelProto | ir.Model, domain: str = "") -> int | None:
    """Return the model's opset version for ``domain`` (the default domain unless given)."""
    if isinstance(model, ir.Model):
        return model.opset_imports.get(domain)
    for entry in model.opset_import:
        if entry.domain in (domain, "ai.onnx" if domain == "" else domain):
            return entry.version
    return None


def upgrade_opset(
    proto: onnx.ModelProto, target: int = DEFAULT_OPSET, *, label: str = "the model"
) -> onnx.ModelProto:
    """Convert the default-domain opset up to ``target`` (never down).

    If ONNX's version converter cannot convert some node, the model keeps its opset and a warning
    names the reason: passes still work on it, only with fewer fusions.
    """
    current = opset_version(proto)
    if current is None or current >= target:
        return proto
    if current < 7:
        proto = _channel_prelu_slopes(proto)
    try:
        converted = onnx.version_converter.convert_version(proto, target)
    except Exception as exc:  # the converter raises bare RuntimeError/IndexError from C++
        logger.warning(
            "Could not convert %s from opset %d to %d (%s); keeping opset %d.", label, current, target, exc, current
        )
        return proto
    # The converter does not raise the IR version it requires for the new opset.
    required = onnx.helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, required)
    return converted


def _channel_prelu_slopes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Before opset 7, a PRelu slope of shape ``[C]`` meant one slope per channel (axis 1), as PyTorch's old
    exporter wrote it; from opset 7 on it broadcasts from the last axis. Reshape such slopes to
    ``[C, 1, ...]`` (the input's rank from shape inference) so that the upgraded model means the same."""
    users = [n for n in proto.graph.node if n.op_type == "PRelu" and n.domain in ("", "ai.onnx") and len(n.input) == 2]
    initializers = {t.name: t for t in proto.graph.initializer}
    slopes = {n.input[1] for n in users if n.input[1] in initializers and len(initializers[n.input[1]].dims) == 1
              and initializers[n.input[1]].dims[0] > 1}
    if not slopes:
        return proto
    inferred = infer_shapes(proto)
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
        if v.type.tensor_type.HasField("shape")
    }
    proto = copy.deepcopy(proto)
    initializers = {t.name: t for t in proto.graph.initializer}
    shared = [n.input[1] for n in users if n.input[1] in slopes]
    for node in proto.graph.node:
        if node.op_type != "PRelu" or len(node.input) != 2 or node.input[1] not in slopes:
            continue
        rank = ranks.get(node.input[0])
        tensor = initializers[node.input[1]]
        if rank is None or rank < 3 or tensor.dims[0] == 0 or shared.count(node.input[1]) > 1:
            continue
        tensor.dims[:] = [tensor.dims[0], *([1] * (rank - 2))]
        for value in proto.graph.input:  # opset < 9 models often list initializers as graph inputs too
            if value.name == tensor.name and value.type.tensor_type.HasField("shape"):
                del value.type.tensor_type.shape.dim[:]
                for d in tensor.dims:
                    value.type.tensor_type.shape.dim.add().dim_value = d
    return proto


def infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Run ONNX shape inference (with data propagation); on failure return the model unchanged."""
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # inference fails on custom ops; the model is still usable
        logger.info("Shape inference incomplete: %s", exc)
        return proto


def assign_node_names(model: ir.Model) -> int:
    """Give every unnamed or duplicate-named node a unique, deterministic name; return how many changed.

    Names are ``{op_type}_{n}`` in graph order, prefixed by the owning node's name in subgraphs, so the
    same model always gets the same names, and saved names survive a load.
    """
    seen: set[str] = set()
    changed = 0
    for graph in all_graphs(model):
        for node in graph:
            if node.name and node.name not in seen:
                seen.add(node.name)
                continue
            prefix = f"{graph.name}/" if graph is not model.graph and graph.name else ""
            base = node.name or f"{prefix}{node.op_type}"
            index = 0
            candidate = base if node.name and base not in seen else f"{base}_{index}"
            while candidate in seen:
                index += 1
                candidate = f"{base}_{index}"
            node.name = candidate
            seen.add(candidate)
            changed += 1
    return changed


def assign_value_names(model: ir.Model) -> int:
    """Rename values defined inside subgraphs whose names are taken elsewhere in the model; return how many.

    ONNX lets two sibling subgraphs (the two branches of an ``If``, the bodies of two ``Loop``s) define
    values of the same name. lpot-ir keys calibration ranges and recipes by value name, so names must be
    unique across the whole model. Main-graph names (the model's interface) never change; a subgraph value
    that repeats an earlier name becomes ``<name>__<k>``. Outer-scope references follow the value object,
    and subgraph inputs and outputs are positional, so the model computes the same thing.
    """
    seen: set[str] = set()
    changed = 0
    for graph in all_graphs(model):
        defined = [*graph.inputs, *graph.initializers.values(), *(v for node in graph for v in node.outputs)]
        for value in dict.fromkeys(defined):  # an initializer may also be listed as an input
            name = value.name
            if not name:
                continue
            if name in seen and graph is not model.graph:
                index = 1
                while f"{name}__{index}" in seen:
                    index += 1
                value.name = f"{name}__{index}"
                changed += 1
            seen.add(value.name or name)
    return changed


def all_graphs(model_or_graph: ir.Model | ir.Graph) -> Iterator[ir.Graph]:
    """Yield the main graph and every subgraph (If/Loop/Scan bodies), depth first, in node order."""
    root = model_or_graph.graph if isinstance(model_or_graph, ir.Model) else model_or_graph
    stack = [root]
    while stack:
        graph = stack.pop()
        yield graph
        subgraphs: list[ir.Graph] = []
        for node in graph:
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    subgraphs.append(attr.as_graph())
                elif attr.type == ir.AttributeType.GRAPHS:
                    subgraphs.extend(attr.as_graphs())
        stack.extend(reversed(subgraphs))


def all_nodes(model_or_graph: ir.Model | ir.Graph) -> Iterator[ir.Node]:
    """Yield every node of the main graph and of every subgraph."""
    for graph in all_graphs(model_or_graph):
        yield from graph


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """Serialize an IR model to an ``onnx.ModelProto`` (in memory; use :func:`save_model` for > 2 GB)."""
    return ir.serde.serialize_model(model)


def from_proto(proto: onnx.ModelProto) -> ir.Model:
    """Deserialize a ModelProto to the IR without normalization (use :func:`load_model` to normalize)."""
    return ir.serde.deserialize_model(proto)


def clone_model(model: ir.Model) -> ir.Model:
    """Return an independent deep copy of ``model`` (node metadata is not copied)."""
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _initializer_bytes(model: ir.Model) -> int:
    total = 0
    for graph in all_graphs(model):
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.nbytes
    return total


def save_model(
    model: ir.Model | onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    companions: Mapping[str | os.PathLike[str], str | bytes] | None = None,
) -> Path:
    """Save ``model`` to ``path`` atomically and return the path.

    The model is written to a temporary file in the destination folder and renamed into place, so a
    crash, a kill or a full disk never leaves a half-written model where the user's file was.

    With external data the weights go to a new file ``<name>.<8 hex digits>.data`` beside the model, which
    only the new model names: a kill before the model's rename leaves the old model with its old weights.
    Once the new model is in place, the weight files an earlier save wrote for that path are removed.

    Args:
        model: an IR model or a ModelProto.
        path: destination ``.onnx`` path. Parent folders are created.
        external_data: store weights in ``<name>.<hex>.data`` beside the model. ``None`` (default) does so
            only when the weights exceed protobuf's 2 GB limit.
        companions: other files (path -> text or bytes) written with the model: all are written before any
            is renamed into place (a model and its recipe stay a pair when the disk fills up).

    Raises:
        WriteError: the disk is full or the folder cannot be written; the earlier files are unchanged.
    """
    if isinstance(model, onnx.ModelProto):
        model = from_proto(model)
    dest = Path(path)
    extra = {Path(p): data for p, data in (companions or {}).items()}
    if external_data is None:
        external_data = _initializer_bytes(model) >= PROTOBUF_LIMIT
    data_name = f"{dest.name}.{secrets.token_hex(4)}.data" if external_data else None
    try:
        with atomic_paths([dest, *extra], suffixes=[".onnx", *[".tmp"] * len(extra)]) as (tmp, *others):
            if data_name is None:
                with open(tmp, "wb") as handle:  # faster than ir.save for < 2 GB
                    handle.write(portable_proto(to_proto(model)).SerializeToString())
            else:
                _write_with_external_data(model, dest, tmp, data_name)
            for other, data in zip(others, extra.values(), strict=True):
                with open(other, "wb") as handle:
                    handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    except BaseException:
        if data_name is not None:
            with contextlib.suppress(OSError):
                (dest.parent / data_name).unlink()
        raise
    _remove_data_files(dest, keep=data_name)
    release_external_tensors(model)
    return dest


def _write_with_external_data(model: ir.Model, dest: Path, tmp: Path, data_name: str) -> None:
    """Write ``model`` to ``tmp`` and its weights to ``dest.parent / data_name`` (a name nothing refers to yet).

    onnx_ir writes the model and the data file side by side, so both are written in a temporary folder of
    this process (removed by the next save to ``dest`` if this one is killed) and moved out.
    """
    folder = Path(tempfile.mkdtemp(dir=dest.parent, prefix=temporary_prefix(dest)))
    try:
        ir.save(model, folder / dest.name, external_data=data_name, alignment=EXTERNAL_DATA_ALIGNMENT)
        fsync_file(folder / data_name)
        os.replace(folder / data_name, dest.parent / data_name)
        os.replace(folder / dest.name, tmp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_data_files(dest: Path, keep: str | None) -> None:
    """Remove the external-data files earlier saves wrote for ``dest`` (``<name>.<8 hex>.data``) but ``keep``."""
    pattern = re.compile(re.escape(dest.name) + r"\.[0-9a-f]{8}\.data")
    with contextlib.suppress(OSError):
        for entry in os.scandir(dest.parent):
            if entry.name != keep and pattern.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def model_digest(model: ir.Model | onnx.ModelProto) -> str:
    """Return a content hash of the model, for caches and recipes.

    The sha256 of its deterministic serialization; with external tensors, of the serialization without
    their file locations followed by their bytes (read in chunks), so the hash depends on the content only.
    """
    proto = model if isinstance(model, onnx.ModelProto) else to_proto(model)
    if not has_external_tensors(proto):
        return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()
    digest = hashlib.sha256()
    light = _without_initializers(proto)
    external = []
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            light.graph.initializer.append(_external_header(tensor))  # where the file is does not count
            external.append(tensor)
        else:
            light.graph.initializer.append(tensor)
    digest.update(light.SerializeToString(deterministic=True))
    for tensor in external:
        for chunk in _external_chunks(tensor):
            digest.update(chunk)
    return digest.hexdigest()
