"""Prediction intervals for ensemble quality models: split conformal, Gaussian, and their coverage.

A deep ensemble (Lakshminarayanan et al. 2017, https://arxiv.org/abs/1612.01474) of M
point regressors gives, per row, the member mean ``mu`` and spread ``sigma`` (std, ddof=1).
Two intervals are built from them:

- Gaussian: ``mu +/- z * sigma`` with ``z = Phi^-1(0.5 + nominal / 2)``; only calibrated if
  the errors really are Gaussian with that scale, which an ensemble does not promise.
- Split conformal (Lei et al. 2018, https://arxiv.org/abs/1604.04173; Angelopoulos & Bates,
  https://arxiv.org/abs/2107.07511): on n held-out calibration rows, scores
  ``s_i = |y_i - mu_i| / max(sigma_i, floor)`` (or ``|y_i - mu_i|``) are sorted and
  ``q`` is the k-th smallest, ``k = ceil((n + 1)(1 - alpha))``. The interval
  ``mu +/- q * max(sigma, floor)`` then covers a fresh exchangeable row with probability
  at least ``1 - alpha`` (marginally). When ``k > n`` no finite q gives that guarantee and
  q is infinite, with a message saying so.

``coverage_test`` checks an observed coverage against its nominal level with a one-sided
exact binomial test. See ``docs/intervals.md`` for the formulas and the JSON layout.
"""

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from engine.errors import ReportError, UsageError
from engine.evidence import decode_float, encode_float
from engine.metrics import group_labels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_FLOOR = 1e-6
"""Smallest sigma a normalised score divides by, so a unanimous ensemble cannot score inf."""

DEFAULT_NOMINALS = (0.5, 0.8, 0.95)
"""The nominal coverages ``evaluate_intervals`` reports by default."""

"""How an infinite q or width is written to JSON (strict JSON has no Infinity)."""

_MAX_DENOMINATOR = 1_000_000  # alpha is read as the nearest fraction with this denominator
_NOMINAL_TOLERANCE = 1e-9


class ScoreKind(Enum):
    """The conformity score: residual scaled by the ensemble spread, or the plain residual."""

    NORMALISED = "normalised"
    ABSOLUTE = "absolute"


class IntervalMethod(Enum):
    """How a prediction interval was built."""

    GAUSSIAN = "gaussian"
    CONFORMAL = "conformal"


@dataclass(frozen=True, eq=False)
class EnsemblePrediction:
    """Per-row ensemble mean and spread (std over members, ddof=1); arrays are read-only."""

    mu: FloatArray
    sigma: FloatArray
    n_members: int


@dataclass(frozen=True, eq=False)
class Interval:
    """Per-row prediction intervals ``[low, high]``; ends are +/-inf when the interval is infinite."""

    low: FloatArray
    high: FloatArray

    @property
    def width(self) -> FloatArray:
        """Return ``high - low`` per row (inf for an infinite interval)."""
        return self.high - self.low

    def covers(self, y: npt.ArrayLike) -> BoolArray:
        """Return, per row, whether ``y`` lies in the interval (ends included)."""
        target = _finite_vector("y", y)
        _same_length(("interval", self.low), ("y", target))
        return (self.low <= target) & (target <= self.high)


@dataclass(frozen=True, eq=False)
class CalibrationSplit:
    """Disjoint sorted row indices for training and conformal calibration."""

    train_idx: IntArray
    calib_idx: IntArray
    grouped: bool


