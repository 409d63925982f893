"""Quantization benchmarks: lpot-ir INT8 vs FP32 vs ONNX Runtime's own quantizer, side by side.

Run from the repository root::

    .venv/bin/python benchmarks/quantize.py                 # everything
    .venv/bin/python benchmarks/quantize.py --only resnet18 --rounds 5 --iterations 20

Structure first: each lpot-ir model and ONNX Runtime's quantization of the same FP32 model are loaded
with ORT's graph optimizations and the op types whose counts differ are printed (load-independent).
Latency is measured with :func:`lpot_ir.backends.onnxruntime.benchmarking.compare_latency`: one intra-op
thread, the models run in interleaved rounds with the order rotated each round, and the reported ratio
is the median of the per-round ratios. Two-thread and batched figures are printed beside them.

Sections:

* ``resnet18``: a ResNet-18-class CNN (torch, random weights, BatchNorm folded by the exporter), batch 1,
  224x224: FP32 vs lpot-ir INT8 (QDQ and QOperator) vs ``onnxruntime.quantization.quantize_static``
  (QDQ, per-channel, u8 activations / s8 weights).
* ``encoder``: a MiniLM-class transformer encoder (6 layers, hidden 384, 12 heads, sequence 128):
  static and dynamic INT8 vs FP32, vs ``quantize_static`` / ``quantize_dynamic``.
* ``apply``: the time to apply one TuningConfig to a calibrated ResNet-50-size model
  (clone + annotate + insert Q/DQ + serialize), several different configurations.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.benchmarking import compare_latency, format_table
from lpot_ir.ir.quant import Approach, QuantFormat
from lpot_ir.quantizer import ModelQuantizer, default_config

# -- models ------------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _export(module, example, *, dynamic_batch: bool = True) -> onnx.ModelProto:
    torch = _torch()
    module.eval()
    names = [f"input_{i}" for i in range(len(example))]
    axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(example),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def resnet(depth: int = 18) -> onnx.ModelProto:
    """A torchvision-style ResNet-18 (basic blocks) or ResNet-50 (bottlenecks), random weights."""
    torch = _torch()
    nn = torch.nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, cmid, stride):
            super().__init__()
            cout = cmid * 4
            self.c1, self.b1 = nn.Conv2d(cin, cmid, 1, bias=False), nn.BatchNorm2d(cmid)
            self.c2, self.b2 = nn.Conv2d(cmid, cmid, 3, stride, 1, bias=False), nn.BatchNorm2d(cmid)
            self.c3, self.b3 = nn.Conv2d(cmid, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(self.b2(self.c2(y)))
            y = self.b3(self.c3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    block, layers = (Basic, (2, 2, 2, 2)) if depth == 18 else (Bottleneck, (3, 4, 6, 3))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            blocks, cin = [], 64
            for i, n in enumerate(layers):
                width = 64 * 2**i
                for j in range(n):
                    blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                    cin = width * block.expansion
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000))

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    torch.manual_seed(0)
    net = ResNet()
    with torch.no_grad():  # realistic BatchNorm statistics so folded weights have realistic ranges
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return _export(net, [torch.randn(1, 3, 224, 224)])


def encoder(layers: int = 6, hidden: int = 384, heads: int = 12, seq: int = 128) -> onnx.ModelProto:
    """A MiniLM/BERT-class encoder (separate Q/K/V projections, GELU, post-LayerNorm) on float
    embeddings ``[batch, seq, hidden]``, random weights."""
    torch = _torch()
    nn = torch.nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (
                nn.Linear(hidden, hidden),
                nn.Linear(hidden, hidden),
                nn.Linear(hidden, hidden),
            )
            self.o = nn.Linear(hidden, hidden)
            self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.up, self.down = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

        def forward(self, x):
            b, s, _ = x.shape
            d = hidden // heads

            def split(t):
                return t.reshape(b, s, heads, d).transpose(1, 2)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            scores = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
            context = (scores @ v).transpose(1, 2).reshape(b, s, hidden)
            x = self.norm1(x + self.o(context))
            return self.norm2(x + self.down(torch.nn.functional.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*[Layer() for _ in range(layers)])

        def forward(self, x):
            return self.layers(x)

    torch.manual_seed(0)
    return _export(Encoder(), [torch.randn(1, seq, hidden)])


# -- ONNX Runtime's quantizer ------------------------------------------------------------------------------


def ort_static(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], folder: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    from onnxruntime.quantization import QuantFormat as OrtFormat

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    src, dst = folder / "ort_fp32.onnx", folder / "ort_static.onnx"
    onnx.save(model, str(src))
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=OrtFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return onnx.load(str(dst))


def ort_dynamic(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = folder / "ort_fp32_dyn.onnx", folder / "ort_dynamic.onnx"
    onnx.save(model, str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return onnx.load(str(dst))


# -- measurements ------------------------------------------------------------------------------------


def optimized_ops(model: onnx.ModelProto, folder: Path, name: str) -> Counter[str]:
    """Op type counts of ``model`` after ONNX Runtime's graph optimizations (what actually runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / f"{name}_ort_optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def structure_rows(
    label: str, models: dict[str, onnx.ModelProto], pairs: list[tuple[str, str]], folder: Path
) -> list[list[object]]:
    """One row per op type whose count differs between the two models of each (lpot, ort) pair."""
    rows: list[list[object]] = []
    for lpot, ort_name in pairs:
        a = optimized_ops(models[lpot], folder, f"{label}_{lpot}")
        b = optimized_ops(models[ort_name], folder, f"{label}_{ort_name}")
        differing = sorted(t for t in set(a) | set(b) if a[t] != b[t])
        rows += [[label, f"{lpot} vs {ort_name}", t, a[t], b[t]] for t in differing]
        if not differing:
            rows.append([label, f"{lpot} vs {ort_name}", "(identical op counts)", sum(a.values()), sum(b.values())])
    return rows


