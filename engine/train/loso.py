"""Leave-one-source-out (LOSO) evaluation over seeds, trained as one batched computation.

For every seed and every unique ``source``, a network is trained on the other sources
and scored on the held-out one. The default path stacks all (seed x fold) networks into
ONE batched full-batch training (``network.fit_stack``): each network sees every row,
with weight 1 on its training rows and 0 on its held-out rows, so its loss and gradient
are exactly those of a separate training on its own rows. ``batched=False`` is the
reference: a Python loop of separate ``train_network`` calls with the same seeds. The
two give the same fold metrics up to float32 summation order (well under 1e-4 PLCC).

Each seed's result is written to ``loso_seed<N>.json`` by ``engine.loso_report``, which
``engine.gate`` reads back. Every report binds its seed's final model (the file that
ships): by default a network trained with the same settings and seed on EVERY source,
exported as byte-stable ONNX to ``final_seed<N>.onnx``; or an already-trained file named
per seed (``final_models``), as model/build.py does with the ensemble members.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.codec import codec_block, codec_vocabulary
from engine.errors import FeatureCacheError, UsageError
from engine.evidence import write_bytes
from engine.features import SOURCE, FeatureTable
from engine.hashing import sha256_file
from engine.loso_report import (
    LOSO_SCHEMA,
    LOSO_SCHEMA_VERSION,
    Corpus,
    FinalModel,
    Fold,
    SeedResult,
    loso_document,
    write_loso_report,
)
from engine.metrics import plcc, rmse, srocc
from engine.onnxbuild import Dense
from engine.provenance import InputRole, build_provenance, inputs_of, utc_now
from engine.train.network import (
    DEFAULT_CONFIG,
    Float32Array,
    Standardisation,
    TrainConfig,
    TrainedNetwork,
    deterministic,
    fit_stack,
    fit_standardisation,
    network_inputs,
    train_network,
)

DRY_RUN_EPOCHS = 2
"""Epochs of a dry run: enough to check the plumbing, flagged so the gate refuses it."""

ENTRYPOINT = "model-guard loso"
MAX_STACK_ELEMENTS = 1 << 24
"""Largest stacked activation (networks x rows x widest layer) trained as one computation.

