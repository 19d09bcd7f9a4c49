"""``model-guard bisect``: find the first model in a timeline that fails the quality gate."""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.commands.arguments import (
    MAX_BOOTSTRAP,
    MAX_MODEL_MIB,
    MAX_SEED,
    existing_file,
    number_in,
    output_file,
    output_folder,
    thread_count,
    whole_number_in,
)
from engine.commands.options import (
    CORRELATION,
    EXIT_INCONCLUSIVE,
    EXIT_OK,
    EXIT_REGRESSION,
    RMSE,
    add_budget_flags,
    budget_limits,
    default_cache_dir,
    unit_interval,
)
from engine.errors import UsageError


def add_parser(commands: Any) -> None:
    """Add ``bisect``."""
    bisect = commands.add_parser(
        "bisect", help="find the first model in a timeline that fails the quality gate"
    )
    source = bisect.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--registry", type=existing_file, help="registry.json whose models form the timeline"
    )
    source.add_argument("--models", type=existing_file, nargs="+", help="ONNX files, oldest first")
    bisect.add_argument(
        "--features", type=existing_file, required=True, help="feature cache (parquet)"
    )
    bisect.add_argument(
        "--family",
        action="append",
        metavar="NAME",
        help="bisect only this family of the registry (repeatable; default every family)",
    )
    bisect.add_argument("--min-plcc", type=CORRELATION, help="gate: PLCC must be at least this")
    bisect.add_argument("--min-srocc", type=CORRELATION, help="gate: SROCC must be at least this")
    bisect.add_argument("--max-rmse", type=RMSE, help="gate: RMSE must be at most this")
    bisect.add_argument(
        "--statistical", action="store_true", help="judge by bootstrap confidence intervals"
    )
    bisect.add_argument(
        "--full", action="store_true", help="evaluate every model; report non-monotonic timelines"
    )
    bisect.add_argument(
        "--bootstrap",
        type=whole_number_in(0, MAX_BOOTSTRAP),
        help="bootstrap resamples (default 1000 with --statistical, else 0)",
    )
    bisect.add_argument(
        "--confidence", type=unit_interval, default=0.95, help="interval confidence (default 0.95)"
    )
    bisect.add_argument(
        "--seed", type=whole_number_in(0, MAX_SEED), default=0, help="bootstrap seed (default 0)"
    )
    bisect.add_argument(
        "--group-by",
        metavar="COLUMN",
        help="resample whole groups of this column: source, encoder or param (default source "
        "when the cache has it; docs/intervals.md)",
    )
    bisect.add_argument(
        "--logistic", action="store_true", help="also report PLCC after a 4-parameter logistic fit"
    )
    bisect.add_argument(
        "--cache-dir", type=output_folder, help=f"evaluation store (default {default_cache_dir()})"
    )
    bisect.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the evaluation store"
    )
    bisect.add_argument(
        "--max-model-mib",
        type=number_in(0, MAX_MODEL_MIB, low_open=True),
        default=16.0,
        help="size cap per model in MiB (default 16)",
    )
    bisect.add_argument(
        "--threads", type=thread_count, default=1, help="onnxruntime intra-op threads (default 1)"
    )
    bisect.add_argument("--json", type=output_file, help="write the JSON report here")
    bisect.add_argument(
        "--markdown", type=output_file, help="write the GitHub-markdown report here"
    )
    add_budget_flags(bisect)
    bisect.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Bisect a timeline, print the table, write the reports; exit by outcome."""
    from engine.bisection import Outcome, find_first_regression
    from engine.evaluation import EvaluationStore, MetricSettings
    from engine.evidence import write_json
    from engine.provenance import InputRole, build_provenance, inputs_of, model_inputs, utc_now
    from engine.report import SCHEMA, SCHEMA_VERSION, TableFormat, render_table
    from engine.threshold import Thresholds
    from engine.timeline import (
        TimelineSet,
        assemble_family_report,
        check_quantised_twins,
        name_record,
        read_timelines,
        timeline_evaluator,
        timeline_of_files,
    )

    started, clock = utc_now(), time.perf_counter()
    thresholds = Thresholds(
        min_plcc=args.min_plcc, min_srocc=args.min_srocc, max_rmse=args.max_rmse
    )
    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.max_model_mib <= 0:
        raise UsageError("--max-model-mib must be positive")
    bootstrap = args.bootstrap if args.bootstrap is not None else (1000 if args.statistical else 0)
    if bootstrap < 0 or (args.statistical and bootstrap < 100):
        raise UsageError("--bootstrap must be >= 0, and at least 100 with --statistical")
    settings = MetricSettings(
        statistical=args.statistical,
        bootstrap=bootstrap,
        confidence=args.confidence,
        seed=args.seed,
        logistic=args.logistic,
        group_by=args.group_by,
    )
    limits = budget_limits(
        args, max_bytes=int(args.max_model_mib * 1024 * 1024), intra_op_threads=args.threads
    )
    root, features = Path("."), str(args.features)
    if args.family and args.registry is None:
        raise UsageError("--family needs --registry (plain --models files form one timeline)")
    if args.registry is not None:
        timelines = read_timelines(
            root, str(args.registry), features, families=args.family, limits=limits
        )
        inputs = inputs_of([args.registry], InputRole.REGISTRY)
    else:
        listed = timeline_of_files(root, [str(path) for path in args.models], features)
        timelines = TimelineSet((listed,), (), ())
        inputs = []  # the models are listed with their external data below
    store = None if args.no_cache else EvaluationStore(args.cache_dir or default_cache_dir())
    results, visited, twins = [], [], []
    for number, timeline in enumerate(timelines.timelines):
        evaluator = timeline_evaluator(
            root, timeline, thresholds=thresholds, settings=settings, limits=limits, store=store
        )
        if number == 0:
            for warning in evaluator.plan.warnings:
                sys.stderr.write(f"model-guard: warning: {warning}\n")
        result = find_first_regression(
            len(timeline.models), _named(evaluator, timeline, name_record), full=args.full
        )
        results.append(result)
        visited += [timeline.models[visit.index] for visit in result.visits]
        twins.append(check_quantised_twins(timeline, evaluator))
    report = assemble_family_report(
        root,
        timelines,
        results,
        thresholds=thresholds,
        settings=settings,
        wall_time_s=time.perf_counter() - clock,
        twins=twins,
    )
    sys.stdout.write(render_table(report, fmt=TableFormat.TEXT))
    outputs: list[Path] = []
    if args.markdown is not None:
        _write_text(args.markdown, render_table(report, fmt=TableFormat.MARKDOWN))
        outputs.append(args.markdown)
    if args.json is not None:
        read = [
            *model_inputs(root / model.onnx for model in visited),
            # What the registry lists is read too (hashed by the admission check).
            *inputs_of(
                (root / path for model in visited for path in model.external),
                InputRole.EXTERNAL_DATA,
            ),
        ]
        report["run_provenance"] = build_provenance(
            schema=SCHEMA,
            schema_version=SCHEMA_VERSION,
            entrypoint="model-guard bisect",
            argv=args.argv,
            inputs=[*inputs, *inputs_of([args.features], InputRole.FEATURES), *read],
            outputs=outputs,
            started=started,
            finished=utc_now(),
        )
        write_json(args.json, report)
    outcome = Outcome(report["outcome"])
    if not all(check.passed for checks in twins for check in checks):
        return EXIT_REGRESSION  # a twin over its budget fails the run (not its parent)
    if outcome is Outcome.NO_REGRESSION:
        return EXIT_OK
    if outcome is Outcome.INCONCLUSIVE:
        return EXIT_INCONCLUSIVE
    return EXIT_REGRESSION


def _named(evaluator: Any, timeline: Any, name_record: Any) -> Any:
    """Return ``evaluate(index)`` for one family's timeline, records named by repository path."""
    return lambda index: name_record(evaluator(index), timeline, index)


def _write_text(path: Path, text: str) -> None:
    """Write a text output atomically (a failure is a one-line ``ReportError``)."""
    from engine.evidence import write_text

    write_text(path, text)
