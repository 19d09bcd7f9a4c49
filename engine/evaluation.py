"""Evaluate one model of a timeline on a feature cache, with an on-disk store of past evaluations.

An evaluation is keyed by everything that decides its metrics: the model's bytes (sha256
of the graph file and of every external-data file), the feature cache's decoded content
hash, the metric settings (bootstrap size, confidence, seed, grouping, logistic fit,
statistical mode), the safety limits and the evaluation code's version. The gate is not
in the key: a stored record's metrics are judged again under the gate of the run that
reads them, so re-running over an unchanged timeline, even with other thresholds, scores
no model at all.

Scoring runs within the model's memory and time budget (``engine.budget``). Running out of
budget makes the model a broken (failing) step, but that result is never stored: it says
as much about this run's budget and machine as about the model, so a re-run with a larger
budget judges the model again.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.admission import admit_model
from engine.budget import score_within_budget
from engine.codec import CodecVocabulary, codec_block
from engine.declaration import (
    DeclarationInvalid,
    InputDeclaration,
    RowDeclaration,
    Standardisation,
    resolve_declaration,
)
from engine.errors import BudgetExceeded, EngineError, EvidenceError, ModelRejected, UsageError
from engine.evidence import read_json, write_json
from engine.features import ENCODER, PARAM, SOURCE, FeatureTable
from engine.hashing import sha256_json
from engine.metrics import MetricReport, compute_metrics, distinct_resamples, min_groups
from engine.registry import ExternalData
from engine.scoring import CheckedModel, ScoringLimits
from engine.threshold import StepStatus, Thresholds, judge

if TYPE_CHECKING:
    from engine.registry import CodecSpec, Registry

DEFAULT_LIMITS = ScoringLimits()
# Columns ``--group-by`` may name: the string columns the feature loader reads and hashes.
GROUPABLE: tuple[str, ...] = (SOURCE, ENCODER, PARAM)

# Bump when a change to scoring or metrics would change a stored result. 2: the key no
# longer holds the gate (stored metrics are judged by the reading run).
EVALUATION_VERSION = 2


@dataclass(frozen=True)
class ModelRef:
    """A model in a timeline: its display name, its file and what the registry expects of it."""

    name: str
    path: Path
    expected_sha256: str | None = None
    external_data: Mapping[str, str] | None = field(default=None, hash=False)
    codec: "CodecSpec | None" = None
    # What the row declares (preprocessing, names, vocabulary); its sidecar is read under ``root``.
    declared: RowDeclaration | None = None
    root: Path | None = None

    def declaration(self) -> InputDeclaration:
        """Resolve the row's declaration (reading its sidecar); a bad one is a ModelRejected."""
        declared = self.declared
        if declared is None and self.codec is not None:
            declared = RowDeclaration(
                legacy_codec=(self.codec.vocabulary_version, self.codec.width)
            )
        try:
            return resolve_declaration(declared, root=self.root or self.path.parent)
        except DeclarationInvalid as error:
            raise ModelRejected(f"declaration: {error}") from None


@dataclass(frozen=True)
class MetricSettings:
    """How metrics are computed and judged: bootstrap size, confidence, seed, logistic fit."""

    statistical: bool = False
    bootstrap: int = 0
    confidence: float = 0.95
    seed: int = 0
    logistic: bool = False
    # The column whose values group rows for the bootstrap; None means ``source`` if present.
    group_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (``group_by`` only when chosen)."""
        data: dict[str, Any] = {
            "statistical": self.statistical,
            "bootstrap": self.bootstrap,
            "confidence": self.confidence,
            "seed": self.seed,
            "logistic": self.logistic,
        }
        if self.group_by is not None:  # left out by default so stored evaluations stay valid
            data["group_by"] = self.group_by
        return data


@dataclass(frozen=True)
class ResamplingPlan:
    """How the bootstrap resamples a feature cache, and how fine its intervals can be.

    ``method`` is ``grouped`` (whole groups of ``column`` are drawn), ``rows`` (rows are
    drawn as if independent) or ``none`` (no bootstrap). ``distinct_resamples`` is how many
    different resamples exist (C(2G - 1, G) for G groups); ``min_groups`` what the
    confidence needs (docs/intervals.md). ``warnings`` are shown on stderr and in the report.
    """

    method: str
    column: str | None
    groups: int | None
    distinct_resamples: int | None
    min_groups: int | None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as a JSON-ready dict."""
        return {
            "method": self.method,
            "column": self.column,
            "groups": self.groups,
            "distinct_resamples": self.distinct_resamples,
            "min_groups": self.min_groups,
        }


