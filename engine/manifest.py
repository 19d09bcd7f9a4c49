"""Ensemble manifests (``<ensemble_id>.json``): build, validate against files and registry, evaluate.

A manifest names every member ONNX file with its seed and sha256, the feature order and
standardisation, the codec block (vocabulary version and width, or null) and how the
ensemble's prediction intervals are built. ``validate_manifest`` re-checks every member
file (hash, and the width of its codec input) and, given a registry, the registry row of
every member. ``evaluate_ensemble`` scores the members on a feature cache through
``engine.scoring`` and reports interval coverage (``engine.conformal``) and the metrics
of the ensemble mean. No torch here: a manifest can be checked and evaluated anywhere.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from engine.budget import score_within_budget
from engine.codec import CodecVocabulary, codec_vocabulary
from engine.conformal import (
    DEFAULT_NOMINALS,
    ConformalCalibration,
    CoverageTest,
    IntervalMethod,
    IntervalReport,
    ensemble_moments,
    evaluate_intervals,
)
from engine.errors import EngineError, EvidenceError, ReportError, UsageError, one_line
from engine.evidence import (
    SchemaDifferences,
    is_foreign,
    read_json,
    schema_differences,
    schema_problems,
    shown,
    write_json,
)
from engine.features import FEATURES, TARGET, load_features
from engine.hashing import sha256_bytes, sha256_file
from engine.metrics import MetricReport, compute_metrics
from engine.registry import load_registry
from engine.safeio import ONNX_GRAPH, read_input
from engine.scoring import ScoringLimits, inspect_model
from engine.verdict import OfferedModel, VerificationResult

SCHEMA = "model-guard/ensemble-manifest"
SCHEMA_VERSION = 1
SCHEMA_FILE = "ensemble-manifest.schema.json"
EVALUATION_SCHEMA = "model-guard/ensemble-evaluation"
# Version 2: coverage at 50/80/95 % nominal and the manifest's own level, conformal null
# where the manifest holds no calibration for a level, and ``coverage_test`` (the exit code).
EVALUATION_SCHEMA_VERSION = 2
FEATURES_INPUT = "features"
CODEC_INPUT = "codec"
_MAX_MODEL_BYTES = 16 * 1024 * 1024
# Keys only our manifest writes: a document with one of them is ours (and checked strictly).
_OWN_KEYS = ("features", "target", "training")
# A hostile foreign manifest may list any number of members: at most this many are hashed.
MAX_FOREIGN_MEMBERS = 256


class ManifestError(EngineError):
    """An ensemble manifest is missing, malformed, or disagrees with its files."""


@dataclass(frozen=True)
class ManifestMember:
    """One member: its id, ONNX path (relative to the manifest), training seed and file hash."""

    id: str
    onnx: str
    seed: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Return the member as the manifest writes it."""
        return {"id": self.id, "onnx": self.onnx, "seed": self.seed, "sha256": self.sha256}


@dataclass(frozen=True)
class Confidence:
    """How the ensemble's intervals are built: Gaussian ``mu +/- z sigma`` or split conformal."""

    method: IntervalMethod
    nominal_coverage: float
    z: float
    calibration: ConformalCalibration
    levels: tuple[ConformalCalibration, ...] = ()
    """The same calibration rows fitted at other nominal levels (``DEFAULT_NOMINALS``), so
    ``ensemble eval`` can measure conformal coverage at 50, 80 and 95 % too."""

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest's ``confidence`` block (conformal q flat and in full)."""
        block: dict[str, Any] = {
            "method": self.method.value,
            "nominal_coverage": self.nominal_coverage,
            "z": self.z,
            "conformal_q": self.calibration.q,
            "n_calibration": self.calibration.n_calibration,
            "score": self.calibration.score.value,
            "calibration": self.calibration.to_dict(),
        }
        if self.levels:
            block["levels"] = [level.to_dict() for level in self.levels]
        return block

    def calibration_at(self, nominal: float) -> ConformalCalibration | None:
        """Return the conformal calibration for a nominal level, or None when there is none."""
        for calibration in (self.calibration, *self.levels):
            if math.isclose(calibration.nominal_coverage, nominal, abs_tol=1e-9):
                return calibration
        return None


