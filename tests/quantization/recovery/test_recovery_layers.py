"""Conv/Gemm/MatMul as matrix products: im2col rows and row sums against ONNX Runtime's own outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from recovery_models import build, run

from lpot_ir.passes.quantization.recovery.layers import linear_layer

CASES = [
    ("Conv", (2, 4, 9, 11), (6, 4, 3, 3), {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ("Conv", (2, 6, 9, 11), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1], "dilations": [2, 2]}),
    ("Conv", (2, 6, 9, 11), (4, 3, 3, 2), {"group": 2, "auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    ("Conv", (2, 6, 9, 11), (4, 3, 3, 2), {"group": 2, "auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ("Conv", (2, 6, 17), (4, 6, 5), {"strides": [2]}),
    ("Conv", (1, 2, 5, 6, 7), (3, 2, 2, 3, 2), {"pads": [0, 1, 1, 1, 0, 1]}),
    ("MatMul", (2, 5, 8), (8, 7), {}),
    ("Gemm", (5, 8), (7, 8), {"transB": 1, "alpha": 0.5}),
    ("Gemm", (8, 5), (8, 7), {"transA": 1}),
]


@pytest.mark.parametrize(("op", "x_shape", "w_shape", "attrs"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rows_reproduce_onnxruntime(op, x_shape, w_shape, attrs):
    rng = np.random.default_rng(len(x_shape) + len(attrs))
    w = rng.standard_normal(w_shape).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    model = build([helper.make_node(op, ["x", "w"], ["y"], name="n", **attrs)], x_shape, "y", {"w": w})
    (y,) = run(model, x)
    layer = linear_layer(next(iter(ir.serde.deserialize_model(model).graph)), w_shape)
    assert layer is not None
    assert layer.output_shape(x.shape) == tuple(np.delete(y.shape, layer.output_axis % y.ndim))
    count = layer.num_positions(x.shape)
    positions = np.sort(rng.choice(count, min(count, 40), replace=False))
    matrix = layer.weight_matrix(w)
    np.testing.assert_array_equal(layer.weight_from_matrix(matrix), w)
    got = np.matmul(layer.rows(x, positions), matrix.transpose(0, 2, 1))
    np.testing.assert_allclose(got, layer.outputs(y, positions), rtol=1e-4, atol=1e-4)
    # the row sum (bias correction's mean input) equals the sum of every row
    full = layer.rows(x, np.arange(count)).sum(axis=1)
    np.testing.assert_allclose(layer.row_sum(x), full, rtol=1e-5, atol=1e-4)


def test_unsupported_products_are_declined():
    node = ir.Node("", "MatMul", [ir.Value(name="a"), ir.Value(name="b")], name="bmm")
    assert linear_layer(node, (4, 8, 8)) is None  # batched weight
    assert linear_layer(ir.Node("", "ConvTranspose", [], name="t"), (4, 4, 3, 3)) is None
