"""A model over protobuf's 2 GB limit, built on disk, and the peak memory of quantizing and tuning it.

Builds a synthetic multi-layer perceptron whose weights live in an external data file (written one layer
at a time, so building it never holds more than one layer in memory), then runs what a user runs on it
in a child process per stage, each measured on its own (peak resident memory from the kernel's
``VmHWM``, and the peak of anonymous memory sampled every 20 ms, i.e. without the file pages the weights
are mapped from):

* ``load``: :func:`lpot_ir.ir.load_model` (weights stay in the external data file, memory-mapped);
* ``quantize``: static post-training quantization with calibration, saved with :func:`save_model`;
* ``tune``: ``Quantization.fit()`` with the ``basic`` strategy and an ``eval_func`` (agreement with the
  FP32 model's outputs), the FP32 baseline included, the best model saved.

Run from the repository root::

    .venv/bin/python benchmarks/big_model.py [--gib 2.1] [--width 8192] [--workdir DIR]

It prints, per stage, the peak memory as a multiple of the model's size (the target: at most 2.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["build_big_model", "calibration_batches", "ModelSpec"]


class ModelSpec:
    """Where the built model is and what it takes."""

    def __init__(self, path: Path, width: int, layers: int, weight_bytes: int) -> None:
        self.path = path
        self.width = width
        self.layers = layers
        self.weight_bytes = weight_bytes


def build_big_model(folder: str | os.PathLike[str], *, gib: float = 2.1, width: int = 8192, seed: int = 0) -> ModelSpec:
    """Write ``big.onnx`` and ``big.onnx.data`` (about ``gib`` GiB of FP32 weights) into ``folder``.

    The network alternates the two forms exporters give a linear layer: ``Gemm`` with ``transB=1`` (a
    PyTorch ``nn.Linear`` on a 2-D input) and ``MatMul`` + ``Add``, with ``Relu`` between layers; the batch
    axis is dynamic (``batch``). Weights are scaled so activations keep their size through the layers.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layer_bytes = width * width * 4
    layers = max(2, int(np.ceil(gib * 2**30 / layer_bytes)))
    rng = np.random.default_rng(seed)
    data_name = "big.onnx.data"
    nodes: list[onnx.NodeProto] = []
    initializers: list[TensorProto] = []
    offset = 0
    current = "input"
    with open(folder / data_name, "wb") as handle:
        for index in range(layers):
            weight = (rng.standard_normal((width, width), dtype=np.float32) * np.float32(np.sqrt(2.0 / width)))
            bias = (rng.standard_normal(width, dtype=np.float32) * np.float32(0.01))
            for name, array in ((f"w{index}", weight), (f"b{index}", bias)):
                tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(array.shape))
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(array.nbytes))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
                handle.write(array.tobytes())
                offset += array.nbytes
                pad = (-offset) % 65536
                handle.write(b"\0" * pad)
                offset += pad
                initializers.append(tensor)
            del weight
            out = f"h{index}" if index < layers - 1 else "logits"
            linear = f"linear{index}" if index < layers - 1 else "logits"
            if index % 2 == 0:
                nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [linear], transB=1,
                                              name=f"fc{index}"))
            else:
                nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [f"mm{index}"], name=f"mm{index}"))
                nodes.append(helper.make_node("Add", [f"mm{index}", f"b{index}"], [linear], name=f"add{index}"))
            if index < layers - 1:
                nodes.append(helper.make_node("Relu", [linear], [out], name=f"relu{index}"))
            current = out
    graph = helper.make_graph(
        nodes, "big_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", width])],
        initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lpot-ir big_model")
    model.ir_version = 8
    (folder / "big.onnx").write_bytes(model.SerializeToString())
    return ModelSpec(folder / "big.onnx", width, layers, offset)


def calibration_batches(width: int, *, batches: int = 2, batch_size: int = 4, seed: int = 1) -> list[np.ndarray]:
    """Inputs for the model: standard normal rows."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch_size, width), dtype=np.float32) for _ in range(batches)]
