"""``model-guard ensemble train|validate|eval``: deep ensembles with calibrated intervals."""

import argparse
from typing import TYPE_CHECKING, Any

from engine.commands.arguments import (
    MAX_EPOCHS,
    MAX_MEMBERS,
    MAX_SEED,
    existing_file,
    output_file,
    output_folder,
    whole_number_in,
)
from engine.commands.options import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    CommandParser,
    add_budget_flags,
    budget_limits,
    unit_interval,
)

if TYPE_CHECKING:
    from engine.train.network import TrainConfig

# `ensemble eval`: 0 when the manifest's own interval passes its coverage test, 1 when it
# fails, 2 for bad input (engine.cli routes it with the promotion flow's codes).
EXIT_COVERAGE_FAILS = 1


def add_parser(commands: Any) -> None:
    """Add ``ensemble train``, ``ensemble validate`` and ``ensemble eval``."""
    ensemble = commands.add_parser("ensemble", help="deep-ensemble commands")
    ensemble_commands = ensemble.add_subparsers(
        dest="ensemble_command", required=True, parser_class=CommandParser
    )
    train = ensemble_commands.add_parser("train", help="train, calibrate and export an ensemble")
    train.add_argument("--features", type=existing_file, required=True)
    train.add_argument("--id", required=True, help="ensemble id (names the manifest and members)")
    train.add_argument("--out", type=output_folder, required=True)
    train.add_argument("--members", type=whole_number_in(2, MAX_MEMBERS), default=5)
    train.add_argument("--base-seed", type=whole_number_in(0, MAX_SEED), default=0)
    train.add_argument(
        "--epochs", type=whole_number_in(1, MAX_EPOCHS), help="training epochs (default 200)"
    )
    train.add_argument(
        "--codec", action="store_true", help="append the codec block (encoder, preset, crf)"
    )
    train.add_argument(
        "--nominal", type=unit_interval, default=0.9, help="conformal nominal coverage"
    )
    train.add_argument("--method", choices=["conformal", "gaussian"], default="conformal")
    train.add_argument("--score", choices=["normalised", "absolute"], default="normalised")
    train.add_argument(
        "--calibration",
        type=existing_file,
        help="calibrate on this feature table, training on every row of --features "
        "(default: calibrate on held-out sources of --features)",
    )
    train.add_argument(
        "--allow-calibration-overlap",
        action="store_true",
        help="calibrate even on rows that are also training rows (same features, target and "
        "source); refused by default, recorded in the manifest when allowed",
    )
    train.set_defaults(run=run_train)
    validate = ensemble_commands.add_parser("validate", help="cross-check a manifest's members")
    validate.add_argument("--manifest", type=existing_file, required=True)
    validate.add_argument("--registry", type=existing_file)
    validate.add_argument(
        "--verdict",
        type=existing_file,
        help="a PROMOTE.json (ours or another tool's): verify it and check that every member "
        "is a model it judged",
    )
    validate.add_argument(
        "--verbose", action="store_true", help="list every schema difference of a foreign file"
    )
    validate.set_defaults(run=run_validate)
    evaluate = ensemble_commands.add_parser(
        "eval",
        help="interval coverage and metrics on a feature cache (exit 0 coverage test passes, "
        "1 it fails, 2 bad input)",
    )
    evaluate.add_argument("--manifest", type=existing_file, required=True)
    evaluate.add_argument("--features", type=existing_file, required=True)
    evaluate.add_argument("--registry", type=existing_file)
    evaluate.add_argument("--json", type=output_file)
    add_budget_flags(evaluate)
    evaluate.set_defaults(run=run_eval)


def run_train(args: argparse.Namespace) -> int:
    """Train an ensemble and write its members and manifest."""
    from engine.conformal import IntervalMethod, ScoreKind
    from engine.features import load_features
    from engine.train.ensemble import train_ensemble

    calibration = None if args.calibration is None else load_features(args.calibration)
    trained = train_ensemble(
        load_features(args.features),
        ensemble_id=args.id,
        out_dir=args.out,
        members=args.members,
        base_seed=args.base_seed,
        config=_train_config(args.epochs, codec=args.codec),
        method=IntervalMethod(args.method),
        nominal_coverage=args.nominal,
        score=ScoreKind(args.score),
        calibration=calibration,
        allow_calibration_overlap=args.allow_calibration_overlap,
        progress=True,
        argv=args.argv,
    )
    if trained.calibration_overlap:
        print(
            f"warning: {trained.calibration_overlap} of {trained.calibration.n_calibration} "
            "calibration rows are also training rows (allowed by --allow-calibration-overlap, "
            "recorded in the manifest); the intervals are likely too narrow"
        )
    print(f"wrote {trained.manifest_path} and {len(trained.member_paths)} members")
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    """Print every problem of a manifest (member hashes, registry rows, codec width); exit 1 on any.

    With ``--verdict``, the verdict's problems and every member it did not judge follow the
    manifest's; a foreign file's schema differences come last, summarised.
    """
    from engine.manifest import check_manifest
    from engine.verdict import verify_verdict

    check = check_manifest(args.manifest, registry_path=args.registry)
    verification = None
    if args.verdict is not None:
        verification = verify_verdict(args.verdict, members=check.members)
    report = check.report(verification)
    print(report.render_text(verbose=args.verbose), end="")
    if report.problems:
        return EXIT_BAD_INPUT
    print(f"{args.manifest}: ok")
    return EXIT_OK


def run_eval(args: argparse.Namespace) -> int:
    """Score an ensemble on a feature cache: coverage of its intervals and metrics of the mean."""
    from engine.evidence import write_json
    from engine.manifest import (
        EVALUATION_SCHEMA,
        EVALUATION_SCHEMA_VERSION,
        evaluate_ensemble,
        render_evaluation,
    )
    from engine.provenance import InputRole, build_provenance, inputs_of, model_inputs, utc_now

    started = utc_now()
    evaluation = evaluate_ensemble(
        args.manifest,
        features_path=args.features,
        registry_path=args.registry,
        limits=budget_limits(args),
    )
    print(render_evaluation(evaluation))
    if args.json is not None:
        document = evaluation.to_dict()
        document["run_provenance"] = build_provenance(
            schema=EVALUATION_SCHEMA,
            schema_version=EVALUATION_SCHEMA_VERSION,
            entrypoint="model-guard ensemble eval",
            argv=args.argv,
            inputs=[
                *inputs_of([args.manifest], InputRole.MANIFEST),
                *inputs_of([args.features], InputRole.FEATURES),
                *inputs_of([args.registry], InputRole.REGISTRY),
                *model_inputs(
                    evaluation.manifest.root / member.onnx for member in evaluation.manifest.members
                ),
            ],
            outputs=[args.json],
            started=started,
            finished=utc_now(),
        )
        write_json(args.json, document)
    return EXIT_OK if evaluation.coverage_test.passed else EXIT_COVERAGE_FAILS


def _train_config(epochs: int | None, *, codec: bool = False) -> "TrainConfig":
    """Return the default training settings with optional epochs and codec block."""
    from dataclasses import replace

    from engine.train.network import DEFAULT_CONFIG

    config = DEFAULT_CONFIG if epochs is None else replace(DEFAULT_CONFIG, epochs=epochs)
    return replace(config, codec=True) if codec else config
