"""The tuning space: model-wise candidates, per-node choices, canonical configurations, groups."""

from __future__ import annotations

import pytest

from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import (
    FP32,
    Approach,
    CalibAlgorithm,
    DType,
    Granularity,
    OpOverride,
    Scheme,
    ScopeKind,
    SpecOverride,
    TuningConfig,
)
from lpot_ir.strategies.base import TuningSpace
from lpot_ir.strategies.space import expected_cost, model_wise_combinations


def test_model_wise_combinations_fastest_expected_first():
    configs = model_wise_combinations(
        activation_dtypes=("int8", "uint8"),
        activation_algorithms=("kl", "minmax"),
        weight_granularities=("per_tensor", "per_channel"),
    )
    assert len(configs) == 8
    first = configs[0]
    assert first.activation.dtype is DType.UINT8 and first.weight.dtype is DType.INT8
    assert first.weight.granularity is Granularity.PER_CHANNEL
    assert first.activation.algorithm is CalibAlgorithm.MINMAX
    assert all(c.activation.dtype is DType.INT8 for c in configs[4:])  # s8 activations are slower
    assert [expected_cost(c) for c in configs] == sorted(expected_cost(c) for c in configs)


def test_space_defaults_and_validation(resnet):
    nodes, _ = resnet
    base = TuningConfig(calib_sampling_size=300)
    space = TuningSpace(nodes[:3], base=base, approach=Approach.DYNAMIC, sampling_sizes=(10, 20))
    assert space.model_wise == (base.global_config,)
    assert space.sampling_sizes == (10,)  # dynamic: no calibration, one size
    assert space.base.approach is Approach.DYNAMIC
    assert TuningSpace(nodes[:3], base=base).sampling_sizes == (300,)
    with pytest.raises(ConfigError, match="model_wise"):
        TuningSpace(nodes[:3], model_wise=(FP32,))
    with pytest.raises(ConfigError, match="positive"):
        TuningSpace(nodes[:3], sampling_sizes=(0,))
    with pytest.raises(ConfigError, match="more than once"):
        TuningSpace((nodes[0], nodes[0]))


def test_node_choices_dedupe_and_user_scopes(small_space):
    conv, relu = small_space.choices[0], small_space.choices[1]
    assert len(conv.options) == 3 and conv.by_global == (0, 1)  # per-channel, per-tensor, FP32
    assert len(relu.options) == 2 and relu.by_global == (0, 0)  # weights do not matter for Relu
    assert conv.options[-1] == FP32 and conv.fp32_index == 2
    assert small_space.size == 2 * 3 * 2 * 3 * 2 * 2 * 3

    # a user op-type scope stays on top of every candidate
    pinned = TuningConfig().with_override(
        ScopeKind.OP_TYPE, "Conv", OpOverride(activation=SpecOverride(scheme=Scheme.SYM))
    )
    space = TuningSpace(small_space.nodes, small_space.model_wise, base=pinned)
    assert all(o.activation.scheme is Scheme.SYM for o in space.choices[0].options[:-1])
    for config in space.model_wise_configs():
        assert config.resolve(space.nodes[0].name, "Conv").activation.scheme is Scheme.SYM


def test_canonical_configs(small_space):
    space = small_space
    assert space.config_for(space.global_point(0)) == space.model_wise_config(0)
    assert space.config_for(space.global_point(1, 1)) == space.model_wise_config(1, 1)
    # one node off the per-channel candidate: a single node-name scope
    point = (0, (1, 0, 0, 0, 0, 0))
    config = space.config_for(point)
    assert config.global_config == space.model_wise[0] and len(config.overrides) == 1
    assert config.resolve(space.nodes[0].name, "Conv").weight.granularity is Granularity.PER_TENSOR
    # most nodes on per-tensor: per-tensor becomes the global setting
    config = space.config_for((0, (1, 0, 1, 0, 0, 1)))
    assert config.global_config == space.model_wise[1] and config.overrides == ()
    # FP32 sets do not depend on the order names are given in
    base = space.model_wise_config(0)
    names = [space.nodes[3].name, space.nodes[0].name]
    assert space.with_fp32(base, names).key() == space.with_fp32(base, reversed(names)).key()
    assert space.fp32_nodes(space.with_fp32(base, names)) == (space.nodes[0].name, space.nodes[3].name)
    with pytest.raises(ValueError):
        space.config_for((0, (0,)))


def test_fallback_groups_cover_every_node_once(resnet_space):
    groups = resnet_space.fallback_groups
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n.name for n in resnet_space.nodes)
    assert len(flat) == len(set(flat))
    assert any(len(g) == 2 for g in groups)
    order = [resnet_space.node_index[g[0]] for g in groups]
    assert order == sorted(order)


def test_groups_ignore_unknown_and_repeated_names(small_space):
    a, b, c = (n.name for n in small_space.nodes[:3])
    space = TuningSpace(small_space.nodes, groups=((b, a, "not-a-node"), (a, c)))
    assert space.fallback_groups[0] == (a, b)
    assert (c,) in space.fallback_groups
