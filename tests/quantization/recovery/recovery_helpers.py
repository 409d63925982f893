"""Helpers for the recovery-rewrite tests: small models with a range imbalance made on purpose, FP32
equivalence checks against ONNX Runtime, INT8 error of a configuration."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/quantization: the shared qhelpers

from qhelpers import make_model, run  # noqa: E402

from lpot_ir.ir.quant import Granularity, RecoveryConfig, TuningConfig  # noqa: E402
from lpot_ir.quantizer import ModelQuantizer, default_config  # noqa: E402

__all__ = [
    "EPS32",
    "assert_same_function",
    "conv_chain",
    "attention_block",
    "outlier_projections",
    "int8_error",
    "make_model",
    "per_tensor_config",
    "run",
]

EPS32 = float(np.finfo(np.float32).eps)


def assert_same_function(original: onnx.ModelProto, rewritten: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                         *, ulps: float = 2.0**10) -> float:
    """Both models give the same outputs on ``feeds`` up to rounding; return the largest difference.

    The tolerance is ``ulps * eps32 * max|y|``: the rewrite changes each weight by at most one float32
    rounding (relative eps/2), and a few stacked layers with sums of up to a few hundred terms can grow
    that to ~100 eps of the output's magnitude; 1024 eps leaves a margin of 10 while staying far below
    any INT8 effect (1/256 of the range).
    """
    worst = 0.0
    for feed in feeds:
        for a, b in zip(run(original, feed), run(rewritten, feed), strict=True):
            scale = float(np.abs(a).max()) or 1.0
            diff = float(np.abs(a - b).max())
            assert diff <= ulps * EPS32 * scale, f"outputs differ by {diff} (max |y| {scale})"
            worst = max(worst, diff / scale)
    return worst


def conv_chain(*, seed: int = 0, spread: float = 1000.0, activation: str = "Relu", clip_max: float = 6.0) -> onnx.ModelProto:
    """Conv 3->8 -> act -> depthwise 3x3 -> act -> MaxPool -> Conv 1x1 8->6, with an imbalance.

    The first conv's output channels are multiplied by factors spread log-evenly over ``spread`` and
    the depthwise filters reading them divided by the same factors (``Relu`` commutes, so this is what
    a trained network could equally hold). ``activation="Clip"`` uses ``Clip(0, clip_max)`` (the same
    construction, which then defines a different function: the large channels reach the bound).
    """
    rng = np.random.default_rng(seed)
    c0, c1, c2 = 3, 8, 6
    w1 = rng.normal(0, 0.5, (c1, c0, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.2, c1).astype(np.float32)
    wd = rng.normal(0, 0.5, (c1, 1, 3, 3)).astype(np.float32)
    bd = rng.normal(0, 0.2, c1).astype(np.float32)
    w2 = rng.normal(0, 0.5, (c2, c1, 1, 1)).astype(np.float32)
    b2 = rng.normal(0, 0.2, c2).astype(np.float32)
    if spread != 1.0:
        f = np.logspace(0, np.log10(spread), c1).astype(np.float32)
        rng.shuffle(f)
        w1, b1, wd = w1 * f[:, None, None, None], b1 * f, wd / f[:, None, None, None]
    inits: dict[str, np.ndarray] = {"W1": w1, "B1": b1, "Wd": wd, "Bd": bd, "W2": w2, "B2": b2}

    def act(x: str, y: str) -> onnx.NodeProto:
        if activation == "Clip":
            return helper.make_node("Clip", [x, "clip_lo", "clip_hi"], [y], name=f"{y}_clip")
        return helper.make_node(activation, [x], [y], name=f"{y}_act")

    if activation == "Clip":
        inits["clip_lo"] = np.array(0.0, np.float32)
        inits["clip_hi"] = np.array(clip_max, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        act("c1", "a1"),
        helper.make_node("Conv", ["a1", "Wd", "Bd"], ["d"], name="dw", pads=[1, 1, 1, 1], group=c1),
        act("d", "a2"),
        helper.make_node("MaxPool", ["a2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "W2", "B2"], ["y"], name="conv2"),
    ]
    return make_model(nodes, [("x", ["N", c0, 8, 8])], [("y", None)], inits)


def attention_block(*, seed: int = 0, outlier: float = 60.0, residual: bool = True) -> onnx.ModelProto:
    """LayerNorm -> Q, K, V MatMuls (+ bias) -> an elementwise mix -> GELU MLP, with activation outliers.

    Two channels of the LayerNorm's scale are ``outlier`` times the rest (what trained transformers show),
    so its output has outlier channels; with ``residual`` the LayerNorm output is also added back (a
    post-LN encoder), so the scale cannot be folded into it.
    """
    rng = np.random.default_rng(seed)
    d, h = 16, 32
    gamma = rng.uniform(0.5, 1.5, d).astype(np.float32)
    gamma[[3, 11]] *= outlier
    inits = {
        "gamma": gamma,
        "beta": rng.normal(0, 0.1, d).astype(np.float32),
        "Wq": rng.normal(0, 0.3, (d, d)).astype(np.float32),
        "Wk": rng.normal(0, 0.3, (d, d)).astype(np.float32),
        "Wv": rng.normal(0, 0.3, (d, d)).astype(np.float32),
        "bq": rng.normal(0, 0.1, d).astype(np.float32),
        "W1": rng.normal(0, 0.3, (d, h)).astype(np.float32),
        "W2": rng.normal(0, 0.3, (h, d)).astype(np.float32),
        "half": np.array(0.5, np.float32),
        "one": np.array(1.0, np.float32),
        "sqrt2": np.array(np.sqrt(2.0), np.float32),
    }
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "Wq"], ["q0"], name="q"),
        helper.make_node("Add", ["q0", "bq"], ["q1"], name="q_bias"),
        helper.make_node("MatMul", ["ln", "Wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["ln", "Wv"], ["v"], name="v"),
        helper.make_node("Mul", ["q1", "k"], ["qk"], name="qk"),
        helper.make_node("Add", ["qk", "v"], ["mix"], name="mix"),
        helper.make_node("MatMul", ["mix", "W1"], ["h0"], name="fc1"),
        helper.make_node("Div", ["h0", "sqrt2"], ["g0"], name="gelu_div"),  # GELU as torch exports it
        helper.make_node("Erf", ["g0"], ["g1"], name="gelu_erf"),
        helper.make_node("Add", ["g1", "one"], ["g2"], name="gelu_add"),
        helper.make_node("Mul", ["h0", "g2"], ["h1"], name="gelu_mul"),
        helper.make_node("Mul", ["h1", "half"], ["h2"], name="gelu_half"),
        helper.make_node("MatMul", ["h2", "W2"], ["o"], name="fc2"),
    ]
    if residual:
        nodes.append(helper.make_node("Add", ["o", "ln"], ["y"], name="residual"))
    else:
        nodes.append(helper.make_node("Identity", ["o"], ["y"], name="out"))
    return make_model(nodes, [("x", ["N", 5, d])], [("y", None)], inits)


def per_tensor_config(recovery: RecoveryConfig | None = None) -> TuningConfig:
    """This CPU's default configuration with per-tensor weights (where weight ranges matter most)."""
    config = default_config()
    weight = dataclasses.replace(config.global_config.weight, granularity=Granularity.PER_TENSOR)
    config = dataclasses.replace(config, global_config=dataclasses.replace(config.global_config, weight=weight))
    return dataclasses.replace(config, recovery=recovery or RecoveryConfig())


