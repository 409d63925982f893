"""Silero VAD (the ONNX model the ``silero-vad`` package ships) on speech synthesized by Debian's espeak-ng.

* Model: ``silero_vad/data/silero_vad.onnx``, what ``load_silero_vad(onnx=True)`` loads, as shipped
  (ONNX frontend). The whole network sits inside an ``If`` on ``sr == 16000`` (8 and 16 kHz branches),
  with more ``If`` nodes inside; a tool that quantizes only the main graph quantizes nothing here (the
  peers' drivers specialize the ``If`` first; see docs/benchmarks.md). The task ``silero_vad_16k``
  (:mod:`task_silero_16k`) is the same on the package's ``silero_vad_16k_op15.onnx`` (what
  ``load_silero_vad(onnx=True, opset_version=15)`` loads), whose 6 Convs are in the main graph and whose
  LSTM is inside an ``If``. Inputs ``input`` (B, 576) float32 = 64 samples of context + a 512-sample chunk at 16 kHz, ``state``
  (2, B, 128) float32 (the LSTM state), ``sr`` (int64 scalar, 16000); outputs ``output`` (B, 1) speech
  probability and ``stateN`` (the next state).
* Data: 8 streams of about 16 s each, processed side by side as a batch of 8 (8 audio channels at once:
  the latency batch). Each stream alternates gaps of 1-3 s (silence plus low white noise, -55 to
  -40 dBFS) and sentences of 6-16 words of :mod:`sentences` (the Python Language Reference) spoken by ``espeak-ng``
  (voices en-us, en-gb, en-gb-scotland, en-gb-x-rp with +f2/+m3 variants, 140-190 words/min),
  resampled from 22.05 to 16 kHz, scaled to -20 to -6 dBFS peak. The truth per 32 ms chunk is 1 when
  more than half of it lies between the first and last sample of an utterance above -50 dBFS.
* Feeds are chunks in time order, as ``OnnxWrapper.__call__`` forms them (the previous chunk's last 64
  samples as context). The state is carried: ``task.json`` has ``"carry": {"stateN": "state"}``, so
  ``evaluate`` feeds each chunk the state the model under test produced on the previous chunk (every
  stored feed holds the FP32 state, so each feed alone is a complete calibration sample).
  Calibration: 4 other streams (the other half of the sentences), every 20th chunk of each, one stream
  per feed (batch 1, with its FP32 state): 100 feeds spread over the whole streams.
* Metric: frame-level F1 of speech (probability >= 0.5) against that truth.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from sentences import sentences
from tasks import package_versions, write_task_folder

__all__ = ["build", "model_path", "speak", "streams"]

RATE, CHUNK, CONTEXT = 16000, 512, 64
EVAL_STREAMS, CALIB_STREAMS, STREAM_SECONDS = 8, 4, 16.0
CALIB_STRIDE = 20  # every 20th chunk of each calibration stream: 4 x 25 = 100 feeds
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f2", "en-gb+m3")


MODEL_FILE = "silero_vad.onnx"


def model_path(model_file: str = MODEL_FILE) -> Path:
    import silero_vad

    return Path(silero_vad.__file__).parent / "data" / model_file


def speak(text: str, voice: str, speed: int) -> np.ndarray:
    """``espeak-ng`` speaking ``text``, as float32 at 16 kHz."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        try:
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True, capture_output=True)
        except FileNotFoundError:
            raise ModuleNotFoundError("espeak-ng is not installed: apt-get install espeak-ng") from None
        with wave.open(str(wav)) as f:
            rate = f.getframerate()
            audio = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    g = np.gcd(RATE, rate)
    return resample_poly(audio, RATE // g, rate // g).astype(np.float32)


def _stream(texts: list[str], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One stream of gaps and utterances: (audio, per-sample truth)."""
    pieces, truth = [], []
    total = 0
    while total < STREAM_SECONDS * RATE:
        gap = int(rng.uniform(1.0, 3.0) * RATE)
        pieces.append(np.zeros(gap, np.float32))
        truth.append(np.zeros(gap, bool))
        speech = speak(texts[int(rng.integers(len(texts)))], VOICES[int(rng.integers(len(VOICES)))], int(rng.integers(140, 191)))
        loud = np.flatnonzero(np.abs(speech) > 10 ** (-50 / 20))
        speech = speech[loud[0] : loud[-1] + 1] if loud.size else speech
        speech *= 10 ** (rng.uniform(-20, -6) / 20) / max(float(np.abs(speech).max()), 1e-6)
        pieces.append(speech)
        truth.append(np.ones(len(speech), bool))
        total += gap + len(speech)
    audio = np.concatenate(pieces)[: int(STREAM_SECONDS * RATE)]
    labels = np.concatenate(truth)[: int(STREAM_SECONDS * RATE)]
    noise = rng.standard_normal(len(audio)).astype(np.float32) * 10 ** (rng.uniform(-55, -40) / 20)
    return audio + noise, labels


def streams(count: int, texts: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio (count, samples), chunk truth (count, chunks)) for ``count`` streams."""
    rng = np.random.default_rng(seed)
    audio, labels = zip(*(_stream(texts, rng) for _ in range(count)), strict=True)
    chunks = len(audio[0]) // CHUNK
    x = np.stack([a[: chunks * CHUNK] for a in audio])
    truth = np.stack([lab[: chunks * CHUNK].reshape(chunks, CHUNK).mean(axis=1) > 0.5 for lab in labels])
    return x, truth


def _feeds(session: object, x: np.ndarray, truth: np.ndarray | None) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Chunk feeds of a batch of streams, with the FP32 state of each step."""
    batch, samples = x.shape
    state = np.zeros((2, batch, 128), np.float32)
    context = np.zeros((batch, CONTEXT), np.float32)
    sr = np.array(RATE, dtype=np.int64)
    feeds, refs = [], []
    for c in range(samples // CHUNK):
        chunk = x[:, c * CHUNK : (c + 1) * CHUNK]
        inp = np.concatenate([context, chunk], axis=1).astype(np.float32)
        feeds.append({"input": inp, "state": state, "sr": sr})
        if truth is not None:
            refs.append({"speech": truth[:, c : c + 1].astype(np.uint8), "continues": np.array(c > 0)})
        _, state = session.run(None, {"input": inp, "state": state, "sr": sr})  # type: ignore[attr-defined]
        context = inp[:, -CONTEXT:]
    return feeds, refs


def build(folder: Path, model_file: str = MODEL_FILE, name: str = "silero_vad") -> None:
    import onnxruntime as ort

    path = model_path(model_file)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    texts = sentences(max_words=16)
    eval_texts, calib_texts = texts[0::2], texts[1::2]
    x, truth = streams(EVAL_STREAMS, eval_texts, seed=0)
    eval_feeds, refs = _feeds(session, x, truth)
    cx, _ = streams(CALIB_STREAMS, calib_texts, seed=1)
    steps, _ = _feeds(session, cx, None)
    calib = [
        {"input": f["input"][b : b + 1], "state": f["state"][:, b : b + 1], "sr": f["sr"]}
        for b in range(CALIB_STREAMS)
        for f in steps[CALIB_STRIDE // 2 :: CALIB_STRIDE]
    ]
    task = {
        "name": name,
        "description": "Silero VAD (LSTM, ONNX) on espeak-ng speech with silence/noise gaps, 8 streams "
        "as a batch, state carried between chunks; frame-level speech F1",
        "source": {
            "model": f"silero_vad/data/{model_file}",
            "data": "sentences of pydoc_data.topics (CPython) spoken by espeak-ng (Debian), gaps of "
            "silence + white noise",
            "packages": package_versions(["silero-vad", "scipy"]),
            "speech_share": float(truth.mean()),
        },
        "metric": "vad_frame_f1",
        "metric_params": {"output": "output", "threshold": 0.5},
        "higher_is_better": True,
        "approach": "static",
        "inputs": [["input", ["batch", CHUNK + CONTEXT], "float32"], ["state", [2, "batch", 128], "float32"],
                   ["sr", [], "int64"]],  # fmt: skip
        "outputs": [["output", ["batch", 1], "float32"], ["stateN", [2, "batch", 128], "float32"]],
        "frontend": "onnx",
        "carry": {"stateN": "state"},
        "latency_feed": 1,
    }
    write_task_folder(folder, task, path, calib, eval_feeds, refs)
