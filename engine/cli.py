"""The model-guard command line: each command is parsed, then run; errors become exit codes here only."""

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from engine import __version__
from engine.errors import EngineError, UsageError, one_line

if TYPE_CHECKING:
    from engine.gate import GateThresholds
    from engine.train.network import TrainConfig

# Exit codes of `model-guard bisect` (and 1 for bad input or usage everywhere).
EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_REGRESSION = 2
EXIT_INCONCLUSIVE = 3


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are UsageErrors (exit 1), not SystemExit(2)."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing usage and exiting 2 (2 means 'regression' here)."""
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _default_cache_dir() -> Path:
    """Return the evaluation store's default folder ($XDG_CACHE_HOME/model-guard/evaluations)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "model-guard" / "evaluations"


def _unit_interval(text: str) -> float:
    """Parse a number in (0, 1)."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def build_parser(extend: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """Return the parser for every model-guard command.

    ``extend(subparsers)`` lets the App add its own commands (``serve``) without the
    engine importing the App.
    """
    parser = _Parser(
        prog="model-guard", description="Guard a registry of learned video-quality models."
    )
    parser.add_argument("--version", action="version", version=f"model-guard {__version__}")
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        parser_class=_Parser,
        metavar="COMMAND",
    )

    bisect = commands.add_parser(
        "bisect", help="find the first model in a timeline that fails the quality gate"
    )
    source = bisect.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--registry", type=Path, help="registry.json whose models form the timeline"
    )
    source.add_argument("--models", type=Path, nargs="+", help="ONNX files, oldest first")
    bisect.add_argument("--features", type=Path, required=True, help="feature cache (parquet)")
    bisect.add_argument("--min-plcc", type=float, help="gate: PLCC must be at least this")
    bisect.add_argument("--min-srocc", type=float, help="gate: SROCC must be at least this")
    bisect.add_argument("--max-rmse", type=float, help="gate: RMSE must be at most this")
    bisect.add_argument(
        "--statistical", action="store_true", help="judge by bootstrap confidence intervals"
    )
    bisect.add_argument(
        "--full", action="store_true", help="evaluate every model; report non-monotonic timelines"
    )
    bisect.add_argument(
        "--bootstrap",
        type=int,
        help="bootstrap resamples (default 1000 with --statistical, else 0)",
    )
    bisect.add_argument(
        "--confidence", type=_unit_interval, default=0.95, help="interval confidence (default 0.95)"
    )
    bisect.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    bisect.add_argument(
        "--logistic", action="store_true", help="also report PLCC after a 4-parameter logistic fit"
    )
    bisect.add_argument(
        "--cache-dir", type=Path, help=f"evaluation store (default {_default_cache_dir()})"
    )
    bisect.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the evaluation store"
    )
    bisect.add_argument(
        "--max-model-mib", type=float, default=16.0, help="size cap per model in MiB (default 16)"
    )
    bisect.add_argument(
        "--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)"
    )
    bisect.add_argument("--json", type=Path, help="write the JSON report here")
    bisect.add_argument("--markdown", type=Path, help="write the GitHub-markdown report here")
    bisect.set_defaults(run=run_bisect)

    registry = commands.add_parser("registry", help="model registry commands")
    registry_commands = registry.add_subparsers(
        dest="registry_command", required=True, parser_class=_Parser
    )
    validate = registry_commands.add_parser(
        "validate", help="check a registry.json and every file it names"
    )
    validate.add_argument("path", nargs="?", type=Path, default=Path("model/registry.json"))
    validate.set_defaults(run=run_registry_validate)

    cache = commands.add_parser("cache", help="golden feature cache commands")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    build = cache_commands.add_parser("build", help="build a golden cache deterministically")
    build.add_argument(
        "--synthetic", action="store_true", required=True, help="generate synthetic data"
    )
    build.add_argument("--seed", type=int, required=True)
    build.add_argument("--out", type=Path, required=True)
    build.set_defaults(run=run_cache_build)
    check = cache_commands.add_parser("check", help="rebuild a golden cache and report any drift")
    check.add_argument("directory", type=Path)
    check.set_defaults(run=run_cache_check)

    gate = commands.add_parser(
        "gate", help="judge per-seed LOSO reports (exit 0 pass, 1 fail, 2 bad input)"
    )
    gate.add_argument("directory", type=Path, help="folder holding loso_seed{N}.json")
    _add_gate_flags(gate)
    gate.add_argument("--json", type=Path, help="write the gate report here")
    gate.set_defaults(run=run_gate)

    verdict = commands.add_parser(
        "verdict",
        help="write PROMOTE.json or HOLD.json (exit 0 PROMOTE, 1 HOLD, 2 bad input); "
        "'verdict verify VERDICT [--registry R]' re-checks one",
    )
    verdict.add_argument("directory", type=Path, help="folder holding loso_seed{N}.json")
    verdict.add_argument(
        "--features", type=Path, required=True, help="the feature table the LOSO ran on"
    )
    verdict.add_argument(
        "--models", type=Path, nargs="+", required=True, help="every model the verdict promotes"
    )
    verdict.add_argument(
        "--out", type=Path, help="where the verdict goes (default: the LOSO folder)"
    )
    _add_gate_flags(verdict)
    verdict.set_defaults(run=run_verdict)

    # `verdict verify VERDICT` shares its first word with `verdict DIR`; main() routes it here.
    verify = commands.add_parser(_VERIFY)
    verify.prog = "model-guard verdict verify"
    verify.add_argument("verdict", type=Path, help="PROMOTE.json (or HOLD.json)")
    verify.add_argument(
        "--registry",
        type=Path,
        help="fail if this registry promotes a model the verdict does not cover",
    )
    verify.set_defaults(run=run_verdict_verify)
    loso = commands.add_parser("loso", help="leave-one-source-out evaluation, one report per seed")
    loso.add_argument(
        "--features", type=Path, required=True, help="feature cache with a source column"
    )
    loso.add_argument("--seeds", default="0,1,2,3,4", help="seeds (default 0,1,2,3,4)")
    loso.add_argument("--out", type=Path, required=True, help="folder for loso_seed{N}.json")
    loso.add_argument("--epochs", type=int, help="training epochs (default 200)")
    loso.add_argument(
        "--dry-run", action="store_true", help="2 epochs, flagged so the gate refuses it"
    )
    loso.add_argument(
        "--sequential", action="store_true", help="train folds one by one (reference path)"
    )
    loso.set_defaults(run=run_loso)

    ensemble = commands.add_parser("ensemble", help="deep-ensemble commands")
    ensemble_commands = ensemble.add_subparsers(
        dest="ensemble_command", required=True, parser_class=_Parser
    )
    train = ensemble_commands.add_parser("train", help="train, calibrate and export an ensemble")
    train.add_argument("--features", type=Path, required=True)
    train.add_argument("--id", required=True, help="ensemble id (names the manifest and members)")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--members", type=int, default=5)
    train.add_argument("--base-seed", type=int, default=0)
    train.add_argument("--epochs", type=int, help="training epochs (default 200)")
    train.add_argument(
        "--codec", action="store_true", help="append the codec block (encoder, preset, crf)"
    )
    train.add_argument(
        "--nominal", type=_unit_interval, default=0.9, help="conformal nominal coverage"
    )
    train.add_argument("--method", choices=["conformal", "gaussian"], default="conformal")
    train.add_argument("--score", choices=["normalised", "absolute"], default="normalised")
    train.set_defaults(run=run_ensemble_train)
    ens_validate = ensemble_commands.add_parser("validate", help="cross-check a manifest's members")
    ens_validate.add_argument("--manifest", type=Path, required=True)
    ens_validate.add_argument("--registry", type=Path)
    ens_validate.set_defaults(run=run_ensemble_validate)
    ens_eval = ensemble_commands.add_parser(
        "eval", help="interval coverage and metrics on a feature cache"
    )
    ens_eval.add_argument("--manifest", type=Path, required=True)
    ens_eval.add_argument("--features", type=Path, required=True)
    ens_eval.add_argument("--registry", type=Path)
    ens_eval.add_argument("--json", type=Path)
    ens_eval.set_defaults(run=run_ensemble_eval)

    if extend is not None:
        extend(commands)
    return parser


def _train_config(epochs: int | None, *, codec: bool = False) -> "TrainConfig":
    """Return the default training settings with optional epochs and codec block."""
    from dataclasses import replace

    from engine.train.network import DEFAULT_CONFIG

    config = DEFAULT_CONFIG if epochs is None else replace(DEFAULT_CONFIG, epochs=epochs)
    return replace(config, codec=True) if codec else config


def run_loso(args: argparse.Namespace) -> int:
    """Run leave-one-source-out for every seed and write one report per seed."""
    from engine.features import load_features
    from engine.gate import parse_seeds
    from engine.train.loso import run_loso as loso

    features = load_features(args.features)
    written = loso(
        features,
        seeds=parse_seeds(args.seeds),
        out_dir=args.out,
        epochs=args.epochs,
        dry_run=args.dry_run,
        batched=not args.sequential,
        progress=True,
        argv=args.argv,
    )
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def run_ensemble_train(args: argparse.Namespace) -> int:
    """Train an ensemble and write its members and manifest."""
    from engine.conformal import IntervalMethod, ScoreKind
    from engine.features import load_features
    from engine.train.ensemble import train_ensemble

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
        progress=True,
        argv=args.argv,
    )
    print(f"wrote {trained.manifest_path} and {len(trained.member_paths)} members")
    return EXIT_OK


def run_ensemble_validate(args: argparse.Namespace) -> int:
    """Print every problem of a manifest (member hashes, registry rows, codec width); exit 1 on any."""
    from engine.manifest import validate_manifest

    problems = validate_manifest(args.manifest, registry_path=args.registry)
    for problem in problems:
        print(problem)
    if problems:
        return EXIT_BAD_INPUT
    print(f"{args.manifest}: ok")
    return EXIT_OK


def run_ensemble_eval(args: argparse.Namespace) -> int:
    """Score an ensemble on a feature cache: coverage of its intervals and metrics of the mean."""
    from engine.evidence import write_json
    from engine.manifest import evaluate_ensemble, render_evaluation
    from engine.provenance import build_provenance, utc_now

    started = utc_now()
    evaluation = evaluate_ensemble(
        args.manifest, features_path=args.features, registry_path=args.registry
    )
    print(render_evaluation(evaluation), end="")
    if args.json is not None:
        document = evaluation.to_dict()
        document["run_provenance"] = build_provenance(
            schema="model-guard/ensemble-evaluation",
            schema_version=1,
            entrypoint="model-guard ensemble eval",
            argv=args.argv,
            inputs=[args.manifest, args.features],
            outputs=[],
            started=started,
            finished=utc_now(),
        )
        write_json(args.json, document)
    return EXIT_OK


_VERIFY = "verdict-verify"
# Commands of the promotion flow use exit 1 for "gate fails / HOLD", so bad input is 2 there.
_BAD_INPUT_2 = {"gate", "verdict"}


def _add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """Add the promotion-gate thresholds shared by `gate` and `verdict`."""
    parser.add_argument(
        "--mean-plcc", type=float, default=0.95, help="mean of per-seed PLCCs must reach this"
    )
    parser.add_argument(
        "--max-spread", type=float, default=0.005, help="max - min of per-seed PLCCs at most this"
    )
    parser.add_argument(
        "--per-seed-min", type=float, default=0.95, help="every seed's PLCC at least this"
    )
    parser.add_argument("--per-fold-min", type=float, help="every fold's PLCC at least this")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="expected seeds (default 0,1,2,3,4)")


def _gate_thresholds(args: argparse.Namespace) -> "GateThresholds":
    """Build the promotion gate from the shared flags."""
    from engine.gate import GateThresholds, parse_seeds

    return GateThresholds(
        mean_plcc=args.mean_plcc,
        max_spread=args.max_spread,
        per_seed_min=args.per_seed_min,
        per_fold_min=args.per_fold_min,
        seeds=parse_seeds(args.seeds),
    )


def run_gate(args: argparse.Namespace) -> int:
    """Judge LOSO reports against the promotion gate."""
    from engine.gate import run_gate_command

    return run_gate_command(
        args.directory, _gate_thresholds(args), json_out=args.json, argv=args.argv
    )


def run_verdict(args: argparse.Namespace) -> int:
    """Write exactly one of PROMOTE.json / HOLD.json, bound by hash to what it judged."""
    from engine.verdict import decide

    outcome = decide(
        args.directory,
        features=args.features,
        models=args.models,
        out=args.out or args.directory,
        thresholds=_gate_thresholds(args),
        argv=args.argv,
    )
    print(outcome.render_text(), end="")
    return outcome.exit_code


def run_verdict_verify(args: argparse.Namespace) -> int:
    """Re-hash everything a verdict names; exit 0 only when all of it still matches."""
    from engine.verdict import verify_verdict

    result = verify_verdict(args.verdict, registry=args.registry)
    print(result.render_text(), end="")
    return result.exit_code


def run_bisect(args: argparse.Namespace) -> int:
    """Bisect a timeline, print the table, write the reports; exit by outcome."""
    from engine.bisection import Outcome, find_first_regression
    from engine.evaluation import (
        EvaluationStore,
        Evaluator,
        MetricSettings,
        refs_from_paths,
        refs_from_registry,
    )
    from engine.evidence import write_json
    from engine.features import load_features
    from engine.provenance import build_provenance, utc_now
    from engine.registry import load_registry
    from engine.report import SCHEMA, SCHEMA_VERSION, TableFormat, build_report, render_table
    from engine.scoring import ScoringLimits
    from engine.threshold import Thresholds

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
    )
    limits = ScoringLimits(
        max_bytes=int(args.max_model_mib * 1024 * 1024), intra_op_threads=args.threads
    )
    if args.registry is not None:
        models = refs_from_registry(load_registry(args.registry))
        inputs = [args.registry]
    else:
        models = refs_from_paths(args.models)
        inputs = list(args.models)
    features = load_features(args.features)
    store = None if args.no_cache else EvaluationStore(args.cache_dir or _default_cache_dir())
    evaluator = Evaluator(
        models, features, thresholds, settings=settings, limits=limits, store=store
    )
    result = find_first_regression(len(models), evaluator, full=args.full)
    report = build_report(
        result,
        models=models,
        features=features,
        thresholds=thresholds,
        settings=settings,
        scored=evaluator.evaluated,
        from_store=evaluator.from_store,
        wall_time_s=time.perf_counter() - clock,
        registry=str(args.registry) if args.registry is not None else None,
    )
    sys.stdout.write(render_table(report, fmt=TableFormat.TEXT))
    outputs: list[Path] = []
    if args.markdown is not None:
        _write_text(args.markdown, render_table(report, fmt=TableFormat.MARKDOWN))
        outputs.append(args.markdown)
    if args.json is not None:
        visited = [models[visit.index].path for visit in result.visits]
        report["run_provenance"] = build_provenance(
            schema=SCHEMA,
            schema_version=SCHEMA_VERSION,
            entrypoint="model-guard bisect",
            argv=args.argv,
            inputs=[*inputs, args.features, *visited],
            outputs=outputs,
            started=started,
            finished=utc_now(),
        )
        write_json(args.json, report)
    outcome = Outcome(report["outcome"])
    if outcome is Outcome.NO_REGRESSION:
        return EXIT_OK
    if outcome is Outcome.INCONCLUSIVE:
        return EXIT_INCONCLUSIVE
    return EXIT_REGRESSION


def _write_text(path: Path, text: str) -> None:
    """Write a text output, turning OS errors into a one-line user error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from error


