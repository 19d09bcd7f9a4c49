"""``model-guard registry validate``: every problem of a registry, one line each."""

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.commands.options import EXIT_BAD_INPUT, EXIT_OK, CommandParser


def add_parser(commands: Any) -> None:
    """Add ``registry validate``."""
    registry = commands.add_parser("registry", help="model registry commands")
    registry_commands = registry.add_subparsers(
        dest="registry_command", required=True, parser_class=CommandParser
    )
    validate = registry_commands.add_parser(
        "validate", help="check a registry.json and every file it names"
    )
    validate.add_argument("path", nargs="?", type=Path, default=Path("model/registry.json"))
    validate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per registry problem (with its JSON pointer); exit 1 on any."""
    from engine.registry import validate_registry

    problems = validate_registry(args.path)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.path}: ok")
    return EXIT_OK