def plan_resampling(features: FeatureTable, settings: MetricSettings) -> ResamplingPlan:
    """Decide how to resample ``features``; refuse a statistical run with too few groups.

    Raises UsageError (one line) when ``--statistical`` would bootstrap fewer groups than
    ``min_groups(confidence)``: its interval would be the range of single groups.
    """
    column = settings.group_by or SOURCE
    if settings.group_by is not None and settings.group_by not in GROUPABLE:
        raise UsageError(
            f"--group-by must be one of {', '.join(GROUPABLE)} (the string columns a cache may carry)"
        )
    groups = features.groups(column)
    if settings.group_by is not None and groups is None:
        raise UsageError(f"--group-by {column}: the feature cache has no {column} column")
    if settings.bootstrap < 1:
        return ResamplingPlan("none", None, None, None, None)
    if groups is None:
        warning = (
            f"the feature cache has no {column} column: the bootstrap treats its "
            f"{features.n_rows} rows as independent, so intervals are too narrow if frames "
            "of one source are correlated (use --group-by)"
        )
        return ResamplingPlan("rows", None, None, None, None, (warning,))
    count = len(set(groups.tolist()))
    needed = min_groups(settings.confidence)
    distinct = distinct_resamples(count)
    if count < needed:
        if settings.statistical:
            raise UsageError(
                f"--statistical needs at least {needed} {column} groups for a "
                f"{settings.confidence:g} interval, the feature cache has {count} "
                f"({distinct} distinct resamples); see docs/intervals.md"
            )
        warning = (
            f"only {count} {column} group(s), {distinct} distinct resamples: the "
            f"{settings.confidence:g} intervals need at least {needed} groups and are "
            "shown for information only"
        )
        if count < 2:  # one group cannot be resampled as groups: rows are drawn instead
            return ResamplingPlan("rows", column, count, None, needed, (warning,))
        return ResamplingPlan("grouped", column, count, distinct, needed, (warning,))
    return ResamplingPlan("grouped", column, count, distinct, needed)


@dataclass(frozen=True)
class StepRecord:
    """The evaluation of one model: the gate's status, why, and the metrics behind it."""

    name: str
    path: str
    sha256: str | None
    status: StepStatus
    reasons: tuple[str, ...]
    broken: str | None
    metrics: MetricReport | None
    seconds: float
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "status": self.status.value,
            "reasons": list(self.reasons),
            "broken": self.broken,
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "seconds": round(self.seconds, 6),
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StepRecord":
        """Rebuild a record written by ``to_dict``."""
        metrics = data.get("metrics")
        return cls(
            name=str(data["name"]),
            path=str(data["path"]),
            sha256=data.get("sha256"),
            status=StepStatus(data["status"]),
            reasons=tuple(str(r) for r in data.get("reasons", ())),
            broken=data.get("broken"),
            metrics=None if metrics is None else MetricReport.from_dict(metrics),
            seconds=float(data.get("seconds", 0.0)),
            cached=bool(data.get("cached", False)),
        )


class EvaluationStore:
    """Past evaluations as one JSON file per key in a folder; unreadable entries are misses."""

    def __init__(self, directory: Path) -> None:
        """Use ``directory`` (created on first write)."""
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """Return the stored record for ``key``, or None when absent or unreadable."""
        try:
            data = read_json(self._path(key)).value
        except EvidenceError:
            return None
        return data if isinstance(data, dict) and data.get("key") == key else None

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Store ``record`` under ``key`` atomically (temporary file, fsync, rename)."""
        write_json(self._path(key), {"key": key, **record}, sort_keys=True)


def refs_from_registry(registry: "Registry") -> list[ModelRef]:
    """Return the registry's models in canonical timeline order as model references."""
    return [
        ModelRef(
            name=entry.id,
            path=entry.onnx_path(registry.root),
            expected_sha256=entry.sha256,
            external_data=entry.external_map(),
            codec=entry.codec,
            declared=entry.declared,
            root=registry.root,
        )
        for entry in registry.timeline_models
    ]