def _latency_rows(
    label: str, models: dict[str, onnx.ModelProto], feed, batched_feed, args
) -> list[list[object]]:
    rows = []
    for threads, inputs, tag in (
        (1, feed, "1 thread"),
        (2, feed, "2 threads"),
        (1, batched_feed, "batch x8"),
    ):
        if tag != "1 thread" and args.quick:
            continue
        cmp = compare_latency(
            models, inputs, rounds=args.rounds, iterations=args.iterations, intra_op_threads=threads
        )
        ref = cmp.latency_ms[next(iter(models))]
        for name in models:
            rows.append(
                [
                    label,
                    tag,
                    name,
                    round(cmp.latency_ms[name], 3),
                    round(cmp.ratio[name], 3),
                    round(ref / cmp.latency_ms[name], 2),
                ]
            )
        if "ort_int8" in models and "lpot_int8" in models:
            rows.append(
                [
                    label,
                    tag,
                    "ORT int8 / lpot int8",
                    "",
                    round(cmp.ratio["ort_int8"] / cmp.ratio["lpot_int8"], 3),
                    "",
                ]
            )
        if "ort_dynamic" in models and "lpot_dynamic" in models:
            rows.append(
                [
                    label,
                    tag,
                    "ORT dyn / lpot dyn",
                    "",
                    round(cmp.ratio["ort_dynamic"] / cmp.ratio["lpot_dynamic"], 3),
                    "",
                ]
            )
    return rows


