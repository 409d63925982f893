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


def agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean cosine similarity of output rows with the FP32 model's: the benchmark's and the test's metric."""
    dots = np.sum(outputs * reference, axis=1)
    norms = np.linalg.norm(outputs, axis=1) * np.linalg.norm(reference, axis=1)
    return float(np.mean(dots / np.maximum(norms, 1e-12)))


class _PeakSampler:
    """Peak anonymous memory of this process (RssAnon), sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kib("RssAnon") * 1024)
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _run_stage(stage: str, model: Path, width: int, workdir: Path) -> dict[str, object]:
    """One stage in this process; returns its time, peak memory and result."""
    import onnxruntime as ort

    sampler = _PeakSampler()
    began = time.perf_counter()
    result: dict[str, object] = {}
    calib = calibration_batches(width)
    probe = calibration_batches(width, batches=1, batch_size=8, seed=5)[0]
    if stage == "load":
        from lpot_ir.ir.model import load_model

        loaded = load_model(model)
        result["nodes"] = len(list(loaded.graph))
    elif stage in ("quantize", "tune"):
        from lpot_ir import Quantization, common

        reference: list[np.ndarray] = []

        def eval_func(candidate: object) -> float:
            source = candidate if isinstance(candidate, str) else candidate.SerializeToString()  # type: ignore[attr-defined]
            out = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"input": probe})[0]
            if not reference:
                reference.append(out)
            return agreement(out, reference[0])

        conf: dict[str, object] = {
            "model": {"name": "big_mlp"},
            "quantization": {"calibration": {"sampling_size": 8}},
            "tuning": {"accuracy_criterion": {"relative": 0.01}, "exit_policy": {"timeout": 0, "max_trials": 3},
                       "workspace": {"path": str(workdir / f"ws-{stage}")}},
        }  # fmt: skip
        quantizer = Quantization(conf)
        quantizer.model = str(model)
        quantizer.calib_dataloader = common.DataLoader([(row, None) for batch in calib for row in batch], batch_size=4)
        if stage == "tune":
            quantizer.eval_func = eval_func
        quantizer.fit()
        best = quantizer.outcome.files["model"]
        result["output_bytes"] = best.stat().st_size
        if quantizer.outcome.best is not None and quantizer.outcome.best.accuracy is not None:
            result["agreement"] = quantizer.outcome.best.accuracy
    elif stage == "ort":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"input": batch} for batch in calib])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        out = workdir / "ort" / "big_int8.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        use_external_data_format=True)  # fmt: skip
        result["output_bytes"] = sum(p.stat().st_size for p in out.parent.iterdir())
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    result["seconds"] = time.perf_counter() - began
    result["peak_anon"] = sampler.stop()
    result["peak_rss"] = _status_kib("VmHWM") * 1024
    return result


STAGES = ("load", "quantize", "tune", "ort")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.1, help="FP32 weights in GiB (default 2.1: over protobuf's 2 GB)")
    parser.add_argument("--width", type=int, default=8192, help="layer width (default 8192: 256 MiB per layer)")
    parser.add_argument("--workdir", help="where the model and outputs go (default: a temporary folder, removed)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # a child process runs one stage
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(_run_stage(args.stage, Path(args.model), args.width, Path(args.workdir))))
        return 0
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lpot_big_model_"))
    try:
        spec = build_big_model(workdir / "model", gib=args.gib, width=args.width)
        size = spec.weight_bytes
        print(f"model: {spec.layers} layers of {args.width}x{args.width}, {size / 2**30:.2f} GiB of FP32 weights "
              f"in {spec.path.name}.data")  # fmt: skip
        rows = {}
        for stage in args.stages.split(","):
            command = [sys.executable, __file__, "--stage", stage, "--model", str(spec.path), "--width",
                       str(args.width), "--workdir", str(workdir)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{stage}: failed\n{done.stderr[-3000:]}")
                continue
            rows[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"\n{'stage':<10} {'seconds':>8} {'peak RSS GiB':>13} {'x model':>8} {'peak anon GiB':>14} {'x model':>8}")
        for stage, row in rows.items():
            rss, anon = float(row["peak_rss"]), float(row["peak_anon"])
            print(f"{stage:<10} {row['seconds']:>8.1f} {rss / 2**30:>13.2f} {rss / size:>8.2f} "
                  f"{anon / 2**30:>14.2f} {anon / size:>8.2f}")  # fmt: skip
        for stage, row in rows.items():
            extra = {k: v for k, v in row.items() if k not in ("seconds", "peak_rss", "peak_anon")}
            if extra:
                print(f"{stage}: {extra}")
        if args.json:
            Path(args.json).write_text(json.dumps({"model_bytes": size, "stages": rows}, indent=2))
    finally:
        if not args.workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
