"""The one atomic writer (lpot_ir.fileio) and save_model under real write failures.

Failures are real: the kernel refuses writes past RLIMIT_FSIZE (EFBIG; any user), or a small tmpfs is full
(ENOSPC; root only, skipped otherwise). Nothing is monkeypatched.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.errors import LpotError, WriteError
from lpot_ir.fileio import append_line, atomic_write, remove_stale_temporaries, temporary_prefix
from lpot_ir.ir.model import load_model, save_model
from tests.faults.limits import file_size_limit, fill, full_tmpfs, snapshot, temporaries


def _mlp(seed: int = 0, hidden: int = 64) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((16, hidden)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _outputs(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.ones((2, 16), np.float32)})[0]


def test_write_past_the_limit_keeps_the_previous_file(tmp_path: Path) -> None:
    dest = tmp_path / "report.txt"
    atomic_write(dest, "the previous report\n")
    with file_size_limit(1000), pytest.raises(WriteError) as caught:
        atomic_write(dest, "x" * 5000)
    assert dest.read_text() == "the previous report\n"
    assert temporaries(tmp_path) == []
    error = caught.value
    assert isinstance(error, LpotError) and isinstance(error, OSError) and error.errno == errno.EFBIG
    assert str(dest) in str(error) and "unchanged" in str(error) and "\n" not in str(error)


def test_a_failed_append_leaves_no_half_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    append_line(path, '{"kind": "header"}')
    before = path.read_bytes()
    with file_size_limit(len(before) + 10), pytest.raises(WriteError, match="cut back to its earlier content"):
        append_line(path, '{"kind": "trial", "index": 0, "padding": "' + "p" * 200 + '"}')
    assert path.read_bytes() == before  # 10 bytes were written, then cut off again
    append_line(path, '{"kind": "trial", "index": 0}')
    assert path.read_text().splitlines() == ['{"kind": "header"}', '{"kind": "trial", "index": 0}']


def test_new_files_get_plain_permissions_and_replaced_files_keep_theirs(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    fresh = atomic_write(tmp_path / "fresh.json", "{}")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    atomic_write(kept, "[]")
    assert kept.stat().st_mode & 0o777 == 0o640


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dest = tmp_path / "best_model.onnx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = temporary_prefix(dest)
    stale_prefix = mine.replace(f"-{os.getpid()}.", f"-{dead_pid}.")
    (tmp_path / f"{stale_prefix}abc.onnx").write_bytes(b"half a model")
    (tmp_path / f"{stale_prefix}dir").mkdir()
    (tmp_path / f"{stale_prefix}dir" / "best_model.onnx.0a1b2c3d.data").write_bytes(b"half the weights")
    (tmp_path / f".report.txt{stale_prefix[len('.best_model.onnx'):]}q1w2e3.tmp").write_bytes(b"another file's")
    live = tmp_path / f"{mine.replace(f'-{os.getpid()}.', '-1.')}xyz.tmp"  # pid 1 always runs
    live.write_bytes(b"another process's write in progress")
    other = tmp_path / ".report.txt.somehost-12345.abc.tmp"
    other.write_bytes(b"")
    assert remove_stale_temporaries(dest) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    save_model(load_model(_mlp()), dest)  # every save sweeps its own destination's stale temporaries
    assert live.exists()


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_save_model_past_the_limit_keeps_the_previous_model(tmp_path: Path, external: bool) -> None:
    dest = save_model(load_model(_mlp(0)), tmp_path / "model.onnx", external_data=external)
    before = snapshot(tmp_path)
    expected = _outputs(dest)
    with file_size_limit(2048), pytest.raises(WriteError, match="model.onnx"):
        save_model(load_model(_mlp(1, hidden=256)), dest, external_data=external)
    assert snapshot(tmp_path) == before and temporaries(tmp_path) == []
    np.testing.assert_array_equal(_outputs(dest), expected)


def test_external_data_save_replaces_the_weights_with_the_model(tmp_path: Path) -> None:
    dest = save_model(load_model(_mlp(0)), tmp_path / "model.onnx", external_data=True)
    first = [p.name for p in tmp_path.glob("model.onnx.*.data")]
    assert len(first) == 1
    (tmp_path / "model.onnx.0badc0de.data").write_bytes(b"orphan of a killed save")  # never referenced
    save_model(load_model(_mlp(1)), dest, external_data=True)
    second = [p.name for p in tmp_path.glob("model.onnx.*.data")]
    assert len(second) == 1 and second != first
    np.testing.assert_allclose(_outputs(dest), _outputs_of(_mlp(1), tmp_path), rtol=1e-6)
    save_model(load_model(_mlp(2)), dest)  # small again: inline weights, the data file goes
    assert list(tmp_path.glob("model.onnx.*.data")) == []


def _outputs_of(proto: onnx.ModelProto, folder: Path) -> np.ndarray:
    path = folder / "reference" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    onnx.save(proto, path)
    return _outputs(path)


def test_full_tmpfs_keeps_the_previous_files() -> None:
    with full_tmpfs(size_kb=256) as folder:
        dest = save_model(load_model(_mlp(0)), folder / "model.onnx")
        report = atomic_write(folder / "report.txt", "the previous report\n")
        fill(folder)
        before = snapshot(folder)
        with pytest.raises(WriteError) as caught:
            save_model(load_model(_mlp(1, hidden=512)), dest)
        assert caught.value.errno == errno.ENOSPC and "No space left on device" in str(caught.value)
        with pytest.raises(WriteError):
            atomic_write(report, "x" * 8192)
        assert snapshot(folder) == before and temporaries(folder) == []
