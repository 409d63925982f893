"""The real-graph corpus: every model with the inputs of one real FP32 run, through ``lpot quantize``.

Each case is a real ONNX graph and an ``.npz`` holding exactly the inputs of one FP32 run of it:

* ``onnx-zoo``: the ONNX model-zoo CNNs the ``onnx`` package ships (``onnx/backend/test/data/light``:
  opset 9, weights computed by ConstantOfShape nodes, initializers listed as graph inputs, batch fixed
  at 1); input: a seeded image-shaped normal sample.
* ``pytorch-converted`` / ``pytorch-operator``: old PyTorch-exporter output the ``onnx`` package ships
  (opset 6-12, IR version 3), with the inputs stored beside each model (``test_data_set_0``).
* ``silero-vad`` (``pip install silero-vad``): every ONNX variant the package carries (If subgraphs,
  LSTM, an fp16 body, a recurrent ``state [2, batch, 128]`` input, a scalar ``sr`` input, a fixed-batch
  OpenVINO export, the frame-sequence model); inputs: the 6th frame of a synthetic voiced signal,
  streamed frame by frame through the FP32 model as silero's own wrapper does (so the state is real).
* ``pp-ocr`` (``pip install rapidocr-onnxruntime``): the PP-OCR detector, recognizer and classifier;
  inputs: captured from RapidOCR's own pipeline reading a rendered two-line text image.

Every case is quantized as a user would: ``lpot quantize MODEL -o int8.onnx --calib inputs.npz`` (the CPU's
default configuration), and, for comparison, with ONNX Runtime's ``quantize_static`` (QDQ, its
defaults, a data reader giving the same one feed). A result counts when the INT8 model passes
``onnx.checker.check_model(full_check=True)``, runs in ONNX Runtime on the same inputs, and is close to
FP32 on every float output (see :func:`output_is_close`).

Run ``python benchmarks/corpus.py`` (``--families onnx-zoo,silero-vad``, ``--only NAME``, ``--no-ort``,
``--workdir DIR``, ``--json FILE``); it prints one row per case and the counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: also when loaded by file path (tests)

from suite.peers.driver_common import all_nodes  # noqa: E402

__all__ = [
    "FAMILIES",
    "Case",
    "Outcome",
    "cases",
    "closeness",
    "decisions_agree",
    "output_is_close",
    "TOLERANCE",
    "run_lpot",
    "run_ort",
    "main",
]

FAMILIES = ("onnx-zoo", "pytorch-converted", "pytorch-operator", "silero-vad", "pp-ocr")

TOLERANCE = 0.1
"""Largest normalized RMS error of an INT8 output against FP32 (see :func:`closeness`): SNR >= 20 dB."""

_ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


@dataclass(frozen=True)
class Case:
    """One real graph, a way to produce the inputs of one real FP32 run of it, and that run's outputs
    where the graph's source stored them (PyTorch's own, for graphs ONNX Runtime can no longer run at
    their old opset; else the FP32 model is run in ONNX Runtime)."""

    name: str
    family: str
    model: Path
    inputs: Callable[[], dict[str, np.ndarray]] = field(compare=False, repr=False)
    outputs: Callable[[], list[np.ndarray]] | None = field(default=None, compare=False, repr=False)


@dataclass
class Outcome:
    """What one tool made of one case. ``stage`` is where it failed (``None``: a good INT8 model)."""

    case: str
    family: str
    tool: str
    stage: str | None
    detail: str = ""
    error: float | None = None
    quantized: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stage is None


# -- the cases ------------------------------------------------------------------------------------------


def _zoo_cases() -> list[Case]:
    result = []
    for path in sorted((_ONNX_DATA / "light").glob("light_*.onnx")):

        def inputs(path: Path = path) -> dict[str, np.ndarray]:
            model = onnx.load(path, load_external_data=False)
            rng = np.random.default_rng(0)
            feed = {}
            initializers = {t.name for t in model.graph.initializer}
            for value in model.graph.input:
                if value.name in initializers:
                    continue
                shape = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
                feed[value.name] = rng.standard_normal(shape).astype(np.float32)
            return feed

        result.append(Case(path.stem.removeprefix("light_"), "onnx-zoo", path, inputs))
    return result


def _stored_cases(family: str) -> list[Case]:
    result = []
    for folder in sorted((_ONNX_DATA / family).iterdir()):
        model = folder / "model.onnx"
        if not model.is_file():
            continue

        def inputs(folder: Path = folder) -> dict[str, np.ndarray]:
            proto = onnx.load(folder / "model.onnx", load_external_data=False)
            initializers = {t.name for t in proto.graph.initializer}
            names = [v.name for v in proto.graph.input if v.name not in initializers]
            files = sorted((folder / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
            arrays = [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in files]
            return dict(zip(names, arrays, strict=True))

        def outputs(folder: Path = folder) -> list[np.ndarray]:
            files = sorted((folder / "test_data_set_0").glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
            return [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in files]

        result.append(Case(folder.name.removeprefix("test_"), family, model, inputs, outputs))
    return result


def _voiced_audio(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    """A synthetic voiced signal: a 140 Hz harmonic series under a syllable envelope, plus light noise."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 0.5
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.01
    return (0.3 * voice * envelope + noise).astype(np.float32)


