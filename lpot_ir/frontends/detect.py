"""Which framework a model object or path belongs to, without importing any framework."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends.base import FRAMEWORKS

__all__ = ["detect_framework", "normalize_framework_name"]

logger = logging.getLogger(__name__)

_ALIASES = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxrt": "onnx",
    "onnxrt_integerops": "onnx",
    "onnxrt_qlinearops": "onnx",
    "onnxrt_qdq": "onnx",
    "pytorch": "pytorch",
    "torch": "pytorch",
    "pytorch_fx": "pytorch",
    "pytorch_ipex": "pytorch",
    "torchscript": "pytorch",
    "tensorflow": "tensorflow",
    "tf": "tensorflow",
    "tensorflow_itex": "tensorflow",
    "keras": "keras",
    "mxnet": "mxnet",
    "gluon": "mxnet",
}

_SUFFIXES = {
    ".onnx": "onnx",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".torchscript": "pytorch",
    ".ptl": "pytorch",
    ".jit": "pytorch",
    ".pb": "tensorflow",
    ".pbtxt": "tensorflow",
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".params": "mxnet",
}


def normalize_framework_name(name: str) -> str:
    """Map a framework name as users write it (``torch``, ``tf``, LPOT's ``onnxrt_qlinearops``...) to one of
    :data:`~lpot_ir.frontends.base.FRAMEWORKS`.

    Raises:
        ConversionError: the name is not a supported framework.
    """
    key = str(name).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    raise ConversionError(
        f"Unknown framework {name!r} (from model.framework or the framework argument). "
        f"Use one of: {', '.join(FRAMEWORKS)}."
    )


def detect_framework(model: object, framework: str | None = None) -> str:
    """Tell which framework ``model`` belongs to.

    Objects are recognized by the modules their classes are defined in (``type(obj).__mro__``), so no
    framework is imported. Paths are recognized by suffix, then by folder contents or the first bytes.

    Args:
        model: a path (file or SavedModel folder), bytes, ``onnx.ModelProto``, ``onnx_ir.Model``, or a
            framework object (``torch.nn.Module``, ``keras.Model``, ``tf.Module``/``tf.function``,
            ``tf.compat.v1.GraphDef``, MXNet ``HybridBlock`` or ``Symbol``).
        framework: an explicit choice (YAML ``model.framework``); wins over detection.

    Returns:
        One of ``"onnx"``, ``"pytorch"``, ``"tensorflow"``, ``"keras"``, ``"mxnet"``.

    Raises:
        ConversionError: ``framework`` is not a known name, or the object's type is not recognized.
        ModelLoadError: the path does not exist or its kind cannot be told.
    """
    if framework:
        return normalize_framework_name(framework)
    if isinstance(model, (bytes, bytearray)):
        return "onnx"
    if isinstance(model, (str, os.PathLike)):
        return _detect_path(Path(model))
    modules = [getattr(c, "__module__", "") or "" for c in type(model).__mro__]
    roots = [m.split(".")[0] for m in modules]
    if "onnx" in roots or "onnx_ir" in roots:
        return "onnx"
    if (
        "keras" in roots
        or "tf_keras" in roots
        or any(m.startswith("tensorflow.python.keras") for m in modules)
    ):
        return "keras"
    if "torch" in roots:
        return "pytorch"
    if "tensorflow" in roots:
        return "tensorflow"
    if "mxnet" in roots:
        return "mxnet"
    raise ConversionError(
        f"Cannot tell the framework of a model of type {type(model).__module__}.{type(model).__qualname__}. "
        "Pass a path (.onnx, TorchScript .pt, SavedModel folder, frozen .pb, .keras/.h5, MXNet "
        "-symbol.json), an onnx.ModelProto, a torch.nn.Module, a keras.Model or an MXNet HybridBlock, or "
        "set model.framework in the YAML."
    )


def _detect_path(path: Path) -> str:
    if not path.exists():
        raise ModelLoadError(f"Model path {str(path)!r} does not exist. Check the path and try again.")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "tensorflow"
        if (path / "keras_metadata.pb").exists():
            return "keras"
        raise ModelLoadError(
            f"Folder {str(path)!r} is not a TensorFlow SavedModel (no saved_model.pb in it), the only kind "
            "of model folder lpot-ir reads. Pass the model file itself (.onnx, .pt, .pb, .keras, "
            "-symbol.json) instead."
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        if _is_mxnet_symbol(path):
            return "mxnet"
        raise ModelLoadError(
            f"{str(path)!r} is a JSON file but not an MXNet symbol file (no 'nodes'/'arg_nodes'/'heads' keys). "
            "Pass an MXNet net-symbol.json, or a model file of another framework."
        )
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        return "keras"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "pytorch"
        if "config.json" in names and "model.weights.h5" in names:
            return "keras"
    return "onnx"


def _is_mxnet_symbol(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "nodes" in data and ("arg_nodes" in data or "heads" in data)
