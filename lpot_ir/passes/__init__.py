"""Rewrite rules and passes: the pass infrastructure, the rewrite driver and the FP32 pipeline.

``run_pipeline(model, "fp32-optimize")`` runs the built-in FP32 pipeline (see :data:`PIPELINES`);
:func:`register_pass` / :func:`register_rule_set` / :func:`register_pipeline` add user steps.
"""

from __future__ import annotations

from lpot_ir.passes.base import (
    PIPELINES,
    Pass,
    PassManager,
    PassResult,
    PipelineReport,
    RuleSetPass,
    StepReport,
    available_passes,
    get_pass,
    register_pass,
    register_pipeline,
    register_rule_set,
    run_pipeline,
)
from lpot_ir.passes.rewrite import RewriteDriver, RewriteLimitError, RewriteReport, TraceEntry, apply_rules

__all__ = [
    "PIPELINES",
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
    "available_passes",
    "get_pass",
    "register_pass",
    "register_pipeline",
    "register_rule_set",
    "run_pipeline",
]

# Register the built-in cleanup and fusion steps.
import lpot_ir.passes.cleanup  # noqa: E402,F401
import lpot_ir.passes.fusion  # noqa: E402,F401
