"""Helpers of the tuning tests (the digits model's outlier ops, a configuration builder)."""

from __future__ import annotations

from typing import Any

from lpot_ir.config import load_config

# the two ops around the outlier tensor (see lpot_ir.examples_data)
OUTLIER_OPS = ("/stem/stem.0/Conv", "/dw1/dw1.0/Conv")

PLAIN = {"proxy": False, "speed": False, "recovery": False}
"""basic without advice: all-INT8 first, then sensitivity-ordered fallback in growing batches. The
digits model's stem is faster in FP32 (3x3 conv on one channel), so with ``speed`` on the first trial
already keeps it FP32 and meets the goal; tests of the fallback mechanics turn the advice off."""


def make_config(workspace: Any, strategy: str = "basic", *, resume: Any = None, **tuning: Any) -> Any:
    """A configuration for the digits model with a 1% relative criterion."""
    exit_policy = {"timeout": tuning.pop("timeout", 0), "max_trials": tuning.pop("max_trials", 20)}
    strategy_section = {"name": strategy, **tuning.pop("strategy_options", {})}
    return load_config(
        {
            "model": {"name": "digits", "framework": "onnxrt_qdq"},
            "tuning": {
                "strategy": strategy_section,
                "accuracy_criterion": {"relative": 0.01},
                "exit_policy": exit_policy,
                "workspace": {"path": str(workspace), **({"resume": str(resume)} if resume else {})},
                **tuning,
            },
        }
    )
