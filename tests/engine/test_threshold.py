"""Tests for the bisect quality gate: point-wise and interval judgements."""

import math

import pytest

from engine.errors import UsageError
from engine.metrics import Interval, MetricReport
from engine.threshold import StepStatus, Thresholds, judge


def report(
    plcc: float = 0.95, srocc: float = 0.94, rmse: float = 5.0, **extra: object
) -> MetricReport:
    return MetricReport(n=100, n_dropped=0, plcc=plcc, srocc=srocc, krocc=0.8, rmse=rmse, **extra)  # type: ignore[arg-type]


def test_gate_refuses_to_be_empty() -> None:
    with pytest.raises(UsageError, match="at least one"):
        Thresholds()


@pytest.mark.parametrize("bad", [math.nan, 1.5, -2.0])
def test_gate_refuses_correlation_threshold_out_of_range(bad: float) -> None:
    with pytest.raises(UsageError, match="min_plcc"):
        Thresholds(min_plcc=bad)


def test_gate_refuses_non_positive_rmse_threshold() -> None:
    with pytest.raises(UsageError, match="max_rmse"):
        Thresholds(max_rmse=0.0)


def test_every_threshold_must_hold() -> None:
    gate = Thresholds(min_plcc=0.9, min_srocc=0.9, max_rmse=6.0)
    assert judge(report(), gate).status is StepStatus.PASS
    failed = judge(report(rmse=7.5), gate)
    assert failed.status is StepStatus.FAIL
    assert failed.reasons == ("rmse 7.5000 fails rmse <= 6",)


def test_threshold_equal_to_value_passes() -> None:
    assert judge(report(plcc=0.9), Thresholds(min_plcc=0.9)).status is StepStatus.PASS


def test_nan_metric_fails_with_the_metrics_reason() -> None:
    nan_report = report(
        plcc=math.nan, srocc=math.nan, reason="predictions are constant (zero variance)"
    )
    judgement = judge(nan_report, Thresholds(min_plcc=0.5))
    assert judgement.status is StepStatus.FAIL
    assert "constant" in judgement.reasons[0]


def test_statistical_passes_only_when_whole_interval_is_above() -> None:
    gate = Thresholds(min_plcc=0.9)
    above = report(ci={"plcc": Interval(0.91, 0.97)})
    straddling = report(ci={"plcc": Interval(0.88, 0.95)})
    below = report(plcc=0.85, ci={"plcc": Interval(0.80, 0.89)})
    assert judge(above, gate, statistical=True).status is StepStatus.PASS
    assert judge(straddling, gate, statistical=True).status is StepStatus.UNCERTAIN
    assert judge(below, gate, statistical=True).status is StepStatus.FAIL


def test_statistical_rmse_fails_only_when_whole_interval_is_above_the_cap() -> None:
    gate = Thresholds(max_rmse=6.0)
    assert (
        judge(report(rmse=7, ci={"rmse": Interval(6.5, 7.5)}), gate, statistical=True).status
        is StepStatus.FAIL
    )
    assert (
        judge(report(rmse=6, ci={"rmse": Interval(5.5, 6.5)}), gate, statistical=True).status
        is StepStatus.UNCERTAIN
    )


def test_statistical_failure_outweighs_uncertainty() -> None:
    gate = Thresholds(min_plcc=0.9, max_rmse=6.0)
    mixed = report(ci={"plcc": Interval(0.88, 0.95), "rmse": Interval(6.5, 7.0)})
    assert judge(mixed, gate, statistical=True).status is StepStatus.FAIL


def test_statistical_mode_without_interval_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="interval"):
        judge(report(), Thresholds(min_plcc=0.9), statistical=True)
