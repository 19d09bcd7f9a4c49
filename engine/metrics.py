"""Agreement of a quality model's predictions with subjective scores (MOS), with bootstrap CIs.

Metrics: PLCC (Pearson), SROCC (Spearman, average ranks for ties), KROCC (Kendall tau-b),
RMSE, and optionally the PLCC after a monotonic 4-parameter logistic fit (VQEG / ITU-T
P.1401 practice, https://www.itu.int/rec/T-REC-P.1401).

NaN semantics. Metrics never raise or warn on bad *data* (only on malformed input); they
come back NaN with a ``reason``, and the quality gate fails a NaN metric with that reason:

- rows whose *target* is non-finite are dropped and counted in ``n_dropped``: a missing
  subjective score says nothing about the model;
- a non-finite *prediction* on any row (even one whose target is missing) makes every
  metric NaN: a model that emits NaN must fail the gate, not have its bad rows dropped;
- fewer than 3 usable rows make every metric NaN;
- constant predictions (or targets) make the correlations NaN; RMSE is still reported.

Bootstrap. ``compute_metrics(..., bootstrap=B)`` draws B resamples of the usable rows with
replacement (with ``groups``: a cluster bootstrap that draws whole source groups, so rows
of one source move together) and reports percentile intervals for the gate metrics PLCC,
SROCC and RMSE. Resample ``i`` comes from the ``i``-th child of
``numpy.random.default_rng(seed)``, so results are reproducible and do not depend on
batching or threads. Every resample is evaluated exactly: SROCC re-ranks the resample with
average ranks for ties. Resamples are batched as integer copy counts on the rows sorted
once, ranks come from cumulative counts, and batches run on a few threads.
"""

import math
import operator
import os
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from engine.errors import ReportError, UsageError
from engine.evidence import decode_float, encode_float

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
CountArray = npt.NDArray[np.signedinteger[Any]]

GATE_METRICS = ("plcc", "srocc", "rmse")
"""The metrics that get bootstrap intervals, in their canonical order."""

MIN_ROWS = 3
"""Fewer usable rows than this make every metric NaN."""

_CHUNK_ELEMENTS = 1 << 20  # resamples x rows per batch: 8 MB per float64 array
_WORKERS = max(1, min(4, os.cpu_count() or 1))  # numpy releases the GIL in the batch kernels
_FLAT_TOLERANCE = 1e-12  # relative variance below which a resample counts as constant
_MAX_FIT_EVALUATIONS = 2_000


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[low, high]``, e.g. a bootstrap percentile interval."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Return whether ``value`` lies in the interval (ends included)."""
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, float]:
        """Return the interval as a JSON-ready dict."""
        return {"low": self.low, "high": self.high}


class _Intervals(Mapping[str, Interval]):
    """A read-only, hashable, picklable mapping from gate metric to interval, in canonical order."""

    __slots__ = ("_items",)

    def __init__(self, intervals: Mapping[str, Interval]) -> None:
        """Copy ``intervals``, whose keys must be among GATE_METRICS."""
        self._items = tuple((key, intervals[key]) for key in GATE_METRICS if key in intervals)
        if len(self._items) != len(intervals):
            raise UsageError(
                f"ci keys must be among {', '.join(GATE_METRICS)}: {sorted(intervals)}"
            )

    def __getitem__(self, key: str) -> Interval:
        """Return the interval of metric ``key``."""
        for name, interval in self._items:
            if name == key:
                return interval
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        """Iterate over the metric names in canonical order."""
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        """Return the number of intervals."""
        return len(self._items)

    def __hash__(self) -> int:
        """Hash the (name, interval) pairs."""
        return hash(self._items)

    def __repr__(self) -> str:
        """Show the intervals like a dict."""
        return repr(dict(self._items))


@dataclass(frozen=True)
class LogisticFit:
    """A fitted 4-parameter logistic and the PLCC through it; NaN PLCC with a reason on failure."""

    b1: float
    b2: float
    b3: float
    b4: float
    plcc: float
    reason: str | None = None

    def apply(self, pred: npt.ArrayLike) -> FloatArray:
        """Map predictions through the fitted logistic."""
        return _logistic(_vector("predictions", pred), self.b1, self.b2, self.b3, self.b4)


