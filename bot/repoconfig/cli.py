"""``python -m bot.repoconfig``: print the generated docs, or check a configuration file."""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.repoconfig.docs import render_configuration_docs
from bot.repoconfig.model import CONFIG_PATH
from bot.repoconfig.parsing import parse_repo_config
from bot.repoconfig.problems import DOCS_PATH, ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    """Print the docs (``--docs``), check a file (``--check FILE``) or print its policy (``--policy FILE``)."""
    args = _parser().parse_args(argv)
    if args.docs:
        sys.stdout.write(render_configuration_docs())
        return 0
    if args.policy is not None:
        return print_policy(args.policy)
    return check_file(args.check)


def print_policy(path: Path) -> int:
    """Print the file's ``promotion:`` block as the JSON ``verdict verify --policy`` reads.

    The pull-request check judges verdicts by this block (read from the base branch), so
    ``verdict verify --policy`` on the printed file gives the same answer locally.
    """
    try:
        text = path.read_bytes()
    except OSError as error:
        print(f"{path}: {error.strerror or error}", file=sys.stderr)
        return 2
    try:
        config = parse_repo_config(text, source=str(path))
    except ConfigError as error:
        print(f"{path}: {error.one_line()}", file=sys.stderr)
        return 1
    block = {key: value for key, value in config.promotion.to_dict().items() if value is not None}
    print(json.dumps(block, indent=2, sort_keys=True))
    return 0


def check_file(path: Path) -> int:
    """Check one file, printing each problem at its line; exit 0 valid, 1 invalid, 2 unreadable."""
    try:
        text = path.read_bytes()
    except OSError as error:
        print(f"{path}: {error.strerror or error}", file=sys.stderr)
        return 2
    try:
        config = parse_repo_config(text, source=str(path))
    except ConfigError as error:
        for problem in error.problems:
            where = f"{path}:{problem.line}" if problem.line else str(path)
            subject = f"{problem.key}: " if problem.key else ""
            print(f"{where}: {subject}{problem.message}", file=sys.stderr)
        return 1
    print(f"{path}: valid; gate {config.thresholds().describe()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    """Return the command line's parser: exactly one of --docs and --check FILE."""
    parser = argparse.ArgumentParser(
        prog="python -m bot.repoconfig", description=f"model-guard's {CONFIG_PATH}"
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--docs", action="store_true", help=f"print {DOCS_PATH}")
    action.add_argument("--check", type=Path, metavar="FILE", help="validate a configuration file")
    action.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="print the file's promotion policy as JSON for 'model-guard verdict verify --policy'",
    )
    return parser
