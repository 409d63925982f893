"""Rewrite rules and passes: the pass infrastructure, the rewrite driver and the pipelines.

``run_pipeline(model, "fp32-optimize")`` runs the built-in FP32 pipeline (see :data:`PIPELINES`; the
quantization pipelines ``int8-*`` are run by :func:`lpot_ir.passes.quantization.quantize_model`);
:func:`register_pass` / :func:`register_rule_set` / :func:`register_pipeline` / :func:`insert_step`
add user steps.
"""

from __future__ import annotations

from lpot_ir.passes.base import (
    PIPELINES,
    ContextPass,
    Pass,
    PassManager,
    PassResult,
    PipelineReport,
    RuleSetPass,
    StepReport,
    at_node,
    available_passes,
    get_pass,
    insert_step,
    pipeline_steps,
    pipeline_version,
    register_pass,
    register_pipeline,
    register_rule_set,
    run_pipeline,
)
from lpot_ir.passes.rewrite import RewriteDriver, RewriteLimitError, RewriteReport, TraceEntry, apply_rules

__all__ = [
    "PIPELINES",
    "ContextPass",
    "Pass",
    "PassManager",
    "PassResult",
    "PipelineReport",
    "RewriteDriver",
    "RewriteLimitError",
    "RewriteReport",
    "RuleSetPass",
    "StepReport",
    "TraceEntry",
    "apply_rules",
    "at_node",
    "available_passes",
    "get_pass",
    "insert_step",
    "pipeline_steps",
    "pipeline_version",
    "register_pass",
    "register_pipeline",
    "register_rule_set",
    "run_pipeline",
]

# Register the built-in steps (importing any module under lpot_ir.passes runs this file first).
import lpot_ir.passes.cleanup  # noqa: E402,F401
import lpot_ir.passes.fusion  # noqa: E402,F401
import lpot_ir.passes.mixed_precision  # noqa: E402,F401
import lpot_ir.passes.pruning  # noqa: E402,F401
import lpot_ir.passes.quantization  # noqa: E402,F401
