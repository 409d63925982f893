"""Framework-native callables over an ONNX candidate, for the user's ``eval_func``.

A user's ``eval_func(model)`` was written for their own framework's model. :func:`wrap_for_eval` gives
it an object it can call the same way while the candidate runs in ONNX Runtime:

* PyTorch: an ``nn.Module`` (:class:`OnnxRuntimeModule`): torch tensors in, torch tensors out, the
  output nested the way the original module nests it (tuple, dict...).
* TensorFlow / Keras: a callable (:class:`OnnxRuntimeTFCallable`): tf tensors (or arrays) in, tf tensors out.
* MXNet: a callable (:class:`OnnxRuntimeNDArrayCallable`). MXNet 1.9 needs ``numpy<1.24`` and cannot be
  imported next to lpot-ir, so it accepts NDArrays or anything with ``asnumpy()`` and numpy arrays, and
  returns ``mxnet.nd.NDArray`` when MXNet is importable, otherwise :class:`NDArrayResult`, a numpy
  array with MXNet's ``asnumpy()``/``asscalar()`` so NDArray-style evaluation code runs unchanged.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from lpot_ir.backends.onnxruntime.session import new_session
from lpot_ir.errors import DataError
from lpot_ir.frontends.detect import normalize_framework_name
from lpot_ir.optional import import_tensorflow

__all__ = [
    "wrap_for_eval",
    "make_inference_session",
    "NDArrayResult",
    "OnnxRuntimeRunner",
]

logger = logging.getLogger(__name__)

_SPEC_CACHE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""Output TreeSpec per original torch module, so each trial's wrapper does not rerun the FP32 model."""

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def make_inference_session(model: Any) -> Any:
    """An ONNX Runtime CPU session for a ModelProto, bytes, path or ``onnx_ir.Model``."""

    if isinstance(model, ort.InferenceSession):
        return model
    if isinstance(model, bytearray):
        model = bytes(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return new_session(model, options)


class OnnxRuntimeRunner:
    """Runs an ORT session on numpy feeds: positional values fill the inputs in order, keywords by name.

    Args:
        model_or_factory: an ONNX model (ModelProto, bytes, path, ``onnx_ir.Model``), an
            ``InferenceSession``, or a zero-argument callable returning one (created on first use).
    """

    def __init__(self, model_or_factory: Any) -> None:
        self._source = model_or_factory
        self._session: Any = None

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (created on first use)."""
        if self._session is None:
            src = self._source
            is_model = isinstance(src, (onnx.ModelProto, bytes, bytearray, str, os.PathLike)) or (
                type(src).__module__.startswith(("onnx_ir", "onnxruntime"))
            )
            self._session = make_inference_session(src if is_model or not callable(src) else src())
        return self._session

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, args: Sequence[np.ndarray], kwargs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        inputs = self.session.get_inputs()
        if len(args) > len(inputs):
            raise DataError(
                f"The model takes {len(inputs)} input(s) ({[i.name for i in inputs]}) but was called with "
                f"{len(args)} positional argument(s)."
            )
        feeds: dict[str, np.ndarray] = {}
        for meta, value in zip(inputs, args, strict=False):
            feeds[meta.name] = value
        for key, value in kwargs.items():
            if key not in {i.name for i in inputs}:
                raise DataError(
                    f"Keyword input {key!r} is not an input of the model; its inputs are {[i.name for i in inputs]}."
                )
            feeds[key] = value
        missing = [i.name for i in inputs if i.name not in feeds]
        if missing:
            raise DataError(
                f"Model input(s) {missing} were not given; the model takes {[i.name for i in inputs]}."
            )
        for meta in inputs:
            want = _ORT_TO_NUMPY.get(meta.type)
            if want is not None and feeds[meta.name].dtype != want:
                feeds[meta.name] = feeds[meta.name].astype(want)
        try:
            return self.session.run(None, feeds)
        except Exception as exc:
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            raise DataError(
                f"ONNX Runtime could not run the candidate model on inputs with shapes {shapes}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}. Expected "
                f"{[(i.name, i.shape, i.type) for i in inputs]}."
            ) from None


def wrap_for_eval(onnx_model_or_session_factory: Any, framework: str, *, like: Any = None) -> Any:
    """A framework-native callable that runs an ONNX candidate in ONNX Runtime.

    Args:
        onnx_model_or_session_factory: the candidate (ModelProto, bytes, path, ``onnx_ir.Model``), an
            ORT ``InferenceSession``, or a zero-argument callable returning a session.
        framework: ``"pytorch"``, ``"tensorflow"``, ``"keras"``, ``"mxnet"`` or ``"onnx"`` (aliases accepted).
        like: how to shape the outputs: a :class:`~lpot_ir.frontends.base.ConvertedModel` (its recorded
            output structure), or the original framework model (called once on the first batch to learn
            its output structure). ``None``: one output as is, several as a tuple.

    Returns:
        PyTorch: a ``torch.nn.Module``. TensorFlow/Keras: a callable of tf tensors. MXNet: a callable of
        NDArrays. ONNX: a callable of numpy arrays returning a list of arrays.
    """
    kind = normalize_framework_name(framework)
    runner = OnnxRuntimeRunner(onnx_model_or_session_factory)
    if kind == "pytorch":
        return _torch_module(runner, like)
    if kind in ("tensorflow", "keras"):
        return OnnxRuntimeTFCallable(runner, like)
    if kind == "mxnet":
        return OnnxRuntimeNDArrayCallable(runner)
    return lambda *args, **kwargs: runner.run(
        [np.asarray(a) for a in args], {k: np.asarray(v) for k, v in kwargs.items()}
    )


def _torch_module(runner: OnnxRuntimeRunner, like: Any) -> Any:
    import torch
    from torch.utils import _pytree

    class OnnxRuntimeModule(torch.nn.Module):
        """An ``nn.Module`` whose forward runs the ONNX candidate in ONNX Runtime."""

        def __init__(self) -> None:
            super().__init__()
            self.runner = runner
            self._spec = getattr(like, "output_structure", None)
            self._like = like if isinstance(like, torch.nn.Module) else None

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            def to_np(x: Any) -> np.ndarray:
                if isinstance(x, torch.Tensor):
                    return x.detach().cpu().numpy()
                return np.asarray(x)

            outs = self.runner.run([to_np(a) for a in args], {k: to_np(v) for k, v in kwargs.items()})
            tensors = [torch.from_numpy(np.ascontiguousarray(o)) for o in outs]
            if self._spec is None and self._like is not None:
                spec = _SPEC_CACHE.get(self._like)
                if spec is None:  # learn the output nesting from the original module, once per module
                    with torch.no_grad():
                        spec = _pytree.tree_flatten(self._like(*args, **kwargs))[1]
                    _SPEC_CACHE[self._like] = spec
                self._spec, self._like = spec, None
            if self._spec is not None and self._spec.num_leaves == len(tensors):
                return _pytree.tree_unflatten(tensors, self._spec)
            return tensors[0] if len(tensors) == 1 else tuple(tensors)

    return OnnxRuntimeModule().eval()


class OnnxRuntimeTFCallable:
    """Call with tf tensors (or arrays) like a Keras model / tf.function; returns tf tensors."""

    def __init__(self, runner: OnnxRuntimeRunner, like: Any = None) -> None:
        self.runner = runner
        self._like = like if callable(like) and not hasattr(like, "output_structure") else None
        self._structure: Any = None
        if self._like is not None and hasattr(self._like, "outputs") and hasattr(self._like, "output"):
            self._structure, self._like = self._like.output, None  # a Keras model: symbolic, nothing to run

    def __call__(self, *args: Any, training: bool = False, **kwargs: Any) -> Any:
        tf = import_tensorflow()
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            kwargs, args = dict(args[0]), ()
        if len(args) == 1 and isinstance(args[0], (list, tuple)) and len(self.runner.input_names) > 1:
            args = tuple(args[0])

        def to_np(x: Any) -> np.ndarray:
            return x.numpy() if hasattr(x, "numpy") else np.asarray(x)

        outs = [
            tf.convert_to_tensor(o)
            for o in self.runner.run([to_np(a) for a in args], {k: to_np(v) for k, v in kwargs.items()})
        ]
        if self._structure is None and self._like is not None:
            self._structure = self._like(*args, **kwargs)
            self._like = None
        if self._structure is not None and len(tf.nest.flatten(self._structure)) == len(outs):
            return tf.nest.pack_sequence_as(self._structure, outs)
        return outs[0] if len(outs) == 1 else outs


class NDArrayResult(np.ndarray):
    """A numpy array with MXNet NDArray's ``asnumpy()`` / ``asscalar()``, used when MXNet is not importable."""

    def asnumpy(self) -> np.ndarray:
        return np.asarray(self).copy()

    def asscalar(self) -> Any:
        return np.asarray(self).item()

    def wait_to_read(self) -> None:
        return None


class OnnxRuntimeNDArrayCallable:
    """Call with MXNet NDArrays (anything with ``asnumpy()``) or numpy arrays; returns NDArrays."""

    def __init__(self, runner: OnnxRuntimeRunner) -> None:
        self.runner = runner
        try:
            import mxnet

            self._mx: Any = mxnet
        except Exception:  # MXNet absent or unimportable next to numpy>=1.24
            self._mx = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        def to_np(x: Any) -> np.ndarray:
            return x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)

        outs = self.runner.run([to_np(a) for a in args], {k: to_np(v) for k, v in kwargs.items()})
        if self._mx is not None:
            wrapped = [self._mx.nd.array(o, dtype=o.dtype) for o in outs]
        else:
            wrapped = [np.asarray(o).view(NDArrayResult) for o in outs]
        return wrapped[0] if len(wrapped) == 1 else wrapped

    forward = __call__
