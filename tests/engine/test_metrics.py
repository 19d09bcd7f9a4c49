"""Metrics pinned against scipy; NaN semantics, the logistic fit, the bootstrap, the JSON form."""

import itertools
import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from engine import metrics
from engine.errors import ReportError, UsageError
from engine.metrics import (
    Interval,
    MetricReport,
    compute_metrics,
    fit_logistic,
    krocc,
    plcc,
    plcc_logistic,
    rmse,
    srocc,
)


def _correlated(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous predictions and targets with a PLCC around 0.9."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(50.0, 15.0, size=n)
    target = pred + rng.normal(0.0, 7.0, size=n)
    return pred, target


def _tied(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tie-heavy predictions and targets: a handful of integer levels each."""
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 6, size=n).astype(float)
    target = np.round(pred / 2 + rng.integers(0, 3, size=n))
    return pred, target


def _resample_by_rows(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> metrics.FloatArray:
    """Return scipy's PLCC, SROCC and our RMSE for each explicit resample (rows of idx)."""
    out = np.empty((3, idx.shape[0]))
    for b, rows in enumerate(idx):
        a, c = x[rows], y[rows]
        out[:, b] = [
            stats.pearsonr(a, c).statistic,
            stats.spearmanr(a, c).statistic,
            np.sqrt(np.mean((a - c) ** 2)),
        ]
    return out


# --- plain metrics against scipy ------------------------------------------------------------


def test_plcc_matches_scipy_pearsonr() -> None:
    pred, target = _correlated(500)
    assert plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target).statistic, abs=1e-12)


def test_srocc_matches_scipy_with_ties() -> None:
    pred, target = _tied(400)
    assert len(np.unique(pred)) <= 6 and len(np.unique(target)) <= 6
    assert srocc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)


def test_krocc_matches_scipy_kendall_tau_b_with_ties() -> None:
    pred, target = _tied(400, seed=3)
    expected = stats.kendalltau(pred, target, variant="b").statistic
    assert krocc(pred, target) == pytest.approx(expected, abs=1e-12)


def test_rmse_matches_hand_computation() -> None:
    assert rmse([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 1.0, 4.0]) == pytest.approx(math.sqrt(5 / 4))


def test_plain_metrics_return_nan_without_warning_when_input_is_constant() -> None:
    constant, varying = np.full(10, 3.0), np.arange(10.0)
    for metric in (plcc, srocc, krocc):
        assert math.isnan(metric(constant, varying))
        assert math.isnan(metric(varying, constant))
    assert rmse(constant, varying) == pytest.approx(math.sqrt(np.mean((3.0 - varying) ** 2)))


def test_plain_metrics_return_nan_on_non_finite_values() -> None:
    pred, target = np.array([1.0, np.nan, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])
    for metric in (plcc, srocc, krocc, rmse, plcc_logistic):
        assert math.isnan(metric(pred, target))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    st.integers(min_value=2, max_value=60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(-3, 3), min_size=n, max_size=n),
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
        )
    )
)
def test_srocc_equals_scipy_spearmanr_on_tie_heavy_integers(
    pair: tuple[list[int], list[int]],
) -> None:
    pred, target = (np.array(values, dtype=float) for values in pair)
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        assert math.isnan(srocc(pred, target))
        return
    assert srocc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)


# --- compute_metrics: NaN semantics ---------------------------------------------------------


def test_compute_metrics_matches_plain_metrics_on_clean_data() -> None:
    pred, target = _correlated(300)
    report = compute_metrics(pred, target)
    assert (report.n, report.n_dropped, report.reason) == (300, 0, None)
    assert report.plcc == plcc(pred, target)
    assert report.srocc == srocc(pred, target)
    assert report.krocc == krocc(pred, target)
    assert report.rmse == rmse(pred, target)
    assert report.plcc_logistic is None
    assert dict(report.ci) == {}
    assert (report.n_resamples, report.grouped) == (0, False)


