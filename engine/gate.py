"""The promotion gate: per-seed leave-one-source-out (LOSO) PLCC reports judged over seeds."""

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import EvidenceError, UsageError
from engine.evidence import encode_float
from engine.loso_report import LosoReport, exact_mean

DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
# The fewest held-out sources (LOSO folds) a promotion may rest on. Each fold is one draw of
# "how well does the model do on a source it never saw"; a mean over 3 such draws says
# little (docs/promotion.md, "How many sources"). The policy and the App take this default.
DEFAULT_MIN_SOURCES = 5
# The fewest any gate may ask for: leave-one-source-out needs one source held out and at
# least one other to train on, so a report always holds out two or more.
LEAST_MIN_SOURCES = 2
# Comparisons against thresholds forgive float rounding of this size (sums of fold PLCCs).
TOLERANCE = 1e-12


@dataclass(frozen=True)
class GateThresholds:
    """What the LOSO evidence must show; ``seeds`` are the seeds expected, no more and no fewer."""

    mean_plcc: float = 0.95
    max_spread: float = 0.005
    per_seed_min: float = 0.95
    per_fold_min: float | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    min_sources: int = DEFAULT_MIN_SOURCES

    def __post_init__(self) -> None:
        """Refuse out-of-range thresholds, a non-positive source count, and a bad seed list."""
        for name in ("mean_plcc", "per_seed_min", "per_fold_min"):
            value = getattr(self, name)
            if value is not None and not (_finite(value) and -1.0 <= value <= 1.0):
                raise UsageError(f"{name} must be a number in [-1, 1], not {value!r}")
        if not (_finite(self.max_spread) and self.max_spread >= 0.0):
            raise UsageError(f"max_spread must be a non-negative number, not {self.max_spread!r}")
        if (
            isinstance(self.min_sources, bool)
            or not isinstance(self.min_sources, int)
            or self.min_sources < LEAST_MIN_SOURCES
        ):
            raise UsageError(
                f"min_sources must be an integer of at least {LEAST_MIN_SOURCES}, "
                f"not {self.min_sources!r}"
            )
        if not self.seeds:
            raise UsageError("the gate needs at least one expected seed")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise UsageError(f"seeds must be non-negative integers, not {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"seeds must not repeat: {_seed_list(self.seeds)}")

    def to_dict(self) -> dict[str, Any]:
        """Return the thresholds as a JSON-ready dict."""
        return {
            "mean_plcc": self.mean_plcc,
            "max_spread": self.max_spread,
            "per_seed_min": self.per_seed_min,
            "per_fold_min": self.per_fold_min,
            "seeds": list(self.seeds),
            "min_sources": self.min_sources,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GateThresholds":
        """Rebuild thresholds from ``to_dict`` output (e.g. as recorded in a verdict)."""
        return cls(
            mean_plcc=float(data["mean_plcc"]),
            max_spread=float(data["max_spread"]),
            per_seed_min=float(data["per_seed_min"]),
            per_fold_min=None if data["per_fold_min"] is None else float(data["per_fold_min"]),
            seeds=tuple(int(seed) for seed in data["seeds"]),
            min_sources=int(data["min_sources"]),
        )


@dataclass(frozen=True)
class SeedRow:
    """One seed's line in the gate: mean fold PLCC, its weakest and strongest folds, NaN folds."""

    seed: int
    mean_plcc: float
    min_plcc: float
    min_fold: str | None
    max_plcc: float
    max_fold: str | None
    n_folds: int
    nan_folds: tuple[str, ...]
    dry_run: bool
    corpus_hash: str

    def to_dict(self) -> dict[str, Any]:
        """Return the row as a JSON-ready dict (NaN as null)."""
        return {
            "seed": self.seed,
            "mean_plcc": encode_float(self.mean_plcc),
            "min_plcc": encode_float(self.min_plcc),
            "min_fold": self.min_fold,
            "max_plcc": encode_float(self.max_plcc),
            "max_fold": self.max_fold,
            "n_folds": self.n_folds,
            "nan_folds": list(self.nan_folds),
            "dry_run": self.dry_run,
            "corpus_hash": self.corpus_hash,
        }


@dataclass(frozen=True)
class FailingFold:
    """A fold that failed the gate: NaN, or below the per-fold floor."""

    seed: int
    held_out: str


@dataclass(frozen=True)
class GateReport:
    """The gate's word on a set of LOSO reports: pass/fail, one-line reasons, and the numbers."""

    passed: bool
    reasons: tuple[str, ...]
    per_seed: tuple[SeedRow, ...]
    failing_seeds: tuple[int, ...]
    failing_folds: tuple[FailingFold, ...]
    missing_seeds: tuple[int, ...]
    unexpected_seeds: tuple[int, ...]
    mean_plcc: float
    spread: float
    thresholds: GateThresholds
    corpus_hash: str | None
    n_sources: int

    @property
    def source_count(self) -> str:
        """Return the evidence count as one phrase: ``3 held-out sources, at least 5 needed``."""
        return _source_count(self.n_sources, self.thresholds.min_sources)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict (NaN as null); the verdict embeds it as ``gate``."""
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "thresholds": self.thresholds.to_dict(),
            "mean_plcc": encode_float(self.mean_plcc),
            "spread": encode_float(self.spread),
            "corpus_hash": self.corpus_hash,
            "n_sources": self.n_sources,
            "per_seed": [row.to_dict() for row in self.per_seed],
            "failing_seeds": list(self.failing_seeds),
            "failing_folds": [
                {"seed": fold.seed, "held_out": fold.held_out} for fold in self.failing_folds
            ],
            "missing_seeds": list(self.missing_seeds),
            "unexpected_seeds": list(self.unexpected_seeds),
        }

    def render_text(self) -> str:
        """Return a short terminal table: one line per seed, the summary, failing folds, reasons."""
        t = self.thresholds
        lines = [
            f"LOSO gate: {'PASS' if self.passed else 'FAIL'} "
            f"({len(self.per_seed)} seed report(s), expected seeds {_seed_list(t.seeds)}; "
            f"{self.source_count})",
            f"{'seed':>4}  {'mean PLCC':>9}  {'min fold':<20}  {'max fold':<20}  {'NaN folds':<12}  status",
        ]
        failing = set(self.failing_seeds)
        for row in self.per_seed:
            nan = ",".join(row.nan_folds) or "-"
            status = "FAIL" if row.seed in failing else "ok"
            if row.dry_run:
                status += " (dry run)"
            lines.append(
                f"{row.seed:>4}  {_fmt(row.mean_plcc):>9}  {_fold_cell(row.min_plcc, row.min_fold):<20}  "
                f"{_fold_cell(row.max_plcc, row.max_fold):<20}  {nan:<12}  {status}"
            )
        for seed in self.missing_seeds:
            lines.append(f"{seed:>4}  {'-':>9}  {'-':<20}  {'-':<20}  {'-':<12}  MISSING")
        lines.append(
            f"mean of seed means {_fmt(self.mean_plcc)} (needs >= {t.mean_plcc:g}), "
            f"spread {_fmt(self.spread)} (needs <= {t.max_spread:g}), "
            f"per-seed floor {t.per_seed_min:g}"
            + (f", per-fold floor {t.per_fold_min:g}" if t.per_fold_min is not None else "")
        )
        if self.failing_folds:
            shown = ", ".join(f"seed {f.seed} {f.held_out}" for f in self.failing_folds)
            lines.append(f"failing folds: {shown}")
        lines.extend(f"  - {reason}" for reason in self.reasons)
        return "\n".join(lines) + "\n"


def evaluate_gate(reports: Sequence[LosoReport], thresholds: GateThresholds) -> GateReport:
    """Judge LOSO reports over seeds; every failed condition gives one one-line reason.

    Passes only when every seed holds out at least ``min_sources`` sources (the fewest over
    the seeds is the count reported), the expected seeds are all there and nothing else
    is, no report is a dry run, all were trained on one corpus with the same folds, no fold PLCC is NaN, the
    mean of the per-seed mean PLCCs is >= ``mean_plcc``, max - min of those means is
    <= ``max_spread``, every seed mean is >= ``per_seed_min`` and, when given, every fold
    is >= ``per_fold_min`` (all comparisons forgive ``TOLERANCE`` of float rounding).
    """
    if not reports:
        raise EvidenceError("no LOSO reports to judge")
    ordered = sorted(reports, key=lambda report: report.seed)
    repeated = sorted(seed for seed, n in Counter(r.seed for r in ordered).items() if n > 1)
    if repeated:
        raise EvidenceError(f"seed(s) {_seed_list(repeated)} reported more than once")
    found = _Findings()
    missing, unexpected = _check_seed_set(ordered, thresholds, found)
    for report in ordered:
        if report.dry_run:
            found.add(
                f"seed {report.seed} is a dry run (dry_run: true); a dry run never promotes",
                seed=report.seed,
            )
    corpus_hash = _check_corpora(ordered, found)
    _check_fold_sets(ordered, found)
    for report in ordered:
        for held_out in report.nan_folds:
            found.add(
                f"seed {report.seed} fold {held_out}: PLCC is NaN (null in the report), "
                "so the seed mean is NaN",
                seed=report.seed,
                fold=held_out,
            )
    n_sources = min(len(report.folds) for report in ordered)
    if n_sources < thresholds.min_sources:
        found.add(
            f"too few held-out sources: {_source_count(n_sources, thresholds.min_sources)} "
            "(a leave-one-source-out mean over so few sources says little)"
        )
    rows = tuple(_seed_row(report) for report in ordered)
    means = [row.mean_plcc for row in rows]
    mean = exact_mean(means)
    spread = math.nan if math.isnan(mean) else max(means) - min(means)
    _check_thresholds(ordered, rows, mean=mean, spread=spread, thresholds=thresholds, found=found)
    return GateReport(
        passed=not found.reasons,
        reasons=tuple(found.reasons),
        per_seed=rows,
        failing_seeds=tuple(sorted(found.seeds)),
        failing_folds=tuple(found.folds),
        missing_seeds=missing,
        unexpected_seeds=unexpected,
        mean_plcc=mean,
        spread=spread,
        thresholds=thresholds,
        corpus_hash=corpus_hash,
        n_sources=n_sources,
    )


class _Findings:
    """The gate's working list: reasons in order, and the seeds and folds they blame."""

    def __init__(self) -> None:
        """Start with nothing found."""
        self.reasons: list[str] = []
        self.seeds: set[int] = set()
        self.folds: list[FailingFold] = []

    def add(self, reason: str, *, seed: int | None = None, fold: str | None = None) -> None:
        """Record one reason, blaming a seed and, optionally, one of its folds."""
        self.reasons.append(reason)
        if seed is not None:
            self.seeds.add(seed)
            if fold is not None:
                self.folds.append(FailingFold(seed, fold))


def _check_seed_set(
    reports: Sequence[LosoReport], thresholds: GateThresholds, found: _Findings
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Add a reason per expected seed without a report and per report of an unexpected seed."""
    present = [report.seed for report in reports]
    expected = _seed_list(thresholds.seeds)
    missing = tuple(seed for seed in sorted(thresholds.seeds) if seed not in present)
    unexpected = tuple(seed for seed in present if seed not in thresholds.seeds)
    for seed in missing:
        found.add(f"missing seed {seed}: no loso_seed{seed}.json (expected seeds {expected})")
    for seed in unexpected:
        found.add(f"unexpected seed {seed} (expected seeds {expected})", seed=seed)
    return missing, unexpected


def _check_corpora(reports: Sequence[LosoReport], found: _Findings) -> str | None:
    """Add a reason per seed trained on other data than the majority; return the common hash or None."""
    counts = Counter(report.corpus.content_hash for report in reports)
    if len(counts) == 1:
        return reports[0].corpus.content_hash
    top = max(counts.values())
    reference = next(r for r in reports if counts[r.corpus.content_hash] == top)
    for report in reports:
        if report.corpus.content_hash != reference.corpus.content_hash:
            found.add(
                f"mixed corpora: seed {reference.seed} and {report.seed} were trained on different "
                f"data (corpus {_short(reference.corpus.content_hash)} vs "
                f"{_short(report.corpus.content_hash)})",
                seed=report.seed,
            )
    return None


def _check_fold_sets(reports: Sequence[LosoReport], found: _Findings) -> None:
    """Add a reason per seed whose held-out sources differ from the first seed's (a dropped fold)."""
    reference = reports[0]
    expected = {fold.held_out for fold in reference.folds}
    for report in reports[1:]:
        held = {fold.held_out for fold in report.folds}
        if held == expected:
            continue
        parts = []
        if expected - held:
            parts.append(f"lacks fold(s) {_names(expected - held)}")
        if held - expected:
            parts.append(f"has extra fold(s) {_names(held - expected)}")
        found.add(
            f"seed {report.seed} {' and '.join(parts)} compared with seed {reference.seed}; "
            "every seed must hold out the same sources",
            seed=report.seed,
        )


def _check_thresholds(
    reports: Sequence[LosoReport],
    rows: Sequence[SeedRow],
    *,
    mean: float,
    spread: float,
    thresholds: GateThresholds,
    found: _Findings,
) -> None:
    """Add the numeric reasons: mean, spread, per-seed floor, per-fold floor (NaN already reported)."""
    t = thresholds
    if not math.isnan(mean) and mean < t.mean_plcc - TOLERANCE:
        found.add(f"mean PLCC over seeds {_vs(mean, t.mean_plcc)} is below {t.mean_plcc:g}")
    if not math.isnan(spread) and spread > t.max_spread + TOLERANCE:
        low = min(rows, key=lambda row: row.mean_plcc)
        high = max(rows, key=lambda row: row.mean_plcc)
        found.add(
            f"spread of per-seed mean PLCC {_vs(spread, t.max_spread)} (seed {low.seed} "
            f"{_fmt(low.mean_plcc)} to seed {high.seed} {_fmt(high.mean_plcc)}) "
            f"exceeds {t.max_spread:g}"
        )
    for row in rows:
        if not math.isnan(row.mean_plcc) and row.mean_plcc < t.per_seed_min - TOLERANCE:
            found.add(
                f"seed {row.seed} mean PLCC {_vs(row.mean_plcc, t.per_seed_min)} is below the "
                f"per-seed floor {t.per_seed_min:g}",
                seed=row.seed,
            )
    floor = t.per_fold_min
    if floor is None:
        return
    for report in reports:
        for fold in report.folds:
            if not math.isnan(fold.plcc) and fold.plcc < floor - TOLERANCE:
                found.add(
                    f"seed {report.seed} fold {fold.held_out}: PLCC {_vs(fold.plcc, floor)} is "
                    f"below the per-fold floor {floor:g}",
                    seed=report.seed,
                    fold=fold.held_out,
                )


def _seed_row(report: LosoReport) -> SeedRow:
    """Summarise one seed: mean PLCC (NaN with any NaN fold) and its weakest and strongest finite folds."""
    finite = [fold for fold in report.folds if not math.isnan(fold.plcc)]
    low = min(finite, key=lambda fold: fold.plcc) if finite else None
    high = max(finite, key=lambda fold: fold.plcc) if finite else None
    return SeedRow(
        seed=report.seed,
        mean_plcc=report.mean_plcc,
        min_plcc=low.plcc if low is not None else math.nan,
        min_fold=low.held_out if low is not None else None,
        max_plcc=high.plcc if high is not None else math.nan,
        max_fold=high.held_out if high is not None else None,
        n_folds=len(report.folds),
        nan_folds=report.nan_folds,
        dry_run=report.dry_run,
        corpus_hash=report.corpus.content_hash,
    )


def _source_count(n_sources: int, minimum: int) -> str:
    """Render ``3 held-out sources, at least 5 needed``."""
    return f"{n_sources} held-out source{'' if n_sources == 1 else 's'}, at least {minimum} needed"


def _finite(value: object) -> bool:
    """Return whether a value is a finite real number (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: float) -> str:
    """Render a PLCC-scale number for a reason or table (NaN as NaN)."""
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def _vs(value: float, limit: float) -> str:
    """Render a value beside its threshold with enough digits that the two never print the same."""
    for digits in (4, 6, 9):
        if round(value, digits) != round(limit, digits):
            return f"{value:.{digits}f}"
    return repr(value)


def _fold_cell(value: float, name: str | None) -> str:
    """Render ``0.9412 (src03)`` for the table."""
    return "-" if name is None else f"{_fmt(value)} ({name})"


def _seed_list(seeds: Iterable[int]) -> str:
    """Render seeds as ``0,1,2``."""
    return ",".join(str(seed) for seed in seeds)


def _names(names: Iterable[str]) -> str:
    """Render a set of fold names, sorted, or ``none``."""
    ordered = sorted(names)
    return ", ".join(ordered) if ordered else "none"


def _short(digest: str) -> str:
    """Abbreviate a sha256 for messages."""
    return digest[:12] + "…"
