"""Tests for the bisect report: its schema, its verdict line, and renderings that fit GitHub."""

import json
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