def test_non_finite_target_rows_are_dropped_and_counted() -> None:
    pred, target = _correlated(200)
    holed = target.copy()
    holed[[3, 50, 51, 199]] = [np.nan, np.inf, -np.inf, np.nan]
    keep = np.isfinite(holed)
    report = compute_metrics(pred, holed)
    assert (report.n, report.n_dropped, report.reason) == (196, 4, None)
    assert report.plcc == pytest.approx(plcc(pred[keep], target[keep]), abs=1e-15)
    assert report.srocc == pytest.approx(srocc(pred[keep], target[keep]), abs=1e-15)
    assert report.rmse == pytest.approx(rmse(pred[keep], target[keep]), abs=1e-15)


def test_non_finite_predictions_make_every_metric_nan_with_reason() -> None:
    pred, target = _correlated(200)
    pred[[7, 8, 9]] = [np.nan, np.inf, np.nan]
    report = compute_metrics(pred, target, bootstrap=50, logistic=True)
    assert all(math.isnan(v) for v in (report.plcc, report.srocc, report.krocc, report.rmse))
    assert report.plcc_logistic is not None and math.isnan(report.plcc_logistic)
    assert report.reason == "predictions contain 3 non-finite values"
    assert (report.n, report.n_dropped, report.n_resamples) == (200, 0, 0)
    assert dict(report.ci) == {}


def test_nan_prediction_fails_even_on_a_row_whose_target_is_missing() -> None:
    pred, target = _correlated(50)
    pred[4], target[4] = np.nan, np.nan
    report = compute_metrics(pred, target)
    assert math.isnan(report.plcc)
    assert report.reason == "predictions contain 1 non-finite value"
    assert (report.n, report.n_dropped) == (49, 1)


def test_constant_predictions_give_nan_correlations_with_reason() -> None:
    _, target = _correlated(100)
    report = compute_metrics(np.full(100, 42.0), target, bootstrap=100, logistic=True)
    assert math.isnan(report.plcc) and math.isnan(report.srocc) and math.isnan(report.krocc)
    assert report.plcc_logistic is not None and math.isnan(report.plcc_logistic)
    assert report.rmse == pytest.approx(rmse(np.full(100, 42.0), target))
    assert report.reason == "predictions are constant (zero variance)"
    assert list(report.ci) == ["rmse"]


def test_constant_targets_give_nan_correlations_with_reason() -> None:
    pred, _ = _correlated(100)
    report = compute_metrics(pred, np.full(100, 3.0))
    assert math.isnan(report.plcc) and math.isfinite(report.rmse)
    assert report.reason == "targets are constant (zero variance)"


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_fewer_than_three_rows_give_nan_with_reason(rows: int) -> None:
    report = compute_metrics(np.arange(rows, dtype=float), np.arange(rows, dtype=float) * 2)
    assert math.isnan(report.plcc) and math.isnan(report.rmse)
    assert report.reason == f"fewer than 3 finite rows (got {rows})"


def test_rows_left_after_dropping_targets_decide_the_row_count() -> None:
    report = compute_metrics([1.0, 2.0, 3.0, 4.0], [1.0, np.nan, np.nan, 2.0])
    assert (report.n, report.n_dropped) == (2, 2)
    assert report.reason == "fewer than 3 finite rows (got 2)"


# --- logistic fit ----------------------------------------------------------------------------


def test_fit_logistic_recovers_known_parameters() -> None:
    x = np.linspace(0.0, 10.0, 200)
    y = 10.0 + (90.0 - 10.0) / (1.0 + np.exp(-(x - 5.0) / 1.5))
    fit = fit_logistic(x, y)
    assert fit.reason is None
    assert (fit.b1, fit.b2, fit.b3, abs(fit.b4)) == pytest.approx((90.0, 10.0, 5.0, 1.5), rel=1e-6)
    assert fit.plcc == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.apply(x), y, rtol=1e-6)