@dataclass(frozen=True)
class MetricReport:
    """The metrics of one model on one set of rows, with bootstrap intervals when requested.

    ``n`` is the number of rows used (rows with a finite target); ``n_dropped`` counts the
    rows dropped because their target was non-finite. Non-finite predictions are never
    dropped: they make every metric NaN, with ``reason`` saying how many there were.
    ``plcc_logistic`` is None when the fit was not requested and NaN when it failed.
    ``ci`` maps those of plcc, srocc and rmse that could be bootstrapped to intervals
    (empty without bootstrap); it is stored as a read-only, hashable, picklable mapping in
    canonical key order (a dict would break hashing, a MappingProxyType pickling).
    ``n_resamples`` is how many resamples were drawn (0 when the bootstrap was off or the
    metrics were not computable); ``grouped`` says they drew source groups. NaNs are
    normalised to ``math.nan`` so a report equals its round trip through ``to_dict`` and
    ``from_dict``.
    """

    n: int
    n_dropped: int
    plcc: float
    srocc: float
    krocc: float
    rmse: float
    plcc_logistic: float | None = None
    ci: Mapping[str, Interval] = field(default_factory=dict)
    confidence: float = 0.95
    n_resamples: int = 0
    grouped: bool = False
    reason: str | None = None

    def __post_init__(self) -> None:
        """Normalise floats (every NaN to ``math.nan``) and freeze ``ci``."""
        for name in ("plcc", "srocc", "krocc", "rmse", "confidence"):
            object.__setattr__(self, name, _plain_float(getattr(self, name)))
        if self.plcc_logistic is not None:
            object.__setattr__(self, "plcc_logistic", _plain_float(self.plcc_logistic))
        object.__setattr__(self, "ci", _Intervals(self.ci))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: NaN as null, ``plcc_logistic`` left out when not requested."""
        data: dict[str, Any] = {
            "n": self.n,
            "n_dropped": self.n_dropped,
            "plcc": encode_float(self.plcc),
            "srocc": encode_float(self.srocc),
            "krocc": encode_float(self.krocc),
            "rmse": encode_float(self.rmse),
        }
        if self.plcc_logistic is not None:
            data["plcc_logistic"] = encode_float(self.plcc_logistic)
        data["ci"] = {key: interval.to_dict() for key, interval in self.ci.items()}
        data["confidence"] = self.confidence
        data["n_resamples"] = self.n_resamples
        data["grouped"] = self.grouped
        data["reason"] = self.reason
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetricReport":
        """Rebuild a report written by ``to_dict``; raise ReportError when it is malformed."""
        try:
            return cls(
                n=int(data["n"]),
                n_dropped=int(data["n_dropped"]),
                plcc=decode_float(data["plcc"]),
                srocc=decode_float(data["srocc"]),
                krocc=decode_float(data["krocc"]),
                rmse=decode_float(data["rmse"]),
                plcc_logistic=(
                    decode_float(data["plcc_logistic"]) if "plcc_logistic" in data else None
                ),
                ci={
                    str(key): Interval(float(value["low"]), float(value["high"]))
                    for key, value in data["ci"].items()
                },
                confidence=float(data["confidence"]),
                n_resamples=int(data["n_resamples"]),
                grouped=bool(data["grouped"]),
                reason=None if data["reason"] is None else str(data["reason"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError, UsageError) as error:
            raise ReportError(
                f"malformed metric report ({type(error).__name__}: {error})"
            ) from None


def plcc(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Return the Pearson linear correlation; NaN for constant, non-finite or < 2 values."""
    x, y = _vector("predictions", pred), _vector("targets", target)
    _check_lengths(x, y)
    return math.nan if _degenerate(x, y) else _pearson(x, y)


