"""Tests for the bisect report: its schema, its verdict line, and renderings that fit GitHub."""

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from engine.bisection import BisectResult, Outcome, Visit, find_first_regression
from engine.evaluation import MetricSettings, ModelRef, StepRecord
from engine.features import FEATURES, features_from_frame
from engine.metrics import Interval, MetricReport
from engine.report import MARKDOWN_LIMIT, TableFormat, build_report, render_table, summarise
from engine.threshold import StepStatus, Thresholds

GATE = Thresholds(min_plcc=0.9)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({name: rng.uniform(0, 1, 50).astype(np.float32) for name in FEATURES})
    frame["mos"] = rng.uniform(0, 100, 50).astype(np.float32)
    frame["source"] = [f"s{i % 5}" for i in range(50)]
    return features_from_frame(frame)


def record(index: int, plcc: float, *, broken: str | None = None) -> StepRecord:
    status = StepStatus.PASS if plcc >= 0.9 else StepStatus.FAIL
    metrics = None
    if broken is None:
        metrics = MetricReport(
            n=50,
            n_dropped=0,
            plcc=plcc,
            srocc=plcc,
            krocc=plcc,
            rmse=5.0,
            ci={"plcc": Interval(plcc - 0.01, plcc + 0.01)},
            n_resamples=100,
        )
    return StepRecord(
        name=f"model-with-a-long-name-{index:04d}",
        path=f"m{index}.onnx",
        sha256="ab" * 32,
        status=StepStatus.FAIL if broken else status,
        reasons=(f"broken: {broken}",)
        if broken
        else (() if status is StepStatus.PASS else (f"plcc {plcc} fails",)),
        broken=broken,
        metrics=metrics,
        seconds=0.01,
    )


def make_report(
    features, plccs: list[float], *, full: bool = False, broken: set[int] = frozenset()
):
    models = [
        ModelRef(name=f"model-with-a-long-name-{i:04d}", path=Path(f"m{i}.onnx"))
        for i in range(len(plccs))
    ]
    result = find_first_regression(
        len(plccs),
        lambda i: record(
            i, plccs[i], broken="op 'Loop' is not on the allowlist" if i in broken else None
        ),
        full=full,
    )
    return build_report(
        result,
        models=models,
        features=features,
        thresholds=GATE,
        settings=MetricSettings(),
        scored=result.evaluations,
        from_store=0,
        wall_time_s=0.5,
    )


def schema():
    return json.loads(
        resources.files("engine.schemas").joinpath("bisect-report.schema.json").read_text()
    )


def test_report_validates_against_its_schema(features) -> None:
    report = make_report(features, [0.95] * 6 + [0.7] * 4, broken={9})
    jsonschema.Draft202012Validator(schema()).validate(
        json.loads(json.dumps(report, allow_nan=False))
    )
    assert report["outcome"] == "regression"
    assert report["first_bad_model"] == "model-with-a-long-name-0006"


@pytest.mark.parametrize(
    ("plccs", "expected"),
    [
        ([0.95, 0.95], "No regression"),
        ([0.5, 0.5], "Already bad"),
        ([0.95, 0.5], "Regression: model-with-a-long-name-0001 (index 1)"),
    ],
)
def test_summary_line_names_the_outcome(features, plccs, expected) -> None:
    assert summarise(make_report(features, plccs)).startswith(expected)


def test_markdown_has_verdict_table_chart_and_collapsed_details(features) -> None:
    text = render_table(make_report(features, [0.95] * 6 + [0.7] * 4), fmt=TableFormat.MARKDOWN)
    assert text.startswith("### ❌ Regression")
    assert "| # | model | status | PLCC |" in text
    assert "xychart-beta" in text and "line [0.9000" in text
    assert "<details><summary>Details</summary>" in text