def int8_error(quantizer: ModelQuantizer, config: TuningConfig, reference: onnx.ModelProto,
               feeds: Sequence[Mapping[str, np.ndarray]]) -> float:
    """Relative L2 error of the INT8 model's outputs against the FP32 reference model's, over ``feeds``."""
    qmodel = quantizer.quantize(config).model
    num = den = 0.0
    for feed in feeds:
        for a, b in zip(run(reference, feed), run(qmodel, feed), strict=True):
            num += float(np.sum((a.astype(np.float64) - b) ** 2))
            den += float(np.sum(a.astype(np.float64) ** 2))
    return (num / den) ** 0.5


def outlier_projections(*, seed: int = 0, outlier: float = 60.0, width: int = 32) -> onnx.ModelProto:
    """LayerNorm with two outlier channels -> Q, K, V projections (outputs), plus a residual reader.

    The regime SmoothQuant is for: activations with a few channels far larger than the rest, weights
    without outliers, and the LayerNorm output also read by a residual ``Add`` (as in BERT), so the
    factors go into an inserted Mul.
    """
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 1.5, width).astype(np.float32)
    gamma[[3, width - 5]] *= outlier
    inits = {"gamma": gamma, "beta": rng.normal(0, 0.1, width).astype(np.float32)}
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1)]
    for name in ("q", "k", "v"):
        inits[f"W{name}"] = rng.uniform(-0.3, 0.3, (width, width)).astype(np.float32)
        nodes.append(helper.make_node("MatMul", ["ln", f"W{name}"], [name], name=name))
    nodes.append(helper.make_node("Add", ["ln", "v"], ["residual"], name="residual"))
    return make_model(nodes, [("x", ["N", 5, width])], [(n, None) for n in ("q", "k", "v", "residual")], inits)