A memory bound, not a speed knob: the golden cache's 5 seeds x 9 folds (45 x 6,048 x 32,
about 8.7 million) train as one stack, using about 200 MB of buffers; larger runs are
split into equal chunks, each still one stacked computation (the results do not depend
on the split beyond float32 rounding).
"""


@dataclass(frozen=True, eq=False)
class _Fold:
    """One held-out source: its name and row masks."""

    held_out: str
    train: np.ndarray
    held: np.ndarray


def evaluate_loso(
    features: FeatureTable,
    *,
    seeds: Sequence[int],
    config: TrainConfig = DEFAULT_CONFIG,
    batched: bool = True,
    progress: bool = False,
) -> tuple[SeedResult, ...]:
    """Train and score every (seed, held-out source) network; return one result per seed."""
    seeds = _check_seeds(seeds)
    folds = _folds(features)
    matrix, target = features.matrix(), features.target()
    codec = codec_block(features) if config.codec else None
    with deterministic(config.threads):
        if batched:
            networks = _train_batched(matrix, target, codec, folds, seeds, config, progress)
        else:
            networks = _train_sequential(matrix, target, codec, folds, seeds, config, progress)
        results = []
        for seed_index, seed in enumerate(seeds):
            row = networks[seed_index * len(folds) : (seed_index + 1) * len(folds)]
            scored = [
                _score_fold(network, fold, matrix, target, codec)
                for network, fold in zip(row, folds, strict=True)
            ]
            results.append(SeedResult(seed=seed, folds=tuple(scored)))
    return tuple(results)


def run_loso(
    features: FeatureTable,
    *,
    seeds: Sequence[int],
    out_dir: Path,
    epochs: int | None = None,
    dry_run: bool = False,
    config: TrainConfig = DEFAULT_CONFIG,
    batched: bool = True,
    progress: bool = False,
    argv: Sequence[str] = (),
    final_models: Mapping[int, Path] | None = None,
    models_out: Path | None = None,
) -> list[Path]:
    """Run LOSO for every seed and write ``out_dir/loso_seed<N>.json``; return the paths written.

    ``epochs`` overrides ``config.epochs``; ``dry_run`` trains ``DRY_RUN_EPOCHS`` epochs
    and marks the reports so the promotion gate refuses them. Each report binds its seed's
    final model: ``final_models[seed]`` when given (one existing file per seed), otherwise
    a network trained on every source with the same settings and seed, written to
    ``models_out`` (default ``out_dir``) as ``final_seed<N>.onnx``.
    """
    if final_models is not None:
        _check_final_models(final_models, seeds)
    if dry_run:
        config = replace(config, epochs=DRY_RUN_EPOCHS)
    elif epochs is not None:
        config = replace(config, epochs=epochs)
    started = utc_now()
    results = evaluate_loso(
        features, seeds=seeds, config=config, batched=batched, progress=progress
    )
    out_dir = Path(out_dir)
    if final_models is None:
        final_models = train_final_models(
            features,
            seeds=seeds,
            out_dir=out_dir if models_out is None else Path(models_out),
            config=config,
            progress=progress,
        )
    finished = utc_now()
    provenance = build_provenance(
        schema=LOSO_SCHEMA,
        schema_version=LOSO_SCHEMA_VERSION,
        entrypoint=ENTRYPOINT,
        argv=list(argv),
        inputs=inputs_of([features.path], InputRole.FEATURES),
        outputs=[],
        started=started,
        finished=finished,
    )
    return [
        write_loso_report(
            out_dir,
            _document(
                result,
                features=features,
                config=config,
                dry_run=dry_run,
                batched=batched,
                provenance=provenance,
                final_model=_bind_final(final_models[result.seed], out_dir),
            ),
        )
        for result in results
    ]


def train_final_models(
    features: FeatureTable,
    *,
    seeds: Sequence[int],
    out_dir: Path,
    config: TrainConfig = DEFAULT_CONFIG,
    progress: bool = False,
) -> dict[int, Path]:
    """Train each seed's network on EVERY row and export it as ``out_dir/final_seed<N>.onnx``."""
    from engine.train.export import export_network

    matrix, target = features.matrix(), features.target()
    codec = codec_block(features) if config.codec else None
    written: dict[int, Path] = {}
    for seed in _check_seeds(seeds):
        network = train_network(
            matrix,
            target,
            seed=seed,
            config=config,
            codec=codec,
            progress=progress,
            label=f"final model seed {seed}",
        )
        path = Path(out_dir) / f"final_seed{seed}.onnx"
        doc = f"model-guard LOSO final model, seed {seed}, trained on every source"
        write_bytes(path, export_network(network, name=f"final_seed{seed}", doc=doc))
        written[seed] = path
    return written


def _check_final_models(final_models: Mapping[int, Path], seeds: Sequence[int]) -> None:
    """Require exactly one existing model file per seed."""
    missing = sorted(set(seeds) - set(final_models))
    extra = sorted(set(final_models) - set(seeds))
    if missing or extra:
        raise UsageError(
            f"final models must name exactly one file per seed: missing seed(s) {missing or 'none'}, "
            f"unknown seed(s) {extra or 'none'}"
        )
    for seed, path in final_models.items():
        if not Path(path).is_file():
            raise UsageError(f"{path}: final model of seed {seed} not found")
    files = [Path(path).resolve() for path in final_models.values()]
    if len(set(files)) != len(files):
        raise UsageError("one model file is named as the final model of two seeds")


def _bind_final(path: Path, out_dir: Path) -> FinalModel:
    """Bind a final model by sha256, its path relative to the report folder."""
    relative = os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())
    return FinalModel(path=Path(relative).as_posix(), sha256=sha256_file(Path(path)))


def _document(
    result: SeedResult,
    *,
    features: FeatureTable,
    config: TrainConfig,
    dry_run: bool,
    batched: bool,
    provenance: dict[str, Any],
    final_model: FinalModel,
) -> dict[str, Any]:
    """Return one seed's report document: the run's corpus and hyperparameters around its folds."""
    hyperparameters = {
        **config.to_dict(),
        "evaluation": "leave-one-source-out",
        "training_path": "batched" if batched else "sequential",
        "codec_vocabulary": codec_vocabulary().version if config.codec else None,
    }
    corpus = Corpus(
        path=str(features.path) if features.path is not None else "(in memory)",
        content_hash=features.content_hash,
        rows=features.n_rows,
    )
    return loso_document(
        result,
        corpus=corpus,
        dry_run=dry_run,
        hyperparameters=hyperparameters,
        provenance=provenance,
        final_model=final_model,
    )