def _silero_inputs(path: Path) -> dict[str, np.ndarray]:
    """The inputs of the 6th frame, streamed through the FP32 model as silero's OnnxWrapper does."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name: i for i in session.get_inputs()}
    audio = _voiced_audio()
    if "h" in names:  # the frame-sequence model: one call over a block of frames with context
        from silero_vad.sequence_vad import frame_blocks

        block = next(frame_blocks(audio, 512, 64, 16))
        return {"input": block, "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    feed: dict[str, np.ndarray] = {}
    for index in range(6):
        frame = audio[None, index * 512 : (index + 1) * 512]
        feed = {"input": np.concatenate([context, frame], axis=1), "state": state}
        if "sr" in names:
            feed["sr"] = np.array(16000, dtype=np.int64)
        _, state = session.run(None, feed)
        context = frame[:, -64:]
    return feed


def _silero_cases() -> list[Case]:
    try:
        import silero_vad
    except ImportError:
        return []
    folder = Path(silero_vad.__file__).parent / "data"
    return [
        Case(path.stem, "silero-vad", path, lambda path=path: _silero_inputs(path))
        for path in sorted(folder.glob("*.onnx"))
    ]


_OCR_CAPTURE: dict[str, dict[str, np.ndarray]] = {}


def _ocr_inputs(model_name: str) -> dict[str, np.ndarray]:
    """The input RapidOCR gave ``model_name`` (det, rec or cls) while reading a rendered text image."""
    if not _OCR_CAPTURE:
        import cv2
        from rapidocr_onnxruntime import RapidOCR
        from rapidocr_onnxruntime.utils import infer_engine

        original = infer_engine.OrtInferSession.__call__

        def capture(self: Any, input_content: np.ndarray) -> Any:
            path = Path(self.session._model_path) if hasattr(self.session, "_model_path") else None
            key = path.stem if path is not None else str(id(self))
            _OCR_CAPTURE.setdefault(key, {self.session.get_inputs()[0].name: np.array(input_content)})
            return original(self, input_content)

        image = np.full((160, 480, 3), 255, np.uint8)
        cv2.putText(image, "Quantize me 42", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        cv2.putText(image, "lpot-ir corpus", (20, 120), cv2.FONT_HERSHEY_DUPLEX, 1.0, (30, 30, 120), 2)
        infer_engine.OrtInferSession.__call__ = capture  # type: ignore[method-assign]
        try:
            RapidOCR()(image)
        finally:
            infer_engine.OrtInferSession.__call__ = original  # type: ignore[method-assign]
    return dict(_OCR_CAPTURE[model_name])


def _ocr_cases() -> list[Case]:
    try:
        import rapidocr_onnxruntime
    except ImportError:
        return []
    folder = Path(rapidocr_onnxruntime.__file__).parent / "models"
    return [
        Case(path.stem, "pp-ocr", path, lambda stem=path.stem: _ocr_inputs(stem))
        for path in sorted(folder.glob("*.onnx"))
    ]


def cases(families: tuple[str, ...] = FAMILIES) -> list[Case]:
    """The corpus (families whose package is not installed are empty)."""
    found: list[Case] = []
    for family in families:
        if family == "onnx-zoo":
            found += _zoo_cases()
        elif family in ("pytorch-converted", "pytorch-operator"):
            found += _stored_cases(family)
        elif family == "silero-vad":
            found += _silero_cases()
        elif family == "pp-ocr":
            found += _ocr_cases()
        else:
            raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    return found


# -- judging an INT8 model -------------------------------------------------------------------------------


def closeness(int8: np.ndarray, fp32: np.ndarray) -> float:
    """The normalized RMS error of an INT8 output against the FP32 one, in units of the FP32 output's scale.

    The scale is the FP32 output's standard deviation, or its RMS magnitude when it barely varies (a
    constant output, a single value such as one speech probability: spread below 1e-3 of the magnitude).
    Positions where FP32 is NaN or infinite (``sqrt`` of a negative input) must be the same in INT8.
    """
    a = np.asarray(int8, dtype=np.float64)
    r = np.asarray(fp32, dtype=np.float64)
    if a.shape != r.shape:
        return math.inf
    same = (np.isnan(a) & np.isnan(r)) | (np.isinf(r) & (a == r))  # NaN / inf where FP32 has them (sqrt(-1))
    if not np.all((np.isfinite(a) & np.isfinite(r)) | same):
        return math.inf
    a, r = a[~same], r[~same]
    if r.size == 0:
        return 0.0
    rms = float(np.sqrt(np.mean(r**2)))
    spread = float(r.std())
    scale = spread if spread > 1e-3 * rms else rms
    diff = float(np.sqrt(np.mean((a - r) ** 2)))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def decisions_agree(int8: np.ndarray, fp32: np.ndarray) -> tuple[bool, str]:
    """For an output of probabilities, whether the INT8 model makes the same decisions (and why not).

    The FP32 output's statistics say what it is: values that sum to 1 over the last axis are class
    distributions (a softmax: each position's argmax is the decision; 99% of the positions that have one
    FP32 top class must agree); other values within [0, 1] are independent
    probabilities (a sigmoid: the decision is p >= 0.5, 99% must agree, and the mean absolute error must
    stay within 0.02, so a single probability cannot drift unnoticed).
    """
    a = np.asarray(int8, dtype=np.float64)
    r = np.asarray(fp32, dtype=np.float64)
    if a.shape != r.shape or r.size == 0 or not np.all(np.isfinite(a)) or r.min() < 0 or r.max() > 1:
        return False, "not a probability output"
    if r.ndim >= 1 and r.shape[-1] > 1 and np.allclose(r.sum(axis=-1), 1.0, atol=1e-3):
        top = np.sort(r, axis=-1)
        counted = top[..., -1] - top[..., -2] > 1e-6  # positions with one FP32 top class (not a tie)
        if not counted.any():
            return False, "every position's FP32 top class is a tie"
        agree = float(np.mean((a.argmax(-1) == r.argmax(-1))[counted]))
        return agree >= 0.99, f"top class agrees on {agree:.1%} of positions"
    agree = float(np.mean((a >= 0.5) == (r >= 0.5)))
    mae = float(np.mean(np.abs(a - r)))
    return agree >= 0.99 and mae <= 0.02, f"p>=0.5 agrees on {agree:.1%}, mean |dp| {mae:.3g}"


def output_is_close(int8: np.ndarray, fp32: np.ndarray) -> tuple[bool, float, str]:
    """``(close, normalized RMS error, detail)`` of one float output.

    Close means a normalized RMS error (:func:`closeness`) within :data:`TOLERANCE`, or, for an output of
    probabilities, the same decisions (:func:`decisions_agree`). Why 0.1: rounding one tensor to an
    8-bit grid over its own range (6-8 standard deviations for real activations) costs
    ``range / 255 / sqrt(12)``, about 0.008 of a standard deviation, and a network adds such noise at
    every quantized tensor on the path: tens of layers give a few hundredths. 0.1 (an output
    signal-to-noise ratio of 20 dB) accepts that and rejects a broken model (a wrong scale, a clipped
    range, a mis-fed input: errors of the order of the scale itself). Probabilities are judged by what
    they decide, since deep detectors with heavy-tailed activations exceed 0.1 while drawing the same
    boxes.
    """
    error = closeness(int8, fp32)
    if error <= TOLERANCE:
        return True, error, ""
    agree, detail = decisions_agree(int8, fp32)
    return agree, error, f"normalized RMS error {error:.3g} > {TOLERANCE}; {detail}"


def _run(model: str | bytes, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feed))


def _judge(path: Path, feed: Mapping[str, np.ndarray], reference: list[np.ndarray]) -> tuple[str | None, str, float | None]:
    """(failed stage or None, detail, worst error) of the INT8 model at ``path``."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        return "checker", _first_line(exc), None
    try:
        outputs = _run(str(path), feed)
    except Exception as exc:
        return "run", _first_line(exc), None
    verdicts = [
        output_is_close(o, r) for o, r in zip(outputs, reference, strict=True) if np.asarray(r).dtype.kind == "f"
    ]
    exact = all(
        np.array_equal(o, r) for o, r in zip(outputs, reference, strict=True) if np.asarray(r).dtype.kind != "f"
    )
    worst = max((v[1] for v in verdicts), default=0.0)
    if not exact:
        return "close", "a non-float output differs from FP32", worst
    failed = [v[2] for v in verdicts if not v[0]]
    if failed:
        return "close", failed[0], worst
    return None, "", worst


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:200]