def refs_from_paths(paths: Sequence[Path]) -> list[ModelRef]:
    """Return model references for plain ONNX paths, oldest first, named by file stem."""
    return [ModelRef(name=Path(path).stem, path=Path(path)) for path in paths]


class Evaluator:
    """Scores timeline models on a feature cache and judges them; callable as ``evaluate(index)``."""

    def __init__(
        self,
        models: Sequence[ModelRef],
        features: FeatureTable,
        thresholds: Thresholds,
        *,
        settings: MetricSettings = MetricSettings(),
        limits: ScoringLimits = DEFAULT_LIMITS,
        store: EvaluationStore | None = None,
    ) -> None:
        """Prepare to evaluate ``models`` (oldest first) on ``features`` against ``thresholds``."""
        if settings.statistical and settings.bootstrap < 1:
            raise UsageError("statistical mode needs bootstrap resamples (bootstrap >= 1)")
        self.models = list(models)
        self.features = features
        self.thresholds = thresholds
        self.settings = settings
        self.limits = limits
        self.store = store
        self.evaluated = 0
        self.from_store = 0
        self.plan = plan_resampling(features, settings)
        self._matrix = features.matrix()
        self._target = features.target()
        # A grouped bootstrap needs at least two groups; with one, resample rows instead.
        column = self.plan.column if self.plan.method == "grouped" else None
        self._groups = None if column is None else features.groups(column)
        self._codec_blocks: dict[CodecVocabulary, np.ndarray] = {}
        self._prepared: dict[Standardisation, np.ndarray] = {}

    def __call__(self, index: int) -> StepRecord:
        """Evaluate the model at timeline ``index`` (served from the store when possible).

        The safety check runs every time (it is cheap, and a rejection can depend on
        files around the model); scoring and metrics run only on a store miss.
        """
        ref = self.models[index]
        started = time.perf_counter()
        admission = admit_model(
            ref.path,
            expected_sha256=ref.expected_sha256,
            external_data=None
            if ref.external_data is None
            else tuple(ExternalData(name, sha) for name, sha in ref.external_data.items()),
            codec=ref.codec,
            declared=ref.declared,
            limits=self.limits,
            root=ref.root,
        )
        if admission.checked is None or admission.sha256 is None:
            self.evaluated += 1
            reason = admission.reason or "the model was not admitted"
            return self._broken(ref, None, reason, time.perf_counter() - started)
        checked, sha256, external = admission.checked, admission.sha256, admission.external_sha256
        declaration = admission.declaration
        codec = self._codec_block(declaration)
        key = self._key(sha256, external, ref, declaration)
        cached = self._from_store(key)
        if cached is not None:
            self.from_store += 1
            return replace(self._judged(cached), name=ref.name, path=str(ref.path), cached=True)
        self.evaluated += 1
        try:
            record = self._score(
                ref, checked, sha256, started, codec=codec, matrix=self._matrix_for(declaration)
            )
        except BudgetExceeded as error:
            # Transient: not stored, so a larger budget re-judges the model.
            return self._broken(ref, sha256, str(error), time.perf_counter() - started)
        if self.store is not None:
            self.store.put(key, record.to_dict())
        return record

    def _judged(self, record: StepRecord) -> StepRecord:
        """Judge a stored record's metrics under this run's gate (a broken record stays broken)."""
        if record.metrics is None:
            return record
        judgement = judge(record.metrics, self.thresholds, statistical=self.settings.statistical)
        return replace(record, status=judgement.status, reasons=judgement.reasons)

    def _from_store(self, key: str) -> StepRecord | None:
        """Return the stored record for ``key``; a malformed one is treated as a miss."""
        stored = None if self.store is None else self.store.get(key)
        if stored is None:
            return None
        try:
            return StepRecord.from_dict(stored)
        except (EngineError, KeyError, TypeError, ValueError):
            return None

    def _codec_block(self, declaration: InputDeclaration) -> np.ndarray | None:
        """Return the cache's codec block for a codec-aware model (built once per vocabulary).

        A cache without the columns the vocabulary needs cannot score such a model: that is
        a FeatureCacheError (bad input), not a broken model.
        """
        vocabulary = declaration.vocabulary
        if vocabulary is None:
            return None
        if vocabulary not in self._codec_blocks:
            self._codec_blocks[vocabulary] = codec_block(self.features, vocabulary=vocabulary)
        return self._codec_blocks[vocabulary]

    def _matrix_for(self, declaration: InputDeclaration) -> np.ndarray:
        """Return the feature matrix as the model declares it: reordered and standardised."""
        standardisation = declaration.standardisation
        if standardisation is None:
            return self._matrix
        if standardisation not in self._prepared:
            self._prepared[standardisation] = standardisation.apply(self._matrix)
        return self._prepared[standardisation]

    def _key(
        self,
        sha256: str,
        external: Mapping[str, str],
        ref: ModelRef,
        declaration: InputDeclaration,
    ) -> str:
        """Return the store key for a model's bytes (and declarations) under these settings."""
        payload: dict[str, Any] = {
            "evaluation_version": EVALUATION_VERSION,
            "model": sha256,
            "external": dict(sorted(external.items())),
            "codec": None if ref.codec is None else [ref.codec.vocabulary_version, ref.codec.width],
            "features": self.features.content_hash,
            # No thresholds: a stored record's metrics are judged again under the gate
            # of the run that reads it (``_judged``), so a new gate re-scores nothing.
            "settings": self.settings.to_dict(),
            "max_opset": self.limits.max_opset,
        }
        # Only models that declare something get the field, so older keys stay valid; the
        # sidecar's sha256 is in it, so a changed sidecar re-scores.
        if (declared := declaration.key()) is not None:
            payload["declaration"] = declared
        return sha256_json(payload)

    def _score(
        self,
        ref: ModelRef,
        checked: CheckedModel,
        sha256: str,
        started: float,
        *,
        codec: np.ndarray | None,
        matrix: np.ndarray,
    ) -> StepRecord:
        """Score and judge one checked model; a model failing at run time comes back broken.

        Running out of budget is raised (``BudgetExceeded``), not returned, so the caller
        does not store it.
        """
        try:
            predictions = score_within_budget(checked, matrix, codec=codec, limits=self.limits)
        except BudgetExceeded:
            raise
        except ModelRejected as error:
            return self._broken(ref, sha256, str(error), time.perf_counter() - started)
        metrics = compute_metrics(
            predictions,
            self._target,
            groups=self._groups,
            bootstrap=self.settings.bootstrap,
            confidence=self.settings.confidence,
            seed=self.settings.seed,
            logistic=self.settings.logistic,
        )
        judgement = judge(metrics, self.thresholds, statistical=self.settings.statistical)
        return StepRecord(
            name=ref.name,
            path=str(ref.path),
            sha256=sha256,
            status=judgement.status,
            reasons=judgement.reasons,
            broken=None,
            metrics=metrics,
            seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _broken(ref: ModelRef, sha256: str | None, reason: str, seconds: float) -> StepRecord:
        """Return the record of a model that could not be scored: it counts as failing."""
        return broken_step(ref.name, str(ref.path), reason, sha256=sha256, seconds=seconds)


def broken_step(
    name: str, path: str, reason: str, *, sha256: str | None = None, seconds: float = 0.0
) -> StepRecord:
    """The record of a model that could not be loaded or scored: it counts as failing."""
    return StepRecord(
        name=name,
        path=path,
        sha256=sha256,
        status=StepStatus.FAIL,
        reasons=(f"broken: {reason}",),
        broken=reason,
        metrics=None,
        seconds=seconds,
    )