@dataclass(frozen=True)
class ConformalCalibration:
    """A fitted split-conformal quantile: q is the k-th smallest of n scores, or inf if k > n."""

    alpha: float
    nominal_coverage: float
    score: ScoreKind
    floor: float
    n_calibration: int
    k: int
    q: float
    finite: bool
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; an infinite q is written as the string ``"inf"``."""
        return {
            "alpha": self.alpha,
            "nominal_coverage": self.nominal_coverage,
            "score": self.score.value,
            "floor": self.floor,
            "n_calibration": self.n_calibration,
            "k": self.k,
            "q": encode_float(self.q),
            "finite": self.finite,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConformalCalibration":
        """Rebuild a calibration written by ``to_dict``; raise ReportError when it is malformed."""
        try:
            q = decode_float(data["q"])
            rebuilt = _calibration(
                alpha=float(data["alpha"]),
                score=ScoreKind(data["score"]),
                floor=float(data["floor"]),
                n=_count("n_calibration", data["n_calibration"]),
                q=q,
            )
        except (KeyError, TypeError, ValueError, UsageError) as error:
            raise ReportError(f"malformed conformal calibration: {error!r}") from None
        # k, finite, the nominal and the message are re-derived; a stored k or finite that
        # disagrees means the record was edited or written by another rule (e.g. k clipped to n).
        derived = {"k": rebuilt.k, "finite": rebuilt.finite}
        stored = {key: data.get(key) for key in derived}
        if stored != derived:
            raise ReportError(
                f"malformed conformal calibration: stored {stored} disagrees with "
                f"{derived} derived from alpha={rebuilt.alpha:g}, n={rebuilt.n_calibration}"
            )
        return rebuilt


@dataclass(frozen=True)
class CoverageTest:
    """One-sided exact binomial test of H0 "true coverage >= nominal"; fails when p < significance."""

    covered: int
    n: int
    empirical: float
    nominal: float
    significance: float
    p_value: float
    passed: bool
    statement: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "covered": self.covered,
            "n": self.n,
            "empirical": self.empirical,
            "nominal": self.nominal,
            "significance": self.significance,
            "p_value": self.p_value,
            "passed": self.passed,
            "statement": self.statement,
        }


@dataclass(frozen=True)
class MethodCoverage:
    """How one kind of interval did at one nominal level: mean width and the coverage test."""

    method: IntervalMethod
    mean_width: float
    test: CoverageTest

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; an infinite width is written as ``"inf"``."""
        return {
            "method": self.method.value,
            "mean_width": encode_float(self.mean_width),
            **self.test.to_dict(),
        }


@dataclass(frozen=True)
class CoverageLevel:
    """Gaussian and conformal coverage at one nominal level, with the calibration used.

    ``calibration`` and ``conformal`` are None at a level with no conformal calibration
    (e.g. a manifest calibrated at its own level only); the Gaussian interval needs none.
    """

    nominal: float
    calibration: ConformalCalibration | None
    gaussian: MethodCoverage
    conformal: MethodCoverage | None

    def method(self, method: IntervalMethod) -> MethodCoverage | None:
        """Return the coverage of one kind of interval at this level (None when not measured)."""
        return self.gaussian if method is IntervalMethod.GAUSSIAN else self.conformal

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (null conformal fields where there is no calibration)."""
        return {
            "nominal": self.nominal,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "gaussian": self.gaussian.to_dict(),
            "conformal": None if self.conformal is None else self.conformal.to_dict(),
        }


@dataclass(frozen=True)
class IntervalReport:
    """Interval coverage of an ensemble on evaluation rows, one entry per nominal level."""

    n_rows: int
    n_members: int
    significance: float
    levels: tuple[CoverageLevel, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (no NaN or Infinity literals)."""
        return {
            "n_rows": self.n_rows,
            "n_members": self.n_members,
            "significance": self.significance,
            "levels": [level.to_dict() for level in self.levels],
        }


def ensemble_moments(member_predictions: npt.ArrayLike) -> EnsemblePrediction:
    """Return the per-row mean and std (ddof=1) of ``[M, N]`` member predictions, M >= 2."""
    members = _finite_matrix("member_predictions", member_predictions)
    if members.shape[0] < 2:
        raise UsageError(f"an ensemble needs at least 2 members, got {members.shape[0]}")
    mu = members.mean(axis=0)
    sigma = members.std(axis=0, ddof=1)
    return EnsemblePrediction(mu=_frozen(mu), sigma=_frozen(sigma), n_members=members.shape[0])


def conformity_scores(
    mu: npt.ArrayLike,
    sigma: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    score: ScoreKind = ScoreKind.NORMALISED,
    floor: float = DEFAULT_FLOOR,
) -> FloatArray:
    """Return ``|y - mu| / max(sigma, floor)`` (normalised) or ``|y - mu|`` (absolute) per row."""
    center, spread, target = _rows(mu, sigma, y)
    kind, floor = _score_kind(score), _floor(floor)
    residual = np.abs(target - center)
    return residual / np.maximum(spread, floor) if kind is ScoreKind.NORMALISED else residual


def quantile_index(n: int, *, alpha: float) -> int:
    """Return k = ceil((n + 1)(1 - alpha)), in exact rational arithmetic; may exceed n."""
    return math.ceil((_count("n", n) + 1) * (1 - _exact_alpha(alpha)))


