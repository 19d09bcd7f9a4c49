"""The markdown the App writes for a nightly run: the sticky tracking comment and the check output."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.store import RunRecord
from bot.surfaces.checks import CheckOutput
from bot.surfaces.sticky import Section, fit_sections
from engine.bisection import Outcome
from engine.errors import one_line

NIGHTLY_PURPOSE = "nightly"
ERROR_OUTCOME = "error"
_BADGES = {
    Outcome.NO_REGRESSION.value: "✅ no regression",
    Outcome.REGRESSION.value: "❌ regression",
    Outcome.ALREADY_BAD.value: "❌ already bad",
    Outcome.INCONCLUSIVE.value: "⚠️ inconclusive",
    ERROR_OUTCOME: "⚠️ could not judge",
}


@dataclass(frozen=True)
class NightlyView:
    """One nightly run as the tracking comment shows it."""

    repo: str
    branch: str
    commit_sha: str | None
    outcome: str
    summary: str
    details: str
    finished_at: datetime
    registry: str  # "" when unknown (the configuration could not be read)
    features: str
    repo_url: str = ""
    check_url: str | None = None


def badge(outcome: str) -> str:
    """The outcome as a short badge (emoji and words)."""
    return _BADGES.get(outcome, outcome)


def _commit(view: NightlyView) -> str:
    if view.commit_sha is None:
        return "no commit (the branch could not be read)"
    short = f"`{view.commit_sha[:7]}`"
    return f"[{short}]({view.repo_url}/commit/{view.commit_sha})" if view.repo_url else short


def _cell(text: str) -> str:
    """``text`` on one line for a table cell, its ``|`` escaped, at most 160 characters."""
    return one_line(text.replace("|", "\\|"), limit=160)


def _history(runs: Sequence[RunRecord]) -> str:
    lines = [
        f"### History (the last {len(runs)} {'run' if len(runs) == 1 else 'runs'})",
        "",
        "| finished (UTC) | commit | outcome | verdict |",
        "|---|---|---|---|",
    ]
    for run in runs:
        commit = f"`{run.commit_sha[:7]}`" if run.commit_sha else "—"
        when = run.finished_at.strftime("%Y-%m-%d %H:%M")
        lines.append(f"| {when} | {commit} | {badge(run.outcome)} | {_cell(run.summary)} |")
    return "\n".join(lines)


def render_tracking_comment(view: NightlyView, history: Sequence[RunRecord]) -> str:
    """The sticky comment: verdict, what was judged, the table, and the recent history."""
    when = view.finished_at.strftime("%Y-%m-%d %H:%M UTC")
    check = f" · [check run]({view.check_url})" if view.check_url else ""
    # The verdict always sits in the part that is never left out: the engine's markdown opens
    # with it (a heading line), and a run that could not judge states it here.
    failed = view.outcome == ERROR_OUTCOME
    details = view.details
    if failed:
        verdict = [f"**{view.summary}**", ""]
    elif details.startswith("### "):
        first, _, details = details.partition("\n")
        verdict, details = [first, ""], details.lstrip("\n")
    else:
        verdict = [f"**{view.summary}**", ""]
    # No paths when the config could not be read: the defaults are not what the repo asked for.
    paths = f": registry `{view.registry}`, golden cache `{view.features}`" if view.registry else ""
    head = "\n".join(
        [
            f"## model-guard nightly: {badge(view.outcome)}",
            "",
            *verdict,
            f"{'Could not judge' if failed else 'Judged'} {_commit(view)} on `{view.branch}` "
            f"at {when}{paths}{check}.",
        ]
    )
    footer = (
        "<sub>model-guard keeps this one comment up to date every night; the gate, the paths "
        "and the schedule come from `.github/model-guard.yml`.</sub>"
    )
    sections = [
        Section(head, priority=0),
        Section(details, priority=1, label="The bisect table"),
        Section(_history(history), priority=2, label="The run history") if history else None,
        Section(footer, priority=3, label="The footer"),
    ]
    return fit_sections(NIGHTLY_PURPOSE, [s for s in sections if s is not None])


def render_check_output(
    view: NightlyView, *, comment_url: str | None, comment_problem: str | None = None
) -> CheckOutput:
    """The nightly check run's output: the verdict as summary, the table as text.

    ``comment_problem`` says why the tracking comment could not be written (a locked issue),
    so the check, the one place left, explains the missing link.
    """
    if comment_url:
        link = f"\n\nTracking comment: {comment_url}"
    elif comment_problem:
        link = f"\n\nTracking comment not written: {comment_problem}."
    else:
        link = ""
    return CheckOutput(
        title=f"{badge(view.outcome)}: {view.summary}"[:200],
        summary=f"{view.summary}{link}",
        text=view.details,
    )