def _quantized_nodes(path: Path) -> int:
    """INT8 nodes of the model, If branches and loop bodies included."""
    model = onnx.load(str(path), load_external_data=False)
    return sum(
        1 for n in all_nodes(model.graph)
        if n.op_type in ("DequantizeLinear",) or n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")
    )


def run_lpot(case: Case, data: Path, feed: Mapping[str, np.ndarray], reference: list[np.ndarray], workdir: Path) -> Outcome:
    """``lpot quantize MODEL -o OUT --calib DATA`` in this process, then the checks."""
    from lpot_ir.cli import main as lpot

    out = workdir / f"{case.name}.lpot.onnx"
    start = time.perf_counter()
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = lpot(["quantize", str(case.model), "-o", str(out), "--calib", str(data)])
    seconds = time.perf_counter() - start
    if code != 0:
        lines = [line for line in stderr.getvalue().splitlines() if "error" in line] or stderr.getvalue().splitlines()
        return Outcome(case.name, case.family, "lpot-ir", "quantize", (lines[-1] if lines else f"exit {code}")[:300],
                       seconds=seconds)
    stage, detail, error = _judge(out, feed, reference)
    return Outcome(case.name, case.family, "lpot-ir", stage, detail, error, _quantized_nodes(out), seconds)


def run_ort(case: Case, feed: Mapping[str, np.ndarray], reference: list[np.ndarray], workdir: Path) -> Outcome:
    """ONNX Runtime's ``quantize_static`` (QDQ, defaults) with a reader giving the same feed, then the checks."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class OneFeed(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict[str, np.ndarray]] = iter([dict(feed)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    out = workdir / f"{case.name}.ort.onnx"
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantize_static(str(case.model), str(out), OneFeed(), quant_format=QuantFormat.QDQ)
    except Exception as exc:
        return Outcome(case.name, case.family, "ort", "quantize", _first_line(exc), seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    stage, detail, error = _judge(out, feed, reference)
    return Outcome(case.name, case.family, "ort", stage, detail, error, _quantized_nodes(out), seconds)


def prepare(case: Case, workdir: Path) -> tuple[Path, dict[str, np.ndarray], list[np.ndarray]]:
    """Write the case's ``.npz``; the FP32 outputs of that run: (data path, feed, FP32 outputs)."""
    feed = case.inputs()
    data = workdir / f"{case.name}.npz"
    np.savez(data, **feed)
    return data, feed, case.outputs() if case.outputs is not None else _run(str(case.model), feed)


