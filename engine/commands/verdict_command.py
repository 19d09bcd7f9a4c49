"""``model-guard verdict DIR`` writes PROMOTE.json or HOLD.json; ``verdict verify`` re-checks one."""

import argparse
from typing import Any

from engine.commands.arguments import existing_file, existing_folder, output_folder
from engine.commands.options import (
    add_gate_flags,
    add_policy_flags,
    gate_thresholds,
    promotion_policy,
)

# `verdict verify VERDICT` shares its first word with `verdict DIR`; cli.main routes it here.
VERIFY = "verdict-verify"


def add_parser(commands: Any) -> None:
    """Add ``verdict DIRECTORY`` and ``verdict verify VERDICT``."""
    verdict = commands.add_parser(
        "verdict",
        help="write PROMOTE.json or HOLD.json (exit 0 PROMOTE, 1 HOLD, 2 bad input); "
        "'verdict verify VERDICT [--registry R] [--policy P]' re-checks one",
    )
    verdict.add_argument("directory", type=existing_folder, help="folder holding loso_seed{N}.json")
    verdict.add_argument(
        "--features", type=existing_file, required=True, help="the feature table the LOSO ran on"
    )
    verdict.add_argument(
        "--models",
        type=existing_file,
        nargs="+",
        help="every model the verdict promotes (default: the final models the LOSO reports bind)",
    )
    verdict.add_argument(
        "--out", type=output_folder, help="where the verdict goes (default: the LOSO folder)"
    )
    add_gate_flags(verdict)
    verdict.set_defaults(run=run)
    verify = commands.add_parser(VERIFY)
    verify.prog = "model-guard verdict verify"
    verify.add_argument("verdict", type=existing_file, help="PROMOTE.json (or HOLD.json)")
    verify.add_argument(
        "--registry",
        type=existing_file,
        help="fail if this registry promotes a model the verdict does not cover",
    )
    verify.add_argument(
        "--manifest",
        type=existing_file,
        help="an ensemble manifest (ours or another tool's): its member files must hash as it "
        "records and be the models the verdict judged",
    )
    verify.add_argument(
        "--verbose", action="store_true", help="list every schema difference of a foreign file"
    )
    add_policy_flags(verify)
    verify.set_defaults(run=run_verify)


def run(args: argparse.Namespace) -> int:
    """Write exactly one of PROMOTE.json / HOLD.json, bound by hash to what it judged."""
    from engine.verdict import decide

    outcome = decide(
        args.directory,
        features=args.features,
        models=args.models,
        out=args.out or args.directory,
        thresholds=gate_thresholds(args),
        argv=args.argv,
    )
    print(outcome.render_text(), end="")
    return outcome.exit_code


def run_verify(args: argparse.Namespace) -> int:
    """Re-hash everything a verdict names (and check it against a policy); exit 0 only when all holds."""
    from engine.manifest import check_manifest
    from engine.verdict import EXIT_NOT_VERIFIED, verify_verdict

    check = None if args.manifest is None else check_manifest(args.manifest)
    result = verify_verdict(
        args.verdict,
        registry=args.registry,
        policy=promotion_policy(args),
        members=None if check is None else check.members,
    )
    if check is None:
        print(result.render_text(verbose=args.verbose), end="")
        return result.exit_code
    report = check.report(result)
    if not report.problems:
        print(result.render_text(), end="")
        return result.exit_code
    print(report.render_text(prefix="problem: ", verbose=args.verbose), end="")
    return EXIT_NOT_VERIFIED
