"""Mixed-precision benchmarks: what bf16/fp16 give on each backend, side by side with FP32 and INT8.

Run from the repository root::

    .venv/bin/python benchmarks/mixed_precision.py                      # everything
    .venv/bin/python benchmarks/mixed_precision.py --only kernels --rounds 7

Every latency is a ratio measured side by side in one run (interleaved rounds, the order rotated each
round, the median of per-round ratios; one intra-op thread): ONNX Runtime sessions with
:func:`~lpot_ir.backends.onnxruntime.benchmarking.compare_latency`, PyTorch modules and CUDA sessions with
:func:`~lpot_ir.backends.onnxruntime.benchmarking.compare_runners`. The load average is printed before and after.

Sections:

* ``kernels``: one MatMul (256x1024 @ 1024x1024) and one 3x3 Conv (64 -> 64 channels, 56x56), fp32 against
  fp16 in ONNX Runtime's CPU provider, and fp32 against bf16 / fp16 in PyTorch on the CPU.
* ``ort-cpu``: whole models (a MiniLM-class encoder, a ResNet-18-class CNN, the bundled digits CNN) as FP32,
  fp16 (every op the declared rule allows), INT8 (this CPU's default), and INT8 with the compute ops that
  would fall back in fp16 instead of FP32; model sizes and ONNX Runtime CPU latency.
* ``torch-cpu``: the same FP32 models, upgraded to opset 22 (the first opset with bf16 Conv and pools), lowered
  to PyTorch (``export_to_pytorch``) and run in FP32, under ``torch.autocast("cpu", torch.bfloat16)``, and the
  bf16 / fp16 models lpot-ir rewrites for ``backend: pytorch-cpu`` lowered the same way; the largest output
  difference to FP32 beside each.
* ``cuda``: FP32 against fp16 / bf16 (``backend: onnxruntime-cuda``) on ONNX Runtime's CUDA provider, when
  it is present (skipped otherwise).
* ``accuracy``: top-1 of the digits example (500 held-out digits) for each variant.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.backends.onnxruntime.benchmarking import compare_latency, compare_runners, format_table
from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.examples_data import digits_example, model_accuracy
from lpot_ir.frontends import export_to_pytorch
from lpot_ir.ir.model import upgrade_opset
from lpot_ir.ir.quant import BF16, FP16, Backend, TuningConfig
from lpot_ir.quantizer import ModelQuantizer, default_config

HERE = Path(__file__).resolve().parent


def _quantize_bench() -> Any:
    """The model builders of benchmarks/quantize.py (a script, loaded as a module)."""
    spec = importlib.util.spec_from_file_location("bench_quantize", HERE / "quantize.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _torch() -> Any:
    import torch

    torch.set_num_threads(1)
    return torch


# -- kernels -----------------------------------------------------------------------------------------------


def _single_op(op: str, x_shape: list[int], w: np.ndarray, dtype: int, **attrs: Any) -> onnx.ModelProto:
    np_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"], **attrs)], op,
        [helper.make_tensor_value_info("x", dtype, x_shape)], [helper.make_tensor_value_info("y", dtype, None)],
        [numpy_helper.from_array(w.astype(np_type), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def bench_kernels(args: argparse.Namespace) -> list[list[object]]:
    torch = _torch()
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    cases = {
        "MatMul 256x1024x1024": ("MatMul", [256, 1024], rng.standard_normal((1024, 1024)), {}),
        "Conv 3x3 64->64 56x56": ("Conv", [1, 64, 56, 56], rng.standard_normal((64, 64, 3, 3)), {"pads": [1, 1, 1, 1]}),
    }
    for label, (op, x_shape, w, attrs) in cases.items():
        x = rng.standard_normal(x_shape).astype(np.float32)
        models = {
            "ort fp32": _single_op(op, x_shape, w, TensorProto.FLOAT, **attrs),
            "ort fp16": _single_op(op, x_shape, w, TensorProto.FLOAT16, **attrs),
        }
        sessions = {n: make_session(m, intra_op_threads=1) for n, m in models.items()}
        feeds = {"ort fp32": {"x": x}, "ort fp16": {"x": x.astype(np.float16)}}
        runners: dict[str, Callable[[], object]] = {
            n: (lambda s=s, f=feeds[n]: s.run(None, f)) for n, s in sessions.items()
        }
        xt, wt = torch.from_numpy(x), torch.from_numpy(w.astype(np.float32))

        def torch_runner(dtype: Any, xt: Any = xt, wt: Any = wt, op: str = op) -> Callable[[], object]:
            a, b = xt.to(dtype), wt.to(dtype)
            if op == "MatMul":
                return lambda: torch.matmul(a, b)
            return lambda: torch.nn.functional.conv2d(a, b, padding=1)

        with torch.no_grad():
            runners.update({
                "torch fp32": torch_runner(torch.float32),
                "torch bf16": torch_runner(torch.bfloat16),
                "torch fp16": torch_runner(torch.float16),
            })
            result = compare_runners(runners, rounds=args.rounds, iterations=args.iterations)
        for name in result.names:
            reference = "ort fp32" if name.startswith("ort") else "torch fp32"
            ratio = result.ratio[name] / result.ratio[reference]
            rows.append([label, name, result.latency_ms[name], ratio, 1.0 / ratio])
    return rows


# -- models -------------------------------------------------------------------------------------------------


def _models(args: argparse.Namespace) -> dict[str, tuple[onnx.ModelProto, list[np.ndarray]]]:
    """name -> (FP32 model, calibration batches)."""
    out: dict[str, tuple[onnx.ModelProto, list[np.ndarray]]] = {}
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builders = _quantize_bench()
        if "encoder" in args.models:
            enc = builders.encoder(layers=args.encoder_layers)
            out["encoder"] = (enc, [rng.standard_normal((1, 128, 384)).astype(np.float32) for _ in range(4)])
        if "resnet18" in args.models:
            out["resnet18"] = (builders.resnet(18), [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(4)])
    if "digits" in args.models:
        ex = digits_example()
        calib = np.load(ex.calib_data_path)
        out["digits"] = (onnx.load(str(ex.model_path)), [calib[i : i + 25] for i in range(0, 100, 25)])
    return out


def _fallback_in(quantizer: ModelQuantizer, dtype_config: Any, count: int) -> tuple[TuningConfig, TuningConfig]:
    """INT8 with the first and last ``count`` compute nodes out of INT8: in FP32, and in the 16-bit type."""
    compute = [n.name for n in quantizer.nodes if n.op_type in ("Conv", "MatMul", "Gemm")]
    chosen = compute[:count] + compute[-count:]
    base = default_config()
    fp32 = base.with_nodes_fp32(chosen)
    low = base
    for name in chosen:
        low = low.with_node(name, dtype_config)
    return fp32, low


def _variants(name: str, model: onnx.ModelProto, calib: list[np.ndarray], backend: Backend) -> dict[str, onnx.ModelProto]:
    quantizer = ModelQuantizer(model, calib, progress=False)
    out = {"fp32": onnx.load_from_string(model.SerializeToString())}
    low = BF16 if backend is not Backend.ONNXRUNTIME_CPU else FP16
    out[str(low.float_dtype)] = quantizer.quantize(TuningConfig(global_config=low, backend=backend)).model
    if backend is Backend.ONNXRUNTIME_CPU:
        out["int8"] = quantizer.quantize(default_config()).model
        fp32_fallback, low_fallback = _fallback_in(quantizer, low, 2)
        out["int8 + 4 fp32"] = quantizer.quantize(fp32_fallback).model
        out[f"int8 + 4 {low.float_dtype}"] = quantizer.quantize(low_fallback).model
    else:
        other = FP16 if low is BF16 else BF16
        out[str(other.float_dtype)] = quantizer.quantize(TuningConfig(global_config=other, backend=backend)).model
    return out


def bench_ort_cpu(args: argparse.Namespace, models: dict[str, Any]) -> list[list[object]]:
    rows: list[list[object]] = []
    for name, (model, calib) in models.items():
        variants = _variants(name, model, calib, Backend.ONNXRUNTIME_CPU)
        result = compare_latency(variants, calib[0], rounds=args.rounds, iterations=args.iterations)
        fp32_size = variants["fp32"].ByteSize()
        for variant, proto in variants.items():
            casts = sum(1 for n in proto.graph.node if n.op_type == "Cast")
            rows.append([
                name, variant, proto.ByteSize() / 1e6, proto.ByteSize() / fp32_size, casts,
                result.latency_ms[variant], result.ratio[variant], 1.0 / result.ratio[variant],
            ])
    return rows


def bench_torch_cpu(args: argparse.Namespace, models: dict[str, Any]) -> list[list[object]]:
    torch = _torch()
    rows: list[list[object]] = []
    for name, (model, calib) in models.items():
        variants = _variants(name, upgrade_opset(model, 22), calib, Backend.PYTORCH_CPU)
        x = torch.from_numpy(calib[0])
        modules = {v: export_to_pytorch(p) for v, p in variants.items()}
        with torch.no_grad():
            reference = modules["fp32"](x).float()

            def autocast(module: Any = modules["fp32"], x: Any = x) -> Any:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return module(x)

            runners: dict[str, Callable[[], object]] = {
                "fp32": lambda m=modules["fp32"], x=x: m(x), "fp32 autocast bf16": autocast,
            }
            runners.update({f"lpot-ir {v}": (lambda m=m, x=x: m(x)) for v, m in modules.items() if v != "fp32"})
            errors = {n: float((run().float() - reference).abs().max()) for n, run in runners.items()}  # type: ignore[attr-defined]
            result = compare_runners(runners, rounds=args.rounds, iterations=args.iterations)
        scale = float(reference.abs().max())
        for variant in result.names:
            rows.append([
                name, variant, result.latency_ms[variant], result.ratio[variant], 1.0 / result.ratio[variant],
                errors[variant], errors[variant] / scale if scale else float("nan"),
            ])
    return rows


def bench_cuda(args: argparse.Namespace, models: dict[str, Any]) -> list[list[object]]:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("cuda: skipped, this ONNX Runtime has no CUDAExecutionProvider (no GPU build / no GPU)")
        return []
    rows: list[list[object]] = []
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
    for name, (model, calib) in models.items():
        variants = _variants(name, model, calib, Backend.ONNXRUNTIME_CUDA)
        sessions = {v: make_session(p, intra_op_threads=1, providers=providers) for v, p in variants.items()}
        feed = {sessions["fp32"].get_inputs()[0].name: calib[0]}
        runners = {v: (lambda s=s, feed=feed: s.run(None, feed)) for v, s in sessions.items()}
        result = compare_runners(runners, rounds=args.rounds, iterations=args.iterations)
        for variant in result.names:
            rows.append([name, variant, result.latency_ms[variant], result.ratio[variant], 1.0 / result.ratio[variant]])
    return rows


def bench_accuracy() -> list[list[object]]:
    torch = _torch()
    ex = digits_example()
    model = onnx.load(str(ex.model_path))
    x, y = np.load(ex.eval_data_path), np.load(ex.eval_labels_path)
    calib = np.load(ex.calib_data_path)
    quantizer = ModelQuantizer(model, [calib[:100]], progress=False)
    rows: list[list[object]] = [["fp32", "onnxruntime-cpu", model_accuracy(model, x, y)]]
    fp16 = quantizer.quantize(TuningConfig(global_config=FP16)).model
    rows.append(["fp16", "onnxruntime-cpu", model_accuracy(fp16, x, y)])
    rows.append(["int8", "onnxruntime-cpu", model_accuracy(quantizer.quantize(default_config()).model, x, y)])
    quantizer22 = ModelQuantizer(upgrade_opset(model, 22), [calib[:100]], progress=False)
    for dtype in (BF16, FP16):
        config = TuningConfig(global_config=dtype, backend=Backend.PYTORCH_CPU)
        lowered = export_to_pytorch(quantizer22.quantize(config).model)
        with torch.no_grad():
            logits = lowered(torch.from_numpy(x)).float().numpy()
        rows.append([str(dtype.float_dtype), "pytorch-cpu", float((logits.argmax(1) == y).mean())])
    fp32_module = export_to_pytorch(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = fp32_module(torch.from_numpy(x)).float().numpy()
    rows.append(["fp32 under autocast bf16", "pytorch-cpu", float((logits.argmax(1) == y).mean())])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["kernels", "ort-cpu", "torch-cpu", "cuda", "accuracy"], action="append")
    parser.add_argument("--models", nargs="+", default=["encoder", "resnet18", "digits"],
                        choices=["encoder", "resnet18", "digits"])
    parser.add_argument("--encoder-layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sections = args.only or ["kernels", "ort-cpu", "torch-cpu", "cuda", "accuracy"]
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}  onnxruntime {ort.__version__}")
    if "kernels" in sections:
        print(format_table(["kernel", "variant", "median ms", "ratio to fp32", "speed-up"], bench_kernels(args),
                           title="Single kernels, 1 thread (ratio to the same framework's fp32)"))
    models = _models(args) if {"ort-cpu", "torch-cpu", "cuda"} & set(sections) else {}
    if "ort-cpu" in sections:
        print(format_table(
            ["model", "variant", "MB", "size ratio", "Casts", "median ms", "ratio to fp32", "speed-up"],
            bench_ort_cpu(args, models), title="ONNX Runtime CPU provider, 1 thread"))
    if "torch-cpu" in sections:
        print(format_table(
            ["model", "variant", "median ms", "ratio to fp32", "speed-up", "max |diff|", "relative"],
            bench_torch_cpu(args, models), title="Lowered to PyTorch, CPU, 1 thread (diff: to the FP32 module's output)"))
    if "cuda" in sections:
        rows = bench_cuda(args, models)
        if rows:
            print(format_table(["model", "variant", "median ms", "ratio to fp32", "speed-up"], rows,
                               title="ONNX Runtime CUDA provider"))
    if "accuracy" in sections:
        print(format_table(["variant", "backend", "top-1"], bench_accuracy(), title="Digits example, 500 held-out digits"))
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