def min_calibration_rows(alpha: float) -> int:
    """Return the smallest n with ceil((n + 1)(1 - alpha)) <= n, i.e. a finite conformal q."""
    exact = _exact_alpha(alpha)
    return math.ceil((1 - exact) / exact)


def calibrate(
    mu: npt.ArrayLike,
    sigma: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    alpha: float,
    score: ScoreKind = ScoreKind.NORMALISED,
    floor: float = DEFAULT_FLOOR,
) -> ConformalCalibration:
    """Fit split conformal on held-out calibration rows: q = k-th smallest score, inf if k > n."""
    scores = conformity_scores(mu, sigma, y, score=score, floor=floor)
    alpha = _probability("alpha", alpha)
    n = int(scores.size)
    if n == 0:
        raise UsageError("calibration needs at least one row, got 0")
    k = quantile_index(n, alpha=alpha)
    # Never clip k to n: with k > n no finite score is the required quantile, and using the
    # largest score instead silently drops coverage below 1 - alpha (Lei et al. 2018, sec. 2.2).
    q = float(np.partition(scores, k - 1)[k - 1]) if k <= n else math.inf
    return _calibration(alpha=alpha, score=score, floor=floor, n=n, q=q)


def conformal_interval(
    mu: npt.ArrayLike, sigma: npt.ArrayLike, calibration: ConformalCalibration
) -> Interval:
    """Return ``mu +/- q * max(sigma, floor)`` (normalised) or ``mu +/- q`` (absolute) per row."""
    center, spread = _pair(mu, sigma)
    if calibration.score is ScoreKind.NORMALISED:
        half = calibration.q * np.maximum(spread, calibration.floor)
    else:
        half = np.full_like(center, calibration.q)
    return Interval(low=_frozen(center - half), high=_frozen(center + half))


def gaussian_interval(mu: npt.ArrayLike, sigma: npt.ArrayLike, *, nominal: float) -> Interval:
    """Return ``mu +/- z * sigma`` with ``z = Phi^-1(0.5 + nominal / 2)`` per row."""
    center, spread = _pair(mu, sigma)
    z = float(stats.norm.ppf(0.5 + _probability("nominal", nominal) / 2))
    return Interval(low=_frozen(center - z * spread), high=_frozen(center + z * spread))


def split_calibration(
    n_rows: int,
    *,
    groups: npt.ArrayLike | None = None,
    fraction: float = 0.2,
    seed: int = 0,
) -> CalibrationSplit:
    """Split rows into train and calibration (about ``fraction``), whole groups per side if given."""
    n = _count("n_rows", n_rows)
    fraction, seed = _probability("fraction", fraction), _count("seed", seed)
    if n < 2:
        raise UsageError(f"a split needs at least 2 rows, got {n}")
    rng = np.random.default_rng(seed)
    target = fraction * n
    if groups is None:
        n_calib = min(max(round(target), 1), n - 1)
        calib = np.zeros(n, dtype=bool)
        calib[rng.permutation(n)[:n_calib]] = True
    else:
        labels = group_labels(groups, size=n)
        sizes = np.bincount(labels)
        if sizes.size < 2:
            raise UsageError(f"a grouped split needs at least 2 groups, got {sizes.size}")
        order = rng.permutation(sizes.size)
        # The calibration side takes the first m shuffled groups, with m (1..G-1) chosen so
        # its row count is closest to the target; no group is ever split across sides.
        prefix = np.cumsum(sizes[order])[:-1]
        m = int(np.argmin(np.abs(prefix - target))) + 1
        calib = np.isin(labels, order[:m])
    return CalibrationSplit(
        train_idx=_frozen_index(np.flatnonzero(~calib)),
        calib_idx=_frozen_index(np.flatnonzero(calib)),
        grouped=groups is not None,
    )