def test_logistic_plcc_beats_linear_plcc_on_a_sigmoid_relation() -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 100.0, size=400)
    y = 1.0 + 4.0 / (1.0 + np.exp(-(x - 50.0) / 6.0)) + rng.normal(0.0, 0.15, size=400)
    report = compute_metrics(x, y, logistic=True)
    assert report.plcc_logistic is not None
    assert report.plcc_logistic > report.plcc + 0.02
    assert report.plcc_logistic == pytest.approx(plcc_logistic(x, y))
    assert report.reason is None


def test_logistic_plcc_stays_negative_for_an_inverted_model() -> None:
    pred, target = _correlated(300, seed=2)
    value = plcc_logistic(-pred, target)
    assert value < 0
    assert value == pytest.approx(plcc(-pred, target), abs=0.02)


def test_logistic_fit_that_does_not_converge_gives_nan_with_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "_MAX_FIT_EVALUATIONS", 1)
    pred, target = _correlated(100)
    report = compute_metrics(pred, target, logistic=True)
    assert report.plcc_logistic is not None and math.isnan(report.plcc_logistic)
    assert math.isfinite(report.plcc)
    assert report.reason is not None and report.reason.startswith("logistic fit did not converge")


def test_logistic_fit_needs_five_rows() -> None:
    fit = fit_logistic([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert math.isnan(fit.plcc)
    assert fit.reason == "logistic fit needs at least 5 rows, got 4"


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_with_the_same_seed() -> None:
    pred, target = _correlated(300)
    first = compute_metrics(pred, target, bootstrap=200, seed=7)
    second = compute_metrics(pred, target, bootstrap=200, seed=7)
    assert first == second
    assert dict(first.ci) == dict(second.ci)


def test_bootstrap_differs_with_a_different_seed() -> None:
    pred, target = _correlated(300)
    first = compute_metrics(pred, target, bootstrap=200, seed=7)
    second = compute_metrics(pred, target, bootstrap=200, seed=8)
    assert dict(first.ci) != dict(second.ci)


def test_bootstrap_interval_contains_the_point_estimate() -> None:
    pred, target = _correlated(400)
    report = compute_metrics(pred, target, bootstrap=300, confidence=0.9)
    assert list(report.ci) == ["plcc", "srocc", "rmse"]
    for name in ("plcc", "srocc", "rmse"):
        interval = report.ci[name]
        assert interval.low < interval.high
        assert interval.contains(getattr(report, name))
    assert (report.n_resamples, report.confidence, report.grouped) == (300, 0.9, False)


def test_grouped_bootstrap_is_wider_when_groups_have_strong_offsets() -> None:
    rng = np.random.default_rng(11)
    sources = np.repeat(np.arange(20), 40)
    pred = rng.normal(50.0, 10.0, size=sources.size)
    target = (
        pred + rng.normal(0.0, 12.0, size=20)[sources] + rng.normal(0.0, 2.0, size=sources.size)
    )
    rows = compute_metrics(pred, target, bootstrap=300)
    grouped = compute_metrics(pred, target, groups=sources, bootstrap=300)
    assert grouped.grouped and not rows.grouped
    for name in ("plcc", "srocc", "rmse"):
        row_width = rows.ci[name].high - rows.ci[name].low
        group_width = grouped.ci[name].high - grouped.ci[name].low
        assert group_width > 1.5 * row_width, name


def test_groups_can_be_string_ids() -> None:
    pred, target = _correlated(60)
    sources = np.array([f"src{i % 6}" for i in range(60)])
    report = compute_metrics(pred, target, groups=sources, bootstrap=50)
    assert report.grouped and set(report.ci) == {"plcc", "srocc", "rmse"}


def test_bootstrap_does_not_depend_on_batch_size_or_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pred, target = _tied(500, seed=4)
    sources = np.arange(500) % 25
    expected = [compute_metrics(pred, target, groups=g, bootstrap=64) for g in (None, sources)]
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 1700)
    monkeypatch.setattr(metrics, "_WORKERS", 1)
    assert [
        compute_metrics(pred, target, groups=g, bootstrap=64) for g in (None, sources)
    ] == expected


@pytest.mark.parametrize("data", ["continuous", "tied"])
@pytest.mark.parametrize("kind", [np.int32, np.int64])
def test_bootstrap_replicates_equal_scipy_on_the_explicit_resamples(data: str, kind: type) -> None:
    pred, target = _correlated(80, seed=9) if data == "continuous" else _tied(80, seed=9)
    order = np.argsort(pred, kind="stable")  # the bootstrap works on rows sorted by prediction
    x, y = pred[order], target[order]
    idx = np.random.default_rng(1).integers(0, x.size, size=(12, x.size))
    weights: np.ndarray = np.stack([np.bincount(r, minlength=x.size) for r in idx]).astype(kind)
    got = metrics._replicate_stats(metrics._prepare(x, y), weights, total=weights.sum(axis=1))
    np.testing.assert_allclose(got, _resample_by_rows(x, y, idx), rtol=1e-10, atol=1e-12)


def test_grouped_resample_weights_repeat_whole_groups() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    children = np.random.default_rng(3).spawn(5)
    draw = metrics._draw_resamples(children, rows=6, labels=labels, kind=np.int32)
    for weights, total in zip(draw.weights, draw.total, strict=True):
        assert weights[0] == weights[1] and weights[3] == weights[4] == weights[5]
        assert weights[0] + weights[2] + weights[3] == 3  # three groups drawn
        assert total == weights.sum()


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_weighted_resample_srocc_equals_scipy_on_tie_heavy_integers(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 40))
    x = np.sort(np.array(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), float))
    y = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), float)
    counts = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    if counts.sum() == 0:
        counts[0] = 1
    rows = np.repeat(np.arange(n), counts)
    weights = counts[None, :].astype(np.int32)
    got = metrics._replicate_stats(metrics._prepare(x, y), weights, total=weights.sum(axis=1))
    if np.ptp(x[rows]) == 0 or np.ptp(y[rows]) == 0:
        assert math.isnan(got[0, 0]) and math.isnan(got[1, 0])
    else:
        assert got[1, 0] == pytest.approx(stats.spearmanr(x[rows], y[rows]).statistic, abs=1e-12)


