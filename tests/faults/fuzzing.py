"""Shared pieces of the property-based (hypothesis) fault tests.

CI runs each property with a small, fixed example count and ``derandomize=True``: the same examples every
run, no example database, no deadline (the machine is shared). ``LPOT_FUZZ_SCALE=N`` multiplies the counts
and ``LPOT_FUZZ_RANDOM=1`` draws fresh examples, for a long local run (see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from lpot_ir.cli import main
from lpot_ir.errors import LpotError

__all__ = ["fuzz_settings", "assert_one_paragraph", "run_cli_expecting_error", "CliFailure"]

SCALE = max(1, int(os.environ.get("LPOT_FUZZ_SCALE", "1") or 1))
RANDOM = os.environ.get("LPOT_FUZZ_RANDOM", "") not in ("", "0")


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings of one property: ``max_examples`` (times ``LPOT_FUZZ_SCALE``), deterministic in CI."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,  # capsys/tmp_path: each example reads its own output first
        ],
        print_blob=True,
    )


def assert_one_paragraph(error: BaseException) -> str:
    """``error`` is an :class:`LpotError` whose message is one paragraph (what a user reads); return it."""
    assert isinstance(error, LpotError), f"{type(error).__name__} is not an LpotError: {error!r}"
    text = str(error)
    assert text.strip(), f"empty message of {type(error).__name__}"
    assert "\n" not in text.strip(), f"more than one line: {text!r}"
    assert "Traceback" not in text, text
    assert len(text) >= 30, f"too short to say what is wrong and how to fix it: {text!r}"
    return text


class CliFailure:
    """What ``lpot`` printed for a bad input."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def run_cli_expecting_error(
    capsys: Any, argv: Sequence[str], *, outputs: Sequence[Path] = (), where: Callable[[], str] = lambda: ""
) -> CliFailure:
    """Run ``lpot ARGV`` in this process; it must exit 2 with one ``lpot X: error: ...`` line on stderr, no
    traceback and no internal error, and write none of ``outputs`` (nor a temporary beside them)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    context = f"{where()} lpot {' '.join(map(str, argv))}\nstderr: {err[-3000:]}"
    assert code == 2, f"exit {code}; {context}"
    assert "Traceback" not in err and "internal error" not in err, context
    errors = [line for line in err.splitlines() if re.match(r"lpot \w+: error: ", line)]
    assert len(errors) == 1, context
    assert len(errors[0]) > 40, context
    for path in outputs:
        assert not path.exists(), f"{path} was written; {context}"
        hidden = [p.name for p in path.parent.glob(f".{path.name}.*")]
        assert not hidden, f"temporaries {hidden} left; {context}"
    return CliFailure(code, out, err)
