"""What a ``/bisect`` command shows: the sticky result comment on the pull request, or a reply."""

from dataclasses import dataclass
from enum import Enum

from bot.github.permissions import Permission
from bot.handlers.nightly_view import badge, conclusion_for
from bot.handlers.run import Published
from bot.surfaces.checks import CheckOutput, Conclusion
from bot.surfaces.sticky import Section, fit_sections
from engine.bisection import Outcome

BISECT_PURPOSE = "bisect"


class Answer(Enum):
    """How the App answers one ``/bisect`` comment."""

    JUDGED = "judged"  # the bisect ran: the sticky comment shows it, 🚀
    FAILED = "failed"  # the bisect could not run: the sticky comment says why, 😕
    REFUSED = "refused"  # the commenter lacks the permission: a polite reply
    HELP = "help"  # ``/bisect help``: the usage as a reply
    USAGE = "usage"  # a bad option or value: the reason and the usage as a reply
    DISABLED = "disabled"  # ``commands.enabled: false``: nothing at all
    SUPERSEDED = "superseded"  # a newer command on the pull request replaces it: nothing


# The answers written as a reply to the command (a new comment, posted once).
REPLIES = frozenset({Answer.REFUSED, Answer.HELP, Answer.USAGE})


@dataclass(frozen=True)
class BisectView:
    """One ``/bisect`` command as the pull request shows it."""

    answer: Answer
    repo: str
    number: int
    comment_id: int
    comment_url: str
    login: str
    command_line: str | None  # None for help and refused or malformed commands
    head_sha: str | None = None  # the pull request's head when it was judged
    outcome: Outcome | None = None  # None: not judged
    summary: str = ""
    details: str = ""
    reply: str = ""  # the reply's markdown, for the answers in REPLIES
    blame: str = ""  # the line naming the commit and pull request of the first bad model

    @property
    def conclusion(self) -> Conclusion:
        """The outcome's colour (the kind opens no check run; kept for the run skeleton)."""
        if self.answer is Answer.JUDGED:
            return conclusion_for(self.outcome)
        return Conclusion.FAILURE if self.answer is Answer.FAILED else Conclusion.NEUTRAL

    def check_output(self, published: Published) -> CheckOutput:
        """The run's verdict as a check output would say it (no check run is opened)."""
        return CheckOutput(title=f"/bisect: {self.answer.value}", summary=self.summary)


def render_result_comment(view: BisectView) -> str:
    """The sticky comment: the verdict, the arguments, the commit judged and the table."""
    failed = view.answer is Answer.FAILED
    details = view.details
    if not failed and details.startswith("### "):
        first, _, details = details.partition("\n")
        verdict, details = first, details.lstrip("\n")
    else:
        verdict = f"**{view.summary}**"
    commit = f"`{view.head_sha[:7]}`" if view.head_sha else "the head of this pull request"
    asked = f"[`{view.command_line}`]({view.comment_url})" if view.command_line else "`/bisect`"
    head = "\n".join(
        [
            f"## model-guard /bisect: {badge(None if failed else view.outcome)}",
            "",
            verdict,
            "",
            f"{'Could not judge' if failed else 'Judged'} {commit} for {asked} by @{view.login}.",
            *(["", view.blame] if view.blame else []),
        ]
    )
    footer = (
        "<sub>model-guard keeps this one comment up to date: each `/bisect` on this pull "
        "request replaces it with the newest result. Thresholds given in the command replace "
        "the gate of `.github/model-guard.yml` on the default branch.</sub>"
    )
    sections = [
        Section(head, priority=0),
        Section(details, priority=1, label="The bisect table") if details else None,
        Section(footer, priority=2, label="The footer"),
    ]
    return fit_sections(BISECT_PURPOSE, [s for s in sections if s is not None])


def render_refusal(login: str, *, held: Permission, needed: Permission) -> str:
    """The polite reply to a commenter whose role does not allow ``/bisect``."""
    return (
        f"@{login} thank you for asking. On this repository `/bisect` needs the "
        f"**{needed.value}** role or higher, and GitHub gives you **{held.value}**, so "
        "model-guard did not run it. A maintainer can post the command for you."
    )