def srocc(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Return the Spearman rank correlation (average ranks for ties); NaN when degenerate."""
    x, y = _vector("predictions", pred), _vector("targets", target)
    _check_lengths(x, y)
    if _degenerate(x, y):
        return math.nan
    return _pearson(stats.rankdata(x), stats.rankdata(y))


def krocc(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Return Kendall's tau-b; NaN for constant, non-finite or < 2 values."""
    x, y = _vector("predictions", pred), _vector("targets", target)
    _check_lengths(x, y)
    if _degenerate(x, y):  # checked first: scipy would warn (ConstantInputWarning)
        return math.nan
    return float(stats.kendalltau(x, y, variant="b").statistic)


def rmse(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Return the root mean squared error; NaN for empty or non-finite input."""
    x, y = _vector("predictions", pred), _vector("targets", target)
    _check_lengths(x, y)
    if x.size == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    return float(np.sqrt(np.mean((x - y) ** 2)))


def fit_logistic(pred: npt.ArrayLike, target: npt.ArrayLike) -> LogisticFit:
    """Fit ``f(x) = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))`` and return the PLCC through it.

    Least squares (scipy ``curve_fit``) from b1 = max target, b2 = min target, b3 = median
    prediction, b4 = std of the predictions (1 if zero); b1 and b2 start swapped when the
    relation is decreasing. The PLCC is that of ``f(pred)`` with the target, signed by the
    direction of the fit (``sign(b1 - b2)``): a fitted straight line would give back the
    linear PLCC, and an inverted model stays negative. Needs at least 5 finite rows. Never
    raises on bad data: a fit that fails has a NaN PLCC and a reason.
    """
    x, y = _vector("predictions", pred), _vector("targets", target)
    _check_lengths(x, y)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return _failed_fit("logistic fit needs finite values")
    if x.size < 5:
        return _failed_fit(f"logistic fit needs at least 5 rows, got {x.size}")
    if _degenerate(x, y):
        return _failed_fit("logistic fit needs non-constant predictions and targets")
    high, low = float(np.max(y)), float(np.min(y))
    if _pearson(x, y) < 0:
        high, low = low, high
    spread = float(np.std(x))
    start = [high, low, float(np.median(x)), spread if spread > 0 else 1.0]
    try:
        # OptimizeWarning: the covariance of the parameters, which we do not use.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params = optimize.curve_fit(_logistic, x, y, p0=start, maxfev=_MAX_FIT_EVALUATIONS)[0]
    except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError) as error:
        return _failed_fit(f"logistic fit did not converge ({_first_line(error)})")
    b1, b2, b3, b4 = (float(value) for value in params)
    with np.errstate(all="ignore"):
        fitted = _logistic(x, b1, b2, b3, b4)
    if not np.isfinite(fitted).all() or np.ptp(fitted) == 0:
        return _failed_fit("logistic fit is flat or non-finite", params=(b1, b2, b3, b4))
    value = math.copysign(1.0, b1 - b2) * _pearson(fitted, y)
    return LogisticFit(b1=b1, b2=b2, b3=b3, b4=b4, plcc=value)


def plcc_logistic(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Return the PLCC after a monotonic 4-parameter logistic fit; NaN when the fit fails."""
    return fit_logistic(pred, target).plcc


