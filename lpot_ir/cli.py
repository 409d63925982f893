"""The ``lpot`` command: ``lpot [-v] [--debug] COMMAND ...`` (``-v`` and ``--debug`` also after COMMAND).

Each subcommand lives in ``lpot_ir/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; :data:`COMMANDS` lists them in the order ``lpot --help`` shows them (add a command by
adding its module name). Errors a user can cause (:class:`~lpot_ir.errors.LpotError`) are printed to
stderr as one paragraph, without a traceback, and the exit code is 2; ``--debug`` shows tracebacks.
A reader that stops early (``lpot inspect m.onnx | head``) ends the command quietly, as a SIGPIPE would
end a C program: exit code 141, nothing on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from lpot_ir import __version__
from lpot_ir.errors import LpotError, paragraph

__all__ = ["COMMANDS", "EXIT_OK", "EXIT_INTERNAL", "EXIT_USER_ERROR", "EXIT_BROKEN_PIPE", "build_parser", "main"]

logger = logging.getLogger(__name__)

COMMANDS: tuple[str, ...] = ("inspect", "optimize", "benchmark", "summarize", "quantize", "tune", "tensorboard")
"""Subcommand modules under ``lpot_ir.commands``, in help order."""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 128 + int(getattr(signal, "SIGPIPE", 13))
"""What a shell reports for a program ended by SIGPIPE: its reader closed the pipe."""


def _load_commands() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"lpot_ir.commands.{name}") for name in dict.fromkeys(COMMANDS)}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The ``lpot`` argument parser and the command modules by name."""
    parser = argparse.ArgumentParser(
        prog="lpot",
        description="lpot-ir: accuracy-driven INT8 quantization of ONNX models, measured with ONNX Runtime.",
    )
    _add_common_options(parser, top=True)
    parser.add_argument("--version", action="version", version=f"lpot-ir {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    commands = _load_commands()
    for module in commands.values():
        # the same options after the subcommand ("lpot inspect m.onnx --debug", as error messages suggest);
        # SUPPRESS keeps a subcommand that does not repeat them from resetting the values given before it
        _add_common_options(module.add_parser(subparsers), top=False)
    return parser, commands


def _add_common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
        help="more log output (-v info, -vv debug)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=False if top else argparse.SUPPRESS,
        help="show tracebacks of errors (and debug logs)",
    )


def _configure_logging(verbose: int, debug: bool) -> None:
    level = logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lpot`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    0 on success, 2 for an error the user can fix (bad model file, bad configuration, data that does not fit,
    and argparse's usage errors), 1 for an internal error.
    """
    parser, commands = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    _configure_logging(args.verbose, args.debug)
    module = commands[args.command]
    try:
        code = int(module.run(args) or EXIT_OK)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except LpotError as exc:
        if args.debug:
            raise
        print(f"lpot {args.command}: error: {paragraph(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"lpot {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one paragraph, the traceback only with --debug
        if args.debug:
            raise
        print(
            f"lpot {args.command}: internal error: {type(exc).__name__}: {paragraph(str(exc))}. This is a bug in "
            "lpot-ir; run again with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _silence_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null so that the interpreter's final flush
    does not fail again (the recipe of Python's ``signal`` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass


if __name__ == "__main__":
    sys.exit(main())
