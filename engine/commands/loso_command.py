"""``model-guard loso``: leave-one-source-out training and evaluation, one report per seed."""

import argparse
from pathlib import Path
from typing import Any

from engine.commands.arguments import MAX_EPOCHS, existing_file, output_folder, whole_number_in
from engine.commands.options import EXIT_OK, seed_list
from engine.errors import UsageError


def add_parser(commands: Any) -> None:
    """Add ``loso``."""
    loso = commands.add_parser("loso", help="leave-one-source-out evaluation, one report per seed")
    loso.add_argument(
        "--features", type=existing_file, required=True, help="feature cache with a source column"
    )
    loso.add_argument(
        "--seeds", type=seed_list, default="0,1,2,3,4", help="seeds (default 0,1,2,3,4)"
    )
    loso.add_argument(
        "--out", type=output_folder, required=True, help="folder for loso_seed{N}.json"
    )
    loso.add_argument(
        "--epochs", type=whole_number_in(1, MAX_EPOCHS), help="training epochs (default 200)"
    )
    loso.add_argument(
        "--dry-run", action="store_true", help="2 epochs, flagged so the gate refuses it"
    )
    loso.add_argument(
        "--sequential", action="store_true", help="train folds one by one (reference path)"
    )
    loso.add_argument(
        "--models-out",
        type=output_folder,
        help="folder for each seed's final model final_seed{N}.onnx (default: --out)",
    )
    loso.add_argument(
        "--final-models",
        nargs="+",
        metavar="SEED=MODEL",
        help="already-trained final models, one per seed (nothing is trained for them)",
    )
    loso.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run leave-one-source-out for every seed and write one report per seed."""
    from engine.features import load_features
    from engine.train.loso import run_loso

    features = load_features(args.features)
    written = run_loso(
        features,
        seeds=args.seeds,
        out_dir=args.out,
        epochs=args.epochs,
        dry_run=args.dry_run,
        batched=not args.sequential,
        progress=True,
        argv=args.argv,
        final_models=_final_models(args.final_models),
        models_out=args.models_out,
    )
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def _final_models(pairs: list[str] | None) -> dict[int, Path] | None:
    """Parse ``SEED=MODEL`` pairs; None when none were given."""
    if pairs is None:
        return None
    models: dict[int, Path] = {}
    for pair in pairs:
        seed, sep, model = pair.partition("=")
        if not sep or not seed.isdigit() or not model:
            raise UsageError(f"--final-models takes SEED=MODEL pairs, not {pair!r}")
        if int(seed) in models:
            raise UsageError(f"--final-models names seed {seed} twice")
        models[int(seed)] = Path(model)
    return models
