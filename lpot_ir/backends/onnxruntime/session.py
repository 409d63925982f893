"""ONNX Runtime sessions, the one check that a batch fits a model, and running batches.

* :func:`make_session` builds an ``onnxruntime.InferenceSession`` from a path, bytes, an
  ``onnx.ModelProto`` or an ``onnx_ir.Model``, with explicit thread settings.
* :func:`input_specs` lists a model's (or session's) inputs as :class:`InputSpec` (name, shape, dtype).
* :func:`make_feed` maps one batch (an array, a tuple/list in input order, or a dict by input name) to
  the ``{input name: array}`` feed ONNX Runtime takes. It is THE place where lpot-ir checks that data
  fits a model: calibration, evaluation and benchmarking all call it, and every mismatch (missing or
  unknown input, wrong rank, a static dimension that differs, a dtype that cannot be used) is a
  :class:`~lpot_ir.errors.DataError` naming the input and both shapes and dtypes.
* :func:`run_feed` and :func:`run_batches` run feeds and turn ONNX Runtime's failures into ``DataError``.

``onnx`` and ``onnx_ir`` are not imported by this module (a benchmark worker process needs only ONNX
Runtime): an object can only be an ``onnx.ModelProto`` or ``onnx_ir.Model`` if its module is loaded already.

Data types: an array of the input's exact dtype is used as is; another float dtype is cast to the input's
float dtype (numpy's default float64 for a float32 input); an integer dtype is cast to an integer dtype
that holds all its values (int32 -> int64); anything else (floats for an integer input, integers for a
float input, bools for numbers) is an error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from lpot_ir.errors import DataError, LpotError, ModelLoadError
from lpot_ir.ir.model import session_parts

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir
    from typing_extensions import TypeIs  # annotation only: no runtime dependency

__all__ = [
    "Dim",
    "InputSpec",
    "batch_inputs",
    "feed_values",
    "OPTIMIZATION_LEVELS",
    "SessionSource",
    "input_specs",
    "output_names",
    "make_session",
    "new_session",
    "make_feed",
    "run_feed",
    "run_batches",
    "model_bytes",
]

logger = logging.getLogger(__name__)

Dim = int | str | None
"""One dimension: ``int`` static, ``str`` symbolic, ``None`` unknown."""

SessionSource = Any
"""A path (``str``/``os.PathLike``), bytes, an ``onnx.ModelProto`` or an ``onnx_ir.Model``."""

OPTIMIZATION_LEVELS: Mapping[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_ORT_TYPES: Mapping[str, np.dtype] = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in {
        "float": np.float32, "double": np.float64, "float16": np.float16,
        "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
        "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
        "bool": np.bool_,
    }.items()
}


@dataclass(frozen=True)
class InputSpec:
    """One model input.

    Attributes:
        name: the input's name.
        shape: ``int`` static, ``str`` symbolic, ``None`` unknown dims (a declared ``-1`` or ``0`` is unknown:
            dynamic); ``None`` for an unknown rank.
        dtype: the numpy dtype ONNX Runtime expects.
    """

    name: str
    shape: tuple[Dim, ...] | None
    dtype: np.dtype

    def __post_init__(self) -> None:
        if self.shape is not None and any(isinstance(d, int) and d <= 0 for d in self.shape):
            object.__setattr__(self, "shape", tuple(None if isinstance(d, int) and d <= 0 else d for d in self.shape))

    def shape_text(self) -> str:
        """The shape as ``(N, 3, 224, 224)``; unknown dims as ``?``."""
        if self.shape is None:
            return "(any rank)"
        return "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"


def _dim(d: Any) -> Dim:
    if isinstance(d, (int, np.integer)):
        return int(d) if d > 0 else None  # -1 and 0 declare a dynamic dimension (e.g. Paddle exports)
    if d is None:
        return None
    value = getattr(d, "value", d)
    return value if isinstance(value, str) and value else None


def _is_proto(source: object) -> TypeIs[onnx.ModelProto]:
    onnx_module = sys.modules.get("onnx")
    return onnx_module is not None and isinstance(source, onnx_module.ModelProto)


def _is_ir_model(source: object) -> TypeIs[ir.Model]:
    ir_module = sys.modules.get("onnx_ir")
    return ir_module is not None and isinstance(source, ir_module.Model)


def _np_dtype(dtype: ir.DataType | None) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float32)
    try:
        return np.dtype(dtype.numpy())
    except Exception:  # string/exotic types have no plain numpy dtype
        return np.dtype(object)


def input_specs(
    source: ort.InferenceSession | ir.Model | onnx.ModelProto | Sequence[InputSpec | tuple[str, Any, Any]],
) -> list[InputSpec]:
    """The inputs that must be fed (initializers excluded) of a session or model; a list of ``InputSpec`` or
    ``(name, shape, dtype)`` triples is normalized to ``InputSpec``."""
    if isinstance(source, ort.InferenceSession):
        return [
            InputSpec(
                arg.name,
                None if arg.shape is None else tuple(_dim(d) for d in arg.shape),
                _ORT_TYPES.get(arg.type, np.dtype(object)),
            )
            for arg in source.get_inputs()
        ]
    if _is_proto(source):
        return _proto_input_specs(source)
    if _is_ir_model(source):
        initializers = source.graph.initializers
        return [
            InputSpec(
                value.name or "",
                None if value.shape is None else tuple(_dim(d) for d in value.shape),
                _np_dtype(value.dtype),
            )
            for value in source.graph.inputs
            if value.name not in initializers
        ]
    specs = []
    for item in source:
        if isinstance(item, InputSpec):
            specs.append(item)
        elif isinstance(item, tuple) and len(item) == 3:  # (name, shape, dtype)
            name, shape, dtype = item
            dims = None if shape is None else tuple(_dim(d) if isinstance(d, (int, np.integer, str)) else None for d in shape)
            specs.append(InputSpec(name, dims, np.dtype(dtype)))
        else:
            raise TypeError("input_specs expects a session, a model, or InputSpec / (name, shape, dtype) items")
    return specs


def _proto_input_specs(proto: onnx.ModelProto) -> list[InputSpec]:
    initializers = {t.name for t in proto.graph.initializer}
    specs = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape: tuple[Dim, ...] | None = None
        if tensor_type.HasField("shape"):
            shape = tuple(
                _dim(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim
            )
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type or onnx.TensorProto.FLOAT))
        except Exception:  # string/exotic types have no plain numpy dtype
            dtype = np.dtype(object)
        specs.append(InputSpec(value.name, shape, dtype))
    return specs


def output_names(source: ort.InferenceSession | ir.Model | onnx.ModelProto) -> list[str]:
    """The names of the model's outputs, in order."""
    if isinstance(source, ort.InferenceSession):
        return [o.name for o in source.get_outputs()]
    if _is_proto(source):
        return [o.name for o in source.graph.output]
    return [v.name or "" for v in source.graph.outputs]