def test_grouped_bootstrap_needs_two_groups() -> None:
    pred, target = _correlated(30)
    with pytest.raises(UsageError, match="at least 2 source groups"):
        compute_metrics(pred, target, groups=np.zeros(30), bootstrap=10)


# --- report values and JSON ------------------------------------------------------------------


def test_report_round_trips_through_json_without_nan() -> None:
    pred, target = _correlated(200)
    reports = [
        compute_metrics(pred, target, groups=np.arange(200) % 10, bootstrap=100, logistic=True),
        compute_metrics(np.full(200, 1.0), target, bootstrap=20, logistic=True),
        compute_metrics(pred, target),
    ]
    for report in reports:
        text = json.dumps(report.to_dict(), allow_nan=False)
        back = MetricReport.from_dict(json.loads(text))
        assert back == report
        assert back.to_dict() == report.to_dict()
        assert dict(back.ci) == dict(report.ci)


def test_to_dict_writes_nan_as_null_and_leaves_out_unrequested_logistic() -> None:
    data = compute_metrics(np.full(10, 1.0), np.arange(10.0)).to_dict()
    assert data["plcc"] is None and data["srocc"] is None and data["krocc"] is None
    assert "plcc_logistic" not in data
    assert data["reason"] == "predictions are constant (zero variance)"
    failed = compute_metrics(np.full(10, 1.0), np.arange(10.0), logistic=True).to_dict()
    assert failed["plcc_logistic"] is None


def test_report_is_hashable_picklable_and_its_intervals_are_read_only() -> None:
    report = compute_metrics(*_correlated(100), bootstrap=20)
    assert hash(report) == hash(MetricReport.from_dict(report.to_dict()))
    assert pickle.loads(pickle.dumps(report)) == report
    assert report.ci == {key: report.ci[key] for key in ("plcc", "srocc", "rmse")}
    with pytest.raises(TypeError):
        report.ci["plcc"] = Interval(0.0, 1.0)  # type: ignore[index]


