"""MXNet frontend: symbol JSON + params (or a Gluon ``HybridBlock``) -> ONNX, in an isolated environment.

MXNet 1.9.1 needs ``numpy<1.24`` and its ONNX exporter ``onnx<1.15``; neither can share an environment
with lpot-ir's onnx/onnxruntime. So the frontend creates once, and caches, a separate virtual environment
(:func:`ensure_mxnet_env`, default ``~/.cache/lpot-ir/mxnet-env``, overridable with
``LPOT_IR_MXNET_ENV``) with :data:`MXNET_ENV_REQUIREMENTS`, and runs ``mxnet.onnx.export_model`` there in
a subprocess (the script :mod:`lpot_ir.frontends._mxnet_export_script`). The interpreter that creates
the environment is ``LPOT_IR_MXNET_PYTHON`` or the current one; it must be Python 3.8-3.11 (numpy
1.23 has no wheels for newer versions).

Framework names are the MXNet symbol names (``conv0``, ``dense1``): an ONNX node named after a symbol,
or after a symbol plus a suffix the exporter adds, maps to that symbol.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.mxnet_env import (
    MXNET_ENV_REQUIREMENTS,
    ensure_mxnet_env,
    install_hint,
    mxnet_env_dir,
    mxnet_env_python,
)
from lpot_ir.errors import ConversionError, ModelLoadError
from lpot_ir.frontends.base import ConvertedModel, graph_io_names

__all__ = [
    "mxnet_param_names",
    "MXNET_ENV_REQUIREMENTS",
    "mxnet_env_dir",
    "mxnet_env_python",
    "ensure_mxnet_env",
    "find_symbol_and_params",
    "convert_mxnet",
    "symbol_name_map",
]

logger = logging.getLogger(__name__)

_SCRIPT = Path(__file__).with_name("_mxnet_export_script.py")


def mxnet_param_names(params_path: str | Path) -> set[str]:
    """Names stored in an MXNet ``.params`` file (``arg:``/``aux:`` prefixes removed), read without MXNet.

    The names are length-prefixed (uint64 little-endian) strings at the end of the file.
    """
    data = Path(params_path).read_bytes()
    names: set[str] = set()
    for prefix in (b"arg:", b"aux:"):
        start = data.find(prefix)
        while start >= 8:
            (length,) = struct.unpack_from("<Q", data, start - 8)
            if 4 < length < 4096 and start + length <= len(data):
                names.add(data[start + 4 : start + length].decode("utf-8", "replace"))
            start = data.find(prefix, start + 1)
    return names


def find_symbol_and_params(path: str | Path, params: str | Path | None) -> tuple[Path, Path | None]:
    """The symbol JSON and params file for a model path (either of the two), MXNet's export naming:
    ``net-symbol.json`` beside ``net-0000.params`` (the highest epoch when there are several).

    Raises:
        ModelLoadError: the symbol file is missing.
    """
    path = Path(path)
    if path.suffix == ".params":
        prefix = re.sub(r"-\d+$", "", path.stem)
        symbol = path.with_name(f"{prefix}-symbol.json")
        if not symbol.exists():
            raise ModelLoadError(
                f"No MXNet symbol file {symbol.name!r} beside {str(path)!r}. Pass the -symbol.json file as the model "
                "and the params with --params."
            )
        return symbol, Path(params) if params else path
    symbol = path
    if params:
        p = Path(params)
        if not p.exists():
            raise ModelLoadError(f"MXNet params file {str(p)!r} does not exist.")
        return symbol, p
    prefix = symbol.name[: -len("-symbol.json")] if symbol.name.endswith("-symbol.json") else symbol.stem
    candidates = sorted(symbol.parent.glob(f"{prefix}-*.params"))
    epochs = [c for c in candidates if re.fullmatch(rf"{re.escape(prefix)}-\d+\.params", c.name)]
    if epochs:
        return symbol, epochs[-1]
    plain = symbol.with_name(f"{prefix}.params")
    return symbol, plain if plain.exists() else None


def symbol_name_map(proto: onnx.ModelProto, symbol_names: set[str]) -> dict[str, str]:
    """ONNX node name -> MXNet symbol name (exact, else the longest symbol name it starts with)."""
    ordered = sorted(symbol_names, key=len, reverse=True)
    out: dict[str, str] = {}
    for node in proto.graph.node:
        name = node.name
        if name in symbol_names:
            out[name] = name
            continue
        match = next((s for s in ordered if name.startswith(s + "_") or name.startswith(s + "/")), None)
        if match is None:
            match = next((s for o in node.output for s in ordered if o == s or o.startswith(s + "_")), name)
        out[name] = match
    return out


def _example_arrays(example_inputs: Any, data_names: list[str]) -> list[np.ndarray]:
    def to_np(x: Any) -> np.ndarray:
        return x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)

    if example_inputs is None:
        raise ConversionError(
            f"Converting an MXNet model needs example inputs to fix the input shapes of {data_names} (MXNet symbol "
            "files store none): pass a calibration dataloader or example_inputs=array."
        )
    if isinstance(example_inputs, Mapping):
        missing = [n for n in data_names if n not in example_inputs]
        if missing:
            raise ConversionError(
                f"Example inputs lack MXNet input(s) {missing}; the symbol's inputs are {data_names}."
            )
        return [to_np(example_inputs[n]) for n in data_names]
    items = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
    if len(items) != len(data_names):
        raise ConversionError(
            f"The MXNet symbol has {len(data_names)} input(s) {data_names} but {len(items)} example input(s) were given."
        )
    return [to_np(x) for x in items]


def convert_mxnet(
    model: Any,
    *,
    params: str | Path | None = None,
    example_inputs: Any = None,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> ConvertedModel:
    """Convert an MXNet symbol JSON (+ params) or a Gluon ``HybridBlock`` to ONNX in the isolated environment.

    Args:
        model: ``net-symbol.json`` (or the ``.params``) path, or a HybridBlock (needs MXNet importable here).
        params: the ``.params`` file (default: found beside the symbol file).
        example_inputs: one batch (NDArray or numpy, a tuple, or a dict by input name): fixes input shapes.
        opset: the ONNX opset wanted; the exporter writes its own, converted to this one when possible.
        dynamic_batch: leave the batch axis dynamic.

    Raises:
        ConversionError: an unsupported MXNet op (named, with the symbol names using it), the environment
            cannot be created (says what to install).
    """
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lpot-mxnet-") as tmp:
        if not isinstance(model, (str, os.PathLike)):
            model = _export_block(model, example_inputs, Path(tmp))
            notes.append("exported the Gluon HybridBlock to symbol + params")
        symbol, params_path = find_symbol_and_params(model, params)
        if not symbol.exists():
            raise ModelLoadError(f"MXNet symbol file {str(symbol)!r} does not exist.")
        if params_path is None:
            raise ModelLoadError(
                f"No params file found for {symbol.name!r} (looked for {symbol.name.replace('-symbol.json', '')}-NNNN.params "
                "beside it). Pass it with --params FILE (YAML: model.params)."
            )
        graph = json.loads(symbol.read_text(encoding="utf-8"))

        stored = mxnet_param_names(params_path)
        nodes = graph["nodes"]
        data_names = [nodes[i]["name"] for i in graph.get("arg_nodes", []) if nodes[i]["name"] not in stored]
        arrays = _example_arrays(example_inputs, data_names)
        notes.append(f"read MXNet symbol {symbol.name} and params {params_path.name}; inputs {data_names}")
        python = ensure_mxnet_env()
        out = Path(tmp) / "model.onnx"
        request = {
            "symbol": str(symbol),
            "params": str(params_path),
            "output": str(out),
            "dynamic": dynamic_batch,
            "shapes": [list(a.shape) for a in arrays],
            "dtypes": [a.dtype.name for a in arrays],
        }
        req_path, reply_path = Path(tmp) / "request.json", Path(tmp) / "reply.json"
        req_path.write_text(json.dumps(request))
        start = time.monotonic()
        proc = subprocess.run(
            [str(python), "-I", str(_SCRIPT), str(req_path), str(reply_path)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if not reply_path.exists():
            raise ConversionError(
                f"The MXNet export subprocess ({python}) crashed (exit {proc.returncode}): "
                f"{' '.join(proc.stderr.strip().splitlines()[-2:])}. " + install_hint(mxnet_env_dir())
            )
        reply = json.loads(reply_path.read_text())
        if not reply["ok"]:
            raise _export_error(reply, nodes)
        proto = onnx.load(str(out))
    notes.append(
        f"exported with mxnet.onnx 1.9.1 in the isolated environment in {time.monotonic() - start:.1f} s"
    )
    proto = _to_opset(proto, opset, notes)
    if dynamic_batch:
        _name_batch_axis(proto)
    _tidy(proto)
    symbol_names = {n["name"] for n in nodes if n["op"] != "null"}
    ins, outs = graph_io_names(proto)
    return ConvertedModel(
        model=proto,
        framework="mxnet",
        name_map=symbol_name_map(proto, symbol_names),
        input_names=ins,
        output_names=outs,
        notes=tuple(notes),
    )


def _export_error(reply: Mapping[str, Any], nodes: list[dict[str, Any]]) -> ConversionError:
    if reply.get("kind") == "unsupported" and reply.get("op"):
        op = reply["op"]
        users = [n["name"] for n in nodes if n["op"] == op]
        return ConversionError(
            f"MXNet operator {op!r} (symbol node(s) {users[:5]}) has no ONNX conversion in mxnet.onnx 1.9.1. "
            "Replace it in the model, or export that part to ONNX another way."
        )
    return ConversionError(
        f"mxnet.onnx could not export the model: {reply.get('message', '')[:400]}. Check the input shapes given by "
        "the calibration data, or export the model to ONNX yourself."
    )


def _to_opset(proto: onnx.ModelProto, opset: int, notes: list[str]) -> onnx.ModelProto:
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current == opset:
        return proto
    try:
        converted = onnx.version_converter.convert_version(proto, opset)
        notes.append(f"converted the exporter's opset {current} to {opset}")
        return converted
    except Exception as exc:  # the IR loader upgrades opsets later; keep the exporter's
        notes.append(f"kept the exporter's opset {current} (conversion to {opset} failed: {str(exc)[:80]})")
        return proto


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """Name the dynamic batch dim ``batch``."""
    for vi in [*proto.graph.input, *proto.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _tidy(proto: onnx.ModelProto) -> None:
    """Name unnamed nodes after their first output; drop initializers listed as graph inputs."""
    used = {n.name for n in proto.graph.node if n.name}
    for node in proto.graph.node:
        if not node.name:
            base = node.output[0] if node.output and node.output[0] not in used else f"{node.op_type}"
            name, k = base, 1
            while name in used:
                name, k = f"{base}_{k}", k + 1
            node.name = name
            used.add(name)
    inits = {i.name for i in proto.graph.initializer}
    keep = [i for i in proto.graph.input if i.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)


def _export_block(block: Any, example_inputs: Any, folder: Path) -> Path:
    """Hybridize a Gluon block, run it once, export symbol + params (needs MXNet importable here)."""
    try:
        import mxnet as mx
    except Exception as exc:
        raise ConversionError(
            "Converting a Gluon HybridBlock object needs MXNet importable in this process, which lpot-ir's numpy "
            f"does not allow ({type(exc).__name__}). Export it yourself with block.hybridize(); block(x); "
            "block.export('net') and pass net-symbol.json (net-0000.params is found beside it)."
        ) from None
    if example_inputs is None:
        raise ConversionError("Converting a Gluon HybridBlock needs example inputs (one batch) to trace it.")
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    block.hybridize()
    block(*[mx.nd.array(np.asarray(x)) for x in items])
    prefix = folder / "block"
    block.export(str(prefix), epoch=0)
    return folder / "block-symbol.json"
