"""Pass base class, registry, pipelines as data, the pass manager and its report."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from onnx_ir.passes.common import IdentityEliminationPass
from passes_testutil import RNG, build, histogram, run, vi

from lpot_ir.errors import ConfigError, DataError, PassError
from lpot_ir.ir import clone_model
from lpot_ir.ir.pattern import Rule, op, var
from lpot_ir.passes import (
    PIPELINES,
    Pass,
    PassResult,
    at_node,
    available_passes,
    get_pass,
    register_pass,
    register_pipeline,
    register_rule_set,
    run_pipeline,
)


def _model() -> ir.Model:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["a"], name="id"),
        helper.make_node("Neg", ["a"], ["b"], name="neg1"),
        helper.make_node("Neg", ["b"], ["c"], name="neg2"),
        helper.make_node("Sigmoid", ["c"], ["y"], name="sigmoid"),
    ]
    return build(nodes, [vi("x", shape=[2, 3])], [vi("y")])


@register_rule_set("test-double-neg")
def _double_neg():
    return [Rule("RemoveDoubleNeg", op("Neg", op("Neg", var("x"))), lambda b, m: [m["x"]], spec="Neg(Neg(x)) → x")]


@register_pass("test-count-nodes")
class CountNodes(Pass):
    """An in-place pass that changes nothing (reports 0 changes)."""

    in_place = True

    def call(self, model: ir.Model) -> PassResult:
        return PassResult(model, False, changes=0)


@register_pass("test-functional-relu")
class AppendRelu(Pass):
    """A functional pass: returns a new model with a Relu appended, leaves its input alone."""

    in_place = False

    def call(self, model: ir.Model) -> PassResult:
        new = clone_model(model)
        out = new.graph.outputs[0]
        relu = ir.Node("", "Relu", [out], name="appended", outputs=[ir.Value(name="relu_out")])
        new.graph.append(relu)
        relu.outputs[0].type, relu.outputs[0].shape = out.type, out.shape
        new.graph.outputs[0] = relu.outputs[0]
        return PassResult(new, True, changes=1)


def test_fp32_pipeline_is_data_over_registered_names() -> None:
    steps = PIPELINES["fp32-optimize"]
    assert isinstance(steps, tuple) and all(isinstance(s, str) for s in steps)
    registered = available_passes()
    assert all(s in registered for s in steps)
    assert registered["fuse-batchnorm"] == "rule set" and registered["constant-folding"] == "pass"


def test_run_pipeline_reports_per_pass_and_rule() -> None:
    model = _model()
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    report = run_pipeline(model, ["remove-identity", "test-double-neg", "test-count-nodes"])
    assert report.model is model and report.modified
    assert list(report.items()) == [("remove-identity", 1), ("test-double-neg", 1), ("test-count-nodes", 0)]
    assert ("test-double-neg", "RemoveDoubleNeg", 1) in list(report.rules())
    assert report["remove-identity"].details == {"RemoveIdentity": 1, "RemoveDropout": 0}
    text = str(report)
    assert text.splitlines()[0].split() == ["pass", "/", "rule", "changes", "time"]
    assert "  RemoveDoubleNeg" in text and text.splitlines()[-1].startswith("total")
    assert histogram(model) == {"Relu": 1, "Sigmoid": 1}
    np.testing.assert_allclose(run(model, {"x": x})[0], 1 / (1 + np.exp(-np.maximum(x, 0))), rtol=1e-6)


def test_functional_pass_leaves_its_input_alone() -> None:
    model = _model()
    report = run_pipeline(model, ["test-functional-relu"])
    assert report.model is not model
    assert histogram(model) == {"Relu": 1, "Identity": 1, "Neg": 2, "Sigmoid": 1}
    assert histogram(report.model) == {"Relu": 2, "Identity": 1, "Neg": 2, "Sigmoid": 1}
    assert not get_pass("test-functional-relu").in_place


def test_registered_onnx_ir_pass_factory_counts_modified() -> None:
    register_pass("test-onnx-ir-identity", replace=True)(IdentityEliminationPass)
    report = run_pipeline(_model(), "test-onnx-ir-identity")
    assert list(report.items()) == [("test-onnx-ir-identity", 1)]


def test_user_pipeline_and_trace() -> None:
    register_pipeline("test-pipeline", ("remove-identity", "test-double-neg"), replace=True)
    report = run_pipeline(_model(), "test-pipeline", trace=True)
    assert [name for name, _ in report.items()] == ["remove-identity", "test-double-neg"]
    rewrite = report["test-double-neg"].rewrite
    assert rewrite is not None and any(e.fired for e in rewrite.trace)


def test_unknown_step_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="No pass or rule set is registered as 'fuse-batchnrom'.*'fuse-batchnorm'"):
        run_pipeline(_model(), ["fuse-batchnrom"])


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_rule_set("fuse-batchnorm")(_double_neg)


def test_pipelines_nest_and_cycles_are_refused() -> None:
    register_pipeline("test-outer", ("test-pipeline-inner", "test-count-nodes"), replace=True)
    register_pipeline("test-pipeline-inner", ("remove-identity",), replace=True)
    report = run_pipeline(_model(), "test-outer")
    assert [name for name, _ in report.items()] == ["remove-identity", "test-count-nodes"]
    register_pipeline("test-cycle", ("test-cycle",), replace=True)
    with pytest.raises(ConfigError, match="includes itself"):
        run_pipeline(_model(), "test-cycle")


def test_a_pass_without_call_cannot_be_built() -> None:
    class Incomplete(Pass):
        in_place = True

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def _sigmoid_check_raises(m):
    return m["x"].shape[99]  # a bug in the check: IndexError


@register_rule_set("test-broken-check")
def _broken_check_rules():
    return [Rule("BrokenSigmoidCheck", op("Sigmoid", var("x")), lambda b, m: [m["x"]], check=_sigmoid_check_raises,
                 spec="Sigmoid(x) → x")]


@register_pass("test-broken-pass")
class BrokenPass(Pass):
    in_place = True

    def call(self, model: ir.Model) -> PassResult:
        raise KeyError("missing")


def test_an_exception_in_a_rule_names_the_rule_and_the_node() -> None:
    with pytest.raises(PassError, match=r"Rule BrokenSigmoidCheck of rule set 'test-broken-check' raised IndexError.*"
                                        r"in its match or check on Sigmoid node 'sigmoid'") as info:
        run_pipeline(_model(), ["remove-identity", "test-broken-check"])
    assert isinstance(info.value.__cause__, IndexError)  # the traceback stays chained


def test_an_exception_in_a_pass_names_the_pass() -> None:
    with pytest.raises(PassError, match="Pass 'test-broken-pass' raised KeyError: 'missing'"):
        run_pipeline(_model(), ["test-broken-pass"])


@register_pass("test-node-errors")
class NodeErrorPass(Pass):
    """Raises ``error`` while working on the second Neg node."""

    in_place = True
    error: Exception = KeyError("missing")

    def call(self, model: ir.Model) -> PassResult:
        for node in model.graph:
            with at_node(node):
                if node.name == "neg2":
                    raise self.error
        return PassResult(model, False)


def _bad_data_check(m):
    raise DataError("Input 'x' has rank 2 where 4 was expected. Give NCHW images.")


@register_rule_set("test-bad-data-check")
def _bad_data_rules():
    return [Rule("BadDataSigmoid", op("Sigmoid", var("x")), lambda b, m: [m["x"]], check=_bad_data_check)]


def test_a_bug_in_a_pass_names_the_pass_and_the_node() -> None:
    NodeErrorPass.error = KeyError("missing")
    with pytest.raises(PassError, match="Pass 'test-node-errors' raised KeyError: 'missing' on Neg node 'neg2'. "):
        run_pipeline(_model(), ["test-node-errors"])


def test_an_lpot_error_in_a_pass_keeps_its_class_and_names_the_pass_and_the_node() -> None:
    NodeErrorPass.error = DataError("Input 'x' has rank 2 where 4 was expected. Give NCHW images.")
    try:
        with pytest.raises(DataError) as info:
            run_pipeline(_model(), ["remove-identity", "test-node-errors"])
    finally:
        NodeErrorPass.error = KeyError("missing")
    message = str(info.value)
    assert message == (
        "Pass 'test-node-errors' on Neg node 'neg2': Input 'x' has rank 2 where 4 was expected. Give NCHW images."
    )
    assert "\n" not in message


def test_an_lpot_error_in_a_rule_names_the_rule_and_the_node_once() -> None:
    with pytest.raises(DataError) as info:
        run_pipeline(_model(), ["test-bad-data-check"])
    assert str(info.value) == (
        "Rule BadDataSigmoid of rule set 'test-bad-data-check', in its match or check on Sigmoid node 'sigmoid' "
        "(graph 'g'): Input 'x' has rank 2 where 4 was expected. Give NCHW images."
    )


def test_a_broken_fp32_step_is_not_skipped_silently() -> None:
    from lpot_ir.ir import to_proto
    from lpot_ir.quantizer import ModelQuantizer

    saved = PIPELINES["fp32-optimize"]
    PIPELINES["fp32-optimize"] = (*saved, "test-broken-check")
    try:
        with pytest.raises(PassError, match="BrokenSigmoidCheck"):
            ModelQuantizer(to_proto(_model()))
    finally:
        PIPELINES["fp32-optimize"] = saved
