"""``model-guard gate``: judge per-seed LOSO reports, print the table, optionally write the JSON."""

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.commands.arguments import existing_folder, output_file
from engine.commands.options import add_gate_flags, gate_thresholds

if TYPE_CHECKING:
    from engine.gate import GateThresholds

# `model-guard gate --json` writes GateReport.to_dict() under this schema name.
GATE_SCHEMA = "model-guard/gate-report"
# Version 2 adds thresholds.min_sources and n_sources (the held-out source count).
GATE_SCHEMA_VERSION = 2
EXIT_PASS = 0
EXIT_FAIL = 1


def add_parser(commands: Any) -> None:
    """Add ``gate DIRECTORY``."""
    gate = commands.add_parser(
        "gate", help="judge per-seed LOSO reports (exit 0 pass, 1 fail, 2 bad input)"
    )
    gate.add_argument("directory", type=existing_folder, help="folder holding loso_seed{N}.json")
    add_gate_flags(gate)
    gate.add_argument("--json", type=output_file, help="write the gate report here")
    gate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Judge LOSO reports against the promotion gate."""
    return run_gate_command(
        args.directory, gate_thresholds(args), json_out=args.json, argv=args.argv
    )


def run_gate_command(
    directory: Path,
    thresholds: "GateThresholds",
    *,
    json_out: Path | None = None,
    argv: Sequence[str] = (),
) -> int:
    """Print the gate's table, optionally write its JSON; 0 pass, 1 fail.

    Bad input raises (EvidenceError, UsageError, ...); the CLI turns that into its exit code.
    """
    from engine.evidence import write_json
    from engine.gate import evaluate_gate
    from engine.loso_report import load_loso_reports
    from engine.provenance import InputRole, build_provenance, inputs_of, utc_now

    started = utc_now()
    reports = load_loso_reports(directory)
    report = evaluate_gate(reports, thresholds)
    print(report.render_text(), end="")
    if json_out is not None:
        document = {
            "schema": GATE_SCHEMA,
            "schema_version": GATE_SCHEMA_VERSION,
            **report.to_dict(),
            "run_provenance": build_provenance(
                schema=GATE_SCHEMA,
                schema_version=GATE_SCHEMA_VERSION,
                entrypoint="model-guard gate",
                argv=list(argv),
                inputs=inputs_of((r.path for r in reports), InputRole.LOSO_REPORT),
                outputs=[json_out],
                started=started,
                finished=utc_now(),
            ),
        }
        write_json(json_out, document)
    return EXIT_PASS if report.passed else EXIT_FAIL
