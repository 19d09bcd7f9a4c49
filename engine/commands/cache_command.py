"""``model-guard cache build|check``: the synthetic golden feature cache."""

import argparse
from typing import Any

from engine.commands.arguments import MAX_SEED, existing_folder, output_folder, whole_number_in
from engine.commands.options import EXIT_BAD_INPUT, EXIT_OK, CommandParser


def add_parser(commands: Any) -> None:
    """Add ``cache build`` and ``cache check``."""
    cache = commands.add_parser("cache", help="golden feature cache commands")
    cache_commands = cache.add_subparsers(
        dest="cache_command", required=True, parser_class=CommandParser
    )
    build = cache_commands.add_parser("build", help="build a golden cache deterministically")
    build.add_argument(
        "--synthetic", action="store_true", required=True, help="generate synthetic data"
    )
    build.add_argument("--seed", type=whole_number_in(0, MAX_SEED), required=True)
    build.add_argument("--out", type=output_folder, required=True)
    build.set_defaults(run=run_build)
    check = cache_commands.add_parser("check", help="rebuild a golden cache and report any drift")
    check.add_argument("directory", type=existing_folder)
    check.set_defaults(run=run_check)


def run_build(args: argparse.Namespace) -> int:
    """Build the synthetic golden cache into a folder."""
    from engine.cache import build_synthetic_cache

    written = build_synthetic_cache(args.out, seed=args.seed)
    print(f"wrote {len(written)} files to {args.out}")
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    """Rebuild a golden cache in a temporary folder and report any drift; exit 1 on drift."""
    from engine.cache import check_cache

    drift = check_cache(args.directory)
    for item in drift:
        print(f"DRIFT {item.file}: {item.detail}")
    if drift:
        return EXIT_BAD_INPUT
    print(f"{args.directory}: no drift")
    return EXIT_OK
