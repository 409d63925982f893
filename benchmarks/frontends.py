"""Frontends benchmark: conversion time and INT8-vs-FP32 speedup of a ResNet-50 per framework.

For each framework a ResNet-50 (random weights; nothing is downloaded) is built in that framework,
converted to ONNX by ``lpot_ir.frontends.to_onnx`` (timed), quantized once with ``lpot_ir.quantize``
(static, default configuration, calibrated on a few random batches), and the FP32 and INT8 ONNX models
are timed side by side in ONNX Runtime (one intra-op thread, interleaved rounds with the order rotated,
the median of per-round ratios). The ``onnx`` row is the PyTorch-exported model given to lpot-ir as a
plain ONNX file: the same architecture with no conversion, for comparison.

Run:  .venv/bin/python benchmarks/frontends.py [--frameworks pytorch,onnx,tensorflow,mxnet] [--rounds 5]
Prints a table; takes a few minutes (mostly the MXNet environment on its first run, and timing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_MXNET_BUILD = """
import sys, mxnet as mx
from mxnet.gluon.model_zoo import vision
net = vision.resnet50_v1(pretrained=False)
net.initialize(mx.init.Xavier())
net.hybridize()
net(mx.nd.zeros((1, 3, 224, 224)))
net.export(sys.argv[1] + "/resnet50", epoch=0)
"""


def torch_resnet50() -> Any:
    """torchvision's ResNet-50 architecture, written out (torchvision is not a dependency)."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            idt = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + idt)

    class ResNet50(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            layers, cin = [], 64
            for i, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
                stage = []
                for b in range(blocks):
                    stage.append(Bottleneck(cin, width, 2 if b == 0 and i > 0 else 1))
                    cin = width * 4
                layers.append(nn.Sequential(*stage))
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    return ResNet50().eval()


def build(framework: str, tmp: Path, torch_onnx: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(model source, example input, extra to_onnx kwargs) for one framework."""
    rng = np.random.default_rng(0)
    nchw = rng.random((1, 3, 224, 224), dtype=np.float32)
    if framework == "pytorch":
        return torch_resnet50(), nchw, {}
    if framework == "onnx":
        return torch_onnx["model"], nchw, {}
    if framework == "tensorflow":
        import keras

        model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
        return model, rng.random((1, 224, 224, 3), dtype=np.float32), {}
    if framework == "mxnet":
        from lpot_ir.frontends.mxnet import ensure_mxnet_env

        python = ensure_mxnet_env()
        subprocess.run([str(python), "-I", "-c", _MXNET_BUILD, str(tmp)], check=True, capture_output=True)
        return str(tmp / "resnet50-symbol.json"), nchw, {}
    raise SystemExit(f"unknown framework {framework!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="pytorch,onnx,tensorflow,mxnet")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()

    from lpot_ir import quantize
    from lpot_ir.backends.onnxruntime.benchmarking import compare_latency, format_table
    from lpot_ir.frontends import to_onnx

    rows = []
    torch_onnx: dict[str, Any] = {}
    names = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if "onnx" in names and "pytorch" not in names:
        names.insert(0, "pytorch")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for framework in names:
            model, example, extra = build(framework, tmp, torch_onnx)
            start = time.perf_counter()
            converted = to_onnx(model, example_inputs=example, **extra)
            seconds = time.perf_counter() - start
            if framework == "pytorch":
                torch_onnx["model"] = converted.model
            calib = [np.random.default_rng(i).random(example.shape, dtype=np.float32) for i in range(4)]
            int8 = quantize(converted.model, calib_dataloader=calib, progress=False)
            cmp = compare_latency(
                {"fp32": converted.model, "int8": int8.model}, example, rounds=args.rounds, iterations=args.iterations
            )
            rows.append(
                (
                    framework, f"{seconds:.1f}", len(converted.model.graph.node), f"{cmp.latency_ms['fp32']:.1f}",
                    f"{cmp.latency_ms['int8']:.1f}", f"{cmp.speedup('int8'):.2f}x",
                )
            )
            print(f"done: {framework}", file=sys.stderr)
    headers = ("framework", "convert s", "ONNX nodes", "FP32 ms", "INT8 ms", "INT8 speedup")
    print(format_table(headers, rows, title="ResNet-50, batch 1, 1 intra-op thread (median of per-round ratios)"))


if __name__ == "__main__":
    main()