@pytest.mark.parametrize(
    "rmses", [[0.1, 0.2, 9.0, 12.0], [0.0, 0.0, 0.0, 6.0], [3.0, 3.0, 3.0, 3.0]]
)
def test_rmse_chart_axis_never_starts_below_zero(features, rmses: list[float]) -> None:
    gate = Thresholds(max_rmse=5.0)
    models = [ModelRef(name=f"m{i}", path=Path(f"m{i}.onnx")) for i in range(len(rmses))]

    def evaluate(index: int) -> StepRecord:
        base = record(index, 0.95)
        assert base.metrics is not None
        passed = rmses[index] <= 5.0
        return replace(
            base,
            status=StepStatus.PASS if passed else StepStatus.FAIL,
            metrics=replace(base.metrics, rmse=rmses[index]),
        )

    result = find_first_regression(len(rmses), evaluate, full=True)
    report = build_report(
        result,
        models=models,
        features=features,
        thresholds=gate,
        settings=MetricSettings(),
        scored=result.evaluations,
        from_store=0,
        wall_time_s=0.1,
    )
    text = render_table(report, fmt=TableFormat.MARKDOWN)
    [axis] = [line for line in text.splitlines() if line.strip().startswith("y-axis")]
    low, high = (float(value) for value in axis.split('"rmse"')[1].split("-->"))
    assert 0.0 <= low <= min(rmses) and high >= max(*rmses, 5.0)


def test_broken_model_is_named_in_both_renderings_and_left_out_of_chart(features) -> None:
    report = make_report(features, [0.95] * 5 + [0.95], full=True, broken={3})
    assert "op 'Loop' is not on the allowlist" in render_table(report)
    markdown = render_table(report, fmt=TableFormat.MARKDOWN)
    assert "without a plcc value are left out of the chart" in markdown


def test_text_table_names_non_monotonic_models(features) -> None:
    report = make_report(features, [0.95, 0.5, 0.95, 0.5], full=True)
    assert report["non_monotonic"] == [{"index": 2, "name": "model-with-a-long-name-0002"}]
    assert "pass after an earlier failure" in render_table(report)


@pytest.mark.parametrize("pattern", ["all_pass", "all_fail", "alternating"])
def test_markdown_stays_under_limit_for_1024_models_without_cutting_a_row(
    features, pattern
) -> None:
    plccs = {
        "all_pass": [0.95] * 1024,
        "all_fail": [0.5] * 1024,
        "alternating": [0.95 if i % 2 else 0.5 for i in range(1024)],
    }[pattern]
    report = make_report(features, plccs, full=True)
    text = render_table(report, fmt=TableFormat.MARKDOWN)
    assert len(text) <= MARKDOWN_LIMIT
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") and line.count("|") == 9 for line in table)
    assert "rows dropped to fit GitHub's size limit" in text
    if report["first_bad_index"] is not None:
        assert f"`{report['first_bad_model']}`" in text


def test_small_report_keeps_every_row(features) -> None:
    report = make_report(features, [0.95] * 20, full=True)
    text = render_table(report, fmt=TableFormat.MARKDOWN)
    assert "dropped" not in text
    assert sum(line.startswith("| ") and "`model" in line for line in text.splitlines()) == 20


def test_inconclusive_summary_says_no_alarm(features) -> None:
    result = BisectResult(
        Outcome.INCONCLUSIVE,
        3,
        False,
        (Visit(2, record(2, 0.95)),),
        uncertain_index=2,
    )
    models = [ModelRef(name=f"m{i}", path=Path(f"m{i}.onnx")) for i in range(3)]
    report = build_report(
        result,
        models=models,
        features=features,
        thresholds=GATE,
        settings=MetricSettings(),
        scored=1,
        from_store=0,
        wall_time_s=0.1,
    )
    assert "no alarm" in summarise(report)


def status_record(index: int, status: StepStatus) -> StepRecord:
    """A record with a given status (uncertain ones straddle the gate)."""
    plcc = {StepStatus.PASS: 0.95, StepStatus.FAIL: 0.5, StepStatus.UNCERTAIN: 0.9}[status]
    base = record(index, plcc)
    reasons = {StepStatus.UNCERTAIN: ("plcc 0.9 straddles plcc >= 0.9",)}.get(status, base.reasons)
    return StepRecord(
        name=base.name,
        path=base.path,
        sha256=base.sha256,
        status=status,
        reasons=reasons,
        broken=None,
        metrics=base.metrics,
        seconds=base.seconds,
    )