# -- the command ------------------------------------------------------------------------------------------


def _table(rows: list[tuple[Case, Outcome, Outcome | None]]) -> str:
    lines = [f"{'family':<18} {'model':<42} {'lpot-ir':<10} {'err':>8} {'q':>4} {'s':>6}   {'ort':<10} {'err':>8}  note"]
    for case, mine, theirs in rows:
        def cell(o: Outcome | None) -> tuple[str, str]:
            if o is None:
                return "-", ""
            return ("ok" if o.ok else o.stage or "?"), ("" if o.error is None else f"{o.error:.3g}")

        m, me = cell(mine)
        t, te = cell(theirs)
        note = mine.detail if not mine.ok else (theirs.detail if theirs is not None and not theirs.ok else "")
        lines.append(
            f"{case.family:<18} {case.name[:42]:<42} {m:<10} {me:>8} {mine.quantized or 0:>4} {mine.seconds:>6.1f}   "
            f"{t:<10} {te:>8}  {note[:90]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    parser.add_argument("--only", action="append", default=[], help="run only cases with this name (repeatable)")
    parser.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime's quantize_static")
    parser.add_argument("--workdir", help="where models and data go (default: a temporary folder)")
    parser.add_argument("--json", help="write the outcomes to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    selected = [c for c in cases(families) if not args.only or c.name in args.only]
    missing = [f for f in families if not any(c.family == f for c in selected) and not args.only]
    with contextlib.ExitStack() as stack:
        workdir = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[Case, Outcome, Outcome | None]] = []
        for case in selected:
            try:
                data, feed, reference = prepare(case, workdir)
            except Exception as exc:  # a case whose own FP32 run fails counts as a failure of both tools
                mine = Outcome(case.name, case.family, "lpot-ir", "fp32", _first_line(exc))
                rows.append((case, mine, None if args.no_ort else Outcome(case.name, case.family, "ort", "fp32")))
                continue
            mine = run_lpot(case, data, feed, reference, workdir)
            theirs = None if args.no_ort else run_ort(case, feed, reference, workdir)
            rows.append((case, mine, theirs))
            print(f"  {case.family}/{case.name}: lpot-ir {'ok' if mine.ok else mine.stage}"
                  + ("" if theirs is None else f", ort {'ok' if theirs.ok else theirs.stage}"), file=sys.stderr, flush=True)
            for path in workdir.glob(f"{case.name}.*.onnx*"):
                if not args.workdir:
                    path.unlink()
    print(_table(rows))
    total = len(rows)
    good = sum(1 for _, m, _ in rows if m.ok)
    print(f"\nlpot-ir: {good} of {total} models give a valid INT8 model (onnx.checker full check) that runs in ONNX "
          f"Runtime and stays close to FP32 on every output (normalized RMS error <= {TOLERANCE}, or the same "
          "decisions for probabilities)")
    print(f"         ({sum(1 for _, m, _ in rows if m.ok and (m.quantized or 0) > 0)} of them with quantized nodes)")
    if not args.no_ort:
        print(f"ONNX Runtime quantize_static: {sum(1 for _, _, t in rows if t is not None and t.ok)} of {total}")
    if missing:
        print(f"not installed (no cases): {', '.join(missing)}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"case": asdict(m), "ort": None if t is None else asdict(t)} for _, m, t in rows], indent=1
        ))
    return 0 if good == total else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
