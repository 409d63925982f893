"""Calibration cost against plain FP32 inference, and peak memory against the number of samples.

Builds a ResNet-18 (torch, random weights, eval mode), exports it to ONNX once, folds BatchNorm into
Conv (ONNX Runtime's basic optimizations, standing in for lpot-ir's FP32 optimization), then:

1. **time**: in interleaved rounds (order rotated each round), runs ``--samples`` plain FP32 inferences
   (batch 1, one ONNX Runtime session) and ``calibrate(..., sampling_size=--samples)`` with minmax and with
   all four algorithms, and prints the median of the per-round ratios calibration / inference.
   Calibration time includes its one-time setup (instrumented copy of the model, session creation).
2. **memory**: runs calibration in fresh subprocesses (no torch imported there) with 100 and 1000 samples
   and prints peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and the ratio 1000 / 100.

Every ONNX Runtime session (plain and calibration) uses one intra-op thread. Usage::

    .venv/bin/python benchmarks/calibration.py [--image-size 224] [--rounds 3] [--samples 100]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ALGORITHM_SETS = {"minmax": ("minmax",), "all4": ("minmax", "kl", "percentile", "mse")}


def build_resnet18(path: Path, image_size: int) -> None:
    """Export a torchvision-style ResNet-18 (random weights) with a dynamic batch axis."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            layers, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    torch.manual_seed(0)
    model = ResNet18().eval()
    example = torch.randn(1, 3, image_size, image_size)
    exported = path.with_suffix(".export.onnx")
    torch.onnx.export(
        model,
        (example,),
        str(exported),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    # Calibration runs on the FP32-optimized model (BatchNorm folded into Conv); ONNX Runtime's basic
    # (standard-op) optimizations give that model here, and both sides of the comparison use it.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])


def samples(count: int, image_size: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` random batch-1 images, generated lazily (the loader itself holds one sample)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.standard_normal((1, 3, image_size, image_size), dtype=np.float32)


def plain_inference_seconds(session: object, count: int, image_size: int) -> float:
    name = session.get_inputs()[0].name  # type: ignore[attr-defined]
    start = time.perf_counter()
    for x in samples(count, image_size):
        session.run(None, {name: x})  # type: ignore[attr-defined]
    return time.perf_counter() - start


def calibration_seconds(model: object, count: int, image_size: int, algorithms: tuple[str, ...]) -> float:
    from lpot_ir.calibration import calibrate

    start = time.perf_counter()
    result = calibrate(
        model,
        samples(count, image_size),
        algorithms=algorithms,
        sampling_size=count,
        progress=False,
        intra_op_threads=1,
    )
    elapsed = time.perf_counter() - start
    assert result.num_samples == count
    return elapsed


def time_benchmark(model_path: Path, image_size: int, rounds: int, count: int) -> dict[str, object]:
    from lpot_ir.backends.onnxruntime.session import make_session
    from lpot_ir.ir.model import load_model

    model = load_model(model_path)
    session = make_session(model, intra_op_threads=1)
    tasks = ["plain", *ALGORITHM_SETS]
    times: dict[str, list[float]] = {t: [] for t in tasks}
    plain_inference_seconds(session, 5, image_size)  # warm-up
    for r in range(rounds):
        order = tasks[r % len(tasks) :] + tasks[: r % len(tasks)]
        for task in order:
            if task == "plain":
                times[task].append(plain_inference_seconds(session, count, image_size))
            else:
                times[task].append(calibration_seconds(model, count, image_size, ALGORITHM_SETS[task]))
    ratios = {
        name: statistics.median(c / p for c, p in zip(times[name], times["plain"], strict=True))
        for name in ALGORITHM_SETS
    }
    return {"times": times, "ratios": ratios}


def memory_child(model_path: str, count: int, image_size: int, algorithms: str) -> None:
    """Run in a fresh process: calibrate ``count`` samples and print peak RSS (MiB) as JSON.

    Also records the current RSS when sample 50 is requested (the loop is running, everything is set
    up) and when the last one is, so growth inside the loop is visible even if set-up sets the peak.
    """
    import psutil

    from lpot_ir.calibration import calibrate
    from lpot_ir.ir.model import load_model

    process = psutil.Process()
    marks: dict[str, float] = {}

    def tracked() -> Iterator[np.ndarray]:
        for index, x in enumerate(samples(count, image_size)):
            if index in (50, count - 1):
                marks["at_50" if index == 50 else "at_end"] = process.memory_info().rss / 2**20
            yield x

    model = load_model(model_path)
    result = calibrate(
        model,
        tracked(),
        algorithms=ALGORITHM_SETS[algorithms],
        sampling_size=count,
        progress=False,
        intra_op_threads=1,
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "count": count,
                "algorithms": algorithms,
                "samples": result.num_samples,
                "peak_mib": peak_mib,
                **marks,
            }
        )
    )


def memory_benchmark(
    model_path: Path, image_size: int, counts: tuple[int, int]
) -> dict[str, dict[int, dict]]:
    peaks: dict[str, dict[int, dict]] = {}
    for algorithms in ALGORITHM_SETS:
        peaks[algorithms] = {}
        for count in counts:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    str(model_path),
                    "--samples",
                    str(count),
                    "--image-size",
                    str(image_size),
                    "--algorithms",
                    algorithms,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            peaks[algorithms][count] = json.loads(out.stdout.strip().splitlines()[-1])
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--memory-samples", type=int, nargs=2, default=(100, 1000))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--memory-child", metavar="MODEL")
    parser.add_argument("--algorithms", default="minmax", choices=sorted(ALGORITHM_SETS))
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.samples, args.image_size, args.algorithms)
        return

    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "resnet18.onnx"
        build_resnet18(model_path, args.image_size)
        print(
            f"ResNet-18, input 1x3x{args.image_size}x{args.image_size}, batch 1, one intra-op thread, "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
        if not args.skip_time:
            timing = time_benchmark(model_path, args.image_size, args.rounds, args.samples)
            plain = timing["times"]["plain"]  # type: ignore[index]
            print(f"\n{args.samples} samples, {args.rounds} interleaved rounds (median of per-round ratios)")
            print(f"{'task':<24}{'median s':>10}{'ratio to FP32':>16}")
            print(f"{'plain FP32 inference':<24}{statistics.median(plain):>10.2f}{1.0:>16.2f}")
            for name in ALGORITHM_SETS:
                seconds = statistics.median(timing["times"][name])  # type: ignore[index]
                ratio = timing["ratios"][name]  # type: ignore[index]
                per_round = [c / p for c, p in zip(timing["times"][name], plain, strict=True)]  # type: ignore[index]
                rounds = ", ".join(f"{r:.2f}" for r in per_round)
                print(f"{'calibrate ' + name:<24}{seconds:>10.2f}{ratio:>16.2f}   rounds: {rounds}")
        if not args.skip_memory:
            small, large = args.memory_samples
            peaks = memory_benchmark(model_path, args.image_size, (small, large))
            print("\npeak RSS (ru_maxrss) of a fresh process calibrating N samples (MiB); RSS in the loop at")
            print(f"sample 50 and at the last sample of the N={large} run")
            print(
                f"{'algorithms':<12}{'N=' + str(small):>10}{'N=' + str(large):>10}{'ratio':>8}"
                f"{'rss@50':>10}{'rss@end':>10}"
            )
            for name, by_count in peaks.items():
                a, b = by_count[small]["peak_mib"], by_count[large]["peak_mib"]
                print(
                    f"{name:<12}{a:>10.1f}{b:>10.1f}{b / a:>8.3f}"
                    f"{by_count[large].get('at_50', 0.0):>10.1f}{by_count[large].get('at_end', 0.0):>10.1f}"
                )


if __name__ == "__main__":
    main()
