"""The nightly tracking comment and check output: verdict first, within GitHub's limits."""

import random
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.handlers.nightly_view import (
    ERROR_OUTCOME,
    NIGHTLY_PURPOSE,
    NIGHTLY_TRACKING,
    NightlyView,
    badge,
    conclusion_for,
    render_check_output,
    render_tracking_comment,
)
from bot.store import RunRecord, SqliteStore
from bot.surfaces.blame import Blame
from bot.surfaces.checks import MAX_OUTPUT_BYTES, Conclusion
from bot.surfaces.sticky import MAX_COMMENT_CHARS, marker
from engine.bisection import BisectResult, Outcome, Visit
from engine.evaluation import MetricSettings, ModelRef, StepRecord
from engine.features import FeatureTable, load_features
from engine.metrics import MetricReport
from engine.report import TableFormat, build_report, render_table, summarise
from engine.threshold import StepStatus, Thresholds

FEATURES = Path(__file__).resolve().parents[3] / "testdata" / "bisect" / "features.parquet"
SHA = "e6638d510d52192158838a8f3f8ab67b17aa1ae3"
WHEN = datetime(2026, 12, 1, 4, 37, tzinfo=UTC)
REPO_URL = "https://github.com/acme/video-models"
COMMIT = f"[`e6638d5`]({REPO_URL}/commit/{SHA}) on `main` at 2026-12-01 04:37 UTC"
COMMIT_LINE = f"Judged {COMMIT}"
GATE = Thresholds(min_plcc=0.9)


@pytest.fixture(scope="module")
def features() -> FeatureTable:
    return load_features(FEATURES)


def regression_report(features: FeatureTable, *, n_models: int, first_bad: int) -> dict[str, Any]:
    """A full-mode report of ``n_models`` synthetic models failing from ``first_bad`` on."""
    rng = random.Random(n_models)
    models = [
        ModelRef(f"fr-mlp-v{i:04d}", Path(f"models/fr-mlp-v{i:04d}.onnx")) for i in range(n_models)
    ]

    def step(index: int) -> StepRecord:
        plcc = rng.uniform(0.95, 0.98) if index < first_bad else rng.uniform(0.6, 0.8)
        status = StepStatus.PASS if index < first_bad else StepStatus.FAIL
        metrics = MetricReport(
            n=6048, n_dropped=0, plcc=plcc, srocc=plcc, krocc=plcc - 0.1, rmse=8.0
        )
        reasons = () if status is StepStatus.PASS else (f"plcc {plcc:.4f} fails plcc >= 0.9",)
        return StepRecord(
            name=models[index].name,
            path=str(models[index].path),
            sha256="a" * 64,
            status=status,
            reasons=reasons,
            broken=None,
            metrics=metrics,
            seconds=0.01,
        )

    result: BisectResult[StepRecord] = BisectResult(
        outcome=Outcome.REGRESSION,
        n_models=n_models,
        full=True,
        visits=tuple(Visit(i, step(i)) for i in range(n_models)),
        first_bad_index=first_bad,
        last_good_index=first_bad - 1,
    )
    return build_report(
        result,
        models=models,
        features=features,
        thresholds=GATE,
        settings=MetricSettings(),
        scored=n_models,
        from_store=0,
        wall_time_s=1.0,
        registry="models/registry.json",
    )


def view_of(outcome: Outcome | None, **changes: Any) -> NightlyView:
    fields: dict[str, Any] = {
        "repo": "acme/video-models",
        "branch": "main",
        "commit_sha": SHA,
        "outcome": outcome,
        "summary": "No regression: the newest model v1 passes plcc >= 0.9.",
        "details": "| # | model |",
        "finished_at": WHEN,
        "registry": "models/registry.json",
        "features": "golden/features.parquet",
        "repo_url": REPO_URL,
        "check_url": f"{REPO_URL}/runs/7",
    }
    return NightlyView(**{**fields, **changes})


def report_view(report: dict[str, Any]) -> NightlyView:
    """The view of a finished run: the engine's verdict and markdown table."""
    return view_of(
        Outcome(report["outcome"]),
        summary=summarise(report),
        details=render_table(report, fmt=TableFormat.MARKDOWN),
    )


def history_of(count: int, *, summary: str = "No regression.") -> list[RunRecord]:
    """``count`` nightly runs, newest first (as the store returns them)."""
    return [
        RunRecord(
            repo="acme/video-models",
            day=(WHEN - timedelta(days=i)).date().isoformat(),
            commit_sha=f"{i:02d}" + "c" * 38,
            outcome=Outcome.NO_REGRESSION.value,
            summary=summary,
            finished_at=WHEN - timedelta(days=i),
        )
        for i in range(count)
    ]


def history_rows(comment: str) -> list[str]:
    if "### History" not in comment:
        return []
    section = comment.split("### History", 1)[1]
    return [line for line in section.splitlines() if re.match(r"\| \d{4}-\d{2}-\d{2} ", line)]


