"""The nightly job: bisect the default branch's timeline, keep the tracking comment, complete the check.

A user of the run skeleton (``bot.handlers.run``): this module says what a nightly judges
(the default branch's head, or the checked commit for a re-run), how (the lazy bisect in the
engine pool) and what it writes (the run history, the sticky tracking comment); the
skeleton owns the check run, retries and error handling.

An unchanged repository is not judged again. After a run that judged the default branch's
head (and completed its check and comment), the store remembers what it judged and showed
(KV namespace ``nightly-judged``): the commit, which pins the configuration, the registry,
the models and the golden cache; the engine (its version and source) and the default
configuration; and the rendered verdict. A scheduled nightly whose branch head is that
commit shows the verdict again instead: a history row for tonight and the tracking comment's
"unchanged since" line, one PATCH of the comment. It opens no new check run: the commit's
check from the night that judged it already carries this exact verdict, and a new one would
repeat it (a maintainer who wants it judged again presses **Re-run** or **Full scan** on
that check, which always judge). What a maintainer depends on is kept: the remembered issue
is still read (the one request that notices a closed or relabelled tracking issue), a
deleted comment answers the PATCH with 404 and is written again, a locked issue is reported
on a new completed check run (the one place left), and a new commit, a changed configuration
or a new model (all new commits) is judged as before. With the default branch in the
scheduler's payload, an unchanged night costs three requests: the branch head (a conditional
GET), the tracking issue and the PATCH of the comment.
"""

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from gidgethub import routing, sansio

import engine
from bot.github.repofiles import Head, RepoFiles, RepoSnapshot
from bot.github.repos import is_full_name, repo_vars
from bot.handlers.nightly_view import (
    NIGHTLY_CHECK,
    NIGHTLY_PURPOSE,
    NIGHTLY_TRACKING,
    NightlyView,
    render_alert,
    render_check_output,
    render_tracking_comment,
    stored_outcome,
)
from bot.handlers.planning import RERUN, event_origin, pressed_button
from bot.handlers.run import (
    CheckSite,
    Failure,
    JobKind,
    Published,
    RunContext,
    Runner,
    RunServices,
    blame_first_bad,
    read_repo_config,
)
from bot.judging.bisect_run import TimelineJudge, TimelineRun
from bot.repoconfig import ConfigError, RepoConfig, default_config
from bot.store import JobSpec, make_serial_key
from bot.surfaces.blame import Blame
from bot.surfaces.checks import CheckAction, post_completed_check_run
from bot.surfaces.notices import post_notice_once
from bot.surfaces.sticky import IssueUnavailable
from bot.surfaces.tracking import TrackingError, ensure_tracking_issue
from engine import __version__
from engine.bisection import Outcome
from engine.errors import one_line

log = logging.getLogger("model_guard.nightly")

KIND = "nightly"
# What a judged run showed, per repository: shown again while nothing that decides it changed.
JUDGED_NAMESPACE = "nightly-judged"
HISTORY_RUNS = 14
# The identifiers of the nightly check's buttons (``check_run.requested_action``).
FULL_SCAN = "full-scan"


@dataclass(frozen=True)
class Judged:
    """What a run that judged a commit showed, as the store remembers it."""

    commit_sha: str
    fingerprint: str  # the engine's version and source, and the default configuration
    html_url: str
    outcome: Outcome
    summary: str
    details: str
    registry: str
    features: str
    judged_at: datetime
    tracking_label: str
    mention: tuple[str, ...]
    blame: Blame | None

    def to_json(self) -> str:
        """The stored text."""
        data = asdict(self)
        data["outcome"] = self.outcome.value
        data["judged_at"] = self.judged_at.isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Judged | None":
        """The remembered run, or None for a record this version cannot read (judge again)."""
        try:
            data = json.loads(text)
            blame = data.pop("blame")
            return cls(
                **{
                    **data,
                    "outcome": Outcome(data["outcome"]),
                    "judged_at": datetime.fromisoformat(data["judged_at"]),
                    "mention": tuple(data["mention"]),
                    "blame": None if blame is None else Blame(**blame),
                }
            )
        except (ValueError, KeyError, TypeError):
            return None