def coverage_test(
    covered: int, n: int, nominal: float, *, significance: float = 0.01
) -> CoverageTest:
    """Test H0 "coverage >= nominal" one-sided with an exact binomial; fail when p < significance."""
    n = _count("n", n)
    covered = _count("covered", covered)
    nominal = _probability("nominal", nominal)
    significance = _probability("significance", significance)
    if n == 0 or covered > n:
        raise UsageError(f"coverage needs 0 <= covered <= n and n >= 1, got {covered}/{n}")
    p_value = float(stats.binomtest(covered, n, nominal, alternative="less").pvalue)
    passed = p_value >= significance
    empirical = covered / n
    statement = (
        f"empirical {empirical:.3f} vs nominal {nominal:g} at n={n}: "
        f"p={p_value:.3g} {'>=' if passed else '<'} {significance:g}, "
        f"one-sided exact binomial test: {'PASS' if passed else 'FAIL'}"
    )
    return CoverageTest(
        covered=covered,
        n=n,
        empirical=empirical,
        nominal=nominal,
        significance=significance,
        p_value=p_value,
        passed=passed,
        statement=statement,
    )


def evaluate_intervals(
    member_predictions: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    calibration_for: Callable[[float], ConformalCalibration | None],
    nominals: Sequence[float] = DEFAULT_NOMINALS,
    significance: float = 0.01,
) -> IntervalReport:
    """Measure Gaussian and conformal coverage and width on evaluation rows, per nominal level.

    ``calibration_for(nominal)`` may return None: that level then reports Gaussian coverage only.
    """
    ensemble = ensemble_moments(member_predictions)
    target = _finite_vector("y", y)
    _same_length(("member_predictions columns", ensemble.mu), ("y", target))
    levels = _nominals(nominals)
    significance = _probability("significance", significance)
    results = []
    for nominal in levels:
        calibration = calibration_for(nominal)
        if calibration is not None and not isinstance(calibration, ConformalCalibration):
            raise UsageError(
                f"calibration_for({nominal:g}) must return a ConformalCalibration or None"
            )
        if calibration is not None and not math.isclose(
            calibration.nominal_coverage, nominal, abs_tol=_NOMINAL_TOLERANCE
        ):
            raise UsageError(
                f"calibration_for({nominal:g}) returned a calibration for "
                f"{calibration.nominal_coverage:g} nominal coverage"
            )
        gaussian = gaussian_interval(ensemble.mu, ensemble.sigma, nominal=nominal)
        conformal = None
        if calibration is not None:
            interval = conformal_interval(ensemble.mu, ensemble.sigma, calibration)
            conformal = _assess(IntervalMethod.CONFORMAL, interval, target, nominal, significance)
        results.append(
            CoverageLevel(
                nominal=nominal,
                calibration=calibration,
                gaussian=_assess(IntervalMethod.GAUSSIAN, gaussian, target, nominal, significance),
                conformal=conformal,
            )
        )
    return IntervalReport(
        n_rows=int(target.size),
        n_members=ensemble.n_members,
        significance=significance,
        levels=tuple(results),
    )


# --- helpers ------------------------------------------------------------------------------


def _calibration(
    *, alpha: float, score: ScoreKind, floor: float, n: int, q: float
) -> ConformalCalibration:
    """Build a calibration from its free fields, deriving k, finite, nominal and the message."""
    alpha, kind, floor = _probability("alpha", alpha), _score_kind(score), _floor(floor)
    k = quantile_index(n, alpha=alpha)
    finite = k <= n
    if finite != math.isfinite(q) or math.isnan(q) or q < 0:
        raise UsageError(f"q must be finite and >= 0 exactly when k <= n (k={k}, n={n}, q={q})")
    nominal = 1 - alpha
    message = None
    if not finite:
        message = (
            f"coverage cannot be guaranteed at n={n} for {nominal * 100:g}% nominal: "
            f"split conformal needs at least {min_calibration_rows(alpha)} calibration rows; "
            "the interval is infinite"
        )
    return ConformalCalibration(
        alpha=alpha,
        nominal_coverage=nominal,
        score=kind,
        floor=floor,
        n_calibration=n,
        k=k,
        q=float(q),
        finite=finite,
        message=message,
    )


def _assess(
    method: IntervalMethod,
    interval: Interval,
    target: FloatArray,
    nominal: float,
    significance: float,
) -> MethodCoverage:
    """Return the mean width and coverage test of one interval on the evaluation rows."""
    covered = int(np.count_nonzero(interval.covers(target)))
    return MethodCoverage(
        method=method,
        mean_width=float(np.mean(interval.width)),
        test=coverage_test(covered, int(target.size), nominal, significance=significance),
    )


def _exact_alpha(alpha: float) -> Fraction:
    """Return alpha as a fraction, so that 0.05, 0.1 and 1 - 0.9 give exact k (no float ceil)."""
    return Fraction(_probability("alpha", alpha)).limit_denominator(_MAX_DENOMINATOR)


