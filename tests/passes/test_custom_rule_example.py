"""The user-facing example (examples/custom_rule.py) runs end to end as a script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_rule.py"


def test_custom_rule_example_runs() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines[2:] if line and not line.startswith(("nodes", "why", "outputs"))}
    assert rows["remove-neutral-arithmetic"] == "2" and rows["RemoveMulByOne"] == "1" and rows["RemoveAddZero"] == "1"
    assert "nodes: ['Mul:times_two', 'Relu:relu']" in lines
    assert "why not: RemoveMulByOne did not fire on 'times_two': check declined: the constant is not all 1" in lines
    assert lines[-1] == "outputs match: True"
