"""Kill -9 soak: SIGKILL a tuning run at random moments, resume it, and check that nothing is lost.

A child process tunes the bundled digits example (``lpot_ir.examples_data``) with the basic strategy
(``timeout > 0``: it searches on after the first success, so a run has several trials), its calibration
cache in the workspace, and an ``eval_func`` that logs every call (fsynced) before evaluating. The driver:

1. runs the child once without interruption: the reference (trial keys, best trial, the bytes of
   ``best_model.onnx``, the recipe, ``decisions.json``) and the time each phase starts;
2. starts the child in a fresh workspace and SIGKILLs it, again and again, each time resuming (``resume``
   when the workspace has a history, else a new run, as ``lpot tune --resume`` does), until a child
   finishes; then starts the next cycle in a new workspace, until ``--kills`` kills have landed.
   A kill lands either at a uniformly random moment of the run, or a random moment inside a chosen phase
   (calibration, quantization, evaluation, history append, model save, report, plot): the child prints a
   marker when it enters each phase (wrappers around lpot-ir's functions that only print), and the driver
   kills a random fraction of that phase's reference duration after seeing the marker;
3. after every kill checks the workspace: the history reads (a torn last line is the only damage allowed),
   the best model passes ``onnx.checker`` (full check) and its recipe replays to the same model, every JSON
   file parses, the report is complete, the plot is a whole PNG;
4. checks every resumed child: no trial that was in the history when it started is evaluated again, and
   the FP32 baseline is not evaluated again once the history has its header;
5. checks every cycle's final result against the reference: same trials, best trial, model bytes, recipe
   and decisions.

The RNG is seeded (``--seed``), so the same kill plan is drawn each time (where a kill lands still depends
on the machine's speed). Options: ``--options plain`` (the default: the strategy options that make the run
deterministic) or ``--options default`` (the strategy's defaults; with advice measured from latencies the
final result may differ from the reference even without kills, so only the integrity and no-re-evaluation
checks must pass) or a JSON object.

Run ``python benchmarks/kill_soak.py --kills 24 --seed 0`` (``--workdir DIR`` keeps the workspaces,
``--json FILE`` writes the numbers). It prints one line per kill and a summary; exit code 1 when a check
failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("calibration", "quantize", "evaluate", "history", "save", "report", "plot")
"""Phases a kill may target (besides a uniformly random moment)."""
MARK = "@@phase "


# ----------------------------------------------------------------------------------------------- the child


def _plain_options() -> dict[str, Any]:
    """The strategy options that make basic deterministic: no proxy, no latency advice, no recovery phase."""
    from lpot_ir.strategies.basic import BasicStrategy

    return {k: False for k in ("proxy", "speed", "recovery") if k in BasicStrategy.default_options}


def _child(workspace: Path, options: dict[str, Any], resume: bool, eval_log: Path) -> None:
    started = time.monotonic()

    def mark(phase: str) -> None:
        sys.stderr.write(f"{MARK}{phase} {time.monotonic() - started:.4f}\n")
        sys.stderr.flush()

    mark("start")
    import numpy as np

    import lpot_ir.quantizer as quantizer_module
    import lpot_ir.tuning.finalize as finalize_module
    from lpot_ir.config import load_config
    from lpot_ir.examples_data import digits_example
    from lpot_ir.fileio import append_line
    from lpot_ir.ir.model import to_proto
    from lpot_ir.quantizer import ModelQuantizer
    from lpot_ir.tuning import Evaluator, tune
    from lpot_ir.tuning.history import TuningHistory

    def wrap(owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def marked(*args: Any, **kwargs: Any) -> Any:
            mark(phase)
            return original(*args, **kwargs)

        setattr(owner, name, marked)

    wrap(quantizer_module, "calibrate", "calibration")
    wrap(quantizer_module, "save_model", "save")
    wrap(finalize_module, "write_report", "report")
    wrap(finalize_module, "write_plot", "plot")
    wrap(TuningHistory, "append", "history")
    last = {"key": "fp32"}
    original_quantize = ModelQuantizer.quantize

    def quantize(self: Any, config: Any = None) -> Any:
        mark("quantize")
        result = original_quantize(self, config)
        last["key"] = result.config.key()
        return result

    ModelQuantizer.quantize = quantize  # type: ignore[method-assign]

    digits = digits_example()
    mark("optimize")
    quantizer = ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10), workspace=workspace)
    fp32_digest = hashlib.sha256(to_proto(quantizer.fp32_model).SerializeToString()).hexdigest()
    original_digest = hashlib.sha256(digits.model_path.read_bytes()).hexdigest()

    def eval_func(model: Any) -> float:
        digest = hashlib.sha256(model.SerializeToString()).hexdigest()
        fp32 = digest in (fp32_digest, original_digest) or not any(
            n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in model.graph.node
        )
        key = "fp32" if fp32 else last["key"]
        mark("baseline" if fp32 else "evaluate")
        append_line(eval_log, json.dumps({"pid": os.getpid(), "key": key}))
        return float(np.float64(digits.eval_func(model)))

    config = load_config(
        {
            "model": {"name": "digits", "framework": "onnxrt_qdq"},
            "tuning": {
                "strategy": {"name": "basic", **options},
                "accuracy_criterion": {"relative": 0.01},
                "exit_policy": {"timeout": 3600, "max_trials": 30},
                "workspace": {"path": str(workspace), **({"resume": str(workspace)} if resume else {})},
            },
        }
    )
    outcome = tune(config, quantizer, Evaluator(eval_func=eval_func), progress=False)
    mark("done")
    print(json.dumps({
        "keys": [t.config.key() for t in outcome.trials],
        "best": None if outcome.best is None else outcome.best.config.key(),
        "evaluated": outcome.evaluated,
        "replayed": outcome.replayed,
    }))


# ------------------------------------------------------------------------------------------- the driver


@dataclass
class ChildRun:
    """One child process: what it was asked, how it ended, what it printed."""

    resume: bool
    killed: bool
    returncode: int
    seconds: float
    marks: list[tuple[str, float]]
    stdout: str
    stderr_tail: str

    @property
    def phase(self) -> str:
        """The phase the child was in when it ended (the last marker it printed)."""
        return self.marks[-1][0] if self.marks else "startup"


def _spawn(workspace: Path, options: dict[str, Any], resume: bool, eval_log: Path,
           kill: Callable[[queue.Queue, float], float | None] | None) -> ChildRun:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [sys.executable, str(Path(__file__).resolve()), "--child", str(workspace), "--options", json.dumps(options),
            "--eval-log", str(eval_log)] + (["--resume"] if resume else [])
    began = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    lines: queue.Queue = queue.Queue()
    marks: list[tuple[str, float]] = []
    tail: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(MARK):
                name, at = line[len(MARK):].split()
                marks.append((name, float(at)))
                lines.put((name, time.monotonic()))
            else:
                tail.append(line)
                del tail[:-40]
        lines.put(("<eof>", time.monotonic()))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    killed = False
    if kill is not None:
        delay = kill(lines, began)
        if delay is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed = True
    stdout = proc.stdout.read() if proc.stdout is not None else ""
    proc.wait()
    reader.join(timeout=10)
    killed = killed and proc.returncode == -signal.SIGKILL
    return ChildRun(resume, killed, proc.returncode, time.monotonic() - began, marks, stdout, "".join(tail))


def _kill_at_random(rng: random.Random, total: float) -> Callable[[queue.Queue, float], float | None]:
    delay = rng.uniform(0.05, total)

    def kill(lines: queue.Queue, began: float) -> float | None:
        deadline = began + delay
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return delay
            try:
                name, _ = lines.get(timeout=left)
            except queue.Empty:
                return delay
            if name == "<eof>":
                return None

    return kill


def _kill_in_phase(rng: random.Random, phase: str, nth: int, length: float) -> Callable[[queue.Queue, float], float | None]:
    fraction = rng.random()

    def kill(lines: queue.Queue, began: float) -> float | None:
        seen = 0
        while True:
            try:
                name, at = lines.get(timeout=120)
            except queue.Empty:
                return None
            if name == "<eof>":
                return None
            if name == phase:
                seen += 1
                if seen >= nth:
                    time.sleep(max(0.0, at + fraction * length - time.monotonic()))
                    return fraction * length

    return kill


def phase_lengths(marks: list[tuple[str, float]]) -> dict[str, float]:
    """Median duration of each phase in a run: from its marker to the next marker."""
    spans: dict[str, list[float]] = {}
    for (name, at), (_, following) in zip(marks, marks[1:], strict=False):
        spans.setdefault(name, []).append(following - at)
    return {name: sorted(v)[len(v) // 2] for name, v in spans.items()}


def _is_whole_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


def check_workspace(workspace: Path, fp32_model: Path) -> list[str]:
    """Problems with the files in ``workspace`` (empty: every file present is whole and consistent)."""
    import onnx

    from lpot_ir.errors import LpotError
    from lpot_ir.ir.model import model_digest
    from lpot_ir.quantizer import Recipe, apply_recipe
    from lpot_ir.tuning.history import TuningHistory

    problems: list[str] = []
    history = workspace / "history.jsonl"
    if history.exists():
        try:
            TuningHistory(history).read()
        except LpotError as exc:
            problems.append(f"history unreadable: {exc}")
    model = workspace / "best_model.onnx"
    recipe = workspace / "best_model.recipe.json"
    if model.exists() != recipe.exists():
        problems.append("best model and recipe: only one of them exists")
    elif model.exists():
        try:
            proto = onnx.load(str(model))
            onnx.checker.check_model(proto, full_check=True)
            replayed = apply_recipe(str(fp32_model), Recipe.load(recipe)).model
            if model_digest(replayed) != model_digest(proto):
                problems.append("best model and recipe do not match (the recipe replays to another model)")
        except Exception as exc:  # any failure is a finding
            problems.append(f"best model or recipe broken: {type(exc).__name__}: {exc}")
    for path in [*workspace.glob("*.json"), *workspace.glob("calibration/*.json")]:
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name} is not valid JSON: {exc}")
    report = workspace / "report.txt"
    if report.exists() and "best model" not in report.read_text():
        problems.append("report.txt is incomplete")
    plot = workspace / "tuning.png"
    if plot.exists() and not _is_whole_png(plot.read_bytes()):
        problems.append("tuning.png is not a whole PNG")
    return problems


def _temporaries(workspace: Path) -> list[str]:
    return sorted(str(p.relative_to(workspace)) for p in workspace.rglob(".*"))


def _finished_keys(workspace: Path) -> tuple[bool, set[str]]:
    from lpot_ir.tuning.history import TuningHistory

    path = workspace / "history.jsonl"
    if not path.exists():
        return False, set()
    _header, trials = TuningHistory(path).read()
    return True, {t.config.key() for t in trials}


def _evaluations(eval_log: Path) -> list[dict[str, Any]]:
    if not eval_log.exists():
        return []
    return [json.loads(line) for line in eval_log.read_text().splitlines() if line.strip()]


def _final_files(workspace: Path) -> dict[str, str]:
    out = {}
    for name in ("best_model.onnx", "best_model.recipe.json", "decisions.json"):
        path = workspace / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
    return out


@dataclass
class SoakResult:
    """What a soak found."""

    options: dict[str, Any]
    seed: int
    kills: int = 0
    cycles: int = 0
    children: int = 0
    kills_by_phase: dict[str, int] = field(default_factory=dict)
    torn_history_lines: int = 0
    wasted_evaluations: int = 0
    reference_seconds: float = 0.0
    soak_seconds: float = 0.0
    cycles_equal_to_reference: int = 0
    stale_temporaries_after_kills: int = 0
    stale_temporaries_at_end: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_soak(
    kills: int,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    workdir: Path | None = None,
    require_reference: bool = True,
    log: Callable[[str], None] = print,
    max_kills_per_cycle: int = 12,
) -> SoakResult:
    """Run the soak (see the module docstring) and return what it found."""
    from lpot_ir.examples_data import digits_example

    options = _plain_options() if options is None else options
    result = SoakResult(options=options, seed=seed)
    rng = random.Random(seed)
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="lpot-kill-soak-")) if workdir is None else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    fp32_model = digits_example().model_path
    started = time.monotonic()
    try:
        reference_ws = root / "reference"
        shutil.rmtree(reference_ws, ignore_errors=True)
        reference = _spawn(reference_ws, options, False, root / "reference-evals.jsonl", None)
        if reference.returncode != 0:
            raise RuntimeError(f"the reference run failed:\n{reference.stderr_tail}")
        result.reference_seconds = reference.seconds
        expected = json.loads(reference.stdout.strip().splitlines()[-1])
        expected_files = _final_files(reference_ws)
        lengths = phase_lengths(reference.marks)
        counts = Counter(name for name, _ in reference.marks)
        log(f"reference: {len(expected['keys'])} trials in {reference.seconds:.1f} s; phases "
            + ", ".join(f"{p} x{counts.get(p, 0)} ({lengths.get(p, 0) * 1000:.0f} ms)" for p in PHASES))
        phases_by_kill: Counter[str] = Counter()
        while result.kills < kills:
            result.cycles += 1
            workspace = root / f"cycle{result.cycles}"
            shutil.rmtree(workspace, ignore_errors=True)
            eval_log = root / f"cycle{result.cycles}-evals.jsonl"
            eval_log.unlink(missing_ok=True)
            in_cycle = 0
            while True:
                has_header, finished = _finished_keys(workspace)
                kill = None
                if result.kills < kills and in_cycle < max_kills_per_cycle:
                    target = rng.choice(("anywhere", "anywhere", *PHASES))
                    if target == "anywhere" or counts.get(target, 0) == 0:
                        kill = _kill_at_random(rng, reference.seconds)
                    else:
                        nth = rng.randint(1, counts[target])
                        kill = _kill_in_phase(rng, target, nth, max(lengths.get(target, 0.01), 0.002))
                before = len(_evaluations(eval_log))
                child = _spawn(workspace, options, has_header, eval_log, kill)
                result.children += 1
                evaluations = _evaluations(eval_log)[before:]
                again = [e["key"] for e in evaluations if e["key"] in finished or (e["key"] == "fp32" and has_header)]
                if again:
                    result.problems.append(f"cycle {result.cycles}: evaluated again after resume: {again}")
                if not child.killed:
                    if child.returncode != 0:
                        result.problems.append(f"cycle {result.cycles}: child failed ({child.returncode}):\n{child.stderr_tail}")
                        break
                    final = json.loads(child.stdout.strip().splitlines()[-1])
                    same = final["keys"] == expected["keys"] and final["best"] == expected["best"]
                    same = same and _final_files(workspace) == expected_files
                    result.cycles_equal_to_reference += int(same)
                    if not same and require_reference:
                        result.problems.append(
                            f"cycle {result.cycles}: final result differs from the reference: {final} vs {expected}; "
                            f"files {_final_files(workspace)} vs {expected_files}"
                        )
                    problems = check_workspace(workspace, fp32_model)
                    result.problems += [f"cycle {result.cycles} end: {p}" for p in problems]
                    stale = _temporaries(workspace)
                    result.stale_temporaries_at_end += len(stale)
                    log(f"cycle {result.cycles}: finished after {in_cycle} kill(s); "
                        f"{'same as the reference' if same else 'DIFFERENT from the reference'}; "
                        f"{final['replayed']} trial(s) replayed, {final['evaluated']} evaluated"
                        + (f"; stale temporaries: {stale}" if stale else ""))
                    break
                result.kills += 1
                in_cycle += 1
                phases_by_kill[child.phase] += 1
                history = workspace / "history.jsonl"
                if history.exists() and history.read_bytes() and not history.read_bytes().endswith(b"\n"):
                    result.torn_history_lines += 1
                problems = check_workspace(workspace, fp32_model)
                result.problems += [f"cycle {result.cycles} kill {in_cycle}: {p}" for p in problems]
                result.stale_temporaries_after_kills += len(_temporaries(workspace))
                _, finished_now = _finished_keys(workspace)
                wasted = [e for e in evaluations if e["key"] != "fp32" and e["key"] not in finished_now]
                result.wasted_evaluations += len(wasted)
                log(f"kill {result.kills:3d}: cycle {result.cycles}, {child.seconds:5.2f} s into the child, in "
                    f"'{child.phase}'; history: {len(finished_now)} trial(s)"
                    + (f"; PROBLEMS: {problems}" if problems else ""))
        result.kills_by_phase = dict(phases_by_kill)
    finally:
        result.soak_seconds = time.monotonic() - started
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=24, help="kills to land (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default="plain", help="plain (default), default, or a JSON object")
    parser.add_argument("--workdir", help="keep the workspaces here")
    parser.add_argument("--json", help="write the result as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--eval-log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(Path(args.child), json.loads(args.options), args.resume, Path(args.eval_log))
        return 0
    sys.path.insert(0, str(ROOT))
    options = None if args.options == "plain" else {} if args.options == "default" else json.loads(args.options)
    result = run_soak(args.kills, args.seed, options, Path(args.workdir) if args.workdir else None,
                      require_reference=args.options == "plain" or options == _plain_options())
    print()
    print(f"options {result.options}, seed {result.seed}: {result.kills} kills in {result.cycles} cycle(s), "
          f"{result.children} child processes, {result.soak_seconds:.0f} s (reference run {result.reference_seconds:.1f} s)")
    print("kills by phase: " + ", ".join(f"{k} {v}" for k, v in sorted(result.kills_by_phase.items())))
    print(f"torn history lines after a kill: {result.torn_history_lines}; evaluations lost to kills (trial not yet "
          f"recorded): {result.wasted_evaluations}; stale temporaries seen after kills: "
          f"{result.stale_temporaries_after_kills}, at the end of cycles: {result.stale_temporaries_at_end}")
    print(f"cycles whose final result equals the uninterrupted run's: {result.cycles_equal_to_reference}/{result.cycles}")
    print("problems: " + ("none" if result.ok else "\n  " + "\n  ".join(result.problems)))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=1))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
