"""LOSO reports (``loso_seed<N>.json``): the one fold type, and the report's writer and reader.

``engine.train.loso`` trains and writes them; ``engine.gate`` reads and judges them. This
module imports no torch, so reading evidence never needs the training extra.
"""

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EvidenceError, ReportError
from engine.evidence import decode_float, encode_float, read_json, schema_problems, write_json
from engine.hashing import sha256_bytes

LOSO_SCHEMA = "model-guard/loso-report"
LOSO_SCHEMA_VERSION = 2
"""Version 2 binds the seed's final model; version 1 reports are still read (and judged by the
gate) but bind no model, so they can never back a promotion."""
LOSO_SCHEMA_FILE = "loso-report.schema.json"
LOSO_GLOB = "loso_seed*.json"
# A report's own summary must agree with its folds to this many PLCC units.
_SUMMARY_TOLERANCE = 1e-6
_NAME = re.compile(r"loso_seed(0|[1-9][0-9]*)\.json")


@dataclass(frozen=True)
class Corpus:
    """The feature table a seed was trained and evaluated on, bound by decoded-content hash."""

    path: str
    content_hash: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        """Return the corpus as the report writes it."""
        return {"path": self.path, "content_hash": self.content_hash, "rows": self.rows}


@dataclass(frozen=True)
class FinalModel:
    """The model that ships for a seed: trained on every source with the report's settings and seed.

    ``path`` is relative to the report's folder ('/'-separated); ``sha256`` is of its bytes.
    """

    path: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """Return the binding as the report writes it."""
        return {"path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class Fold:
    """One LOSO fold: the source held out, row counts, and the metrics on it (NaN when undefined)."""

    held_out: str
    n_train: int
    n_val: int
    plcc: float
    srocc: float
    rmse: float

    def to_dict(self) -> dict[str, Any]:
        """Return the fold as the report writes it: NaN as null."""
        return {
            "held_out": self.held_out,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "plcc": encode_float(self.plcc),
            "srocc": encode_float(self.srocc),
            "rmse": encode_float(self.rmse),
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> "Fold":
        """Build a fold from a schema-valid JSON object (null metrics become NaN)."""
        return cls(
            held_out=str(entry["held_out"]),
            n_train=int(entry["n_train"]),
            n_val=int(entry["n_val"]),
            plcc=decode_float(entry["plcc"]),
            srocc=decode_float(entry["srocc"]),
            rmse=decode_float(entry["rmse"]),
        )


@dataclass(frozen=True)
class SeedResult:
    """Every fold of one seed, in held-out source order."""

    seed: int
    folds: tuple[Fold, ...]

    def summary(self) -> dict[str, Any]:
        """Return the report summary: mean/std null when any fold is NaN; min/max over finite folds."""
        values = [fold.plcc for fold in self.folds]
        nan_folds = [fold.held_out for fold in self.folds if math.isnan(fold.plcc)]
        finite = [value for value in values if not math.isnan(value)]
        return {
            "mean_plcc": None if nan_folds else math.fsum(values) / len(values),
            "std_plcc": None if nan_folds else statistics.pstdev(values),
            "min_plcc": min(finite) if finite else None,
            "max_plcc": max(finite) if finite else None,
            "n_folds": len(self.folds),
            "nan_folds": nan_folds,
        }


@dataclass(frozen=True)
class LosoReport:
    """One validated ``loso_seed<N>.json``; ``sha256`` is of the exact bytes that were parsed."""

    path: Path
    sha256: str
    seed: int
    dry_run: bool
    corpus: Corpus
    folds: tuple[Fold, ...]
    hyperparameters: Mapping[str, Any] = field(repr=False, compare=False)
    final_model: FinalModel | None = None
    schema_version: int = LOSO_SCHEMA_VERSION

    @property
    def nan_folds(self) -> tuple[str, ...]:
        """Return the held-out names of folds whose PLCC is NaN, in report order."""
        return tuple(fold.held_out for fold in self.folds if math.isnan(fold.plcc))

    @property
    def mean_plcc(self) -> float:
        """Return the mean fold PLCC; NaN when any fold is NaN (a NaN fold is never dropped)."""
        return exact_mean([fold.plcc for fold in self.folds])


def loso_document(
    result: SeedResult,
    *,
    corpus: Corpus,
    dry_run: bool,
    hyperparameters: Mapping[str, Any],
    provenance: Mapping[str, Any],
    final_model: FinalModel,
) -> dict[str, Any]:
    """Return one seed's ``model-guard/loso-report`` document, checked against its schema."""
    document = {
        "schema": LOSO_SCHEMA,
        "schema_version": LOSO_SCHEMA_VERSION,
        "seed": result.seed,
        "dry_run": dry_run,
        "corpus": corpus.to_dict(),
        "hyperparameters": dict(hyperparameters),
        "final_model": final_model.to_dict(),
        "folds": [fold.to_dict() for fold in result.folds],
        "summary": result.summary(),
        "run_provenance": dict(provenance),
    }
    problems = schema_problems(document, LOSO_SCHEMA_FILE)
    if problems:
        raise ReportError(f"LOSO report for seed {result.seed} breaks its schema: {problems[0]}")
    return document


def write_loso_report(out_dir: Path, document: Mapping[str, Any]) -> Path:
    """Write a ``loso_document`` as ``out_dir/loso_seed<N>.json`` (atomically); return its path."""
    path = Path(out_dir) / f"loso_seed{document['seed']}.json"
    write_json(path, document)
    return path


def load_loso_reports(directory: Path) -> tuple[LosoReport, ...]:
    """Read and validate every ``loso_seed<N>.json`` in a folder, sorted by seed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvidenceError(f"{directory}: LOSO report folder not found")
    paths = sorted(directory.glob(LOSO_GLOB))
    if not paths:
        raise EvidenceError(
            f"{directory}: no LOSO reports (loso_seed<N>.json) found; run 'model-guard loso' first"
        )
    reports = [load_loso_report(path) for path in paths]
    seen: dict[int, Path] = {}
    for report in reports:
        if report.seed in seen:
            raise EvidenceError(
                f"{report.path}: seed {report.seed} is also reported by {seen[report.seed].name}"
            )
        seen[report.seed] = report.path
    return tuple(sorted(reports, key=lambda report: report.seed))


def load_loso_report(path: Path) -> LosoReport:
    """Read one LOSO report: schema-valid, named for its seed, and consistent with its own summary."""
    path = Path(path)
    match = _NAME.fullmatch(path.name)
    if match is None:
        raise EvidenceError(
            f"{path}: a LOSO report must be named loso_seed<N>.json (N without leading zeros)"
        )
    loaded = read_json(path)
    document = loaded.value
    problems = schema_problems(document, LOSO_SCHEMA_FILE)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EvidenceError(f"{path}: {problems[0]}{more}")
    seed = int(document["seed"])
    if seed != int(match.group(1)):
        raise EvidenceError(f"{path}: /seed is {seed} but the file name says seed {match.group(1)}")
    corpus = document["corpus"]
    final = document.get("final_model")
    report = LosoReport(
        path=path,
        sha256=sha256_bytes(loaded.raw),
        seed=seed,
        dry_run=bool(document["dry_run"]),
        corpus=Corpus(
            path=str(corpus["path"]),
            content_hash=str(corpus["content_hash"]),
            rows=int(corpus["rows"]),
        ),
        folds=tuple(Fold.from_dict(entry) for entry in document["folds"]),
        hyperparameters=dict(document["hyperparameters"]),
        final_model=None
        if final is None
        else FinalModel(path=str(final["path"]), sha256=str(final["sha256"])),
        schema_version=int(document["schema_version"]),
    )
    _check_summary(report, document["summary"])
    return report


def exact_mean(values: Sequence[float]) -> float:
    """Return the exactly rounded mean; NaN when any value is NaN or there are none."""
    if not values or any(math.isnan(value) for value in values):
        return math.nan
    return math.fsum(values) / len(values)


def _check_summary(report: LosoReport, summary: Mapping[str, Any]) -> None:
    """Refuse a report whose summary contradicts its folds (a dropped or hidden NaN fold above all)."""
    prefix = f"{report.path}: /summary"
    names = [fold.held_out for fold in report.folds]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise EvidenceError(f"{report.path}: /folds holds out {', '.join(repeated)} more than once")
    if summary["n_folds"] != len(report.folds):
        raise EvidenceError(
            f"{prefix}/n_folds is {summary['n_folds']} but /folds has {len(report.folds)}"
        )
    nan = set(report.nan_folds)
    listed = set(summary["nan_folds"])
    if listed != nan:
        raise EvidenceError(
            f"{prefix}/nan_folds lists {_names(listed)} but the folds with null plcc are {_names(nan)}"
        )
    recorded = summary["mean_plcc"]
    if nan:
        if recorded is not None:
            raise EvidenceError(
                f"{prefix}/mean_plcc must be null when any fold is NaN, not {recorded}"
            )
        return
    checks = {
        "mean_plcc": report.mean_plcc,
        "min_plcc": min(fold.plcc for fold in report.folds),
        "max_plcc": max(fold.plcc for fold in report.folds),
    }
    for name, value in checks.items():
        given = summary[name]
        if given is None or abs(float(given) - value) > _SUMMARY_TOLERANCE:
            raise EvidenceError(f"{prefix}/{name} is {given} but the folds give {value:.6g}")


def _names(names: Iterable[str]) -> str:
    """Render a set of fold names, sorted, or ``none``."""
    ordered = sorted(names)
    return ", ".join(ordered) if ordered else "none"