def compute_metrics(
    pred: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    groups: npt.ArrayLike | None = None,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    logistic: bool = False,
) -> MetricReport:
    """Compute every metric of ``pred`` against ``target``, with bootstrap intervals if asked.

    ``n_dropped`` counts exactly the rows whose target is non-finite (NaN or +-inf): they
    are dropped whatever their prediction. Non-finite predictions are never dropped: one
    on any row, even a dropped one, makes every metric NaN with a reason (see the module
    docstring). ``groups`` (one source id per row) makes the bootstrap draw whole groups,
    and the report's ``grouped`` true. Raises UsageError on
    malformed input: not 1-D, lengths differ, non-numeric values, unsortable group ids,
    ``bootstrap`` or ``seed`` not a non-negative integer, ``confidence`` outside (0, 1),
    or a grouped bootstrap over fewer than 2 groups.
    """
    x, y = _vector("predictions", pred), _vector("targets", target)
    _check_lengths(x, y)
    labels = None if groups is None else group_labels(groups, size=x.size)
    resamples, seed = _count("bootstrap", bootstrap), _count("seed", seed)
    confidence = _confidence(confidence)

    keep = np.isfinite(y)
    n_dropped = int(y.size - np.count_nonzero(keep))
    bad_predictions = int(x.size - np.count_nonzero(np.isfinite(x)))
    x, y = x[keep], y[keep]
    n = int(x.size)
    reason = _unusable_reason(bad_predictions=bad_predictions, n=n)
    if reason is not None:
        return MetricReport(
            n=n,
            n_dropped=n_dropped,
            plcc=math.nan,
            srocc=math.nan,
            krocc=math.nan,
            rmse=math.nan,
            plcc_logistic=math.nan if logistic else None,
            confidence=confidence,
            reason=reason,
        )

    reason = _constant_reason(x, y)
    fit = None
    if logistic:
        fit = fit_logistic(x, y) if reason is None else _failed_fit(reason)
        reason = reason or fit.reason
    point = {"plcc": plcc(x, y), "srocc": srocc(x, y), "rmse": rmse(x, y)}
    intervals = {}
    if resamples:
        kept = None if labels is None else labels[keep]
        found = _bootstrap(x, y, kept, resamples=resamples, confidence=confidence, seed=seed)
        intervals = {key: value for key, value in found.items() if math.isfinite(point[key])}
    return MetricReport(
        n=n,
        n_dropped=n_dropped,
        plcc=point["plcc"],
        srocc=point["srocc"],
        krocc=krocc(x, y),
        rmse=point["rmse"],
        plcc_logistic=None if fit is None else fit.plcc,
        ci=intervals,
        confidence=confidence,
        n_resamples=resamples,
        grouped=labels is not None and resamples > 0,
        reason=reason,
    )


# --- input handling -----------------------------------------------------------------------


def _vector(name: str, values: npt.ArrayLike) -> FloatArray:
    """Return ``values`` as a 1-D float64 array, or raise UsageError naming ``name``."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{name} must be a 1-D numeric array ({_first_line(error)})") from None
    if array.ndim != 1:
        raise UsageError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise UsageError(f"{name} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _check_lengths(x: FloatArray, y: FloatArray) -> None:
    """Raise UsageError unless predictions and targets have the same length."""
    if x.size != y.size:
        raise UsageError(f"predictions and targets differ in length ({x.size} != {y.size})")


def group_labels(groups: npt.ArrayLike, *, size: int) -> IntArray:
    """Return one integer label per row for the source groups."""
    array = np.asarray(groups)
    if array.ndim != 1 or array.size != size:
        raise UsageError(
            f"groups must be 1-D with one id per row ({size}), got shape {array.shape}"
        )
    try:
        labels = np.unique(array, return_inverse=True)[1]
    except TypeError as error:
        raise UsageError(f"groups must be sortable ids ({_first_line(error)})") from None
    return labels.reshape(-1).astype(np.int64)


def _count(name: str, value: int) -> int:
    """Return ``value`` as a non-negative int, or raise UsageError."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 0:
        raise UsageError(f"{name} must be a non-negative integer, not {value!r}")
    return number