def test_from_dict_rejects_a_malformed_report() -> None:
    data = compute_metrics(*_correlated(50)).to_dict()
    del data["rmse"]
    with pytest.raises(ReportError, match="malformed metric report"):
        MetricReport.from_dict(data)


def test_report_rejects_unknown_interval_keys() -> None:
    with pytest.raises(UsageError, match="ci keys"):
        MetricReport(
            n=3, n_dropped=0, plcc=1.0, srocc=1.0, krocc=1.0, rmse=0.0, ci={"mae": Interval(0, 1)}
        )


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pred": np.ones((3, 2)), "target": np.ones(3)}, "must be 1-D"),
        ({"pred": np.ones(4), "target": np.ones(3)}, "differ in length"),
        ({"pred": ["a", "b", "c"], "target": np.ones(3)}, "must be numeric"),
        ({"pred": np.ones(3), "target": np.array([1 + 1j, 2, 3])}, "must be numeric"),
        ({"pred": [1.0, [2.0], 3.0], "target": np.ones(3)}, "numeric"),
        ({"bootstrap": -1}, "bootstrap must be a non-negative integer"),
        ({"bootstrap": 2.5}, "bootstrap must be a non-negative integer"),
        ({"bootstrap": True}, "bootstrap must be a non-negative integer"),
        ({"seed": -3}, "seed must be a non-negative integer"),
        ({"confidence": 0.0}, r"confidence must be a number in \(0, 1\)"),
        ({"confidence": 1.0}, r"confidence must be a number in \(0, 1\)"),
        ({"confidence": float("nan")}, r"confidence must be a number in \(0, 1\)"),
        ({"groups": np.arange(5)}, "one id per row"),
        ({"groups": np.array([1, "a", None, 2, 3, 4], dtype=object)}, "sortable ids"),
    ],
)
def test_malformed_input_raises_usage_error(kwargs: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"pred": np.arange(6.0), "target": np.arange(6.0) ** 2}
    call.update(kwargs)
    pred, target = call.pop("pred"), call.pop("target")
    with pytest.raises(UsageError, match=message):
        compute_metrics(pred, target, **call)  # type: ignore[arg-type]


def test_plain_metrics_raise_usage_error_on_shape_mismatch() -> None:
    for metric in (plcc, srocc, krocc, rmse, plcc_logistic):
        with pytest.raises(UsageError, match="differ in length"):
            metric([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize(("groups", "distinct"), [(1, 1), (2, 3), (3, 10), (4, 35), (5, 126)])
def test_distinct_resamples_is_multisets_of_g_groups(groups: int, distinct: int) -> None:
    assert metrics.distinct_resamples(groups) == distinct


def test_distinct_resamples_counts_what_a_grouped_draw_can_produce() -> None:
    """Enumerate every draw of 3 groups from 3: exactly C(5, 3) = 10 different multisets."""
    draws = {tuple(sorted(d)) for d in itertools.product(range(3), repeat=3)}
    assert len(draws) == metrics.distinct_resamples(3) == 10


@pytest.mark.parametrize(("confidence", "needed"), [(0.5, 4), (0.9, 4), (0.95, 5), (0.99, 6)])
def test_min_groups_follows_the_documented_table(confidence: float, needed: int) -> None:
    assert metrics.min_groups(confidence) == needed
    tail = (1 - confidence) / 2
    assert metrics.distinct_resamples(needed) * tail >= 1 and needed**-needed < tail
    below = needed - 1
    if below >= metrics.MIN_GROUPS:  # one group fewer breaks a condition
        assert metrics.distinct_resamples(below) * tail < 1 or below**-below >= tail


def test_three_groups_have_single_source_resamples_above_the_95_percent_tail() -> None:
    """The issue's arithmetic: each single-source resample of 3 groups has probability 1/27."""
    assert 3**-3 > 0.025 > 4**-4
    assert metrics.MIN_GROUPS == 4