@functools.cache
def fingerprint() -> str:
    """What decides a verdict besides the commit: model-guard's engine and default config.

    The engine's version and the digest of its source files, so a deployment that changes
    how models are judged (a release, or a patched engine under the same version) judges
    every repository again; computed once per process.
    """
    digest = hashlib.sha256(f"{__version__}\n{default_config()!r}".encode())
    root = Path(engine.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class NightlyTarget:
    """The repository and commit a nightly run judges.

    ``snapshot`` is None only when ``judged`` says the commit was judged already: its tree
    is never listed then.
    """

    repo: str
    branch: str
    html_url: str
    head: Head
    snapshot: RepoSnapshot | None
    judged: Judged | None = None
    full: bool = False

    def tree(self) -> RepoSnapshot:
        """The listed tree (always there when the commit is judged)."""
        if self.snapshot is None:
            raise RuntimeError(f"{self.repo}: the tree of {self.head.commit_sha} was not listed")
        return self.snapshot


@dataclass(frozen=True)
class NightlyResult:
    """A judged timeline and, when it names a first bad model, the commit that introduced it."""

    run: TimelineRun
    blame: Blame | None = None


@dataclass(frozen=True)
class Nightly(JobKind[NightlyTarget, NightlyResult, NightlyView]):
    """The nightly bisect as a job kind."""

    name: ClassVar[str] = KIND
    check_name: ClassVar[str] = NIGHTLY_CHECK
    opening_title: ClassVar[str] = "Bisecting the model timeline"
    actions: ClassVar[tuple[CheckAction, ...]] = (
        CheckAction("Full scan", "Judge every model of this commit", FULL_SCAN),
        CheckAction("Re-run", "Bisect this commit again", RERUN),
    )
    files: RepoFiles
    timeline: TimelineJudge

    async def target(self, ctx: RunContext) -> NightlyTarget:
        """The default branch's head, or ``ref`` for a re-run (named by its ``branch``).

        A scheduled run whose head is the commit judged last (see the module docstring)
        lists no tree: ``judged`` carries what that run showed.
        """
        payload = ctx.job.payload
        repo = str(payload["repo"])
        ref = payload.get("ref") if isinstance(payload.get("ref"), str) else None
        branch = payload.get("branch")
        full = payload.get("full") is True
        remembered = None if ref is not None or full else await _remembered(ctx, repo)
        default = payload.get("default_branch")
        if ref is None and remembered is not None and isinstance(default, str) and default:
            html_url = remembered.html_url  # the scheduler read the default branch just now
        else:
            info: dict[str, Any] = await ctx.gh.getitem(
                "/repos/{owner}/{repo}", url_vars=repo_vars(repo)
            )
            default, html_url = str(info["default_branch"]), str(info.get("html_url") or "")
        head = await self.files.head(ctx.gh, repo, ref or default)
        if ref is None:
            shown = default
        else:
            shown = branch if isinstance(branch, str) and branch else f"commit {ref[:7]}"
        if remembered is not None and remembered.commit_sha == head.commit_sha:
            return NightlyTarget(repo, shown, html_url, head, None, remembered, full)
        snapshot = await self.files.tree(ctx.gh, head)
        return NightlyTarget(repo, shown, html_url, head, snapshot, None, full)

    async def reshown(self, ctx: RunContext, target: NightlyTarget) -> bool:
        """Show the remembered verdict of an unchanged commit again (see the module docstring)."""
        judged = target.judged
        if judged is None:
            return False
        view = NightlyView(
            repo=target.repo,
            branch=target.branch,
            commit_sha=judged.commit_sha,
            outcome=judged.outcome,
            summary=judged.summary,
            details=judged.details,
            finished_at=datetime.now(UTC),
            registry=judged.registry,
            features=judged.features,
            repo_url=target.html_url,
            blame=judged.blame,
            judged_at=judged.judged_at,
        )
        published = await _publish(ctx, view, label=judged.tracking_label, mention=judged.mention)
        if published.url is None:
            # The comment could not be written (a locked issue): the check is the one place left.
            await post_completed_check_run(
                ctx.gh,
                target.repo,
                judged.commit_sha,
                name=NIGHTLY_CHECK,
                external_id=ctx.origin_key,
                conclusion=view.conclusion,
                output=render_check_output(
                    view, comment_url=None, comment_problem=published.problem
                ),
                actions=self.actions,
                fresh=ctx.job.attempts <= 1 and ctx.origin_key == ctx.job.key,
            )
        return True

    async def concluded(
        self,
        ctx: RunContext,
        target: NightlyTarget,
        config: RepoConfig | None,
        view: NightlyView,
    ) -> None:
        """Remember a judged commit, so the default branch's head unchanged is not judged again.

        A run that could not judge (GitHub, the repository or a bug) is not remembered: the
        next night tries again. A full scan judges more than a nightly does.
        """
        if view.outcome is None or config is None or target.full or view.commit_sha is None:
            return
        judged = Judged(
            commit_sha=view.commit_sha,
            fingerprint=fingerprint(),
            html_url=target.html_url,
            outcome=view.outcome,
            summary=view.summary,
            details=view.details,
            registry=view.registry,
            features=view.features,
            judged_at=view.finished_at,
            tracking_label=config.tracking_label,
            mention=config.mention,
            blame=view.blame,
        )
        await ctx.services.store.set_value(JUDGED_NAMESPACE, target.repo.lower(), judged.to_json())

    def check_site(self, target: NightlyTarget) -> CheckSite:
        """The judged commit."""
        return CheckSite(target.repo, target.head.commit_sha)

    async def config(self, ctx: RunContext, target: NightlyTarget) -> RepoConfig:
        """The configuration at the judged commit."""
        return await read_repo_config(self.files, ctx.gh, target.tree())

    async def judge(
        self, ctx: RunContext, target: NightlyTarget, config: RepoConfig
    ) -> NightlyResult:
        """Bisect the timeline at the judged commit (every model for a full scan), then blame."""
        snapshot = target.tree()
        run = await self.timeline.judge(ctx.gh, snapshot, config, full=target.full)
        blame = await blame_first_bad(
            ctx, run, registry=config.registry, at_sha=snapshot.commit_sha
        )
        return NightlyResult(run, blame)

    def render(
        self, target: NightlyTarget, config: RepoConfig, result: NightlyResult
    ) -> NightlyView:
        """The engine's verdict and table, and who introduced the first bad model."""
        run = result.run
        view = _view(target, config, run.outcome, run.summary, run.markdown)
        return replace(view, blame=result.blame)

    def error_view(
        self,
        target: NightlyTarget,
        config: RepoConfig | None,
        failure: Failure,
        error: BaseException,
    ) -> NightlyView:
        """A run that could not judge: the reason in one line, and what to do about it."""
        if isinstance(error, ConfigError):
            summary = f"The configuration is invalid: {error.one_line()}"
            details = error.markdown(commit=target.head.commit_sha)
            # No paths: the defaults are not what this repository configured.
            view = _view(target, default_config(), None, summary, details)
            return replace(view, registry="", features="")
        config = config or default_config()
        if failure is Failure.INTERNAL:
            summary = f"model-guard failed: {type(error).__name__}: {one_line(error)}"
            details = "This is a bug in model-guard, not in the repository."
        elif failure is Failure.GITHUB:
            # A bare "Bad Gateway" reads like the repository's fault; say who failed.
            summary = (
                f"The timeline could not be judged: GitHub kept failing ({one_line(error)}) "
                "on every attempt"
            )
            details = (
                "Nothing was judged, so nothing is known to be good. This is GitHub failing, "
                "not the repository: model-guard runs it again once GitHub answers (or press "
                "**Re-run** on the check)."
            )
        else:
            summary = f"The timeline could not be judged: {one_line(error)}"
            details = (
                "Nothing was judged, so nothing is known to be good. Fix the cause above; the "
                "next nightly run (or **Re-run** on the check) judges the timeline again."
            )
        return _view(target, config, None, summary, details)

    async def publish(
        self,
        ctx: RunContext,
        target: NightlyTarget,
        config: RepoConfig | None,
        view: NightlyView,
    ) -> Published:
        """Record the run once, then update the sticky tracking comment; say where it is."""
        settings = config or default_config()
        return await _publish(ctx, view, label=settings.tracking_label, mention=settings.mention)


async def _remembered(ctx: RunContext, repo: str) -> Judged | None:
    """What the last judged run of ``repo`` showed, if this model-guard would judge it alike."""
    text = await ctx.services.store.get_value(JUDGED_NAMESPACE, repo.lower())
    judged = None if text is None else Judged.from_json(text)
    return judged if judged is not None and judged.fingerprint == fingerprint() else None


async def _publish(
    ctx: RunContext, view: NightlyView, *, label: str, mention: tuple[str, ...]
) -> Published:
    """Record the run once, update the sticky tracking comment, post an alert on a change."""
    store = ctx.services.store
    await store.record_run(
        view.repo,
        day=str(ctx.job.payload.get("day") or view.finished_at.date().isoformat()),
        commit_sha=view.commit_sha,
        outcome=stored_outcome(view.outcome),
        summary=view.summary,
        finished_at=view.finished_at,
        # Once per job: a crashed job run again adds no row, a resumed run adds its own.
        key=ctx.job.key,
    )
    history = await store.recent_runs(view.repo, limit=HISTORY_RUNS)
    sticky = await ctx.services.sticky()
    identity = await ctx.services.identity()
    try:
        issue = await ensure_tracking_issue(
            ctx.gh,
            store,
            repo=view.repo,
            label=label,
            spec=NIGHTLY_TRACKING,
            bot_login=identity.login,
        )
        result = await sticky.upsert(
            ctx.gh,
            repo=view.repo,
            issue_number=issue.number,
            purpose=NIGHTLY_PURPOSE,
            body=render_tracking_comment(view, history),
        )
        alert = render_alert(
            view,
            history[1] if len(history) > 1 else None,
            comment_url=result.html_url,
            mentions=mention,
        )
        if alert is not None:
            await post_notice_once(
                ctx.gh,
                repo=view.repo,
                issue_number=issue.number,
                key=f"nightly-alert:{ctx.job.key}",
                body=alert,
                bot_login=identity.login,
                app_id=identity.app_id,
            )
    except (IssueUnavailable, TrackingError) as error:
        return Published(None, problem=one_line(error))
    return Published(result.html_url)


def _view(
    target: NightlyTarget,
    config: RepoConfig,
    outcome: Outcome | None,
    summary: str,
    details: str,
) -> NightlyView:
    return NightlyView(
        repo=target.repo,
        branch=target.branch,
        commit_sha=target.head.commit_sha,
        outcome=outcome,
        summary=summary,
        details=details,
        finished_at=datetime.now(UTC),
        registry=config.registry,
        features=config.features,
        repo_url=target.html_url,
    )


def nightly_runner(
    services: RunServices, *, files: RepoFiles, timeline: TimelineJudge
) -> Runner[NightlyTarget, NightlyResult, NightlyView]:
    """The worker's handler for ``nightly`` jobs."""
    return Runner(Nightly(files=files, timeline=timeline), services)


def nightly_serial_key(repo: str) -> str:
    """The serial key of ``repo``'s nightly jobs (the scheduler's too): one at a time per repo.

    They all write the repository's tracking comment, whose issue may not exist yet.
    """
    return make_serial_key(repo, KIND)


def _commit_job(
    data: dict[str, Any],
    *,
    head_sha: object,
    branch: object,
    key: str,
    reason: str,
    full: bool = False,
) -> JobSpec | None:
    """A nightly job judging ``head_sha`` of the event's repository; None if the event is malformed."""
    origin = event_origin(data)
    if origin is None or not isinstance(head_sha, str):
        return None
    installation_id, repo = origin
    return JobSpec(
        kind=KIND,
        key=key,
        payload={
            "installation_id": installation_id,
            "repo": repo,
            "ref": head_sha,
            **({"branch": branch} if isinstance(branch, str) and branch else {}),
            "day": datetime.now(UTC).date().isoformat(),
            "reason": reason,
            **({"full": True} if full else {}),
        },
        serial_key=nightly_serial_key(repo),
    )


def plan_rerun(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """A maintainer pressed "Re-run" (or a button) on the nightly check: judge that commit now.

    ``check_run.rerequested`` and the "Re-run" button bisect it again; the "Full scan"
    button judges every model. Another App's check, or another check's button, plans nothing.
    """
    data = event.data
    run = data.get("check_run")
    if not isinstance(run, dict) or run.get("name") != NIGHTLY_CHECK:
        return
    button = pressed_button(data, (FULL_SCAN, RERUN))
    if button is None:
        return
    suite = run.get("check_suite")
    job = _commit_job(
        data,
        head_sha=run.get("head_sha"),
        branch=suite.get("head_branch") if isinstance(suite, dict) else None,
        key=f"nightly-{button}:{event.delivery_id}",
        reason="full scan requested" if button == FULL_SCAN else "re-run requested",
        full=button == FULL_SCAN,
    )
    if job is not None:
        jobs.append(job)


def plan_suite_rerun(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """ "Re-run all checks" on a commit (``check_suite.rerequested``): judge that commit again.

    GitHub sends the event only to the App that owns the suite. The nightly judges the
    default branch: a suite of a pull request's commit on another branch re-runs the
    registry check instead (``bot.handlers.registry``).
    """
    data = event.data
    suite = data.get("check_suite")
    if not isinstance(suite, dict):
        return
    repository = data.get("repository")
    default = repository.get("default_branch") if isinstance(repository, dict) else None
    if (
        suite.get("pull_requests")
        and isinstance(default, str)
        and suite.get("head_branch") != default
    ):
        return  # a pull request's commit: its registry check re-runs, not the nightly
    job = _commit_job(
        data,
        head_sha=suite.get("head_sha"),
        branch=suite.get("head_branch"),
        key=f"nightly-suite:{event.delivery_id}",
        reason="re-run of all checks requested",
    )
    if job is not None:
        jobs.append(job)


# An installation on a large organisation lists hundreds of repositories: the first
# judgement is for the maintainer watching; the scheduler reaches the rest tonight.
FIRST_RUNS_PER_EVENT = 50


def plan_first_runs(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """The App was installed on repositories: judge each once now, not at the next cron.

    A maintainer who installs the App sees the tracking issue and its first comment within
    a minute instead of waiting for the night (``installation.created`` lists the
    repositories, ``installation_repositories.added`` the added ones).
    """
    data = event.data
    installation = data.get("installation")
    listed = data.get("repositories") if event.event == "installation" else None
    listed = data.get("repositories_added") if listed is None else listed
    installation_id = installation.get("id") if isinstance(installation, dict) else None
    if not isinstance(installation_id, int) or not isinstance(listed, list):
        return
    names = [r.get("full_name") for r in listed if isinstance(r, dict)]
    day = datetime.now(UTC).date().isoformat()
    for repo in [n for n in names if isinstance(n, str) and is_full_name(n)][:FIRST_RUNS_PER_EVENT]:
        jobs.append(
            JobSpec(
                kind=KIND,
                key=f"nightly-installed:{event.delivery_id}:{repo}",
                payload={
                    "installation_id": installation_id,
                    "repo": repo,
                    "day": day,
                    "reason": "installed",
                },
                serial_key=nightly_serial_key(repo),
            )
        )


router = routing.Router()


@router.register("check_suite", action="rerequested")
async def _on_suite_rerequested(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan a re-run of the nightly when "Re-run all checks" is pressed on its commit."""
    plan_suite_rerun(event, jobs)


@router.register("installation", action="created")
@router.register("installation_repositories", action="added")
async def _on_installed(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan a first run for each repository the App was just installed on."""
    plan_first_runs(event, jobs)


@router.register("check_run", action="rerequested")
@router.register("check_run", action="requested_action")
async def _on_check_rerequested(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan a re-run (or a full scan) when the nightly check is re-requested or a button pressed."""
    plan_rerun(event, jobs)
