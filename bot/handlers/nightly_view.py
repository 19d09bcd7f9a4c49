"""What a nightly run shows: the sticky tracking comment, the check output and its conclusion."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.handlers.run import Published
from bot.store import RunRecord
from bot.surfaces.blame import Blame
from bot.surfaces.checks import CheckOutput, Conclusion
from bot.surfaces.sticky import Section, fit_sections
from bot.surfaces.tracking import TrackingSpec
from engine.bisection import Outcome
from engine.errors import one_line

NIGHTLY_CHECK = "model-guard/nightly"
NIGHTLY_PURPOSE = "nightly"
# How the run history stores a run that could not judge (the engine's outcomes are the rest).
ERROR_OUTCOME = "error"
_BADGES = {
    Outcome.NO_REGRESSION: "✅ no regression",
    Outcome.REGRESSION: "❌ regression",
    Outcome.ALREADY_BAD: "❌ already bad",
    Outcome.INCONCLUSIVE: "⚠️ inconclusive",
    None: "⚠️ could not judge",
}
NIGHTLY_TRACKING = TrackingSpec(
    title="model-guard: nightly model-quality bisect",
    body="""\
This issue is where **model-guard** reports the nightly model-quality bisect of this \
repository's model registry.

The App keeps one comment below up to date: which model version first regressed on the \
golden feature cache, by how much, and the recent history of runs. It edits that comment \
instead of posting a new one each night, so subscribing to this issue does not mean a \
notification every day.

Configure it in `.github/model-guard.yml` (schedule, registry and cache paths, thresholds, \
and the label that marks this issue). Closing this issue is fine: the next run opens a new \
one with the same label.
""",
    label_description="The issue model-guard reports its nightly bisect on",
)


def conclusion_for(outcome: Outcome | None) -> Conclusion:
    """Red for a regression or an already-bad timeline (and for a run that could not judge)."""
    if outcome is Outcome.NO_REGRESSION:
        return Conclusion.SUCCESS
    if outcome is Outcome.INCONCLUSIVE:
        return Conclusion.NEUTRAL
    return Conclusion.FAILURE


def stored_outcome(outcome: Outcome | None) -> str:
    """The outcome as the run history stores it."""
    return ERROR_OUTCOME if outcome is None else outcome.value


def badge(outcome: Outcome | str | None) -> str:
    """The outcome as a short badge; a stored text is read back first (unknown ones pass through)."""
    if not isinstance(outcome, str):
        return _BADGES[outcome]
    if outcome == ERROR_OUTCOME:
        return _BADGES[None]
    try:
        return _BADGES[Outcome(outcome)]
    except ValueError:
        return outcome


@dataclass(frozen=True)
class NightlyView:
    """One nightly run as the tracking comment shows it."""

    repo: str
    branch: str
    commit_sha: str | None
    outcome: Outcome | None  # None: the run could not judge
    summary: str
    details: str
    finished_at: datetime
    registry: str  # "" when unknown (the configuration could not be read)
    features: str
    repo_url: str = ""
    check_url: str | None = None
    blame: Blame | None = None  # the commit and pull request that introduced the first bad model
    # When the verdict was judged, for a run that found the commit unchanged and showed it again.
    judged_at: datetime | None = None

    @property
    def conclusion(self) -> Conclusion:
        """The check run's conclusion for this run."""
        return conclusion_for(self.outcome)

    def check_output(self, published: Published) -> CheckOutput:
        """The check run's output, linking the tracking comment (or saying why it is missing)."""
        return render_check_output(
            self, comment_url=published.url, comment_problem=published.problem
        )


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
    when = (view.judged_at or view.finished_at).strftime("%Y-%m-%d %H:%M UTC")
    again = ""
    if view.judged_at is not None:
        checked = view.finished_at.strftime("%Y-%m-%d %H:%M UTC")
        again = (
            f"\n\nLast checked at {checked}: unchanged since it was judged, so not judged again."
        )
    check = f" · [check run]({view.check_url})" if view.check_url else ""
    # The verdict always sits in the part that is never left out: the engine's markdown opens
    # with it (a heading line), and a run that could not judge states it here.
    failed = view.outcome is None
    details = view.details
    if failed:
        verdict = [f"**{view.summary}**", ""]
    elif details.startswith("### "):
        first, _, details = details.partition("\n")
        verdict, details = [first, ""], details.lstrip("\n")
    else:
        verdict = [f"**{view.summary}**", ""]
    if view.blame is not None:
        verdict += [view.blame.markdown(), ""]
    # No paths when the config could not be read: the defaults are not what the repo asked for.
    paths = f": registry `{view.registry}`, golden cache `{view.features}`" if view.registry else ""
    head = "\n".join(
        [
            f"## model-guard nightly: {badge(view.outcome)}",
            "",
            *verdict,
            f"{'Could not judge' if failed else 'Judged'} {_commit(view)} on `{view.branch}` "
            f"at {when}{paths}{check}.{again}",
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
    blame = f"\n\n{view.blame.markdown()}" if view.blame is not None else ""
    return CheckOutput(
        title=f"{badge(view.outcome)}: {view.summary}"[:200],
        summary=f"{view.summary}{blame}{link}",
        text=view.details,
    )


def _state(outcome: str) -> str:
    """The colour a stored outcome shows: what an alert compares."""
    if outcome == Outcome.NO_REGRESSION.value:
        return "green"
    if outcome in (Outcome.REGRESSION.value, Outcome.ALREADY_BAD.value):
        return "red"
    if outcome == Outcome.INCONCLUSIVE.value:
        return "inconclusive"
    return "could not judge"


def render_alert(
    view: NightlyView,
    previous: RunRecord | None,
    *,
    comment_url: str | None,
    mentions: Sequence[str] = (),
) -> str | None:
    """A short new comment when the outcome changed since the last run, else None.

    The tracking comment is edited silently (GitHub notifies nobody of an edit); this one
    notifies the issue's subscribers and the configured ``mentions``.
    """
    now = _state(stored_outcome(view.outcome))
    if previous is None or _state(previous.outcome) == now:
        return None
    link = f" · [the tracking comment]({comment_url})" if comment_url else ""
    who = f"\n\ncc {' '.join(mentions)}" if mentions else ""
    return (
        f"**model-guard nightly: {_state(previous.outcome)} → {now}** on `{view.branch}` "
        f"({_commit(view)}): {_cell(view.summary)}{link}{who}"
    )
