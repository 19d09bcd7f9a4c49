"""``model-guard registry validate``: every problem of a registry, one line each."""

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.commands.arguments import MAX_MODEL_MIB, number_in
from engine.commands.options import EXIT_BAD_INPUT, EXIT_OK, CommandParser, add_budget_flags


def add_parser(commands: Any) -> None:
    """Add ``registry validate``."""
    registry = commands.add_parser("registry", help="model registry commands")
    registry_commands = registry.add_subparsers(
        dest="registry_command", required=True, parser_class=CommandParser
    )
    validate = registry_commands.add_parser(
        "validate",
        help="check a registry.json and every model it names, as the bisect does before scoring",
    )
    validate.add_argument("path", nargs="?", type=Path, default=Path("model/registry.json"))
    validate.add_argument(
        "--max-model-mib",
        type=number_in(0, MAX_MODEL_MIB, low_open=True),
        default=16.0,
        help="size cap per model in MiB, as given to bisect (default 16)",
    )
    add_budget_flags(validate)
    validate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per registry problem (with its JSON pointer); exit 1 on any.

    The checks are the bisect's before it scores a model (``engine.admission``), under
    the same size cap and memory budget flags.
    """
    from engine.commands.options import budget_limits
    from engine.registry import validate_registry

    limits = budget_limits(args, max_bytes=int(args.max_model_mib * 1024 * 1024))
    problems = validate_registry(args.path, limits=limits)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.path}: ok")
    return EXIT_OK