def _confidence(value: float) -> float:
    """Return ``value`` as a float in (0, 1), or raise UsageError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 < number < 1.0:
        raise UsageError(f"confidence must be a number in (0, 1), not {value!r}")
    return number


def _unusable_reason(*, bad_predictions: int, n: int) -> str | None:
    """Return why no metric can be computed at all, or None."""
    if bad_predictions:
        plural = "value" if bad_predictions == 1 else "values"
        return f"predictions contain {bad_predictions} non-finite {plural}"
    if n < MIN_ROWS:
        return f"fewer than {MIN_ROWS} finite rows (got {n})"
    return None


def _constant_reason(x: FloatArray, y: FloatArray) -> str | None:
    """Return why the correlations are undefined (a constant variable), or None."""
    if np.ptp(x) == 0:
        return "predictions are constant (zero variance)"
    if np.ptp(y) == 0:
        return "targets are constant (zero variance)"
    return None


def _degenerate(x: FloatArray, y: FloatArray) -> bool:
    """Return whether a correlation is undefined: < 2 values, non-finite or constant."""
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return True
    return bool(np.ptp(x) == 0 or np.ptp(y) == 0)


def _pearson(x: FloatArray, y: FloatArray) -> float:
    """Return the Pearson correlation of two finite, non-constant vectors (centred first)."""
    xc, yc = x - x.mean(), y - y.mean()
    with np.errstate(all="ignore"):
        value = float(np.dot(xc, yc) / math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc))))
    return min(1.0, max(-1.0, value)) if math.isfinite(value) else math.nan


def _plain_float(value: float) -> float:
    """Return ``value`` as a Python float with every NaN as ``math.nan``."""
    number = float(value)
    return math.nan if math.isnan(number) else number


def _first_line(error: BaseException) -> str:
    """Return the first line of an exception's message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- logistic fit -------------------------------------------------------------------------


def _logistic(x: FloatArray, b1: float, b2: float, b3: float, b4: float) -> FloatArray:
    """The monotonic 4-parameter logistic (``expit`` cannot overflow, unlike ``exp``)."""
    result: FloatArray = b2 + (b1 - b2) * special.expit((x - b3) / abs(b4))
    return result


def _failed_fit(
    reason: str, *, params: tuple[float, float, float, float] | None = None
) -> LogisticFit:
    """Return a failed fit: NaN PLCC (and NaN parameters unless given) with ``reason``."""
    b1, b2, b3, b4 = params or (math.nan,) * 4
    return LogisticFit(b1=b1, b2=b2, b3=b3, b4=b4, plcc=math.nan, reason=reason)


# --- bootstrap ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ranking:
    """One variable sorted once: its tie groups in sorted order and each row's tie group."""

    order: IntArray | None  # rows in ascending value order (stable); None when already sorted
    starts: IntArray  # first sorted position of each tie group
    group_of_row: IntArray  # tie group of each row
    ties: bool


def _rank_groups(values: FloatArray) -> _Ranking:
    """Sort ``values`` once and index their tie groups."""
    order = np.argsort(values, kind="stable").astype(np.int64)
    ordered = values[order]
    new_group = np.empty(values.size, dtype=bool)
    new_group[:1] = True
    new_group[1:] = ordered[1:] != ordered[:-1]
    group_of_row = np.empty(values.size, dtype=np.int64)
    group_of_row[order] = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group).astype(np.int64)
    return _Ranking(
        order=None if np.array_equal(order, np.arange(values.size)) else order,
        starts=starts,
        group_of_row=group_of_row,
        ties=starts.size < values.size,
    )


@dataclass(frozen=True)
class _Sample:
    """The usable rows, sorted by prediction, ready for batched weighted statistics."""

    moments: FloatArray  # (rows, 6): xs, ys, xs^2, ys^2, xs*ys, (x - y)^2; xs, ys standardised
    x_rank: _Ranking
    y_rank: _Ranking


def _prepare(x: FloatArray, y: FloatArray) -> _Sample:
    """Standardise the rows (for a stable one-pass PLCC) and index the ranks of both variables."""
    xs = (x - x.mean()) / (float(x.std()) or 1.0)
    ys = (y - y.mean()) / (float(y.std()) or 1.0)
    moments = np.column_stack([xs, ys, xs * xs, ys * ys, xs * ys, (x - y) ** 2])
    return _Sample(moments=moments, x_rank=_rank_groups(x), y_rank=_rank_groups(y))


@dataclass(frozen=True)
class _Ranked:
    """One variable ranked in a batch of resamples."""

    per_row: FloatArray  # (B, rows): twice the centred average rank of each row's copies
    spread: FloatArray  # (B,): the copy-weighted sum of squared doubled ranks


