"""Fixtures of the strategy tests: the real ResNet-50 node list and the synthetic accuracy model."""

from __future__ import annotations

import pytest

from lpot_ir.backends.onnxruntime.capabilities import QuantizableNode
from lpot_ir.strategies.base import TuningSpace
from tests.strategies.synthetic import SyntheticContext, default_model_wise, resnet_nodes_and_groups


@pytest.fixture(scope="session")
def resnet() -> tuple[tuple[QuantizableNode, ...], tuple[tuple[str, ...], ...]]:
    return resnet_nodes_and_groups()


@pytest.fixture(scope="session")
def critical(resnet) -> list[str]:
    """Five compute nodes each of which alone breaks the 1% goal (first conv, three inner, the Gemm)."""
    nodes, _ = resnet
    compute = [n.name for n in nodes if n.op_type in ("Conv", "Gemm")]
    return [compute[0], compute[10], compute[25], compute[40], compute[-1]]


@pytest.fixture()
def resnet_space(resnet) -> TuningSpace:
    nodes, groups = resnet
    return TuningSpace(nodes, default_model_wise(), groups=groups)


@pytest.fixture()
def resnet_context(resnet_space, critical) -> SyntheticContext:
    return SyntheticContext(resnet_space, critical)


@pytest.fixture()
def small_space(resnet) -> TuningSpace:
    """Six real nodes (two convs with their relus, a pool, the Gemm), two candidates, two sizes."""
    nodes, groups = resnet
    by_name = {n.name: n for n in nodes}
    conv_groups = [g for g in groups if len(g) == 2][:2]
    names = [n for g in conv_groups for n in g]
    names += [
        next(n.name for n in nodes if n.op_type == "MaxPool"),
        next(n.name for n in nodes if n.op_type == "Gemm"),
    ]
    return TuningSpace(
        tuple(by_name[n] for n in names), default_model_wise(), sampling_sizes=(50, 100), groups=conv_groups
    )


@pytest.fixture()
def small_context(small_space) -> SyntheticContext:
    """The first conv and the Gemm are critical."""
    return SyntheticContext(small_space, [small_space.nodes[0].name, small_space.nodes[-1].name])