def bench_resnet18(args, folder: Path) -> tuple[list[list[object]], list[list[object]]]:
    fp32 = resnet(18)
    rng = np.random.default_rng(0)
    feeds = [{"input_0": rng.normal(size=(1, 3, 224, 224)).astype(np.float32)} for _ in range(args.calib)]
    quantizer = ModelQuantizer(fp32, feeds)
    lpot = quantizer.quantize(default_config()).model
    lpot_qop = quantizer.quantize(default_config(fmt=QuantFormat.QOPERATOR)).model
    ort = ort_static(fp32, feeds, folder)
    models = {"fp32": fp32, "ort_int8": ort, "lpot_int8": lpot, "lpot_qoperator": lpot_qop}
    batched = {"input_0": rng.normal(size=(8, 3, 224, 224)).astype(np.float32)}
    structure = structure_rows("resnet18", models, [("lpot_int8", "ort_int8"), ("lpot_qoperator", "ort_int8")], folder)
    return structure, _latency_rows("resnet18", models, feeds[0], batched, args)


def bench_encoder(args, folder: Path) -> tuple[list[list[object]], list[list[object]]]:
    fp32 = encoder()
    rng = np.random.default_rng(0)
    feeds = [{"input_0": rng.normal(size=(1, 128, 384)).astype(np.float32)} for _ in range(args.calib)]
    quantizer = ModelQuantizer(fp32, feeds)
    static = quantizer.quantize(default_config()).model
    dynamic = quantizer.quantize(default_config(Approach.DYNAMIC)).model
    models = {
        "fp32": fp32,
        "ort_int8": ort_static(fp32, feeds, folder),
        "lpot_int8": static,
        "ort_dynamic": ort_dynamic(fp32, folder),
        "lpot_dynamic": dynamic,
    }
    batched = {"input_0": rng.normal(size=(8, 128, 384)).astype(np.float32)}
    structure = structure_rows("encoder", models, [("lpot_int8", "ort_int8"), ("lpot_dynamic", "ort_dynamic")], folder)
    return structure, _latency_rows("encoder", models, feeds[0], batched, args)


def bench_apply(args, folder: Path) -> list[list[object]]:
    fp32 = resnet(50)
    rng = np.random.default_rng(0)
    feeds = [{"input_0": rng.normal(size=(1, 3, 224, 224)).astype(np.float32)} for _ in range(2)]
    quantizer = ModelQuantizer(fp32, feeds)
    quantizer.quantize(default_config())  # calibrates once (not timed)
    names = [n.name for n in quantizer.nodes if n.op_type == "Conv"]
    configs = [default_config()] + [
        default_config().with_nodes_fp32(names[i::7]) for i in range(args.apply_runs)
    ]
    rows = []
    for label, write in (("apply (in memory)", False), ("apply + save to disk", True)):
        seconds = []
        for k, config in enumerate(configs):
            start = time.perf_counter()
            qm = quantizer.quantize(config)
            if write:
                qm.save(folder / f"r50_{k}.onnx")
            seconds.append(time.perf_counter() - start)
        rows.append(
            [
                "resnet50",
                label,
                f"{len(configs)} configs",
                round(statistics.median(seconds), 3),
                round(min(seconds), 3),
                round(max(seconds), 3),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["resnet18", "encoder", "apply"], action="append")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--calib", type=int, default=8, help="calibration samples")
    parser.add_argument("--apply-runs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="one-thread batch-1 latency only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sections = args.only or ["resnet18", "encoder", "apply"]
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        latency: list[list[object]] = []
        structure: list[list[object]] = []
        for section, bench in (("resnet18", bench_resnet18), ("encoder", bench_encoder)):
            if section in sections:
                ops, rows = bench(args, folder)
                structure += ops
                latency += rows
        if structure:
            print(
                format_table(
                    ["model", "pair", "op type", "count (lpot)", "count (ORT)"],
                    structure,
                    title="After ONNX Runtime's graph optimizations: op types whose counts differ",
                )
            )
        if latency:
            print(
                format_table(
                    ["model", "setting", "variant", "latency ms", "ratio to fp32", "speed-up"],
                    latency,
                    title="Latency (median of per-round ratios; speed-up = fp32 / variant)",
                )
            )
        if "apply" in sections:
            print(
                format_table(
                    ["model", "what", "runs", "median s", "min s", "max s"],
                    bench_apply(args, folder),
                    title="Applying one TuningConfig to a calibrated ResNet-50",
                )
            )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
