"""Silero VAD's 16 kHz opset-15 model (``silero_vad_16k_op15.onnx``) on the data of :mod:`task_silero`.

The same streams, feeds, state carry and metric as ``silero_vad``; the model is the one
``load_silero_vad(onnx=True, opset_version=15)`` loads: its 6 Convs are in the main graph, its LSTM
inside an ``If``.
"""

from __future__ import annotations

from pathlib import Path

import task_silero

__all__ = ["build"]


def build(folder: Path) -> None:
    task_silero.build(folder, model_file="silero_vad_16k_op15.onnx", name="silero_vad_16k")
