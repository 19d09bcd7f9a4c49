"""What the registry check shows: its conclusion, one-line title and summary, the report, the annotations.

The same report goes to the check run's text and to the pull request's sticky comment
(``<!-- model-guard:pr -->``), so the two never disagree.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.handlers.run import Published
from bot.judging.registry_run import ChangeRun, SideRun
from bot.surfaces.checks import CheckAnnotation, CheckOutput, Conclusion
from bot.surfaces.sticky import Section, fit_sections
from engine.bisection import Outcome

if TYPE_CHECKING:  # engine.registry_review loads numpy and onnxruntime: only a job needs them
    from engine.registry_review import RegistryReview

REGISTRY_CHECK = "model-guard/registry"
PR_PURPOSE = "pr"  # the sticky comment's marker: <!-- model-guard:pr -->
_FAILING = (Outcome.REGRESSION, Outcome.ALREADY_BAD)


@dataclass(frozen=True)
class RegistryView:
    """One judged (or failed) pull request, ready for the check run and the comment."""

    repo: str
    number: int
    head_sha: str
    conclusion: Conclusion
    title: str
    summary: str
    report: str
    annotations: tuple[CheckAnnotation, ...] = ()
    # The report's parts, most important first, for the comment's size limit.
    sections: tuple[Section, ...] = ()

    def check_output(self, published: Published) -> CheckOutput:
        """The check run's output: the verdict in two lines, the report, the annotations."""
        if published.url:
            where = f"\n\nThe same report is [on the pull request]({published.url})."
        elif published.problem:
            where = f"\n\nThe pull-request comment could not be written: {published.problem}"
        else:
            where = ""
        return CheckOutput(
            title=self.title,
            summary=self.summary + where,
            text=self.report,
            annotations=self.annotations,
        )

    def comment(self) -> str:
        """The sticky pull-request comment (the marker is added by the sticky module)."""
        badge = _BADGES[self.conclusion]
        head = (
            f"### {badge} `{REGISTRY_CHECK}` on {self.head_sha[:7]}\n\n"
            f"**{self.title}**\n\n{self.summary}"
        )
        sections = self.sections or (Section(self.report, priority=1, label="The report"),)
        # GitHub refuses a comment over 65,536 characters: the least important parts go first.
        return fit_sections(PR_PURPOSE, [Section(head), *sections])


_BADGES = {
    Conclusion.SUCCESS: "✅",
    Conclusion.FAILURE: "❌",
    Conclusion.NEUTRAL: "⚪",
    Conclusion.CANCELLED: "⏹️",
}


@dataclass(frozen=True)
class TimelineVerdict:
    """What the head's timeline says, against the base's: a conclusion and one line."""

    conclusion: Conclusion
    line: str


def timeline_verdict(head: SideRun, base: SideRun | None) -> TimelineVerdict:
    """Red when the change makes the timeline fail; a failure the base already had is neutral."""
    if head.run is None:
        return TimelineVerdict(
            Conclusion.FAILURE, f"The head's timeline could not be bisected: {head.error}"
        )
    outcome = head.run.outcome
    if outcome is Outcome.NO_REGRESSION:
        return TimelineVerdict(Conclusion.SUCCESS, head.run.summary)
    if outcome is Outcome.INCONCLUSIVE:
        return TimelineVerdict(Conclusion.NEUTRAL, head.run.summary)
    if base is not None and base.run is not None and _same_failure(head, base):
        return TimelineVerdict(
            Conclusion.NEUTRAL,
            f"{head.run.summary} The base already failed the same way; this change did not cause it.",
        )
    return TimelineVerdict(Conclusion.FAILURE, head.run.summary)


def _same_failure(head: SideRun, base: SideRun) -> bool:
    assert head.run is not None and base.run is not None
    return (
        base.run.outcome in _FAILING
        and base.run.outcome is head.run.outcome
        and base.run.report.get("first_bad_model") == head.run.report.get("first_bad_model")
    )


def first_bad_model(head: SideRun) -> str | None:
    """The first failing model of the head's timeline, if the bisect found one."""
    if head.run is None or head.run.outcome not in _FAILING:
        return None
    name = head.run.report.get("first_bad_model")
    return name if isinstance(name, str) else None