def test_ten_model_comment_keeps_the_verdict_commit_every_row_and_the_history(
    features: FeatureTable,
) -> None:
    report = regression_report(features, n_models=10, first_bad=6)
    view = report_view(report)
    comment = render_tracking_comment(view, history_of(3))
    assert len(comment) < MAX_COMMENT_CHARS
    assert comment.startswith(marker(NIGHTLY_PURPOSE))
    assert "## model-guard nightly: ❌ regression" in comment
    assert COMMIT_LINE in comment
    assert f"[check run]({REPO_URL}/runs/7)" in comment
    assert "Regression: fr-mlp-v0006 (index 6) is the first model that fails" in comment
    for i in range(10):
        assert f"`fr-mlp-v{i:04d}`" in comment
    assert len(history_rows(comment)) == 3
    assert "left out" not in comment and "truncated" not in comment


def test_thousand_model_comment_fits_githubs_limit_and_keeps_verdict_and_commit(
    features: FeatureTable,
) -> None:
    report = regression_report(features, n_models=1000, first_bad=613)
    view = report_view(report)
    comment = render_tracking_comment(view, history_of(14))
    assert len(comment) <= MAX_COMMENT_CHARS
    assert comment.startswith(marker(NIGHTLY_PURPOSE))
    assert COMMIT_LINE in comment
    assert "## model-guard nightly: ❌ regression" in comment
    assert "Regression: fr-mlp-v0613 (index 613) is the first model that fails" in comment
    assert "`fr-mlp-v0612`" in comment and "`fr-mlp-v0613`" in comment


def test_details_far_over_the_limit_are_left_out_with_a_note_not_the_verdict() -> None:
    details = "\n".join(f"| {i} | `model-{i}` | ✅ pass |" for i in range(20_000))
    view = view_of(
        Outcome.NO_REGRESSION,
        summary="No regression: the newest model model-19999 passes plcc >= 0.9.",
        details=details,
    )
    comment = render_tracking_comment(view, history_of(14))
    assert len(details) > 5 * MAX_COMMENT_CHARS
    assert len(comment) <= MAX_COMMENT_CHARS
    assert "## model-guard nightly: ✅ no regression" in comment
    assert COMMIT_LINE in comment
    assert "The bisect table left out" in comment


def test_history_that_fits_once_an_oversized_table_is_left_out_is_kept() -> None:
    details = "\n".join(f"| {i} | `model-{i}` | ✅ pass |" for i in range(20_000))
    view = view_of(Outcome.NO_REGRESSION, details=details)
    comment = render_tracking_comment(view, history_of(14))
    assert "The bisect table left out" in comment
    assert len(history_rows(comment)) == 14


async def test_history_of_fourteen_runs_from_the_store_renders_newest_first(
    tmp_path: Path,
) -> None:
    async with SqliteStore(tmp_path / "runs.sqlite3") as store:
        days = list(range(20))
        random.Random(3).shuffle(days)  # recorded out of order; the newest still comes first
        for day in days:
            finished = WHEN - timedelta(days=day)
            await store.record_run(
                "acme/video-models",
                day=finished.date().isoformat(),
                commit_sha=f"{day:02d}" + "d" * 38,
                outcome=Outcome.NO_REGRESSION.value,
                summary=f"run {day}",
                finished_at=finished,
            )
        history = await store.recent_runs("acme/video-models", limit=14)
    comment = render_tracking_comment(view_of(Outcome.NO_REGRESSION), history)
    rows = history_rows(comment)
    assert "### History (the last 14 runs)" in comment
    assert len(rows) == 14
    shown = [row.split(" | ")[0].lstrip("| ") for row in rows]
    expected = [(WHEN - timedelta(days=d)).strftime("%Y-%m-%d %H:%M") for d in range(14)]
    assert shown == expected
    assert rows[0].endswith("| run 0 |") and rows[-1].endswith("| run 13 |")


def test_one_run_of_history_says_run_not_runs() -> None:
    comment = render_tracking_comment(view_of(Outcome.NO_REGRESSION), history_of(1))
    assert "### History (the last 1 run)" in comment


def test_no_history_leaves_the_history_section_out() -> None:
    comment = render_tracking_comment(view_of(Outcome.NO_REGRESSION), [])
    assert "### History" not in comment


def test_error_view_states_the_summary_and_says_it_could_not_judge() -> None:
    summary = "The timeline could not be judged: models/registry.json at e6638d5: missing"
    view = view_of(
        None,
        summary=summary,
        details="Nothing was judged, so nothing is known to be good.",
    )
    comment = render_tracking_comment(view, history_of(2))
    assert "## model-guard nightly: ⚠️ could not judge" in comment
    assert f"**{summary}**" in comment
    assert COMMIT in comment
    assert "Nothing was judged" in comment


def test_error_view_without_a_commit_says_the_branch_could_not_be_read() -> None:
    view = view_of(
        None,
        commit_sha=None,
        summary="The timeline could not be judged: no commit found for this ref",
        details="",
    )
    comment = render_tracking_comment(view, [])
    assert "no commit (the branch could not be read) on `main`" in comment
    assert "**The timeline could not be judged: no commit found for this ref**" in comment