def _finite_vector(name: str, values: npt.ArrayLike) -> FloatArray:
    """Return ``values`` as a finite 1-D float64 array, or raise UsageError naming ``name``."""
    array = _numeric(name, values)
    if array.ndim != 1:
        raise UsageError(f"{name} must be 1-D, got shape {array.shape}")
    return _all_finite(name, array)


def _finite_matrix(name: str, values: npt.ArrayLike) -> FloatArray:
    """Return ``values`` as a finite 2-D float64 array with at least one column."""
    array = _numeric(name, values)
    if array.ndim != 2 or array.shape[1] == 0:
        raise UsageError(
            f"{name} must be 2-D [members, rows] with rows >= 1, got shape {array.shape}"
        )
    return _all_finite(name, array)


def _numeric(name: str, values: npt.ArrayLike) -> FloatArray:
    """Return ``values`` as a float64 array, or raise UsageError when not numeric."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{name} must be a numeric array ({type(error).__name__})") from None
    if array.dtype.kind not in "iuf":
        raise UsageError(f"{name} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float64)


def _all_finite(name: str, array: FloatArray) -> FloatArray:
    """Return ``array`` unchanged, or raise UsageError counting its non-finite values."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise UsageError(f"{name} has {bad} non-finite value(s)")
    return array


def _same_length(*named: tuple[str, FloatArray]) -> None:
    """Raise UsageError unless every named array has the same length."""
    lengths = {name: array.shape[0] for name, array in named}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={size}" for name, size in lengths.items())
        raise UsageError(f"lengths differ: {listed}")


def _pair(mu: npt.ArrayLike, sigma: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate per-row centres and spreads: finite, 1-D, equal length, sigma >= 0."""
    center, spread = _finite_vector("mu", mu), _finite_vector("sigma", sigma)
    _same_length(("mu", center), ("sigma", spread))
    if spread.size and spread.min() < 0:
        raise UsageError(f"sigma must be >= 0, got minimum {spread.min():g}")
    return center, spread


def _rows(
    mu: npt.ArrayLike, sigma: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate calibration rows: finite 1-D mu, sigma >= 0 and y of one length."""
    center, spread = _pair(mu, sigma)
    target = _finite_vector("y", y)
    _same_length(("mu", center), ("y", target))
    return center, spread, target


def _nominals(values: Sequence[float]) -> tuple[float, ...]:
    """Return distinct nominal levels in (0, 1), or raise UsageError."""
    levels = tuple(_probability("nominal", value) for value in values)
    if not levels or len(set(levels)) != len(levels):
        raise UsageError(
            f"nominals must be a non-empty list of distinct levels, got {list(levels)}"
        )
    return levels


def _probability(name: str, value: float) -> float:
    """Return ``value`` as a float strictly inside (0, 1), or raise UsageError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise UsageError(f"{name} must be a number in (0, 1), not {value!r}")
    number = float(value)
    if not 0 < number < 1:
        raise UsageError(f"{name} must be in (0, 1), got {number:g}")
    return number


def _floor(value: float) -> float:
    """Return the score floor as a finite positive float, or raise UsageError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise UsageError(f"floor must be a positive number, not {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise UsageError(f"floor must be finite and > 0, got {number:g}")
    return number


def _score_kind(value: ScoreKind) -> ScoreKind:
    """Return ``value`` if it is a ScoreKind, or raise UsageError."""
    if not isinstance(value, ScoreKind):
        raise UsageError(f"score must be a ScoreKind, not {value!r}")
    return value


def _count(name: str, value: Any) -> int:
    """Return ``value`` as a non-negative int, or raise UsageError."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a non-negative integer, not {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise UsageError(f"{name} must be a non-negative integer, not {value!r}") from None
    if number < 0:
        raise UsageError(f"{name} must be a non-negative integer, not {number}")
    return number


def _frozen(array: FloatArray) -> FloatArray:
    """Return a read-only float64 copy of ``array``."""
    copy = np.array(array, dtype=np.float64)
    copy.setflags(write=False)
    return copy


def _frozen_index(array: npt.NDArray[np.intp]) -> IntArray:
    """Return a read-only int64 copy of an index array."""
    copy = np.array(array, dtype=np.int64)
    copy.setflags(write=False)
    return copy
