"""SegmentRunner: running a model piece by piece gives what one session gives, and pieces can be changed."""

from __future__ import annotations

import numpy as np
from onnx import helper
from recovery_models import build, images, run

from lpot_ir.passes.quantization.recovery.segments import SegmentRunner


def _residual_net() -> tuple:
    rng = np.random.default_rng(3)
    inits = {
        "w1": rng.normal(0, 0.3, (4, 3, 3, 3)),
        "w2": rng.normal(0, 0.3, (4, 4, 3, 3)),
        "w3": rng.normal(0, 0.3, (4, 4, 1, 1)),
        "shape": np.array([0, -1], dtype=np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),  # a residual: r1 is read twice
        helper.make_node("Conv", ["s", "w3"], ["c3"], name="conv3"),
        helper.make_node("Shape", ["c3"], ["shp"], name="shape"),  # integer tensors cross segments too
        helper.make_node("ReduceMean", ["c3"], ["y"], name="mean", keepdims=0),
    ]
    model = build(nodes, ["N", 3, 8, 8], "y", inits, extra_outputs=["shp"])
    return model, inits


def test_segments_reproduce_the_whole_model_and_free_what_is_done():
    model, _inits = _residual_net()
    x = images(6, seed=1, shape=(3, 8, 8))
    feeds = [{"x": x[:4]}, {"x": x[4:]}]
    runner = SegmentRunner(model, feeds)
    (c1,) = runner.run_to(["c1"])
    np.testing.assert_array_equal(c1[0], run(model, x[:4], ["c1"])[0])
    runner.run_to(["s"])
    assert runner.has_run("r1") and not runner.has_run("c3")
    assert "c1" not in runner._store  # consumed by relu1, which ran: freed
    (y,) = runner.run_to(["y"])
    for batch, part in zip(y, (x[:4], x[4:]), strict=True):  # ORT fuses differently across a cut: float rounding
        np.testing.assert_allclose(batch, run(model, part, ["y"])[0], rtol=1e-5, atol=1e-6)
    assert runner.segments == 3


def test_changes_between_segments_reach_later_nodes():
    model, inits = _residual_net()
    x = images(4, seed=2, shape=(3, 8, 8))
    runner = SegmentRunner(model, [{"x": x}])
    runner.run_to(["r1"])
    runner.set_initializer("w2", np.zeros_like(inits["w2"], dtype=np.float32))  # conv2 has not run yet
    (s,) = runner.run_to(["s"])
    np.testing.assert_array_equal(s[0], run(model, x, ["r1"])[0])  # s = 0 + r1
    runner.add_to("s", np.float32(1.0))
    (c3,) = runner.run_to(["c3"])
    shifted = np.einsum("oc,nchw->nohw", inits["w3"][:, :, 0, 0].astype(np.float32), s[0])
    np.testing.assert_allclose(c3[0], shifted, rtol=1e-5, atol=1e-5)