def test_pipes_and_newlines_in_a_summary_do_not_break_the_history_table() -> None:
    summary = "gate | plcc >= 0.9 | failed\nsecond line"
    comment = render_tracking_comment(
        view_of(Outcome.NO_REGRESSION), history_of(3, summary=summary)
    )
    rows = history_rows(comment)
    assert len(rows) == 3
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)
        assert len(cells) == 6  # empty, four cells, empty: the pipes are escaped
        assert cells[4].strip() == r"gate \| plcc >= 0.9 \| failed second line"


def test_a_very_long_summary_is_shortened_in_the_history_table() -> None:
    comment = render_tracking_comment(
        view_of(Outcome.NO_REGRESSION), history_of(1, summary="y" * 1000)
    )
    (row,) = history_rows(comment)
    cell = row.split(" | ")[-1].rstrip(" |")
    assert cell == "y" * 157 + "..."


def test_badge_names_every_outcome_and_passes_an_unknown_one_through() -> None:
    assert {badge(o.value) for o in Outcome} == {
        "✅ no regression",
        "❌ regression",
        "❌ already bad",
        "⚠️ inconclusive",
    }
    assert badge(ERROR_OUTCOME) == badge(None) == "⚠️ could not judge"
    assert {badge(o) for o in Outcome} == {badge(o.value) for o in Outcome}
    assert badge("surprise") == "surprise"


def test_check_output_has_the_verdict_as_summary_the_table_as_text_and_the_comment_link(
    features: FeatureTable,
) -> None:
    report = regression_report(features, n_models=10, first_bad=6)
    view = report_view(report)
    url = f"{REPO_URL}/issues/1#issuecomment-9"
    output = render_check_output(view, comment_url=url)
    assert output.title.startswith("❌ regression: Regression: fr-mlp-v0006")
    assert len(output.title) <= 200
    assert output.summary == f"{view.summary}\n\nTracking comment: {url}"
    assert output.text == view.details
    assert render_check_output(view, comment_url=None).summary == view.summary


def test_check_output_of_a_thousand_model_report_fits_githubs_byte_limit(
    features: FeatureTable,
) -> None:
    view = report_view(regression_report(features, n_models=1000, first_bad=613))
    body = render_check_output(view, comment_url=None).to_json()
    assert len(body["text"].encode("utf-8")) <= MAX_OUTPUT_BYTES
    assert "fr-mlp-v0613" in body["text"]


def test_verdict_heading_stays_when_an_oversized_table_is_left_out() -> None:
    verdict = "### ❌ Regression: `m-06` (index 6) is the first model that fails plcc >= 0.9."
    rows = "\n".join(f"| {i} | `model-{i}` | ❌ fail |" for i in range(20_000))
    view = view_of(Outcome.REGRESSION, details=f"{verdict}\n\n{rows}")
    comment = render_tracking_comment(view, history_of(3))
    assert len(comment) <= 65_536
    assert "The bisect table left out" in comment
    assert verdict in comment
    assert comment.index(verdict) < comment.index("Judged")


@pytest.mark.parametrize(
    ("outcome", "conclusion"),
    [
        (Outcome.NO_REGRESSION, Conclusion.SUCCESS),
        (Outcome.REGRESSION, Conclusion.FAILURE),
        (Outcome.ALREADY_BAD, Conclusion.FAILURE),
        (Outcome.INCONCLUSIVE, Conclusion.NEUTRAL),
        (None, Conclusion.FAILURE),
    ],
)
def test_conclusion_for_maps_each_engine_outcome(
    outcome: Outcome | None, conclusion: Conclusion
) -> None:
    assert conclusion_for(outcome) is conclusion


def test_nightly_tracking_issue_explains_where_it_is_configured() -> None:
    assert NIGHTLY_TRACKING.title == "model-guard: nightly model-quality bisect"
    assert ".github/model-guard.yml" in NIGHTLY_TRACKING.body
    assert len(NIGHTLY_TRACKING.label_description) <= 100  # GitHub's limit for a description


def test_blame_sits_under_the_verdict_in_the_comment_and_the_check_summary(
    features: FeatureTable,
) -> None:
    report = regression_report(features, n_models=10, first_bad=6)
    blame = Blame(
        model_id="fr-mlp-v0006",
        commit_sha="b" * 40,
        commit_url=f"{REPO_URL}/commit/{'b' * 40}",
        pull_number=12,
        pull_url=f"{REPO_URL}/pull/12",
        pull_title="Promote v0006",
    )
    view = replace(report_view(report), blame=blame)
    comment = render_tracking_comment(view, [])
    verdict = comment.index("Regression: fr-mlp-v0006")
    assert verdict < comment.index(blame.markdown()) < comment.index(COMMIT_LINE)
    output = render_check_output(view, comment_url="u")
    assert output.summary == f"{view.summary}\n\n{blame.markdown()}\n\nTracking comment: u"
    assert blame.markdown() not in render_tracking_comment(report_view(report), [])
