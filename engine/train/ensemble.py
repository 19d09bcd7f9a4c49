"""Deep ensembles: N members seeded ``base_seed + k``, split-conformal intervals, ONNX export, manifest.

Rows are split by ``source`` (``engine.conformal.split_calibration``): every member is
trained on the training sources only, and the calibration sources, never seen in
training, fit the split-conformal quantile (and give the evaluation figures). Given a
separate calibration table instead, members train on every row of the features and the
table calibrates. Either way a calibration row that is also a training row (same
``engine.features.row_hashes``: features, target and identifying columns) is refused
unless ``allow_calibration_overlap``: conformal coverage rests on calibration rows the
members never saw, and rows they were fitted on give too narrow an interval. Members
are exported with ``export.export_network`` next to the manifest ``<ensemble_id>.json``.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from engine.codec import codec_block, codec_vocabulary
from engine.conformal import (
    DEFAULT_NOMINALS,
    ConformalCalibration,
    IntervalMethod,
    ScoreKind,
    calibrate,
    ensemble_moments,
    min_calibration_rows,
    split_calibration,
)
from engine.errors import FeatureCacheError, UsageError
from engine.evidence import write_bytes
from engine.features import SOURCE, FeatureTable, row_hashes
from engine.hashing import sha256_bytes
from engine.manifest import Confidence, ManifestMember, build_manifest, write_manifest
from engine.metrics import compute_metrics
from engine.provenance import InputRole, build_provenance, inputs_of, utc_now
from engine.train.export import export_network
from engine.train.network import DEFAULT_CONFIG, TrainConfig, TrainedNetwork, train_network

DEFAULT_MEMBERS = 5
DEFAULT_NOMINAL = 0.9
DEFAULT_CALIBRATION_FRACTION = 0.2
ENTRYPOINT = "model-guard ensemble train"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


@dataclass(frozen=True)
class TrainedEnsemble:
    """What ``train_ensemble`` wrote: the manifest, the member files, and the calibration."""

    manifest_path: Path
    member_paths: tuple[Path, ...]
    calibration: ConformalCalibration
    calibration_plcc: float
    calibration_overlap: int = 0
    """Calibration rows that are also training rows (non-zero only when allowed)."""


@dataclass(frozen=True, eq=False)
class _Rows:
    """Which rows train and which calibrate: indices into ``features`` and ``table``."""

    train: np.ndarray
    table: FeatureTable
    calib: np.ndarray
    split: dict[str, Any]


def train_ensemble(
    features: FeatureTable,
    *,
    ensemble_id: str,
    out_dir: Path,
    members: int = DEFAULT_MEMBERS,
    base_seed: int = 0,
    config: TrainConfig = DEFAULT_CONFIG,
    method: IntervalMethod = IntervalMethod.CONFORMAL,
    nominal_coverage: float = DEFAULT_NOMINAL,
    score: ScoreKind = ScoreKind.NORMALISED,
    calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION,
    split_seed: int = 0,
    calibration: FeatureTable | None = None,
    allow_calibration_overlap: bool = False,
    progress: bool = False,
    argv: Sequence[str] = (),
) -> TrainedEnsemble:
    """Train, calibrate and export an ensemble; write ``out_dir/<ensemble_id>.json``.

    Calibrates on the held-out sources of a split of ``features``, or on ``calibration``
    when given. Raises UsageError (one line, nothing written) when calibration rows are
    training rows, unless ``allow_calibration_overlap``; the manifest records the count.
    """
    _check_request(ensemble_id, members=members, base_seed=base_seed)
    started = utc_now()
    if calibration is None:
        rows = _split_rows(features, fraction=calibration_fraction, seed=split_seed)
    else:
        rows = _file_rows(features, calibration)
    overlap = _check_overlap(features, rows, allow=allow_calibration_overlap)
    alpha = 1.0 - nominal_coverage
    if rows.calib.size < min_calibration_rows(alpha):
        raise UsageError(
            f"the calibration rows number {rows.calib.size}; a finite "
            f"{nominal_coverage:g} conformal interval needs at least {min_calibration_rows(alpha)}"
        )
    matrix, target = features.matrix(), features.target()
    codec = codec_block(features) if config.codec else None
    train, calib = rows.train, rows.calib
    networks = [
        train_network(
            matrix[train],
            target[train],
            seed=base_seed + k,
            config=config,
            codec=None if codec is None else codec[train],
            progress=progress,
            label=f"{ensemble_id} member {k + 1}/{members}",
        )
        for k in range(members)
    ]
    calib_matrix = rows.table.matrix()[calib]
    calib_codec = codec_block(rows.table)[calib] if config.codec else None
    predictions = np.stack([n.predict(calib_matrix, calib_codec) for n in networks])
    moments = ensemble_moments(predictions.astype(np.float64))
    truth = rows.table.target()[calib].astype(np.float64)
    calibration_fit = calibrate(moments.mu, moments.sigma, truth, alpha=alpha, score=score)
    levels = tuple(
        calibrate(moments.mu, moments.sigma, truth, alpha=1.0 - nominal, score=score)
        for nominal in DEFAULT_NOMINALS
        if abs(nominal - calibration_fit.nominal_coverage) > 1e-9
    )
    calib_groups = rows.table.groups()
    calib_groups = None if calib_groups is None else calib_groups[calib]
    metrics = compute_metrics(moments.mu, truth, groups=calib_groups)
    out_dir = Path(out_dir)
    written = _export_members(networks, ensemble_id=ensemble_id, out_dir=out_dir)
    manifest_path = out_dir / f"{ensemble_id}.json"
    standardisation = networks[0].standardisation
    document = build_manifest(
        ensemble_id=ensemble_id,
        members=[member for member, _ in written],
        feature_mean=standardisation.feature_mean.tolist(),
        feature_std=standardisation.feature_std.tolist(),
        target_mean=standardisation.target_mean,
        target_std=standardisation.target_std,
        codec=codec_vocabulary() if config.codec else None,
        confidence=Confidence(
            method=method,
            nominal_coverage=calibration_fit.nominal_coverage,
            z=float(stats.norm.ppf(0.5 + calibration_fit.nominal_coverage / 2)),
            calibration=calibration_fit,
            levels=levels,
        ),
        evaluation={
            "rows": "calibration",
            "n": int(calib.size),
            "sources": [] if calib_groups is None else sorted(set(calib_groups.tolist())),
            "metrics": metrics.to_dict(),
            "mean_sigma": float(np.mean(moments.sigma)),
        },
        training=_training_block(
            features,
            config=config,
            base_seed=base_seed,
            members=members,
            split=rows.split,
            networks=networks,
        ),
        provenance=build_provenance(
            schema="model-guard/ensemble-manifest",
            schema_version=1,
            entrypoint=ENTRYPOINT,
            argv=list(argv),
            # the calibration table, when separate, is a feature table too
            inputs=inputs_of(
                [features.path, None if calibration is None else calibration.path],
                InputRole.FEATURES,
            ),
            outputs=[path for _, path in written],
            started=started,
            finished=utc_now(),
        ),
    )
    write_manifest(manifest_path, document)
    return TrainedEnsemble(
        manifest_path=manifest_path,
        member_paths=tuple(path for _, path in written),
        calibration=calibration_fit,
        calibration_plcc=metrics.plcc,
        calibration_overlap=overlap,
    )


def _export_members(
    networks: Sequence[TrainedNetwork], *, ensemble_id: str, out_dir: Path
) -> list[tuple[ManifestMember, Path]]:
    """Export every member as ``<ensemble_id>-m<k>.onnx``; return manifest entries and paths."""
    written = []
    for k, network in enumerate(networks):
        member_id = f"{ensemble_id}-m{k}"
        data = export_network(
            network,
            name=member_id,
            doc=f"model-guard ensemble {ensemble_id} member {k}, seed {network.seed}",
        )
        path = out_dir / f"{member_id}.onnx"
        write_bytes(path, data)
        member = ManifestMember(
            id=member_id, onnx=path.name, seed=network.seed, sha256=sha256_bytes(data)
        )
        written.append((member, path))
    return written


def _split_rows(features: FeatureTable, *, fraction: float, seed: int) -> _Rows:
    """Split ``features`` by source: whole sources train, the others calibrate."""
    groups = features.groups()
    if groups is None:
        raise FeatureCacheError(
            f"{_where(features)}: an ensemble needs a '{SOURCE}' column so that calibration "
            "rows come from sources no member was trained on (or a separate calibration table)"
        )
    split = split_calibration(features.n_rows, groups=groups, fraction=fraction, seed=seed)
    train, calib = split.train_idx, split.calib_idx
    block = {
        "by": SOURCE,
        "fraction": fraction,
        "seed": seed,
        "n_train": int(train.size),
        "n_calibration": int(calib.size),
        "train_sources": sorted(set(groups[train].tolist())),
        "calibration_sources": sorted(set(groups[calib].tolist())),
    }
    return _Rows(train=train, table=features, calib=calib, split=block)


def _file_rows(features: FeatureTable, calibration: FeatureTable) -> _Rows:
    """Train on every row of ``features``; calibrate on every row of ``calibration``."""
    block = {
        "by": "calibration table",
        "n_train": features.n_rows,
        "n_calibration": calibration.n_rows,
        "calibration_corpus": {
            "path": str(calibration.path) if calibration.path is not None else "(in memory)",
            "content_hash": calibration.content_hash,
            "rows": calibration.n_rows,
        },
    }
    return _Rows(
        train=np.arange(features.n_rows),
        table=calibration,
        calib=np.arange(calibration.n_rows),
        split=block,
    )


def _check_overlap(features: FeatureTable, rows: _Rows, *, allow: bool) -> int:
    """Count calibration rows that are training rows by row hash; refuse any unless allowed.

    Records ``calibration_overlap`` (the count and whether it was allowed) in the split block.
    """
    trained = set(np.asarray(row_hashes(features), dtype=object)[rows.train].tolist())
    hashes = row_hashes(rows.table)
    overlap = sum(1 for index in rows.calib.tolist() if hashes[index] in trained)
    if overlap and not allow:
        raise UsageError(
            f"calibration refused: {overlap} of {rows.calib.size} calibration rows are also "
            "training rows (same features, target and identifying columns), which makes the "
            "conformal interval too narrow; use other rows, or pass --allow-calibration-overlap "
            "to calibrate on them anyway"
        )
    rows.split["calibration_overlap"] = {"rows": overlap, "allowed": allow}
    return overlap


def _training_block(
    features: FeatureTable,
    *,
    config: TrainConfig,
    base_seed: int,
    members: int,
    split: dict[str, Any],
    networks: Sequence[TrainedNetwork],
) -> dict[str, Any]:
    """Return the manifest's ``training`` block: data, settings, split and final losses."""
    return {
        "corpus": {
            "path": str(features.path) if features.path is not None else "(in memory)",
            "content_hash": features.content_hash,
            "rows": features.n_rows,
        },
        "hyperparameters": config.to_dict(),
        "base_seed": base_seed,
        "n_members": members,
        "split": split,
        "final_losses": [network.final_loss for network in networks],
    }


def _check_request(ensemble_id: str, *, members: int, base_seed: int) -> None:
    """Refuse an id that is not a safe file name, fewer than 2 members, or a negative seed."""
    if not isinstance(ensemble_id, str) or not _ID.fullmatch(ensemble_id):
        raise UsageError(
            f"ensemble id {ensemble_id!r} must be letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    if isinstance(members, bool) or not isinstance(members, int) or members < 2:
        raise UsageError(f"an ensemble needs at least 2 members, not {members!r}")
    if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
        raise UsageError(f"base_seed must be a non-negative integer, not {base_seed!r}")


def _where(features: FeatureTable) -> str:
    """Name a feature table in messages."""
    return str(features.path) if features.path is not None else "feature table"
