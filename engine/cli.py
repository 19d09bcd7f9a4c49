"""The model-guard command line: each command is parsed, then run; errors become exit codes here only."""

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine import __version__
from engine.commands import (
    bisect_command,
    cache_command,
    ensemble_command,
    gate_command,
    loso_command,
    registry_command,
    verdict_command,
)
from engine.commands.options import EXIT_BAD_INPUT, CommandParser
from engine.errors import EngineError, one_line

# In the order `model-guard --help` lists them.
COMMANDS = (
    bisect_command,
    registry_command,
    cache_command,
    gate_command,
    verdict_command,
    loso_command,
    ensemble_command,
)
# Commands of the promotion flow use exit 1 for "gate fails / HOLD", and `ensemble eval` for
# "coverage test fails", so bad input is 2 there.
_BAD_INPUT_2 = {("gate",), ("verdict",), (verdict_command.VERIFY,), ("ensemble", "eval")}


def build_parser(extend: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """Return the parser for every model-guard command.

    ``extend(subparsers)`` lets the App add its own commands (``serve``) without the
    engine importing the App; like the engine's, they ``set_defaults(run=...)``.
    """
    parser = CommandParser(
        prog="model-guard", description="Guard a registry of learned video-quality models."
    )
    parser.add_argument("--version", action="version", version=f"model-guard {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=CommandParser, metavar="COMMAND"
    )
    for command in COMMANDS:
        command.add_parser(commands)
    if extend is not None:
        extend(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, extend: Callable[[Any], None] | None = None) -> int:
    """Run one command; the only place where errors become messages and exit codes."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:2] == ["verdict", "verify"]:
        arguments = [verdict_command.VERIFY, *arguments[2:]]
    words = tuple(arguments[:2])
    bad_input = 2 if words[:1] in _BAD_INPUT_2 or words in _BAD_INPUT_2 else EXIT_BAD_INPUT
    try:
        args = build_parser(extend).parse_args(arguments)
        args.argv = arguments
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except EngineError as error:
        print(f"model-guard: error: {one_line(error, limit=1000)}", file=sys.stderr)
        return bad_input
    except KeyboardInterrupt:
        print("model-guard: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: still one line, never a traceback for the user
        if os.environ.get("MODEL_GUARD_DEBUG"):
            raise
        print(
            f"model-guard: internal error: {type(error).__name__}: {one_line(error, limit=1000)} "
            "(set MODEL_GUARD_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return bad_input