def run_registry_validate(args: argparse.Namespace) -> int:
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


def run_cache_build(args: argparse.Namespace) -> int:
    """Build the synthetic golden cache into a folder."""
    from engine.cache import build_synthetic_cache

    written = build_synthetic_cache(args.out, seed=args.seed)
    print(f"wrote {len(written)} files to {args.out}")
    return EXIT_OK


def run_cache_check(args: argparse.Namespace) -> int:
    """Rebuild a golden cache in a temporary folder and report any drift; exit 1 on drift."""
    from engine.cache import check_cache

    drift = check_cache(args.directory)
    for item in drift:
        print(f"DRIFT {item.file}: {item.detail}")
    if drift:
        return EXIT_BAD_INPUT
    print(f"{args.directory}: no drift")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, extend: Callable[[Any], None] | None = None) -> int:
    """Run one command; the only place where errors become messages and exit codes."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:2] == ["verdict", "verify"]:
        arguments = [_VERIFY, *arguments[2:]]
    bad_input = (
        2
        if arguments[:1] and (arguments[0] in _BAD_INPUT_2 or arguments[0] == _VERIFY)
        else EXIT_BAD_INPUT
    )
    try:
        args = build_parser(extend).parse_args(arguments)
        args.argv = arguments
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except EngineError as error:
        print(f"model-guard: error: {one_line(error, limit=1000)}", file=sys.stderr)
        return bad_input
    except KeyboardInterrupt:
        print("model-guard: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: still one line, never a traceback for the user
        if os.environ.get("MODEL_GUARD_DEBUG"):
            raise
        print(
            f"model-guard: internal error: {type(error).__name__}: {one_line(error, limit=1000)} "
            "(set MODEL_GUARD_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return bad_input
