"""The ``lpot`` command: inspect, optimize, benchmark, and one-paragraph errors with exit code 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lpot_ir.cli import COMMANDS, main
from lpot_ir.errors import ModelLoadError

SQUEEZENET = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """The four kinds of bad model file."""
    root = tmp_path_factory.mktemp("bad")
    text = root / "x.onnx"
    text.write_text("this is a text file, not a model\n")
    truncated = root / "truncated.onnx"
    truncated.write_bytes(SQUEEZENET.read_bytes()[: SQUEEZENET.stat().st_size // 2])
    invalid = root / "invalid.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["undefined_input"], ["y"])],
        "invalid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    invalid.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return {"missing": root / "missing.onnx", "text": text, "truncated": truncated, "invalid": invalid}


EXPECTED = {
    "missing": "does not exist",
    "text": "ONNX model",
    "truncated": "truncated",
    "invalid": "fails the ONNX checker",
}


def test_commands_are_registered():
    assert COMMANDS[:3] == ("inspect", "optimize", "benchmark")


def test_inspect_squeezenet(capsys):
    code, out, err = run_cli(capsys, "inspect", SQUEEZENET)
    assert code == 0, err
    assert "data_0" in out and "[1, 3, 224, 224]" in out and "softmaxout_1" in out and "float" in out
    assert "ai.onnx 9" in out and "1.24M (1,235,496)" in out
    lines = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.strip()}
    assert lines["Conv"] == "26" and lines["Relu"] == "26" and lines["ConstantOfShape"] == "39"
    code, out, _ = run_cli(capsys, "inspect", SQUEEZENET, "--json")
    data = json.loads(out)
    assert code == 0 and data["parameters"] == 1_235_496 and data["opsets"] == {"": 9}
    assert data["op_histogram"]["Conv"] == 26 and data["op_histogram"]["MaxPool"] == 3
    assert data["inputs"] == [{"name": "data_0", "shape": [1, 3, 224, 224], "dtype": "float"}]
    assert data["nodes"] == sum(data["op_histogram"].values())


@pytest.fixture(scope="module")
def squeezenet_reference():
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    session = ort.InferenceSession(str(SQUEEZENET), providers=["CPUExecutionProvider"])
    return x, session.run(None, {"data_0": x})[0]


def test_optimize_writes_an_equivalent_model(capsys, tmp_path, squeezenet_reference):
    out_path = tmp_path / "sub" / "opt.onnx"
    code, out, err = run_cli(capsys, "optimize", SQUEEZENET, "-o", out_path)
    assert code == 0, err
    assert "pass / rule" in out and "RemoveDropout" in out and "nodes: " in out and "->" in out
    before, after = (int(v) for v in out.split("nodes: ")[1].split(" (")[0].split(" -> "))
    assert after < before
    optimized = onnx.load(out_path)
    onnx.checker.check_model(optimized, full_check=True)
    assert "Dropout" not in {n.op_type for n in optimized.graph.node}
    assert len(optimized.graph.node) == after
    x, expected = squeezenet_reference
    got = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"]).run(None, {"data_0": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert not list(out_path.parent.glob(".*"))  # no temporary file left behind


def test_optimize_refuses_to_overwrite_its_input(capsys, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(SQUEEZENET.read_bytes())
    code, out, err = run_cli(capsys, "optimize", model, "-o", tmp_path / "." / "model.onnx")
    assert code == 2 and "does not overwrite your model" in err and "--force" in err
    assert model.read_bytes() == SQUEEZENET.read_bytes()
    code, _, err = run_cli(capsys, "optimize", model, "-o", model, "--force")
    assert code == 0, err
    onnx.checker.check_model(onnx.load(model))
    assert model.read_bytes() != SQUEEZENET.read_bytes()


def test_benchmark_prints_latency(capsys):
    code, out, err = run_cli(capsys, "benchmark", SQUEEZENET, "--warmup", "1", "--iterations", "3",
                             "--cores-per-instance", "1")
    assert code == 0, err
    assert "latency p50 (ms/batch)" in out and "throughput (samples/s)" in out
    code, out, err = run_cli(capsys, "benchmark", SQUEEZENET, "--warmup", "0", "--iterations", "2",
                             "--shape", "data_0:1x3x224x224", "--json")
    data = json.loads(out)
    assert code == 0 and data["iterations"] == 2 and data["samples"] == 2
    assert data["latency_p50_ms"] <= data["latency_p90_ms"] <= data["latency_p99_ms"]


def test_benchmark_user_errors(capsys):
    code, _, err = run_cli(capsys, "benchmark", SQUEEZENET, "--shape", "data_0:1x4x224x224")
    assert code == 2 and "does not fit the model's shape (1, 3, 224, 224)" in err
    code, _, err = run_cli(capsys, "benchmark", SQUEEZENET, "--cores-per-instance", "64")
    assert code == 2 and "cores_per_instance (64) x num_of_instance (1) needs 64 cores" in err
    code, _, err = run_cli(capsys, "benchmark", SQUEEZENET, "--iterations", "0")
    assert code == 2 and "must be at least 1" in err


def test_benchmark_dynamic_spatial_axes_need_shape(capsys, tmp_path):
    """Dynamic H and W get 1 by default, too small for a 3x3 kernel: the error says to use --shape."""
    weight = onnx.numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "h", "w"])],
        [weight],
    )
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, _, err = run_cli(capsys, "benchmark", path, "--iterations", "1", "--batch-size", "2")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "ONNX Runtime failed" in err and "x:2x1x1x1" in err and "--shape NAME:DIMS" in err
    code, out, err = run_cli(capsys, "benchmark", path, "--iterations", "2", "--shape", "x:2x1x5x5", "--json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 4


@pytest.mark.parametrize("command", ["inspect", "optimize", "benchmark"])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_bad_model_files_give_one_paragraph_and_exit_2(capsys, tmp_path, bad_files, command, kind):
    extra = ["-o", str(tmp_path / "out.onnx")] if command == "optimize" else []
    code, out, err = run_cli(capsys, command, bad_files[kind], *extra)
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith(f"lpot {command}: error: ") and err.count("\n") == 1 and err.endswith("\n")
    assert EXPECTED[kind] in err and str(bad_files[kind].name) in err
    if kind == "text":
        assert re.search(r"not (a readable ONNX|an ONNX) model", err)
    assert not (tmp_path / "out.onnx").exists()


def test_debug_shows_the_exception(bad_files):
    with pytest.raises(ModelLoadError):
        main(["--debug", "inspect", str(bad_files["missing"])])


def test_usage_errors_exit_2(capsys):
    assert main(["inspect"]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


@pytest.mark.slow
def test_subprocess_and_console_script(bad_files):
    ok = subprocess.run([sys.executable, "-m", "lpot_ir.cli", "inspect", str(SQUEEZENET), "--json"],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["op_histogram"]["Conv"] == 26
    bad = subprocess.run([sys.executable, "-m", "lpot_ir.cli", "optimize", str(bad_files["truncated"]), "-o", "x"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "truncated" in bad.stderr
    assert bad.stderr.count("\n") == 1
    script = Path(sys.executable).parent / "lpot"
    assert script.is_file()
    assert "lpot_ir.cli" in script.read_text()


def test_debug_and_verbose_are_accepted_after_the_subcommand(bad_files, capsys):
    with pytest.raises(ModelLoadError):
        main(["inspect", str(bad_files["missing"]), "--debug"])
    code, _, err = run_cli(capsys, "inspect", str(SQUEEZENET), "-v")
    assert code == 0 and "internal error" not in err
    # given before the subcommand and not repeated after it, it still holds
    with pytest.raises(ModelLoadError):
        main(["--debug", "inspect", str(bad_files["missing"])])


@pytest.mark.slow
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    """``lpot inspect model.onnx | head``: the reader goes away before lpot writes (issue 9)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lpot_ir.cli", "inspect", str(SQUEEZENET)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    process.stdout.close()  # type: ignore[union-attr]  # closed before the child can write: its writes get EPIPE
    err = process.stderr.read().decode()  # type: ignore[union-attr]
    assert process.wait(timeout=120) == 141
    assert err == ""
