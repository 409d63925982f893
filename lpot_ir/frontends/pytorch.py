"""PyTorch frontend: ``torch.nn.Module`` or TorchScript file -> ONNX, with ONNX node -> module path.

The model is exported with ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter). It was
chosen over ``dynamo=True`` because, with torch 2.13, it emits opset 17 directly (the dynamo exporter
starts at opset 18 and fails to convert down), folds BatchNorm into Conv in eval mode with the Conv
keeping its module's name (the dynamo exporter names the fused Conv after the BatchNorm), and is several
times faster. Its node names carry the module scope, e.g. ``/layer1/layer1.0/conv1/Conv``, where each
segment is a module's name with leading non-numeric atoms dropped (``layer1.0.conv1`` -> ``conv1``,
``layer1.0`` stays). :func:`module_name_map` resolves those segments against ``named_modules()``, so
the map holds real module paths (``layer1.0.conv1``).

Framework names: an ONNX node inside a leaf module (one with no sub-modules: ``Conv2d``, ``Linear``,
``LayerNorm``) maps to the module path. A node produced by a functional call in a non-leaf module maps
to ``<module path>/<op>`` (``layer1.0/Add``), and at the top level to ``<op>`` (``Relu``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends.base import ConvertedModel, graph_io_names

__all__ = ["convert_pytorch", "load_torchscript", "module_name_map", "resolve_scope"]

logger = logging.getLogger(__name__)

_OP_RE = re.compile(r"operator '([^']+)'")


def load_torchscript(path: str | os.PathLike[str]) -> Any:
    """Load a TorchScript file (``torch.jit.save``) on the CPU.

    Raises:
        ModelLoadError: the file is not a TorchScript archive.
    """
    import torch

    try:
        return torch.jit.load(os.fspath(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError with C++ text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{os.fspath(path)!r} could not be loaded as a TorchScript file ({first}). Save the model with "
            "torch.jit.trace(model, example).save(path) or torch.jit.script(model).save(path), or pass the "
            "torch.nn.Module itself."
        ) from None


def convert_pytorch(
    model: Any,
    example_inputs: Any,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> ConvertedModel:
    """Export a ``torch.nn.Module`` (or a loaded TorchScript module, or a TorchScript path) to ONNX.

    Args:
        model: the module, or a path to a TorchScript file.
        example_inputs: what ``model`` takes: a tensor (or numpy array), a tuple/list of positional
            arguments, or a dict of keyword arguments. The calibration dataloader's first batch works.
        opset: the ONNX opset to export to.
        dynamic_batch: make axis 0 of every input and output dynamic.

    Returns:
        The :class:`ConvertedModel`; ``output_structure`` is the ``TreeSpec`` of the module's output.

    Raises:
        ConversionError: no example inputs, an operator torch.onnx cannot export (named, with the module
            path where it is called), or a forward that cannot be traced.
    """
    import torch

    notes: list[str] = []
    if isinstance(model, (str, Path)):
        notes.append(f"loaded TorchScript file {Path(model).name}")
        model = load_torchscript(model)
    if not isinstance(model, torch.nn.Module):
        raise ConversionError(
            f"The PyTorch frontend needs a torch.nn.Module or a TorchScript file, got "
            f"{type(model).__qualname__}."
        )
    if example_inputs is None:
        raise ConversionError(
            "Converting a PyTorch model to ONNX needs example inputs (one batch the model's forward accepts). "
            "Pass a calibration dataloader, or example_inputs=(tensor, ...)."
        )
    args, kwargs = _as_args(example_inputs)
    input_names = _input_names(model, args, kwargs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                reference = model(*args, **kwargs)
            except Exception as exc:
                raise ConversionError(
                    f"Running the PyTorch model on the example inputs failed before export: "
                    f"{type(exc).__name__}: {_first_line(exc)}. Input shapes: {_shapes(args, kwargs)}. "
                    "Check that the calibration data has the shape the model's forward expects."
                ) from None
        flat_out, out_spec = torch.utils._pytree.tree_flatten(reference)
        if not flat_out or not all(isinstance(t, torch.Tensor) for t in flat_out):
            raise ConversionError(
                "The PyTorch model's output must be tensors (possibly nested in tuples, lists or dicts); "
                f"got {type(reference).__qualname__} with non-tensor leaves."
            )
        output_names = ["output"] if len(flat_out) == 1 else [f"output_{i}" for i in range(len(flat_out))]
        dynamic_axes = None
        if dynamic_batch:
            dynamic_axes = {
                n: {0: "batch"}
                for n, t in zip(input_names, _flat_tensors(args, kwargs), strict=False)
                if t.dim()
            }
            dynamic_axes.update(
                {n: {0: "batch"} for n, t in zip(output_names, flat_out, strict=False) if t.dim()}
            )
        buffer = io.BytesIO()
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("always")
            try:
                torch.onnx.export(
                    model,
                    tuple(args),
                    buffer,  # type: ignore[arg-type]  # hint says path-only; dynamo=False writes to files too
                    kwargs=kwargs or None,
                    dynamo=False,
                    opset_version=opset,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
            except Exception as exc:
                raise _export_error(exc, model, args, kwargs, opset) from None
        for w in caught:
            logger.debug("torch.onnx: %s", w.message)
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    named = dict(model.named_modules())
    name_map = module_name_map(proto, named)
    n_bn = sum(1 for m in named.values() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    n_bn_left = sum(1 for n in proto.graph.node if n.op_type == "BatchNormalization")
    notes.append(
        f"exported {type(model).__qualname__} with torch.onnx (TorchScript exporter), opset {opset}, "
        f"{len(proto.graph.node)} nodes" + (", dynamic batch axis" if dynamic_batch else "")
    )
    if n_bn > n_bn_left:
        notes.append(f"folded {n_bn - n_bn_left} BatchNorm module(s) into the preceding Conv (eval mode)")
    mapped = sum(1 for v in name_map.values() if v in named)
    notes.append(f"{mapped} of {len(proto.graph.node)} ONNX nodes named after a module path")
    ins, outs = graph_io_names(proto)
    return ConvertedModel(
        model=proto,
        framework="pytorch",
        name_map=name_map,
        input_names=ins,
        output_names=outs,
        notes=tuple(notes),
        output_structure=out_spec,
    )


def resolve_scope(segments: Iterable[str], module_names: Iterable[str]) -> str | None:
    """Resolve torch.onnx scope segments (``["layer1", "layer1.0", "conv1"]``) to a module path.

    Each segment is a module's qualified name with leading non-numeric atoms dropped; the module it names
    is the shortest registered path under the current one that ends with the segment.

    Returns:
        The module path (``"layer1.0.conv1"``), ``""`` for no segments, or ``None`` when a segment does
        not resolve.
    """
    names = set(module_names)
    path = ""
    for seg in segments:
        prefix = f"{path}." if path else ""
        candidates = [
            q
            for q in names
            if q.startswith(prefix) and (q == prefix + seg or q == seg or q.endswith("." + seg))
        ]
        if not candidates:
            return None
        path = min(candidates, key=lambda q: (q.count("."), len(q)))
    return path


def module_name_map(model: onnx.ModelProto, modules: Mapping[str, Any]) -> dict[str, str]:
    """ONNX node name -> PyTorch framework name for a model exported by the TorchScript exporter.

    Args:
        model: the exported model.
        modules: ``dict(module.named_modules())`` of the exported module.
    """
    names = [n for n in modules if n]
    leaves = {n for n, m in modules.items() if n and not any(True for _ in m.children())}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if not node.name:
            continue
        parts = node.name.split("/")
        if len(parts) < 2:
            out[node.name] = node.name
            continue
        scope, op = [p for p in parts[:-1] if p], parts[-1]
        path = resolve_scope(scope, names)
        if path is None:
            out[node.name] = ".".join(scope) + "/" + op if scope else op
        elif path in leaves:
            out[node.name] = path
        else:
            out[node.name] = f"{path}/{op}" if path else op
    return out


def _as_args(example: Any) -> tuple[list[Any], dict[str, Any]]:
    import torch

    def to_torch(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(x))
        return x

    if isinstance(example, Mapping):
        return [], {k: to_torch(v) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return [to_torch(x) for x in example], {}
    return [to_torch(example)], {}


def _flat_tensors(args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    import torch

    return [t for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor)]


def _input_names(model: Any, args: list[Any], kwargs: dict[str, Any]) -> list[str]:
    if kwargs:
        return list(kwargs)
    try:
        params = [
            p.name
            for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    if len(params) >= len(args):
        return params[: len(args)]
    return ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]


def _shapes(args: list[Any], kwargs: dict[str, Any]) -> str:
    items = [getattr(a, "shape", type(a).__name__) for a in args]
    items += [f"{k}={getattr(v, 'shape', type(v).__name__)}" for k, v in kwargs.items()]
    return ", ".join(str(tuple(i)) if not isinstance(i, str) else i for i in items)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _export_error(
    exc: Exception, model: Any, args: list[Any], kwargs: dict[str, Any], opset: int
) -> ConversionError:
    text = str(exc)
    match = _OP_RE.search(text)
    if match:
        op = match.group(1)
        where = _op_scopes(model, args, kwargs, op)
        place = f" (called in module {', '.join(repr(w) for w in where)})" if where else ""
        return ConversionError(
            f"PyTorch operator {op!r}{place} cannot be exported to ONNX opset {opset} by torch.onnx "
            f"({_first_line(exc)}). Replace the call with supported operations, raise the opset, or keep "
            "that part of the model outside the quantized module."
        )
    return ConversionError(
        f"torch.onnx could not export {type(model).__qualname__}: {type(exc).__name__}: {_first_line(exc)}. "
        "Check that forward() can be traced (no data-dependent Python control flow, tensor outputs), or "
        "export the model to ONNX yourself and pass the .onnx file."
    )


def _op_scopes(model: Any, args: list[Any], kwargs: dict[str, Any], op: str) -> list[str]:
    """Module paths where the TorchScript trace calls ``op`` (best effort, for the error message)."""
    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, tuple(args), check_trace=False, strict=False)
        graph = traced.inlined_graph
    except Exception:
        return []
    found: list[str] = []
    for node in graph.nodes():
        if node.kind() != op:
            continue
        scope = node.scopeName().split("/")[-1] if node.scopeName() else ""
        name = scope.replace("__module.", "", 1) if scope.startswith("__module") else scope
        name = name or "<top-level forward>"
        if name not in found:
            found.append(name)
    return found