def _rank_resamples(
    weights: CountArray, ranking: _Ranking, *, real: FloatArray, total: IntArray
) -> _Ranked:
    """Rank every resample exactly, with average ranks for ties, from copy counts.

    ``weights[b, i]`` (``real`` as float) is how many copies of row ``i`` resample ``b``
    holds. The ``m`` copies of a tie group that end at sorted position ``c`` share the
    average rank ``c - (m - 1) / 2``; centring subtracts the mean rank ``(N + 1) / 2``, and
    doubling gives the integer ``2c - m - N``. Ranks are thus exact, and the cumulative
    sums and permutations run on small integers (several times faster than on float64).
    """
    kind = weights.dtype
    ordered = weights if ranking.order is None else np.take(weights, ranking.order, axis=1)
    counts = (
        np.add.reduceat(ordered, ranking.starts, axis=1, dtype=kind) if ranking.ties else ordered
    )
    doubled = np.cumsum(counts, axis=1, dtype=kind)
    doubled *= 2
    doubled -= counts
    doubled -= total.astype(kind)[:, None]
    if ranking.ties:  # work on the tie groups, then hand each row its group's rank
        ranks = doubled.astype(np.float64)
        spread = np.einsum("ij,ij,ij->i", counts.astype(np.float64), ranks, ranks)
        return _Ranked(per_row=np.take(ranks, ranking.group_of_row, axis=1), spread=spread)
    if ranking.order is not None:
        by_row = np.empty_like(doubled)
        by_row[:, ranking.order] = doubled
        doubled = by_row
    per_row = doubled.astype(np.float64)
    return _Ranked(per_row=per_row, spread=np.einsum("ij,ij,ij->i", real, per_row, per_row))


def _replicate_stats(sample: _Sample, weights: CountArray, *, total: IntArray) -> FloatArray:
    """Return PLCC, SROCC and RMSE (rows of a (3, B) array) of B resamples given as copy counts.

    ``total`` is each resample's size. Ranks are exact integers; the sums over them are
    float64, exact while below 2**53 (resamples up to ~200,000 rows), rounded beyond.
    """
    real = weights.astype(np.float64)
    sums = (real @ sample.moments) / total[:, None]
    rank_x = _rank_resamples(weights, sample.x_rank, real=real, total=total)
    rank_y = _rank_resamples(weights, sample.y_rank, real=real, total=total)
    cross = np.einsum("ij,ij,ij->i", real, rank_x.per_row, rank_y.per_row)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_x = sums[:, 2] - sums[:, 0] ** 2
        var_y = sums[:, 3] - sums[:, 1] ** 2
        pearson = (sums[:, 4] - sums[:, 0] * sums[:, 1]) / np.sqrt(var_x * var_y)
        spearman = cross / np.sqrt(rank_x.spread * rank_y.spread)
    flat = (var_x <= _FLAT_TOLERANCE * sums[:, 2]) | (var_y <= _FLAT_TOLERANCE * sums[:, 3])
    pearson[flat] = np.nan
    spearman[(rank_x.spread <= 0) | (rank_y.spread <= 0)] = np.nan
    return np.vstack(
        [np.clip(pearson, -1.0, 1.0), np.clip(spearman, -1.0, 1.0), np.sqrt(sums[:, 5])]
    )


@dataclass(frozen=True)
class _Draw:
    """A batch of resamples as copy counts per row, with each resample's size."""

    weights: CountArray  # (B, rows)
    total: IntArray  # (B,)


def _draw_resamples(
    children: list[np.random.Generator],
    *,
    rows: int,
    labels: IntArray | None,
    kind: type[np.signedinteger[Any]],
) -> _Draw:
    """Draw a batch of resamples, one child generator per resample.

    Without labels each resample draws ``rows`` rows with replacement; with labels (dense
    group ids) it draws as many groups as there are, and every row of a drawn group follows.
    """
    units = rows if labels is None else int(labels.max()) + 1
    drawn = np.empty((len(children), units), dtype=kind)
    for counts, child in zip(drawn, children, strict=True):
        counts[:] = np.bincount(child.integers(0, units, size=units), minlength=units)
    if labels is None:
        return _Draw(weights=drawn, total=np.full(len(children), rows, dtype=np.int64))
    sizes = np.bincount(labels, minlength=units)
    return _Draw(weights=np.take(drawn, labels, axis=1), total=drawn.astype(np.int64) @ sizes)


