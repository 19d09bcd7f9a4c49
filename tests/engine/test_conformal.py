"""Tests for ensemble prediction intervals: split conformal, Gaussian, coverage test, splits."""

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from engine.conformal import (
    DEFAULT_NOMINALS,
    ConformalCalibration,
    IntervalMethod,
    ScoreKind,
    calibrate,
    conformal_interval,
    conformity_scores,
    coverage_test,
    ensemble_moments,
    evaluate_intervals,
    gaussian_interval,
    min_calibration_rows,
    quantile_index,
    split_calibration,
)
from engine.errors import ReportError, UsageError

MEMBERS = 5


def _draw(
    rng: np.random.Generator, n: int, *, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ([MEMBERS, n] member predictions, y) for exchangeable heteroscedastic rows.

    y = 3 + 2x + s(x) e with s(x) = 0.1 + 0.5x; each member is the truth plus s(x) times its
    own standard normal draw, so the ensemble std tracks the noise scale (times ``spread``).
    """
    x = rng.uniform(0.0, 1.0, n)
    scale = 0.1 + 0.5 * x
    truth = 3.0 + 2.0 * x
    y = truth + scale * rng.standard_normal(n)
    members = truth + spread * scale * rng.standard_normal((MEMBERS, n))
    return members, y


def _coverage_sd(n: int, k: int, m: int) -> float:
    """Return the sd of one repetition's test coverage: Beta(k, n + 1 - k) plus binomial noise.

    With continuous scores, the coverage of split conformal given the calibration rows is
    Beta(k, n + 1 - k) distributed (Angelopoulos & Bates, sec. 3.2); m fresh test rows add
    binomial noise around it.
    """
    mean = k / (n + 1)
    beta_var = k * (n + 1 - k) / ((n + 1) ** 2 * (n + 2))
    binomial_var = (mean * (1 - mean) - beta_var) / m
    return math.sqrt(beta_var + binomial_var)


# --- split conformal coverage -------------------------------------------------------------


@pytest.mark.parametrize("score", list(ScoreKind))
@pytest.mark.parametrize(("n_calib", "nominal"), [(39, 0.8), (39, 0.95), (30, 0.8), (30, 0.95)])
def test_conformal_mean_coverage_is_within_noise_of_nominal_on_exchangeable_data(
    score: ScoreKind, n_calib: int, nominal: float
) -> None:
    repetitions, n_test = 300, 200
    rng = np.random.default_rng(20240601)
    coverage = np.empty(repetitions)
    for rep in range(repetitions):
        calib_members, calib_y = _draw(rng, n_calib)
        test_members, test_y = _draw(rng, n_test)
        calib = ensemble_moments(calib_members)
        calibration = calibrate(calib.mu, calib.sigma, calib_y, alpha=1 - nominal, score=score)
        test = ensemble_moments(test_members)
        interval = conformal_interval(test.mu, test.sigma, calibration)
        coverage[rep] = interval.covers(test_y).mean()

    k = quantile_index(n_calib, alpha=1 - nominal)
    noise = 4 * _coverage_sd(n_calib, k, n_test) / math.sqrt(repetitions)
    # The guarantee is marginal: E[coverage] = k / (n + 1), which lies in
    # [1 - alpha, 1 - alpha + 1 / (n + 1)) (Lei et al. 2018, thm 2.2).
    assert coverage.mean() >= nominal - noise
    assert coverage.mean() <= nominal + 1 / (n_calib + 1) + noise
    assert abs(coverage.mean() - k / (n_calib + 1)) <= noise


def test_clipping_k_to_n_would_undercover_which_is_why_q_is_infinite() -> None:
    # n = 10 at 95%: k = 11 > n. Using the largest score instead covers only ~10/11.
    repetitions, n_calib, n_test = 300, 10, 200
    rng = np.random.default_rng(7)
    clipped = np.empty(repetitions)
    for rep in range(repetitions):
        calib_members, calib_y = _draw(rng, n_calib)
        test_members, test_y = _draw(rng, n_test)
        calib, test = ensemble_moments(calib_members), ensemble_moments(test_members)
        q_max = conformity_scores(calib.mu, calib.sigma, calib_y).max()
        clipped[rep] = np.mean(np.abs(test_y - test.mu) <= q_max * test.sigma)
    assert clipped.mean() < 0.95 - 0.02
    assert calibrate(calib.mu, calib.sigma, calib_y, alpha=0.05).q == math.inf


def test_calibration_with_10_rows_at_95_percent_is_infinite_with_message() -> None:
    rng = np.random.default_rng(1)
    members, y = _draw(rng, 10)
    ensemble = ensemble_moments(members)
    calibration = calibrate(ensemble.mu, ensemble.sigma, y, alpha=0.05)
    assert (calibration.k, calibration.q, calibration.finite) == (11, math.inf, False)
    assert calibration.message == (
        "coverage cannot be guaranteed at n=10 for 95% nominal: split conformal needs at "
        "least 19 calibration rows; the interval is infinite"
    )
    interval = conformal_interval(ensemble.mu, ensemble.sigma, calibration)
    assert np.all(interval.low == -math.inf) and np.all(interval.high == math.inf)
    assert np.all(interval.width == math.inf)


def test_calibration_with_19_rows_at_95_percent_is_finite_at_the_largest_score() -> None:
    rng = np.random.default_rng(2)
    members, y = _draw(rng, 19)
    ensemble = ensemble_moments(members)
    calibration = calibrate(ensemble.mu, ensemble.sigma, y, alpha=0.05)
    scores = conformity_scores(ensemble.mu, ensemble.sigma, y)
    assert (calibration.k, calibration.finite, calibration.message) == (19, True, None)
    assert calibration.q == scores.max()


@pytest.mark.parametrize(
    ("n", "alpha", "k"),
    [
        (19, 0.05, 19),
        (10, 0.05, 11),
        (99, 0.1, 90),
        (99, 1 - 0.9, 90),  # float 1 - 0.9 is 0.0999...98; k must still be exactly 90
        (100, 0.1, 91),
        (39, 0.2, 32),
        (8, 0.1, 9),
        (1, 0.5, 1),
        (999, 0.05, 950),
    ],
)
def test_quantile_index_is_ceil_of_n_plus_one_times_nominal_exactly(
    n: int, alpha: float, k: int
) -> None:
    assert quantile_index(n, alpha=alpha) == k
    scores_y = np.arange(1.0, n + 1)[::-1]  # scores 1..n with mu = 0, sigma = 1
    calibration = calibrate(np.zeros(n), np.ones(n), scores_y, alpha=alpha)
    assert calibration.k == k
    assert calibration.q == (float(k) if k <= n else math.inf)


def test_k_is_never_clipped_to_n_for_any_calibration_size() -> None:
    for n in range(1, 60):
        calibration = calibrate(np.zeros(n), np.ones(n), np.linspace(0, 1, n), alpha=0.05)
        assert calibration.k == -(-(n + 1) * 19 // 20)  # integer ceil((n + 1) * 19 / 20)
        assert calibration.finite is (n >= 19) and calibration.finite is (calibration.k <= n)
        assert math.isinf(calibration.q) is (n < 19)


@pytest.mark.parametrize(("alpha", "rows"), [(0.05, 19), (0.1, 9), (0.2, 4), (0.5, 1), (0.01, 99)])
def test_min_calibration_rows_is_the_first_n_with_a_finite_quantile(
    alpha: float, rows: int
) -> None:
    assert min_calibration_rows(alpha) == rows
    assert quantile_index(rows, alpha=alpha) <= rows
    assert quantile_index(rows - 1, alpha=alpha) > rows - 1


def test_normalised_interval_scales_with_floored_sigma_and_absolute_does_not() -> None:
    mu, sigma = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 2.0])
    y = np.array([1.0, 3.0, 1.0])  # residuals 0, 1, 2
    normalised = calibrate(mu, sigma, y, alpha=0.5, floor=0.1)  # scores 0, 2, 1; k = 2
    assert normalised.q == 1.0
    interval = conformal_interval(mu, sigma, normalised)
    np.testing.assert_allclose(interval.low, [0.9, 1.5, 1.0])
    np.testing.assert_allclose(interval.high, [1.1, 2.5, 5.0])
    absolute = calibrate(mu, sigma, y, alpha=0.5, score=ScoreKind.ABSOLUTE)
    assert absolute.q == 1.0
    np.testing.assert_allclose(conformal_interval(mu, sigma, absolute).width, [2.0, 2.0, 2.0])


def test_calibration_round_trips_through_strict_json_finite_and_infinite() -> None:
    finite = calibrate(np.zeros(40), np.ones(40), np.linspace(0, 2, 40), alpha=0.2)
    infinite = calibrate(np.zeros(5), np.ones(5), np.linspace(0, 2, 5), alpha=0.05)
    for calibration in (finite, infinite):
        text = json.dumps(calibration.to_dict(), allow_nan=False)
        assert ConformalCalibration.from_dict(json.loads(text)) == calibration
    assert infinite.to_dict()["q"] == "inf"


def test_calibration_from_dict_rejects_a_record_with_k_clipped_to_n() -> None:
    record = calibrate(np.zeros(10), np.ones(10), np.linspace(0, 1, 10), alpha=0.05).to_dict()
    record.update(k=10, q=1.0, finite=True, message=None)
    with pytest.raises(ReportError, match="malformed conformal calibration"):
        ConformalCalibration.from_dict(record)
    record.update(q="inf", finite=False)  # q right, stored k still clipped
    with pytest.raises(ReportError, match="disagrees"):
        ConformalCalibration.from_dict(record)


# --- ensemble moments and the Gaussian interval -------------------------------------------


def test_ensemble_moments_are_member_mean_and_sample_std() -> None:
    ensemble = ensemble_moments([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    np.testing.assert_allclose(ensemble.mu, [3.0, 5.0])
    np.testing.assert_allclose(ensemble.sigma, [2.0, math.sqrt(13.0)])
    assert ensemble.n_members == 3
    assert not ensemble.mu.flags.writeable


@pytest.mark.parametrize("nominal", DEFAULT_NOMINALS)
def test_gaussian_interval_covers_nominal_when_noise_is_gaussian_with_that_sigma(
    nominal: float,
) -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    mu = rng.uniform(20, 90, n)
    sigma = rng.uniform(0.5, 5.0, n)
    y = mu + sigma * rng.standard_normal(n)
    covered = gaussian_interval(mu, sigma, nominal=nominal).covers(y)
    assert abs(covered.mean() - nominal) <= 4 * math.sqrt(nominal * (1 - nominal) / n)
    assert coverage_test(int(covered.sum()), n, nominal).passed


def test_gaussian_interval_uses_the_two_sided_normal_quantile() -> None:
    interval = gaussian_interval([0.0], [1.0], nominal=0.95)
    assert interval.high[0] == pytest.approx(stats.norm.ppf(0.975))
    assert interval.low[0] == pytest.approx(-1.959963984540054)


# --- the coverage test ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("covered", "n", "nominal"), [(475, 500, 0.95), (400, 500, 0.8), (50, 100, 0.5)]
)
def test_coverage_test_passes_at_exactly_nominal_coverage(
    covered: int, n: int, nominal: float
) -> None:
    result = coverage_test(covered, n, nominal)
    assert result.passed
    assert result.p_value == pytest.approx(stats.binom.cdf(covered, n, nominal))
    assert result.statement.endswith("one-sided exact binomial test: PASS")


def test_coverage_test_fails_when_coverage_is_clearly_low() -> None:
    result = coverage_test(456, 500, 0.95)
    assert not result.passed
    assert result.empirical == pytest.approx(0.912)
    assert result.p_value == pytest.approx(stats.binom.cdf(456, 500, 0.95))
    assert result.statement == (
        "empirical 0.912 vs nominal 0.95 at n=500: p=0.000251 < 0.01, "
        "one-sided exact binomial test: FAIL"
    )


def test_coverage_test_tolerates_a_shortfall_within_binomial_noise_at_small_n() -> None:
    assert coverage_test(17, 20, 0.95).passed  # 0.85 at n=20: p ~ 0.075
    assert not coverage_test(170, 200, 0.95).passed  # same rate, ten times the rows


# --- evaluate_intervals --------------------------------------------------------------------


def _calibrations(seed: int, n: int, *, spread: float) -> Callable[[float], ConformalCalibration]:
    """Return calibration_for(nominal) fitted on n fresh calibration rows."""
    members, y = _draw(np.random.default_rng(seed), n, spread=spread)
    ensemble = ensemble_moments(members)
    return lambda nominal: calibrate(ensemble.mu, ensemble.sigma, y, alpha=1 - nominal)


def test_evaluate_intervals_flags_overconfident_gaussian_while_conformal_holds() -> None:
    # Members spread at half the noise scale: sigma is too small, so mu +/- z sigma under-covers.
    members, y = _draw(np.random.default_rng(3), 2000, spread=0.5)
    report = evaluate_intervals(members, y, calibration_for=_calibrations(4, 500, spread=0.5))
    assert (report.n_rows, report.n_members) == (2000, MEMBERS)
    assert [level.nominal for level in report.levels] == list(DEFAULT_NOMINALS)
    for level in report.levels:
        assert level.gaussian.method is IntervalMethod.GAUSSIAN
        assert not level.gaussian.test.passed, level.gaussian.test.statement
        assert level.conformal.test.passed, level.conformal.test.statement
        assert level.conformal.mean_width > level.gaussian.mean_width


def test_evaluate_intervals_reports_infinite_width_as_a_string_in_strict_json() -> None:
    members, y = _draw(np.random.default_rng(5), 300)
    report = evaluate_intervals(
        members, y, calibration_for=_calibrations(6, 10, spread=1.0), nominals=(0.5, 0.95)
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    low, high = data["levels"]
    assert math.isfinite(low["conformal"]["mean_width"]) and low["calibration"]["finite"]
    assert high["conformal"]["mean_width"] == "inf" and high["calibration"]["q"] == "inf"
    assert high["conformal"]["covered"] == 300 and high["conformal"]["passed"]
    assert high["calibration"]["message"].startswith("coverage cannot be guaranteed at n=10")


def test_evaluate_intervals_rejects_a_calibration_for_another_nominal() -> None:
    members, y = _draw(np.random.default_rng(8), 50)
    wrong = _calibrations(9, 50, spread=1.0)
    with pytest.raises(UsageError, match=r"returned a calibration for 0\.8 nominal"):
        evaluate_intervals(members, y, calibration_for=lambda nominal: wrong(0.8), nominals=(0.9,))


# --- split_calibration ---------------------------------------------------------------------


def test_grouped_split_never_puts_a_group_on_both_sides() -> None:
    rng = np.random.default_rng(12)
    groups = np.repeat([f"src{i:02d}" for i in range(30)], rng.integers(1, 12, 30))
    for seed in range(20):
        split = split_calibration(groups.size, groups=groups, fraction=0.2, seed=seed)
        assert set(groups[split.train_idx]).isdisjoint(groups[split.calib_idx])
        assert split.grouped
        assert 0.1 < split.calib_idx.size / groups.size < 0.3


@pytest.mark.parametrize("grouped", [False, True])
def test_split_is_disjoint_covers_all_rows_and_is_deterministic(grouped: bool) -> None:
    groups = np.arange(200) // 5 if grouped else None
    split = split_calibration(200, groups=groups, fraction=0.25, seed=3)
    again = split_calibration(200, groups=groups, fraction=0.25, seed=3)
    other = split_calibration(200, groups=groups, fraction=0.25, seed=4)
    assert np.intersect1d(split.train_idx, split.calib_idx).size == 0
    np.testing.assert_array_equal(np.sort(np.r_[split.train_idx, split.calib_idx]), np.arange(200))
    np.testing.assert_array_equal(split.calib_idx, again.calib_idx)
    assert not np.array_equal(split.calib_idx, other.calib_idx)
    assert split.calib_idx.size == 50


def test_split_keeps_at_least_one_row_on_each_side() -> None:
    split = split_calibration(2, fraction=0.01)
    assert (split.train_idx.size, split.calib_idx.size) == (1, 1)


# --- bad inputs ----------------------------------------------------------------------------

_ROWS = (np.zeros(20), np.ones(20), np.linspace(0, 1, 20))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ensemble_moments([[1.0, 2.0]]), "at least 2 members"),
        (lambda: ensemble_moments([[1.0, math.nan], [1.0, 2.0]]), "1 non-finite"),
        (lambda: ensemble_moments([1.0, 2.0]), "must be 2-D"),
        (lambda: ensemble_moments([["a", "b"], ["c", "d"]]), "must be numeric"),
        (lambda: calibrate(np.zeros(3), np.ones(3), np.zeros(4), alpha=0.1), "lengths differ"),
        (lambda: calibrate(*_ROWS, alpha=0.0), r"alpha must be in \(0, 1\)"),
        (lambda: calibrate(*_ROWS, alpha=1.0), r"alpha must be in \(0, 1\)"),
        (lambda: calibrate(*_ROWS, alpha=math.nan), r"alpha must be in \(0, 1\)"),
        (lambda: calibrate(*_ROWS, alpha=0.1, floor=0.0), "floor must be finite and > 0"),
        (lambda: calibrate(_ROWS[0], -_ROWS[1], _ROWS[2], alpha=0.1), "sigma must be >= 0"),
        (
            lambda: calibrate(_ROWS[0], _ROWS[1], _ROWS[2] + math.inf, alpha=0.1),
            "y has 20 non-finite",
        ),
        (lambda: calibrate([], [], [], alpha=0.1), "at least one row"),
        (lambda: calibrate(*_ROWS, alpha=0.1, score="normalised"), "must be a ScoreKind"),  # type: ignore[arg-type]
        (lambda: gaussian_interval([0.0], [1.0], nominal=1.0), r"nominal must be in \(0, 1\)"),
        (lambda: coverage_test(11, 10, 0.9), "0 <= covered <= n"),
        (lambda: coverage_test(0, 0, 0.9), "n >= 1"),
        (lambda: coverage_test(5, 10, 0.9, significance=0.0), "significance"),
        (lambda: split_calibration(10, groups=np.zeros(10)), "at least 2 groups"),
        (lambda: split_calibration(10, groups=np.zeros(9)), "one id per row"),
        (lambda: split_calibration(10, fraction=1.0), "fraction"),
        (lambda: split_calibration(10, seed=-1), "seed must be a non-negative integer"),
    ],
)
def test_bad_input_raises_usage_error_with_one_line_message(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