@dataclass(frozen=True, eq=False)
class Manifest:
    """A manifest that passed ``validate_manifest``; ``members`` paths are relative to ``root``."""

    path: Path
    root: Path
    sha256: str
    id: str
    members: tuple[ManifestMember, ...]
    codec: CodecVocabulary | None
    confidence: Confidence
    corpus_hash: str
    document: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, eq=False)
class EnsembleEvaluation:
    """An ensemble scored on a feature cache: metrics of the mean and interval coverage."""

    manifest: Manifest
    features_path: Path
    content_hash: str
    rows: int
    metrics: MetricReport
    intervals: IntervalReport

    @property
    def coverage_test(self) -> CoverageTest:
        """Return the test that decides ``ensemble eval``'s exit: the manifest's own interval
        (its method) at its own nominal level."""
        confidence = self.manifest.confidence
        for level in self.intervals.levels:
            measured = level.method(confidence.method)
            if measured is not None and math.isclose(
                level.nominal, confidence.nominal_coverage, abs_tol=1e-9
            ):
                return measured.test
        raise RuntimeError("the manifest's own level was not evaluated")  # evaluate_ensemble bug

    @property
    def calibration_overlap(self) -> int:
        """Return how many calibration rows were also training rows (0 when none or unrecorded)."""
        split = self.manifest.document["training"].get("split")
        overlap = split.get("calibration_overlap") if isinstance(split, Mapping) else None
        rows = overlap.get("rows") if isinstance(overlap, Mapping) else None
        return rows if isinstance(rows, int) and not isinstance(rows, bool) else 0

    @property
    def same_corpus_as_training(self) -> bool:
        """Return whether the rows are the training corpus (the figures are then optimistic)."""
        return self.content_hash == self.manifest.corpus_hash

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready document (schema ``model-guard/ensemble-evaluation``)."""
        return {
            "schema": EVALUATION_SCHEMA,
            "schema_version": EVALUATION_SCHEMA_VERSION,
            "manifest": {
                "id": self.manifest.id,
                "path": str(self.manifest.path),
                "sha256": self.manifest.sha256,
                "method": self.manifest.confidence.method.value,
            },
            "corpus": {
                "path": str(self.features_path),
                "content_hash": self.content_hash,
                "rows": self.rows,
                "same_as_training": self.same_corpus_as_training,
            },
            "metrics": self.metrics.to_dict(),
            "intervals": self.intervals.to_dict(),
            "coverage_test": {
                "method": self.manifest.confidence.method.value,
                **self.coverage_test.to_dict(),
            },
            "calibration_overlap": self.calibration_overlap,
        }


def build_manifest(
    *,
    ensemble_id: str,
    members: Sequence[ManifestMember],
    feature_mean: Sequence[float],
    feature_std: Sequence[float],
    target_mean: float,
    target_std: float,
    codec: CodecVocabulary | None,
    confidence: Confidence,
    evaluation: Mapping[str, Any],
    training: Mapping[str, Any],
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """Return a manifest document, checked against its schema (ReportError when it is not valid)."""
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "id": ensemble_id,
        "members": [member.to_dict() for member in members],
        "features": list(FEATURES),
        "feature_mean": [float(v) for v in feature_mean],
        "feature_std": [float(v) for v in feature_std],
        "target": {"name": TARGET, "mean": float(target_mean), "std": float(target_std)},
        "codec": None if codec is None else codec.to_dict(),
        "confidence": confidence.to_dict(),
        "evaluation": dict(evaluation),
        "training": dict(training),
        "run_provenance": dict(provenance),
    }
    problems = schema_problems(document, SCHEMA_FILE)
    if problems:
        raise ReportError(f"manifest {ensemble_id} breaks its schema: {problems[0]}")
    return document


def write_manifest(path: Path, document: Mapping[str, Any]) -> None:
    """Write a manifest atomically (NaN refused)."""
    write_json(path, document)


@dataclass(frozen=True)
class EvidenceReport:
    """Problems of a manifest (and of a verdict about it) in report order, and the schema listing."""

    problems: tuple[str, ...]
    differences: tuple[str, ...]

    def render_text(self, *, prefix: str = "", verbose: bool = False) -> str:
        """Return one line per problem (``prefix`` before each) and, verbose, each schema difference."""
        listed = self.differences if verbose else ()
        return "".join(f"{prefix}{line}\n" for line in self.problems) + "".join(
            f"{line}\n" for line in listed
        )


@dataclass(frozen=True)
class ManifestCheck:
    """What ``check_manifest`` found: problems and the members, hashed, to offer to a verdict.

    For a foreign manifest (another tool's format) ``differences`` holds its schema
    differences from ours; ``problems`` are then only the substantive faults.
    """

    path: Path
    problems: tuple[str, ...]
    members: tuple[OfferedModel, ...]
    differences: SchemaDifferences | None = None

    @property
    def foreign(self) -> bool:
        """Return whether the manifest is another tool's format."""
        return self.differences is not None

    def report(self, verification: VerificationResult | None = None) -> EvidenceReport:
        """Order the problems: the manifest's members, the verdict's faults, then schema summaries.

        ``verification`` is the verdict verified with ``members=self.members``.
        """
        problems = list(self.problems)
        differences: list[str] = []
        if verification is not None and not verification.ok:
            problems.extend(verification.faults)
        if self.differences is not None:
            problems.append(f"{self.path.name}: {self.differences.summary()}")
            differences.extend(self.differences.lines(self.path.name))
        if verification is not None and verification.foreign:
            problems.append(verification.problems[-1])
            differences.extend(verification.differences)
        return EvidenceReport(tuple(problems), tuple(differences))


def validate_manifest(manifest_path: Path, *, registry_path: Path | None = None) -> list[str]:
    """Return every problem of a manifest, one line each (empty when it is valid).

    See ``check_manifest``; a foreign manifest's last line summarises its schema differences.
    """
    return list(check_manifest(manifest_path, registry_path=registry_path).report().problems)


def check_manifest(manifest_path: Path, *, registry_path: Path | None = None) -> ManifestCheck:
    """Check a manifest; every problem is one line.

    Checks the schema, the feature order, the codec vocabulary, every member's file
    (present, inside the manifest's folder, sha256 as recorded, inputs matching the codec
    width), and, given a registry, that each member has a registry row with the same id
    and the same sha256. A foreign manifest (``engine.evidence.is_foreign``, e.g. a
    ``kind: fr_ensemble`` manifest) is read for what matters: each member file missing or
    whose sha256 differs from the manifest, one line each, then a summary of its schema
    differences; it is never accepted.
    """
    manifest_path = Path(manifest_path)
    try:
        document = read_json(manifest_path).value
    except EngineError as error:
        return ManifestCheck(manifest_path, (str(error),), ())
    if is_foreign(document, own_keys=_OWN_KEYS):
        return _check_foreign(manifest_path, document, registry_path=registry_path)
    name = manifest_path.name
    problems = [f"{name}#{line}" for line in schema_problems(document, SCHEMA_FILE)]
    if problems:
        return ManifestCheck(manifest_path, tuple(problems), ())
    problems += _document_problems(document, name)
    width = _declared_codec_width(document)
    root = manifest_path.parent
    offered = []
    for member in document["members"]:
        label = f"member {member['id']} ({member['onnx']})"
        file = _member_file(member["onnx"], root=root, label=label)
        problems += _member_problems(member, file, codec_width=width)
        offered.append(OfferedModel(label, member["seed"], file.sha256))
    if registry_path is not None:
        problems += _registry_problems(document["members"], Path(registry_path))
    return ManifestCheck(manifest_path, tuple(problems), tuple(offered))


def load_manifest(manifest_path: Path, *, registry_path: Path | None = None) -> Manifest:
    """Validate and load a manifest; any problem is a one-line ManifestError (first problem, count)."""
    manifest_path = Path(manifest_path)
    problems = validate_manifest(manifest_path, registry_path=registry_path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ManifestError(f"{problems[0]}{more}")
    loaded = read_json(manifest_path)
    raw, document = loaded.raw, loaded.value
    confidence = document["confidence"]
    try:
        calibration = ConformalCalibration.from_dict(confidence["calibration"])
    except ReportError as error:
        raise ManifestError(f"{manifest_path.name}#/confidence/calibration: {error}") from None
    try:
        levels = tuple(ConformalCalibration.from_dict(c) for c in confidence.get("levels", ()))
    except ReportError as error:
        raise ManifestError(f"{manifest_path.name}#/confidence/levels: {error}") from None
    codec = document["codec"]
    return Manifest(
        path=manifest_path,
        root=manifest_path.parent,
        sha256=sha256_bytes(raw),
        id=document["id"],
        members=tuple(
            ManifestMember(id=m["id"], onnx=m["onnx"], seed=m["seed"], sha256=m["sha256"])
            for m in document["members"]
        ),
        codec=None if codec is None else codec_vocabulary(codec["version"]),
        confidence=Confidence(
            method=IntervalMethod(confidence["method"]),
            nominal_coverage=float(confidence["nominal_coverage"]),
            z=float(confidence["z"]),
            calibration=calibration,
            levels=levels,
        ),
        corpus_hash=document["training"]["corpus"]["content_hash"],
        document=document,
    )


def evaluate_ensemble(
    manifest_path: Path,
    *,
    features_path: Path,
    significance: float = 0.01,
    registry_path: Path | None = None,
    limits: ScoringLimits | None = None,
) -> EnsembleEvaluation:
    """Score every member on a feature cache (``engine.scoring``); report mean metrics and coverage.

    There is no fallback: a missing or invalid feature file is a FeatureCacheError. Codec
    ensembles are refused until ``engine.scoring`` accepts the two-input interface. Each
    member is scored within ``limits``' memory and time budget (``engine.budget``); a member
    over it is a ModelRejected (``BudgetExceeded``), like any unusable member.
    """
    limits = limits or ScoringLimits()
    manifest = load_manifest(manifest_path, registry_path=registry_path)
    if manifest.codec is not None:
        raise UsageError(
            f"ensemble {manifest.id} reads a codec block (two inputs); engine.scoring scores "
            "six-feature [N, 6] models only, so it cannot be evaluated yet"
        )
    table = load_features(Path(features_path))
    matrix, target = table.matrix(), table.target()
    predictions = np.stack(
        [_score_member(manifest, member, matrix, limits=limits) for member in manifest.members]
    ).astype(np.float64)
    moments = ensemble_moments(predictions)
    metrics = compute_metrics(moments.mu, target.astype(np.float64), groups=table.groups())
    confidence = manifest.confidence
    nominals = sorted({*DEFAULT_NOMINALS, confidence.nominal_coverage})
    intervals = evaluate_intervals(
        predictions,
        target.astype(np.float64),
        calibration_for=confidence.calibration_at,
        nominals=_distinct(nominals),
        significance=significance,
    )
    return EnsembleEvaluation(
        manifest=manifest,
        features_path=Path(features_path),
        content_hash=table.content_hash,
        rows=table.n_rows,
        metrics=metrics,
        intervals=intervals,
    )


def render_evaluation(evaluation: EnsembleEvaluation) -> str:
    """Return a short plain-text summary: metrics, a coverage table per level, the deciding test."""
    m = evaluation.metrics
    confidence = evaluation.manifest.confidence
    lines = [
        f"ensemble {evaluation.manifest.id} on {evaluation.features_path} "
        f"({evaluation.rows} rows, {len(evaluation.manifest.members)} members)",
        f"mean prediction: PLCC {_fmt(m.plcc)}  SROCC {_fmt(m.srocc)}  RMSE {_fmt(m.rmse)}",
        f"empirical coverage (one-sided exact binomial test, significance "
        f"{evaluation.intervals.significance:g}):",
        f"  {'nominal':<16}  {'gaussian':<26}  conformal",
    ]
    for level in evaluation.intervals.levels:
        own = math.isclose(level.nominal, confidence.nominal_coverage, abs_tol=1e-9)
        label = f"{level.nominal * 100:g} %" + (" (manifest)" if own else "")
        conformal = "not calibrated at this level"
        if level.conformal is not None:
            conformal = _coverage_cell(level.conformal.test)
        lines.append(f"  {label:<16}  {_coverage_cell(level.gaussian.test):<26}  {conformal}")
    test = evaluation.coverage_test
    lines.append(
        f"coverage test of the manifest's {confidence.method.value} interval: {test.statement}"
    )
    if evaluation.same_corpus_as_training:
        lines.append("warning: these rows are the training corpus; the figures are optimistic")
    if evaluation.calibration_overlap:
        lines.append(
            f"warning: this ensemble was calibrated on {evaluation.calibration_overlap} rows that "
            "were also training rows (--allow-calibration-overlap); its intervals are likely "
            "too narrow"
        )
    return "\n".join(lines)


def _score_member(
    manifest: Manifest, member: ManifestMember, matrix: np.ndarray, *, limits: ScoringLimits
) -> np.ndarray:
    """Inspect and score one member within the budget; its bytes must still hash as recorded."""
    checked = inspect_model(manifest.root / member.onnx, limits=limits)
    if checked.sha256 != member.sha256:
        raise ManifestError(
            f"member {member.id} ({member.onnx}) changed after validation: "
            f"sha256 {_short(checked.sha256)} != {_short(member.sha256)}"
        )
    return score_within_budget(checked, matrix, limits=limits)


def _coverage_cell(test: CoverageTest) -> str:
    """Render ``0.909 (p=0.99, PASS)`` for the coverage table."""
    return f"{test.empirical:.3f} (p={test.p_value:.3g}, {'PASS' if test.passed else 'FAIL'})"


def _distinct(nominals: Sequence[float]) -> list[float]:
    """Drop a level within float rounding of the previous one (0.9 vs 1 - 0.1)."""
    kept: list[float] = []
    for nominal in nominals:
        if not kept or not math.isclose(kept[-1], nominal, abs_tol=1e-9):
            kept.append(nominal)
    return kept


def _document_problems(document: Mapping[str, Any], name: str) -> list[str]:
    """Return problems a schema cannot express: order, duplicates, codec and calibration."""
    problems = []
    if tuple(document["features"]) != FEATURES:
        problems.append(
            f"{name}#/features: {document['features']} is not the canonical order {list(FEATURES)}"
        )
    for key in ("id", "onnx"):
        values = [member[key] for member in document["members"]]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            problems.append(f"{name}#/members: {key} repeated: {', '.join(repeated)}")
    codec = document["codec"]
    if codec is not None:
        problems += _codec_problems(codec, name)
    confidence = document["confidence"]
    try:
        calibration = ConformalCalibration.from_dict(confidence["calibration"])
    except ReportError as error:
        return [*problems, f"{name}#/confidence/calibration: {error}"]
    flat: dict[str, float] = {
        "conformal_q": calibration.q,
        "n_calibration": calibration.n_calibration,
        "nominal_coverage": calibration.nominal_coverage,
    }
    if confidence["score"] != calibration.score.value:
        problems.append(
            f"{name}#/confidence/score: {confidence['score']!r} disagrees with the "
            f"calibration's {calibration.score.value!r}"
        )
    for key, value in flat.items():
        given = confidence[key]
        if not math.isclose(given, value, rel_tol=1e-12):
            problems.append(
                f"{name}#/confidence/{key}: {given!r} disagrees with the calibration's {value!r}"
            )
    for index, raw in enumerate(confidence.get("levels", ())):
        where = f"{name}#/confidence/levels/{index}"
        try:
            level = ConformalCalibration.from_dict(raw)
        except ReportError as error:
            problems.append(f"{where}: {error}")
            continue
        same = (level.score, level.floor, level.n_calibration)
        if same != (calibration.score, calibration.floor, calibration.n_calibration):
            problems.append(
                f"{where}: score, floor or n_calibration differ from the manifest's calibration "
                "(every level is fitted on the same calibration rows)"
            )
    return problems


def _codec_problems(codec: Mapping[str, Any], name: str) -> list[str]:
    """Compare a recorded codec block with the vocabulary of its version."""
    try:
        known = codec_vocabulary(codec["version"])
    except UsageError as error:
        return [f"{name}#/codec/version: {error}"]
    expected = known.to_dict()
    return [
        f"{name}#/codec/{key}: {codec[key]!r} but codec vocabulary v{known.version} has "
        f"{expected[key]!r}"
        for key in expected
        if codec[key] != expected[key]
    ]


def _declared_codec_width(document: Mapping[str, Any]) -> int:
    """Return the codec width the manifest declares (0 without a codec block)."""
    codec = document["codec"]
    return 0 if codec is None else int(codec["width"])


@dataclass(frozen=True)
class _MemberFile:
    """A member's file: its path and sha256, or why it cannot be hashed."""

    label: str
    path: Path | None
    sha256: str | None
    problem: str | None


def _member_file(relative: str, *, root: Path, label: str) -> _MemberFile:
    """Locate and hash a member's file: a safe path inside ``root``, present, readable."""
    path = root / relative
    try:
        unsafe = _path_problem(relative, root)
        found = unsafe is None and path.is_file()
    except (OSError, RuntimeError) as error:  # a name too long for the file system, a loop
        reason = getattr(error, "strerror", None) or one_line(error)
        return _MemberFile(label, None, None, f"{label}: cannot be looked up ({reason})")
    if unsafe:
        return _MemberFile(label, None, None, f"{label}: {unsafe}")
    if not found:
        return _MemberFile(label, None, None, f"{label}: file not found")
    try:
        return _MemberFile(label, path, sha256_file(path), None)
    except EvidenceError as error:
        return _MemberFile(label, None, None, f"{label}: {one_line(error)}")


def _stale(label: str, recorded: str, actual: str) -> str:
    """Describe a member whose file no longer hashes as the manifest records."""
    return (
        f"{label}: stale hash: the manifest records sha256 {_short(recorded)} "
        f"but the file hashes to {_short(actual)}"
    )


def _member_problems(
    member: Mapping[str, Any], file: _MemberFile, *, codec_width: int
) -> list[str]:
    """Check one member's file: safe path, present, hash as recorded, inputs as declared."""
    if file.problem is not None or file.path is None or file.sha256 is None:
        return [file.problem or f"{file.label}: file not found"]
    problems = []
    if file.sha256 != member["sha256"]:
        problems.append(_stale(file.label, member["sha256"], file.sha256))
    problems += _input_problems(file.path, label=file.label, codec_width=codec_width)
    return problems


def _check_foreign(
    manifest_path: Path, document: Mapping[str, Any], *, registry_path: Path | None
) -> ManifestCheck:
    """Read another tool's manifest for its members: each file missing or stale, one line each.

    Members are read as the field writes them (``members: [{id, onnx, seed, sha256}]``,
    paths relative to the manifest); the interface checks of our format are not applied,
    since a foreign manifest declares its inputs its own way.
    """
    name = manifest_path.name
    raw = document.get("members")
    problems: list[str] = []
    if not isinstance(raw, list) or not raw:
        problems.append(f"{name} lists no members, so no member file can be checked")
        raw = []
    offered: list[OfferedModel] = []
    readable: list[dict[str, Any]] = []
    for index, member in enumerate(raw[:MAX_FOREIGN_MEMBERS]):
        item = member if isinstance(member, dict) else {}
        ident, relative, recorded = item.get("id"), item.get("onnx"), item.get("sha256")
        seed = item.get("seed")
        seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
        label = f"member {shown(ident) if isinstance(ident, str) else f'#{index}'}"
        if not isinstance(relative, str) or not relative:
            problems.append(f"{label}: names no 'onnx' file, so it cannot be checked")
            offered.append(OfferedModel(label, seed, None))
            continue
        label = f"{label} ({shown(relative)})"
        file = _member_file(relative, root=manifest_path.parent, label=label)
        offered.append(OfferedModel(label, seed, file.sha256))
        if file.problem is not None or file.sha256 is None:
            problems.append(file.problem or f"{label}: file not found")
        elif not _is_sha256(recorded):
            problems.append(
                f"{label}: the manifest records no sha256 (found {shown(recorded)}), so its "
                "file cannot be checked against it"
            )
        elif recorded != file.sha256:
            problems.append(_stale(label, recorded, file.sha256))
        if isinstance(ident, str) and _is_sha256(recorded):
            readable.append({"id": ident, "sha256": recorded})
    if len(raw) > MAX_FOREIGN_MEMBERS:
        problems.append(
            f"{name} lists {len(raw)} members; only the first {MAX_FOREIGN_MEMBERS} were checked"
        )
    if registry_path is not None:
        problems += _registry_problems(readable, Path(registry_path))
    differences = schema_differences(document, SCHEMA_FILE, format_name="ensemble manifest")
    return ManifestCheck(manifest_path, tuple(problems), tuple(offered), differences)


def _is_sha256(value: Any) -> TypeGuard[str]:
    """Return whether a value is a lower-case hex sha256."""
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _input_problems(path: Path, *, label: str, codec_width: int) -> list[str]:
    """Compare a model's declared inputs with six features plus the manifest's codec width."""
    try:
        raw = read_input(path, kind=ONNX_GRAPH, max_bytes=_MAX_MODEL_BYTES)
    except EvidenceError as error:
        return [f"{label}: {one_line(error)}"]
    try:
        model = onnx.load_model_from_string(raw)
    except (DecodeError, ValueError, OSError) as error:
        return [f"{label}: not a readable ONNX file ({type(error).__name__})"]
    widths = _input_widths(model)
    problems = []
    if widths.get(FEATURES_INPUT) != len(FEATURES):
        problems.append(
            f"{label}: input '{FEATURES_INPUT}' has width {widths.get(FEATURES_INPUT)}, "
            f"expected {len(FEATURES)}"
        )
    model_codec = widths.get(CODEC_INPUT)
    extra = sorted(set(widths) - {FEATURES_INPUT, CODEC_INPUT})
    if extra:
        problems.append(f"{label}: unexpected input(s) {', '.join(extra)}")
    if codec_width and model_codec is None:
        problems.append(
            f"{label}: codec width mismatch: the model has no '{CODEC_INPUT}' input but the "
            f"manifest's codec block has width {codec_width}"
        )
    elif not codec_width and model_codec is not None:
        problems.append(
            f"{label}: codec width mismatch: the model reads a codec block of width "
            f"{model_codec} but the manifest declares none"
        )
    elif model_codec is not None and model_codec != codec_width:
        problems.append(
            f"{label}: codec width mismatch: the model's '{CODEC_INPUT}' input has width "
            f"{model_codec} but the manifest's codec block has width {codec_width}"
        )
    return problems


def _input_widths(model: onnx.ModelProto) -> dict[str, int | None]:
    """Return each real graph input's last dimension (None when not a fixed number)."""
    constants = {tensor.name for tensor in model.graph.initializer}
    widths: dict[str, int | None] = {}
    for value in model.graph.input:
        if value.name in constants:
            continue
        dims = value.type.tensor_type.shape.dim
        last = dims[-1] if dims else None
        fixed = last is not None and last.HasField("dim_value") and len(dims) == 2
        widths[value.name] = int(last.dim_value) if fixed and last is not None else None
    return widths


def _registry_problems(members: Sequence[Mapping[str, Any]], registry_path: Path) -> list[str]:
    """Compare each member's hash with the registry row of the same id."""
    try:
        registry = load_registry(registry_path)
    except EngineError as error:
        return [f"registry: {error}"]
    rows = {entry.id: entry for entry in registry.models}
    problems = []
    for member in members:
        entry = rows.get(member["id"])
        if entry is None:
            problems.append(f"member {member['id']}: no row with this id in {registry_path.name}")
        elif entry.sha256 != member["sha256"]:
            problems.append(
                f"member {member['id']}: stale hash: {registry_path.name}#{entry.pointer} records "
                f"sha256 {_short(entry.sha256)} but the manifest records {_short(member['sha256'])}"
            )
    return problems


def _path_problem(relative: str, root: Path) -> str | None:
    """Return why a member path is unsafe, or None when it stays inside the manifest's folder."""
    if "\\" in relative or "\x00" in relative:
        return "path must use '/' separators and no NUL"
    posix = PurePosixPath(relative)
    if posix.is_absolute() or relative.startswith("~"):
        return "path must be relative to the manifest's folder"
    if ".." in posix.parts:
        return "path must not contain '..'"
    if not (root / relative).resolve().is_relative_to(root.resolve()):
        return "path resolves outside the manifest's folder"
    return None


def _short(digest: str) -> str:
    """Abbreviate a sha256 for messages."""
    return digest[:12] + "…"


def _fmt(value: float) -> str:
    """Render a metric (NaN as NaN)."""
    return "NaN" if math.isnan(value) else f"{value:.4f}"
