"""``model-guard registry validate`` and ``registry import``: check a registry, or bring a foreign one in."""

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.commands.arguments import MAX_MODEL_MIB, existing_file, number_in, output_file
from engine.commands.options import EXIT_BAD_INPUT, EXIT_OK, CommandParser, add_budget_flags

# `registry import` wrote the registry, but some files are missing or do not match their hashes.
EXIT_WRITTEN_WITH_PROBLEMS = 2


def add_parser(commands: Any) -> None:
    """Add ``registry validate`` and ``registry import``."""
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
    imported = registry_commands.add_parser(
        "import",
        help="convert a foreign registry (no timeline, own fields) into a model-guard registry",
        description="Write a model-guard registry beside SRC that names the same files "
        "(nothing is copied or changed). Unknown fields are kept under `extra`; the timeline "
        "order comes from the rule printed (docs/adopting.md). Exit 0: written; 2: written, "
        "but some files are missing or do not match their hashes (one line each); 1: refused, "
        "nothing written.",
    )
    imported.add_argument(
        "source", type=existing_file, metavar="SRC", help="the foreign registry.json"
    )
    imported.add_argument(
        "--out",
        required=True,
        type=output_file,
        metavar="DST",
        help="where to write the model-guard registry: a new file in SRC's folder",
    )
    order = imported.add_mutually_exclusive_group()
    order.add_argument(
        "--order-rule",
        choices=["natural", "source"],
        default="natural",
        help="natural (default): ids in natural order (_v2 < _v10), ties by id; "
        "source: the order SRC lists its rows",
    )
    order.add_argument(
        "--order",
        type=existing_file,
        metavar="FILE",
        help="a text file listing every id of SRC once, oldest first (# comments allowed)",
    )
    imported.add_argument(
        "--force",
        action="store_true",
        help="replace DST if it exists (never SRC or a file it names)",
    )
    imported.set_defaults(run=run_import)


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


def run_import(args: argparse.Namespace) -> int:
    """Import SRC into DST; print the order, the defaults and one line per file problem."""
    from engine.errors import UsageError
    from engine.evidence import write_json
    from engine.registry import RegistryInvalid
    from engine.registry_import import OrderRule, import_registry, named_files

    source: Path = args.source
    destination: Path = args.out
    _check_destination(source, destination, force=args.force)
    try:
        result = import_registry(
            source,
            rule=OrderRule(args.order_rule),
            order_file=args.order,
        )
    except RegistryInvalid as refused:
        for problem in refused.problems:
            print(_located(source, problem))
        print(
            f"{source}: not imported, {len(refused.problems)} problem(s); nothing written",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    relative = destination.resolve().relative_to(source.resolve().parent).as_posix()
    if relative in named_files(result.document):
        raise UsageError(f"--out {destination}: the registry names that file; choose another name")
    write_json(destination, result.document)
    _print_summary(source, destination, result)
    for problem in result.file_problems:
        print(_located(source, problem))
    if result.file_problems:
        print(
            f"{destination}: written, with {len(result.file_problems)} file problem(s) kept as "
            "declared; `model-guard registry validate` lists them too",
            file=sys.stderr,
        )
        return EXIT_WRITTEN_WITH_PROBLEMS
    return EXIT_OK


def _check_destination(source: Path, destination: Path, *, force: bool) -> None:
    """DST is a new file (or ``--force``) in SRC's folder, and never SRC itself."""
    from engine.errors import UsageError

    if destination.resolve().parent != source.resolve().parent:
        raise UsageError(
            f"--out {destination}: must be in the folder of {source}, so the new registry names "
            "the same files (nothing is copied)"
        )
    if destination.resolve() == source.resolve():
        raise UsageError(f"--out {destination}: is the source registry; it is never overwritten")
    if destination.exists() and not force:
        raise UsageError(f"--out {destination}: exists (use --force to replace it)")


def _located(source: Path, problem: Any) -> str:
    """``<source name>#<pointer>: <message>`` on one line (a whole-file message names the file)."""
    from engine.errors import one_line

    where = f"{source.name}#{problem.pointer}: " if problem.pointer else ""
    return one_line(f"{where}{problem.message}", limit=1000)


def _print_summary(source: Path, destination: Path, result: Any) -> None:
    """The counts, the order with its rule, and the defaults applied."""
    twins = set(result.twins)
    rows = len(result.order) - len(twins)
    print(
        f"imported {rows} rows and {len(twins)} int8 twin row(s) from {source} into {destination}"
    )
    print(
        f"timeline order, rule {result.rule} ({result.rule_text}); "
        "override with --order FILE or --order-rule source:"
    )
    parents = {row["id"]: row.get("quantised_from") for row in result.document["models"]}
    for position, model_id in enumerate(result.order):
        twin = f"  (int8 twin of {parents[model_id]})" if model_id in twins else ""
        print(f"  {position:3d}  {model_id}{twin}")
    if result.defaulted_smoke:
        print(
            f"smoke absent on {len(result.defaulted_smoke)} row(s), set to true (not promoted): "
            + ", ".join(result.defaulted_smoke)
        )
    kept = sum(1 for row in result.document["models"] if "extra" in row)
    top = len(result.document.get("extra", {}))
    print(f"unknown fields kept under extra: {kept} row(s), {top} top-level field(s)")