def render_change(
    *, repo: str, number: int, head_sha: str, registry: str, run: ChangeRun, blame: str = ""
) -> RegistryView:
    """The view of a judged change: the review (diff, problems, promotions) and the bisect."""
    review = run.review
    timeline = timeline_verdict(run.head, run.base)
    conclusion = timeline.conclusion
    if not review.ok:
        conclusion = Conclusion.FAILURE
    title = review.headline() if not review.ok else _timeline_title(timeline, run.head)
    # GitHub shows the summary on the pull request's checks tab: the verdict, one line.
    summary = f"Registry: {review.headline()}. Timeline: {_one_line(timeline.line)}"
    parts = (
        Section(blame),
        Section(f"#### Registry `{registry}`\n\n{review.render_markdown()}", 1, "The review"),
        Section(_verdicts_line(run.verdicts), 2, "The verdicts read"),
        Section(
            f"#### Timeline at the head ({head_sha[:7]})\n\n{_side_report(run.head)}",
            3,
            "The bisect table",
        ),
        Section(_base_report(run), 2, "The base's verdict"),
    )
    sections = tuple(part for part in parts if part.text)
    report = "\n\n".join(part.text for part in sections)
    return RegistryView(
        repo=repo,
        number=number,
        head_sha=head_sha,
        conclusion=conclusion,
        title=title,
        summary=summary,
        report=report,
        annotations=tuple(_annotations(review)),
        sections=sections,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _timeline_title(timeline: TimelineVerdict, head: SideRun) -> str:
    if timeline.conclusion is Conclusion.SUCCESS:
        return "Registry valid; the timeline passes the gate"
    name = first_bad_model(head)
    if timeline.conclusion is Conclusion.FAILURE and name is not None and head.run is not None:
        from engine.report import broken_reason  # numpy and pandas: loaded once a job runs

        broken = broken_reason(head.run.report, head.run.report.get("first_bad_index"))
        if broken:
            return _one_line(f"{name} is broken ({broken})")[:200]
        return f"{name} is the first model that fails the gate"
    return timeline.line.split(". ")[0][:200]


def _verdicts_line(verdicts: tuple[str, ...]) -> str:
    if not verdicts:
        return ""
    shown = ", ".join(f"`{path}`" for path in verdicts)
    return f"Verdicts read at the head: {shown}."


def _side_report(side: SideRun) -> str:
    if side.run is None:
        return f"Not bisected: {side.error}"
    return f"{side.run.summary}\n\n{side.run.markdown}"


def _base_report(run: ChangeRun) -> str:
    if run.base is None:
        return "The base commit has no registry: every model is new."
    if run.base.run is None:
        return f"The base could not be bisected: {run.base.error}"
    head, base = run.head.run, run.base.run
    if head is not None and head.outcome is base.outcome and head.summary == base.summary:
        return f"Against the base ({base.commit_sha[:7]}): unchanged. {base.summary}"
    return f"Against the base ({base.commit_sha[:7]}), the verdict was: {base.summary}"


def _annotations(review: "RegistryReview") -> list[CheckAnnotation]:
    """The review's problems, and each unbacked promotion on its row's line of the registry."""
    found = [
        CheckAnnotation(
            path=item.path,
            line=max(1, item.line),
            level=item.level,
            message=item.message,
            title=item.title,
        )
        for item in review.annotations
    ]
    for promotion in review.promotions:
        if not promotion.ok:
            found.append(
                CheckAnnotation(
                    path=review.registry,
                    line=max(1, promotion.line or 1),
                    level="failure",
                    message="; ".join(promotion.problems) or "no PROMOTE verdict backs it",
                    title=f"{promotion.model_id} is promoted without a backing verdict",
                )
            )
    return found


def render_failure(
    *, repo: str, number: int, head_sha: str, conclusion: Conclusion, title: str, details: str
) -> RegistryView:
    """The view of a run that could not judge: the reason in the title, what to do below."""
    return RegistryView(
        repo=repo,
        number=number,
        head_sha=head_sha,
        conclusion=conclusion,
        title=title[:200],
        summary=title,
        report=details,
    )