def _bootstrap(
    x: FloatArray,
    y: FloatArray,
    labels: IntArray | None,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Interval]:
    """Return percentile intervals of PLCC, SROCC and RMSE over bootstrap resamples.

    Resamples where a correlation is undefined (constant values) are left out of its
    percentiles; a metric with no defined resample gets no interval.
    """
    order = np.argsort(x, kind="stable")  # rows sorted by prediction: x ranks need no permutation
    x, y = x[order], y[order]
    largest = x.size
    if labels is not None:
        labels = np.unique(labels[order], return_inverse=True)[1].reshape(-1).astype(np.int64)
        sizes = np.bincount(labels)
        if sizes.size < 2:
            raise UsageError("a grouped bootstrap needs at least 2 source groups")
        largest = int(sizes.size * sizes.max())
    # int32 counts halve the memory traffic; doubled ranks reach 2N, so N must stay below 2**30.
    kind: type[np.signedinteger[Any]] = np.int32 if largest < 2**30 else np.int64
    sample = _prepare(x, y)
    children = np.random.default_rng(seed).spawn(resamples)
    batch = max(1, min(resamples, _CHUNK_ELEMENTS // x.size))
    replicates = np.empty((len(GATE_METRICS), resamples))

    def run(start: int) -> None:
        draw = _draw_resamples(
            children[start : start + batch], rows=x.size, labels=labels, kind=kind
        )
        replicates[:, start : start + batch] = _replicate_stats(
            sample, draw.weights, total=draw.total
        )

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        list(pool.map(run, range(0, resamples, batch)))
    return _percentile_intervals(replicates, confidence=confidence)


def _percentile_intervals(replicates: FloatArray, *, confidence: float) -> dict[str, Interval]:
    """Return the central ``confidence`` percentile interval of each gate metric's replicates."""
    tail = (1.0 - confidence) / 2.0
    intervals: dict[str, Interval] = {}
    for name, values in zip(GATE_METRICS, replicates, strict=True):
        defined = values[np.isfinite(values)]
        if defined.size:
            low, high = np.quantile(defined, [tail, 1.0 - tail])
            intervals[name] = Interval(float(low), float(high))
    return intervals


# A grouped bootstrap is refused below this many groups whatever the confidence: 4 is the
# smallest G whose single-group resamples (each of probability G**-G) fall below 2.5 %, the
# tail of the default 95 % interval (3**-3 = 3.7 %, 4**-4 = 0.39 %). docs/intervals.md.
MIN_GROUPS = 4


def distinct_resamples(groups: int) -> int:
    """Return how many different resamples a grouped bootstrap of ``groups`` groups can draw.

    A resample is a multiset of ``G`` groups drawn from ``G``: C(2G - 1, G) of them
    (10 for 3 groups, 126 for 5), however many resamples are requested.
    """
    if groups < 1:
        raise UsageError(f"a bootstrap needs at least 1 group, got {groups}")
    return math.comb(2 * groups - 1, groups)


def min_groups(confidence: float) -> int:
    """Return the fewest groups a grouped bootstrap needs for a ``confidence`` interval.

    Both conditions must hold (docs/intervals.md): each tail of the interval, of mass
    (1 - confidence) / 2, must be at least one distinct resample wide, so
    C(2G - 1, G) >= 2 / (1 - confidence); and a resample of one group repeated G times
    (probability G**-G each) must be rarer than a tail, else the interval is the range of
    the single groups. Never below ``MIN_GROUPS``. 4 for 0.90, 5 for 0.95, 6 for 0.99.
    """
    tail = (1.0 - _confidence(confidence)) / 2.0
    groups = MIN_GROUPS
    while distinct_resamples(groups) * tail < 1.0 or float(groups) ** -groups >= tail:
        groups += 1
    return groups
