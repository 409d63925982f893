"""The latency model: profile attribution on the real digits model, predictions and regions on data."""

from __future__ import annotations

import numpy as np
import pytest

from lpot_ir.backends.onnxruntime.profiling import profile_nodes, value_elements
from lpot_ir.ir.model import to_proto
from lpot_ir.quantizer import default_config
from lpot_ir.tuning.latency import LatencyModel, build_latency_model, cached_latency_model
from lpot_ir.tuning.space import build_space
from tests.tuning.helpers import make_config


def test_profiles_attribute_kernels_to_the_models_own_nodes(digits, quantizer):
    fp32 = to_proto(quantizer.fp32_model)
    int8 = quantizer.quantize(default_config()).model
    feed = {"input": np.load(digits.calib_data_path)[:10]}
    fp32_profile = profile_nodes(fp32, feed, iterations=5)
    int8_profile = profile_nodes(int8, feed, iterations=5)
    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    relus = {n.name for n in fp32.graph.node if n.op_type == "Relu"}
    # ONNX Runtime fuses Conv + Relu in FP32 (timed under the Relu's output) and turns DQ -> Conv -> Q
    # into QLinearConv in INT8 (timed under the Conv's name): every conv group is timed in both
    assert len(relus & set(fp32_profile.node_seconds)) >= len(convs) - 1
    assert set(convs) <= set(int8_profile.node_seconds)
    assert any("QLinearConv" in ops for ops in int8_profile.node_ops.values())
    attributed = sum(int8_profile.node_seconds.values())
    # layout reorders are the rest (a timing share: loose, so a loaded machine does not cross it)
    assert attributed >= 0.5 * int8_profile.total_seconds
    sizes = value_elements(fp32, feed)
    assert sizes["logits"] == 10 * 10  # every float value of the run, by name


def test_fused_gemm_activation_is_timed_under_the_gemm():
    # ONNX Runtime fuses Gemm + Relu into one kernel named "fused fc0": its time belongs to fc0, not to
    # "other" (which once made every FP32 Gemm + Relu cost 0 ms, and speed regions kept them FP32)
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}") for i in range(2)]
    nodes = [
        helper.make_node("Gemm", ["x", "w0"], ["h"], name="fc0", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu0"),
        helper.make_node("Gemm", ["r", "w1"], ["y"], name="fc1", transB=1),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    profile = profile_nodes(model, {"x": np.ones((4, 64), np.float32)}, iterations=3)
    assert profile.node_ops.get("fc0") == ("FusedGemm",)
    assert profile.node_seconds["fc0"] > 0 and not profile.other_seconds


def _toy(kappa: float = 1e-6) -> LatencyModel:
    """A chain a -> b -> c -> d of groups, each edge carrying 100 elements; b is cheap in INT8."""
    groups = [("a",), ("b",), ("c",), ("d",)]
    return LatencyModel(
        groups,
        fp32_time=[4e-3, 1e-4, 4e-3, 4e-3],
        int8_time=[1e-3, 0.5e-4, 1e-3, 1e-3],
        edges=[(-1, 0, 100), (0, 1, 100), (1, 2, 100), (2, 3, 100), (3, -1, 100)],
        fp32_total=12.2e-3,
        int8_total=3.05e-3 + 2 * 100 * kappa,
        kappa=kappa,
    )


def test_predictions_add_up():
    model = _toy()
    groups = model.groups
    rng = np.random.default_rng(0)
    for _ in range(20):
        fp32 = {g for g in groups if rng.random() < 0.5}
        for g in groups:
            if g in fp32:
                continue
            assert model.predict(fp32 | {g}) - model.predict(fp32) == pytest.approx(model.flip_delta(g, fp32))
    assert model.predict(()) == pytest.approx(model.int8_total)
    assert model.boundary_elements(()) == 200  # graph input and output cross
    assert model.boundary_elements(set(groups)) == 0


def test_regions_revert_an_island_that_costs_more_than_it_saves():
    model = _toy(kappa=1e-6)  # 100 elements cost 0.1 ms per boundary; b saves only 0.05 ms in INT8
    grown = model.regions({("a",), ("c",)})
    assert ("b",) in grown and ("d",) not in grown
    assert model.predict(grown) < model.predict({("a",), ("c",)})
    cheap = _toy(kappa=1e-9)  # boundaries almost free: b stays INT8
    assert ("b",) not in cheap.regions({("a",), ("c",)})


def test_observe_refits_the_boundary_cost():
    model = _toy(kappa=1e-9)
    fp32 = {("b",)}
    true_kappa = 2e-6
    measured_total = model.int8_total + model.revert_seconds(("b",)) + true_kappa * (
        model.boundary_elements(fp32) - model.boundary_elements(())
    )
    model.observe(fp32, model.fp32_total / measured_total)
    assert model.kappa == pytest.approx(true_kappa)


def test_latency_model_is_kept_in_the_workspace(digits, quantizer, tmp_path):
    config = make_config(tmp_path)
    space = build_space(config, quantizer.nodes, quantizer.fp32_model).space
    feed = {"input": np.load(digits.calib_data_path)[:10]}
    fp32 = to_proto(quantizer.fp32_model)
    builds = []

    def build():
        builds.append(1)
        return build_latency_model(fp32, quantizer.quantize(default_config()).model, space.fallback_groups, feed, seconds=0.2)

    first = cached_latency_model(tmp_path / "latency.json", "k1", build)
    again = cached_latency_model(tmp_path / "latency.json", "k1", build)
    assert len(builds) == 1 and again.to_dict() == first.to_dict()
    cached_latency_model(tmp_path / "latency.json", "k2", build)  # another run: measured anew
    assert len(builds) == 2
    assert set(first.groups) == set(space.fallback_groups)