def model_bytes(model: SessionSource) -> bytes:
    """Serialize a model source to bytes (a path is read as is)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if _is_proto(model):
        return model.SerializeToString()
    if _is_ir_model(model):
        return ir.serde.serialize_model(model).SerializeToString()
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(
                f"Model file '{path}' does not exist (or is not a file). Check the path and pass the .onnx file."
            )
        return path.read_bytes()
    raise ModelLoadError(
        f"Cannot make an ONNX Runtime session from an object of type {type(model).__name__}. Pass a path to "
        "an .onnx file, its bytes, an onnx.ModelProto or an onnx_ir.Model."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_session(
    model: SessionSource,
    *,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = 1,
    optimization_level: str = "all",
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> ort.InferenceSession:
    """Create an ONNX Runtime session.

    Args:
        model: a path to an ``.onnx`` file (external data beside it is found), bytes, an
            ``onnx.ModelProto`` or an ``onnx_ir.Model``.
        intra_op_threads: threads inside one op; ``None`` lets ONNX Runtime use all cores.
        inter_op_threads: threads running independent ops in parallel (``None`` = ORT's default).
        optimization_level: ``disable``, ``basic``, ``extended`` or ``all`` (ORT graph optimizations).
        providers: execution providers, in priority order.

    Returns:
        The session.

    Raises:
        ModelLoadError: the model cannot be read, or ONNX Runtime refuses it (the message quotes ORT).
    """
    if optimization_level not in OPTIMIZATION_LEVELS:
        raise ValueError(
            f"optimization_level must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {optimization_level!r}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization_level]
    options.log_severity_level = 4  # failures become LpotErrors; ORT need not also log them
    if intra_op_threads is not None:
        options.intra_op_num_threads = int(intra_op_threads)
    if inter_op_threads is not None:
        options.inter_op_num_threads = int(inter_op_threads)
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if inter_op_threads > 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        )
    label = f"'{model}'" if isinstance(model, (str, os.PathLike)) else f"the given {type(model).__name__}"
    try:
        return new_session(model, options, providers)
    except LpotError:
        raise
    except Exception as exc:  # ORT raises its own exception types from C++
        raise ModelLoadError(
            f"ONNX Runtime cannot create a session for {label}: {_first_line(exc)}. The model may use an op or "
            "type ONNX Runtime does not support, or be invalid; check it with `lpot inspect`."
        ) from None


def new_session(
    model: SessionSource, options: ort.SessionOptions, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> ort.InferenceSession:
    """``onnxruntime.InferenceSession(model, options, providers)`` for any :data:`SessionSource`.

    An ``onnx.ModelProto`` or ``onnx_ir.Model`` whose weights live in external data files, or exceed
    protobuf's 2 GB limit, is handed over in pieces (:func:`lpot_ir.ir.model.session_parts`): ONNX Runtime
    maps the external files itself and takes the largest in-memory weights as arrays, which the session
    keeps alive. ``options`` is changed accordingly. ONNX Runtime's own exceptions pass through.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            model_bytes(path)  # raises the missing-file error
        return ort.InferenceSession(str(path), options, providers=list(providers))
    if not (_is_proto(model) or _is_ir_model(model)):
        return ort.InferenceSession(model_bytes(model), options, providers=list(providers))
    parts = session_parts(model)
    if parts.folder is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(parts.folder))
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in parts.arrays.values()]
    if values:
        options.add_external_initializers(list(parts.arrays), values)
    session = ort.InferenceSession(parts.data, options, providers=list(providers))
    session._lpot_ir_arrays = (parts.arrays, values)  # ONNX Runtime reads them while it runs
    return session


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _describe_inputs(specs: Sequence[InputSpec]) -> str:
    return ", ".join(f"'{s.name}' {s.shape_text()} {s.dtype}" for s in specs) or "none"


