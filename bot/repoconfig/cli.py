"""``python -m bot.repoconfig``: print the generated docs, or check a configuration file."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.repoconfig.docs import render_configuration_docs
from bot.repoconfig.model import CONFIG_PATH
from bot.repoconfig.parsing import parse_repo_config
from bot.repoconfig.problems import DOCS_PATH, ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    """Print the generated docs (``--docs``) or check a configuration file (``--check FILE``)."""
    args = _parser().parse_args(argv)
    if args.docs:
        sys.stdout.write(render_configuration_docs())
        return 0
    return check_file(args.check)


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
    return parser