def status_report(features, statuses: list[StepStatus], *, full: bool = False):
    models = [
        ModelRef(name=f"model-with-a-long-name-{i:04d}", path=Path(f"m{i}.onnx"))
        for i in range(len(statuses))
    ]
    result = find_first_regression(
        len(statuses), lambda i: status_record(i, statuses[i]), full=full
    )
    return build_report(
        result,
        models=models,
        features=features,
        thresholds=GATE,
        settings=MetricSettings(statistical=True, bootstrap=100),
        scored=result.evaluations,
        from_store=0,
        wall_time_s=0.5,
    )


P, F, U = StepStatus.PASS, StepStatus.FAIL, StepStatus.UNCERTAIN


def test_certain_newest_failure_behind_uncertain_oldest_is_a_regression_with_a_range(
    features,
) -> None:
    report = status_report(features, [U, P, F, F, F])
    assert report["outcome"] == "regression"
    assert report["first_bad_range"] == {"low": 0, "high": 4}
    line = summarise(report)
    assert line.startswith("Regression: model-with-a-long-name-0004 (index 4) fails plcc >= 0.9")
    assert "lies in indices 0 to 4" in line and "uncertain, not failed" in line
    jsonschema.Draft202012Validator(schema()).validate(
        json.loads(json.dumps(report, allow_nan=False))
    )


def test_full_scan_says_passes_after_uncertain_not_after_failure(features) -> None:
    report = status_report(features, [P, U, P, F, P], full=True)
    assert report["first_bad_range"] == {"low": 1, "high": 3}
    text = render_table(report)
    assert "1 model(s) pass after an earlier uncertain model (not a failure)" in text
    assert "model-with-a-long-name-0002 (#2)" in text
    assert "1 model(s) pass after an earlier failure: model-with-a-long-name-0004 (#4)" in text
    assert "uncertain" in render_table(report, fmt=TableFormat.MARKDOWN)


def test_exact_boundary_keeps_the_plain_regression_wording(features) -> None:
    report = status_report(features, [P, P, F])
    assert report["first_bad_range"] == {"low": 2, "high": 2}
    assert "is the first model that fails plcc >= 0.9; last good is" in summarise(report)


def test_broken_first_bad_model_is_called_broken_not_failing(features) -> None:
    report = make_report(features, [0.95, 0.95, 0.95, 0.95], broken={2, 3})
    line = summarise(report)
    assert (
        "model-with-a-long-name-0002 (index 2) is broken (op 'Loop' is not on the allowlist)"
        in (line)
    )
    assert "fails plcc" not in line
    assert render_table(report, fmt=TableFormat.MARKDOWN).startswith("### ❌ Regression")


def test_broken_oldest_model_is_already_bad_and_called_broken(features) -> None:
    line = summarise(make_report(features, [0.95, 0.95], broken={0, 1}))
    assert line.startswith("Already bad: the oldest model model-with-a-long-name-0000 is broken (")


def test_report_records_the_resampling_plan(features) -> None:
    report = status_report(features, [P, P])
    assert report["features"]["resampling"] == {
        "method": "grouped",
        "column": "source",
        "groups": 5,
        "distinct_resamples": 126,
        "min_groups": 5,
    }
    assert report["features"]["warnings"] == []


def test_report_warns_when_rows_are_treated_as_independent(features) -> None:
    bare = features_from_frame(features.frame.drop(columns=["source"]))
    models = [ModelRef(name="m0", path=Path("m0.onnx"))]
    result = find_first_regression(1, lambda i: status_record(i, P))
    report = build_report(
        result,
        models=models,
        features=bare,
        thresholds=GATE,
        settings=MetricSettings(statistical=True, bootstrap=100),
        scored=1,
        from_store=0,
        wall_time_s=0.1,
    )
    assert report["features"]["resampling"]["method"] == "rows"
    assert "treats its 50 rows as independent" in report["features"]["warnings"][0]
    assert "Warning: the feature cache has no source column" in render_table(report)
    markdown = render_table(report, fmt=TableFormat.MARKDOWN)
    assert "**Warning: the feature cache has no source column" in markdown
