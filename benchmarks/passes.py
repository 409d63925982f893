"""Benchmark: load + ``fp32-optimize`` + save on a ResNet-50-size graph, and how the cost scales.

Run it:  python benchmarks/passes.py [--rounds 3]

The graph is ResNet-50 written the way old exporters write it: every weight and BatchNorm parameter
is a ``Constant`` node (so constant folding has work), an ``Identity`` after every block and a
``Dropout`` before the classifier: ~460 nodes and ~25.6 M parameters (random). Part 1 prints the
wall time of load + fp32-optimize + save of that model (target: under 1 s).

It runs the same model with its weights as initializers too (modern exporters), and prints the
split between load, fp32-optimize and save.

Part 2 runs the same topology repeated 1x, 4x and 16x (independent copies side by side, channels
divided by 8 so that 16 copies fit in memory and the time measures graph work, not byte copies), in
interleaved rounds with the order rotated, and prints the time per 1000 nodes and its ratio to 1x
(the median of per-round ratios). Linear cost means ratios near 1; quadratic cost would give ~4 and ~16.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.ir import load_model, save_model
from lpot_ir.passes import run_pipeline

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


class _GraphWriter:
    def __init__(self, prefix: str, rng: np.random.Generator, divisor: int, constants: bool) -> None:
        self.prefix, self.rng, self.divisor, self.constants = prefix, rng, divisor, constants
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.params = 0
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{self.prefix}{base}_{self.count}"

    def constant(self, array: np.ndarray) -> str:
        out = self.name("w")
        self.params += array.size
        if self.constants:
            self.nodes.append(
                helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(array))
            )
        else:
            self.initializers.append(numpy_helper.from_array(array, out))
        return out

    def node(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        fan_in = cin * k * k
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        y = self.node(
            "Conv", [x, self.constant(w)], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4
        )
        bn = [
            self.rng.uniform(0.5, 1.5, cout),
            self.rng.normal(0, 0.1, cout),
            self.rng.normal(0, 0.1, cout),
            self.rng.uniform(0.5, 1.5, cout),
        ]
        y = self.node("BatchNormalization", [y, *(self.constant(p.astype(np.float32)) for p in bn)])
        return self.node("Relu", [y]) if relu else y

    def resnet50(self, x: str) -> str:
        d = self.divisor
        y = self.conv_bn(x, 3, 64 // d, 7, stride=2)
        y = self.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        cin = 64 // d
        for i, (width, blocks) in enumerate(STAGES):
            w = width // d
            for b in range(blocks):
                stride = 2 if b == 0 and i > 0 else 1
                h = self.conv_bn(y, cin, w, 1)
                h = self.conv_bn(h, w, w, 3, stride=stride)
                h = self.conv_bn(h, w, 4 * w, 1, relu=False)
                shortcut = self.conv_bn(y, cin, 4 * w, 1, stride=stride, relu=False) if b == 0 else y
                y = self.node("Identity", [self.node("Relu", [self.node("Add", [h, shortcut])])])
                cin = 4 * w
        y = self.node("Flatten", [self.node("GlobalAveragePool", [y])])
        y = self.node("Dropout", [y])
        fc = (self.rng.standard_normal((cin, 1000)) * 0.01).astype(np.float32)
        return self.node(
            "Gemm", [y, self.constant(fc.T.copy()), self.constant(np.zeros(1000, np.float32))], transB=1
        )


def build_resnet50(
    copies: int = 1, divisor: int = 1, seed: int = 0, constants: bool = True
) -> tuple[onnx.ModelProto, int, int]:
    """Return (model, node count, parameter count): ``copies`` independent ResNet-50s side by side.

    ``constants``: weights in Constant nodes (old exporters) rather than initializers.
    """
    rng = np.random.default_rng(seed)
    nodes, inits, inputs, outputs, params = [], [], [], [], 0
    for c in range(copies):
        writer = _GraphWriter(f"r{c}/" if copies > 1 else "", rng, divisor, constants)
        x = f"{writer.prefix}input"
        y = writer.resnet50(x)
        nodes += writer.nodes
        inits += writer.initializers
        params += writer.params
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, 224, 224]))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 1000]))
    graph = helper.make_graph(nodes, "resnet50", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, len(nodes), params


def stage_times(src: Path, dst: Path) -> tuple[float, float, float]:
    """(load, fp32-optimize, save) seconds."""
    t0 = time.perf_counter()
    model = load_model(src)
    t1 = time.perf_counter()
    run_pipeline(model, "fp32-optimize")
    t2 = time.perf_counter()
    save_model(model, dst)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for constants, style in (
            (True, "old-exporter style: weights in Constant nodes"),
            (False, "weights as initializers"),
        ):
            proto, n_nodes, n_params = build_resnet50(constants=constants)
            src = folder / "resnet50.onnx"
            onnx.save(proto, src)
            stages = [stage_times(src, folder / "out.onnx") for _ in range(args.rounds)]
            times = [sum(s) for s in stages]
            load_s, opt_s, save_s = (statistics.median(s[i] for s in stages) for i in range(3))
            print(f"ResNet-50, {style}: {n_nodes} nodes, {n_params / 1e6:.1f} M parameters")
            print(
                f"  load + fp32-optimize + save: median {statistics.median(times):.3f} s over {args.rounds} "
                f"rounds (target < 1 s) = load {load_s:.3f} s + fp32-optimize {opt_s:.3f} s + save {save_s:.3f} s"
            )
        report = run_pipeline(load_model(src), "fp32-optimize")
        print(report)
        print()

        sizes = (1, 4, 16)
        paths = {}
        nodes = {}
        for k in sizes:
            proto, nodes[k], _ = build_resnet50(copies=k, divisor=8, seed=k)
            paths[k] = folder / f"x{k}.onnx"
            onnx.save(proto, paths[k])
        per_node: dict[int, list[tuple[float, float]]] = {k: [] for k in sizes}
        ratios: dict[int, list[tuple[float, float]]] = {k: [] for k in sizes}
        for r in range(args.rounds):
            order = sizes[r % len(sizes) :] + sizes[: r % len(sizes)]  # rotate the order each round
            cost = {}
            for k in order:
                load_s, opt_s, save_s = stage_times(paths[k], folder / "y.onnx")
                cost[k] = ((load_s + opt_s + save_s) / nodes[k] * 1000, opt_s / nodes[k] * 1000)
            for k in sizes:
                per_node[k].append(cost[k])
                ratios[k].append((cost[k][0] / cost[1][0], cost[k][1] / cost[1][1]))
        print("Same topology repeated (channels / 8); per 1000 nodes, and the ratio to 1x:")
        print(
            f"{'copies':>6}  {'nodes':>6}  {'total ms':>9}  {'ratio':>5}  {'optimize ms':>11}  {'ratio':>5}"
        )
        for k in sizes:
            total = statistics.median(c[0] for c in per_node[k]) * 1000
            opt = statistics.median(c[1] for c in per_node[k]) * 1000
            r_total = statistics.median(r[0] for r in ratios[k])
            r_opt = statistics.median(r[1] for r in ratios[k])
            print(f"{k:>6}  {nodes[k]:>6}  {total:>9.1f}  {r_total:>5.2f}  {opt:>11.1f}  {r_opt:>5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
