"""Framework frontends: PyTorch, TensorFlow/Keras and MXNet models -> ONNX, and the way back.

* :func:`detect_framework` tells which framework a model object or path belongs to (no import).
* :func:`to_onnx` converts it to an ``onnx.ModelProto`` with a name map back to the framework's names
  (:class:`ConvertedModel`).
* :func:`wrap_for_eval` turns a candidate ONNX model into something the user's ``eval_func`` can call
  like its own model (an ``nn.Module``, a tf callable, an NDArray callable).
* :func:`export_to_pytorch` / :func:`export_to_tensorflow` / :func:`export_to_mxnet` lower a Q/DQ ONNX model back
  to a framework.
* :func:`summarize` lists a model's likely inputs and outputs (``lpot summarize``).

Heavy frameworks are imported only inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from lpot_ir.backends.export.mxnet_lowering import MXNetExport
from lpot_ir.backends.export.mxnet_lowering import export_to_mxnet as _export_mxnet
from lpot_ir.backends.export.tensorflow_lowering import export_to_tensorflow as _export_tensorflow
from lpot_ir.backends.export.torch_lowering import export_to_pytorch as _export_pytorch
from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends.base import FRAMEWORKS, ConvertedModel, graph_io_names
from lpot_ir.frontends.detect import detect_framework, normalize_framework_name
from lpot_ir.frontends.eval_wrappers import wrap_for_eval
from lpot_ir.frontends.mxnet import convert_mxnet
from lpot_ir.frontends.pytorch import convert_pytorch
from lpot_ir.frontends.summary import Summary, TensorInfo, summarize
from lpot_ir.frontends.tensorflow import convert_keras, convert_tensorflow
from lpot_ir.ir.model import read_model_proto

__all__ = [
    "FRAMEWORKS",
    "ConvertedModel",
    "Summary",
    "TensorInfo",
    "detect_framework",
    "normalize_framework_name",
    "to_onnx",
    "resolve_model",
    "is_onnx_model",
    "unwrap_model",
    "first_batch_inputs",
    "wrap_for_eval",
    "export_to_pytorch",
    "export_to_tensorflow",
    "export_to_mxnet",
    "summarize",
]

logger = logging.getLogger(__name__)


def to_onnx(
    model: Any,
    *,
    framework: str | None = None,
    example_inputs: Any = None,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    params: str | Path | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> ConvertedModel:
    """Convert a model of any supported framework to ONNX.

    Args:
        model: a path (``.onnx``, TorchScript ``.pt``, SavedModel folder, frozen ``.pb``, ``.keras``/``.h5``,
            MXNet ``-symbol.json``) or an object (``onnx.ModelProto``, ``torch.nn.Module``, ``keras.Model``,
            ``tf.function``, ``GraphDef``, MXNet ``HybridBlock``).
        framework: overrides detection (YAML ``model.framework``).
        example_inputs: one batch the model accepts (PyTorch, tf.function, Gluon blocks need it; the
            calibration dataloader's first batch).
        inputs: frozen TensorFlow graphs: input node names (YAML ``model.inputs``).
        outputs: frozen TensorFlow graphs: output node names (YAML ``model.outputs``).
        params: MXNet: the ``.params`` file (default: ``<prefix>-0000.params`` beside the symbol file).
        opset: the ONNX opset to produce.
        dynamic_batch: make the batch axis of inputs and outputs dynamic.

    Returns:
        The :class:`ConvertedModel` (for ONNX input: the model as is, an identity name map).

    Raises:
        ConversionError: the framework is unknown or not installed, or an op cannot be converted (the
            message names the op and the framework's name for the node).
        ModelLoadError: a path that does not exist or is not a model of the detected framework.
    """
    kind = detect_framework(model, framework)
    if kind == "tensorflow" and _is_keras(model):
        kind = "keras"  # YAML says tensorflow for Keras models too (LPOT has no 'keras' framework)
    logger.info("converting a %s model to ONNX", kind)
    if kind == "onnx":
        return _from_onnx(model)
    if kind == "pytorch":
        return convert_pytorch(model, example_inputs, opset=opset, dynamic_batch=dynamic_batch)
    if kind == "keras":
        return convert_keras(model, opset=opset, dynamic_batch=dynamic_batch)
    if kind == "tensorflow":
        return convert_tensorflow(
            model,
            example_inputs=example_inputs,
            inputs=inputs,
            outputs=outputs,
            opset=opset,
            dynamic_batch=dynamic_batch,
        )
    if kind == "mxnet":
        return convert_mxnet(
            model, params=params, example_inputs=example_inputs, opset=opset, dynamic_batch=dynamic_batch
        )
    raise ConversionError(f"No frontend for framework {kind!r}.")  # detect_framework only returns FRAMEWORKS


def resolve_model(
    model: Any,
    *,
    framework: str | None = None,
    calib_dataloader: Any = None,
    example_inputs: Any = None,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    params: str | Path | None = None,
) -> ConvertedModel:
    """Turn whatever the user gave as "the model" into ONNX: the one entry point of every API and command.

    ONNX sources are read as they are; framework models are converted with :func:`to_onnx`, taking
    ``example_inputs`` or else the inputs of the first batch of ``calib_dataloader`` (only read when a
    framework needs it).
    """
    model = unwrap_model(model)
    kind = detect_framework(model, framework)
    example = None
    if kind != "onnx":
        example = example_inputs if example_inputs is not None else first_batch_inputs(calib_dataloader)
    return to_onnx(model, framework=framework, example_inputs=example, inputs=inputs, outputs=outputs, params=params)


def is_onnx_model(model: Any) -> bool:
    """True for an ONNX model: an ``.onnx`` path, bytes, ``onnx.ModelProto`` or ``onnx_ir.Model``."""
    try:
        return detect_framework(model) == "onnx"
    except (ConversionError, ModelLoadError):
        return False


def unwrap_model(model: Any) -> Any:
    """The model inside a wrapper that is not itself a model: LPOT's ``common.Model(m)`` or a
    ``QuantizedModel`` (both hold it in ``.model``); anything else is returned as is."""
    inner = getattr(model, "model", None)
    if inner is None:
        return model
    try:
        detect_framework(model)
    except (ConversionError, ModelLoadError):
        return inner  # not a model of any framework, but it holds one
    return model


def first_batch_inputs(dataloader: Any) -> Any:
    """The inputs of the first batch of ``dataloader`` (``(inputs, labels)`` or bare inputs), or ``None``."""
    if dataloader is None:
        return None
    for batch in dataloader:
        if isinstance(batch, tuple) and len(batch) == 2:
            return batch[0]
        return batch
    return None


def _is_keras(model: Any) -> bool:
    try:
        return detect_framework(model) == "keras"
    except (ConversionError, ModelLoadError):
        return False


def _from_onnx(model: Any) -> ConvertedModel:
    proto = model if isinstance(model, onnx.ModelProto) else read_model_proto(model)
    ins, outs = graph_io_names(proto)
    return ConvertedModel(
        model=proto,
        framework="onnx",
        name_map={n.name: n.name for n in proto.graph.node if n.name},
        input_names=ins,
        output_names=outs,
        notes=("ONNX model used as is",),
    )


def export_to_pytorch(qdq_model: Any) -> Any:
    """Lower a Q/DQ ONNX model to a ``torch.nn.Module`` that runs without ONNX Runtime.

    See :mod:`lpot_ir.backends.export.torch_lowering`.
    """

    return _export_pytorch(qdq_model)


def export_to_tensorflow(qdq_model: Any, path: str | os.PathLike[str]) -> Path:
    """Lower a Q/DQ ONNX model to a TensorFlow SavedModel at ``path``.

    See :mod:`lpot_ir.backends.export.tensorflow_lowering`.
    """

    return _export_tensorflow(qdq_model, path)


def export_to_mxnet(qdq_model: Any, path: str | os.PathLike[str], **kwargs: Any) -> MXNetExport:
    """Lower a Q/DQ ONNX model to an MXNet symbol + params (``<path>-symbol.json``, ``<path>-0000.params``),
    built and checked in the isolated MXNet environment.

    See :mod:`lpot_ir.backends.export.mxnet_lowering`.
    """
    return _export_mxnet(qdq_model, path, **kwargs)