def _train_batched(
    matrix: Float32Array,
    target: Float32Array,
    codec: Float32Array | None,
    folds: Sequence[_Fold],
    seeds: Sequence[int],
    config: TrainConfig,
    progress: bool,
) -> list[TrainedNetwork]:
    """Train every (seed, fold) network in stacked chunks; return them seed-major."""
    codec_width = 0 if codec is None else codec.shape[1]
    stats = [fit_standardisation(matrix[fold.train], target[fold.train]) for fold in folds]
    inputs = [network_inputs(s.features(matrix), codec, codec_width) for s in stats]
    targets = [s.target(target) for s in stats]
    weights = [fold.train.astype(np.float32) for fold in folds]
    slots = [(seed, index) for seed in seeds for index in range(len(folds))]
    widest = max(inputs[0].shape[1], *config.hidden)
    largest = max(1, MAX_STACK_ELEMENTS // (matrix.shape[0] * widest))
    chunk = math.ceil(len(slots) / math.ceil(len(slots) / largest))  # equal-sized chunks
    networks = []
    for start in range(0, len(slots), chunk):
        part = slots[start : start + chunk]
        label = f"loso {start + len(part)}/{len(slots)} networks"
        fits = fit_stack(
            np.stack([inputs[f] for _, f in part]),
            np.stack([targets[f] for _, f in part]),
            np.stack([weights[f] for _, f in part]),
            seeds=[seed for seed, _ in part],
            config=config,
            progress=progress,
            label=label,
        )
        networks += [
            _network(fit.layers, fit.final_loss, stats[f], seed, codec_width, config)
            for fit, (seed, f) in zip(fits, part, strict=True)
        ]
    return networks


def _train_sequential(
    matrix: Float32Array,
    target: Float32Array,
    codec: Float32Array | None,
    folds: Sequence[_Fold],
    seeds: Sequence[int],
    config: TrainConfig,
    progress: bool,
) -> list[TrainedNetwork]:
    """Train every (seed, fold) network separately (the reference path); return them seed-major."""
    return [
        train_network(
            matrix[fold.train],
            target[fold.train],
            seed=seed,
            config=config,
            codec=None if codec is None else codec[fold.train],
            progress=progress,
            label=f"loso seed {seed} without {fold.held_out}",
        )
        for seed in seeds
        for fold in folds
    ]


def _network(
    layers: tuple[Dense, ...],
    final_loss: float,
    stats: Standardisation,
    seed: int,
    codec_width: int,
    config: TrainConfig,
) -> TrainedNetwork:
    """Wrap stacked-training weights as a network, with its fold's standardisation."""
    return TrainedNetwork(
        layers=layers,
        activation=config.activation,
        standardisation=stats,
        codec_width=codec_width,
        seed=seed,
        final_loss=final_loss,
    )


def _score_fold(
    network: TrainedNetwork,
    fold: _Fold,
    matrix: Float32Array,
    target: Float32Array,
    codec: Float32Array | None,
) -> Fold:
    """Score one network on its held-out rows."""
    held_codec = None if codec is None else codec[fold.held]
    pred = network.predict(matrix[fold.held], held_codec).astype(np.float64)
    truth = target[fold.held].astype(np.float64)
    return Fold(
        held_out=fold.held_out,
        n_train=int(fold.train.sum()),
        n_val=int(fold.held.sum()),
        plcc=plcc(pred, truth),
        srocc=srocc(pred, truth),
        rmse=rmse(pred, truth),
    )


def _folds(features: FeatureTable) -> list[_Fold]:
    """Return one fold per unique source, in sorted source order."""
    groups = features.groups()
    where = str(features.path) if features.path is not None else "feature table"
    if groups is None:
        raise FeatureCacheError(
            f"{where}: leave-one-source-out needs a '{SOURCE}' column, and there is none"
        )
    sources = sorted(set(groups.tolist()))
    if len(sources) < 2:
        raise FeatureCacheError(
            f"{where}: leave-one-source-out needs at least 2 sources, found {len(sources)}"
        )
    return [
        _Fold(held_out=source, train=groups != source, held=groups == source) for source in sources
    ]


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    """Require a non-empty list of distinct non-negative integer seeds."""
    values = list(seeds)
    if not values:
        raise UsageError("LOSO needs at least one seed")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in values):
        raise UsageError(f"seeds must be non-negative integers, not {values!r}")
    if len(set(values)) != len(values):
        raise UsageError(f"seeds must not repeat: {values!r}")
    return values