def _can_use_dtype(given: np.dtype, expected: np.dtype) -> bool:
    if given == expected:
        return True
    if given.kind == "f" and expected.kind == "f":
        return True
    if given.kind in "iu" and expected.kind in "iu":
        return bool(np.can_cast(given, expected, casting="safe"))
    return False


def _check_array(spec: InputSpec, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except Exception as exc:
            raise DataError(
                f"The value for model input '{spec.name}' is a {type(value).__name__} that cannot be turned into "
                f"a numpy array ({_first_line(exc)}). Yield numpy arrays of shape {spec.shape_text()} and dtype "
                f"{spec.dtype}."
            ) from None
    if array.dtype.kind == "O" or not _can_use_dtype(array.dtype, spec.dtype):
        raise DataError(
            f"Model input '{spec.name}' expects dtype {spec.dtype} with shape {spec.shape_text()}, but the batch "
            f"gives dtype {array.dtype} with shape {_shape_text(array.shape)}. Convert the data to {spec.dtype} "
            "in the dataloader (float data is cast between float types and integers to wider integers, but "
            "never between floats and integers)."
        )
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise DataError(
                f"Model input '{spec.name}' expects rank {len(spec.shape)} with shape {spec.shape_text()}, but the "
                f"batch gives rank {array.ndim} with shape {_shape_text(array.shape)} (dtype {array.dtype}). "
                "Check that batches include the batch axis and the layout the model was exported with."
            )
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise DataError(
                    f"Model input '{spec.name}' expects shape {spec.shape_text()}, but the batch gives shape "
                    f"{_shape_text(array.shape)}: axis {axis} must be {want}, got {got}. Resize the data or the "
                    "batch size to match (axes shown as names or ? may take any size)."
                )
    if array.dtype != spec.dtype:
        array = array.astype(spec.dtype)
    return array


def feed_values(model_inputs: Any, batch: Any) -> dict[str, Any]:
    """Map one batch (an array, a tuple/list in input order, or a dict by input name) to ``{input name: value}``.

    Only the mapping is checked (missing, unknown or surplus inputs); :func:`make_feed` checks the values too.

    Raises:
        DataError: a missing or unknown input, or a wrong number of values.
    """
    specs = input_specs(model_inputs)
    names = [s.name for s in specs]
    if isinstance(batch, Mapping):
        by_name = {s.name: s for s in specs}
        unknown = [str(k) for k in batch if k not in by_name]
        if unknown:
            raise DataError(
                f"The batch has input(s) {', '.join(repr(k) for k in unknown)} that the model does not have. "
                f"The model's inputs are: {_describe_inputs(specs)}. Rename the dict keys to match."
            )
        missing = [n for n in names if n not in batch]
        if missing:
            spec = by_name[missing[0]]
            raise DataError(
                f"The batch has no value for model input '{spec.name}' (shape {spec.shape_text()}, dtype "
                f"{spec.dtype}); it gives {', '.join(repr(str(k)) for k in batch) or 'nothing'}. The model's "
                f"inputs are: {_describe_inputs(specs)}."
            )
        return {s.name: batch[s.name] for s in specs}
    if isinstance(batch, (tuple, list)):
        if len(batch) != len(specs):
            raise DataError(
                f"The batch is a {type(batch).__name__} of {len(batch)} value(s), but the model has "
                f"{len(specs)} input(s): {_describe_inputs(specs)}. Give one array per input in this order, "
                "or a dict by input name."
            )
        return {s.name: v for s, v in zip(specs, batch, strict=True)}
    if len(specs) != 1:
        raise DataError(
            f"The batch is a single {type(batch).__name__}, but the model has {len(specs)} inputs: "
            f"{_describe_inputs(specs)}. Give a tuple with one array per input in this order, or a dict by "
            "input name."
        )
    return {specs[0].name: batch}


def make_feed(
    model_inputs: ort.InferenceSession | ir.Model | onnx.ModelProto | Sequence[InputSpec], batch: Any
) -> dict[str, np.ndarray]:
    """Map one batch of model inputs to the feed ONNX Runtime takes, checking that it fits.

    Args:
        model_inputs: a session, a model, or its :func:`input_specs` (fastest when called per batch).
        batch: one numpy array (a model with one input), a tuple/list with one array per input in input
            order, or a dict by input name. Array-likes (lists, framework tensors) are converted.

    Returns:
        ``{input name: numpy array}`` with the dtypes the model expects.

    Raises:
        DataError: a missing or unknown input, a wrong number of arrays, a wrong rank, a static dimension
            that differs, or a dtype that cannot be used; the message names the input and both
            shapes and dtypes.
    """
    specs = input_specs(model_inputs)
    values = feed_values(specs, batch)
    return {s.name: _check_array(s, values[s.name]) for s in specs}


def run_feed(
    session: ort.InferenceSession, feed: Mapping[str, np.ndarray], *, where: str = "the batch"
) -> list[np.ndarray]:
    """Run one feed and return all outputs; an ONNX Runtime failure becomes a :class:`DataError`."""
    try:
        return session.run(None, dict(feed))
    except Exception as exc:  # ORT raises its own exception types from C++
        shapes = ", ".join(f"'{k}' {_shape_text(v.shape)} {v.dtype}" for k, v in feed.items())
        raise DataError(
            f"ONNX Runtime failed on {where} (inputs {shapes}): {_first_line(exc)}. Check that the data matches "
            "what the model was built for (shapes of dynamic axes, value ranges such as token ids)."
        ) from None


def run_batches(session: ort.InferenceSession, batches: Iterable[Any]) -> list[list[np.ndarray]]:
    """Run every batch of model inputs (see :func:`make_feed`) and return each batch's outputs.

    Raises:
        DataError: a batch does not fit the model, or ONNX Runtime fails on it (the message names the batch).
    """
    specs = input_specs(session)
    results = []
    for index, batch in enumerate(batches):
        results.append(run_feed(session, make_feed(specs, batch), where=f"batch {index}"))
    return results


def _is_array(value: Any) -> bool:
    """numpy arrays and framework tensors (anything with a shape and a dtype)."""
    return hasattr(value, "shape") and hasattr(value, "dtype")


def batch_inputs(batch: Any, num_inputs: int) -> Any:
    """The model inputs of one batch: LPOT-style ``(inputs, labels)`` or bare inputs.

    A dict or an array is bare inputs. A tuple/list holding exactly one array per model input is bare
    inputs in model-input order; any other pair is ``(inputs, labels)``.
    """
    if isinstance(batch, Mapping) or _is_array(batch):
        return batch
    if isinstance(batch, (tuple, list)):
        if len(batch) == num_inputs and all(_is_array(b) for b in batch):
            return tuple(batch)
        if len(batch) == 2:
            return batch[0]
        return tuple(batch)
    return batch

