"""The nightly job: bisect the default branch's timeline, keep the tracking comment, complete the check.

A user of the run skeleton (``bot.handlers.run``): this module says what a nightly judges
(the default branch's head, or the checked commit for a re-run), how (the lazy bisect in the
engine pool) and what it writes (the run history, the sticky tracking comment); the
skeleton owns the check run, retries and error handling.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from gidgethub import routing, sansio

from bot.github.repofiles import RepoFiles, RepoSnapshot
from bot.github.repos import is_full_name, repo_vars
from bot.handlers.nightly_view import (
    NIGHTLY_CHECK,
    NIGHTLY_PURPOSE,
    NIGHTLY_TRACKING,
    NightlyView,
    render_alert,
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
from bot.surfaces.checks import CheckAction
from bot.surfaces.notices import post_notice_once
from bot.surfaces.sticky import IssueUnavailable
from bot.surfaces.tracking import TrackingError, ensure_tracking_issue
from engine.bisection import Outcome
from engine.errors import one_line

KIND = "nightly"
HISTORY_RUNS = 14
# The identifiers of the nightly check's buttons (``check_run.requested_action``).
FULL_SCAN = "full-scan"


@dataclass(frozen=True)
class NightlyTarget:
    """The repository and commit a nightly run judges."""

    repo: str
    branch: str
    html_url: str
    snapshot: RepoSnapshot


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
        """The default branch's head, or ``ref`` for a re-run (named by its ``branch``)."""
        payload = ctx.job.payload
        repo = str(payload["repo"])
        ref = payload.get("ref") if isinstance(payload.get("ref"), str) else None
        branch = payload.get("branch")
        info: dict[str, Any] = await ctx.gh.getitem(
            "/repos/{owner}/{repo}", url_vars=repo_vars(repo)
        )
        default = str(info["default_branch"])
        snapshot = await self.files.snapshot(ctx.gh, repo, ref or default)
        if ref is None:
            shown = default
        else:
            shown = branch if isinstance(branch, str) and branch else f"commit {ref[:7]}"
        return NightlyTarget(repo, shown, str(info.get("html_url") or ""), snapshot)

    def check_site(self, target: NightlyTarget) -> CheckSite:
        """The judged commit."""
        return CheckSite(target.repo, target.snapshot.commit_sha)

    async def config(self, ctx: RunContext, target: NightlyTarget) -> RepoConfig:
        """The configuration at the judged commit."""
        return await read_repo_config(self.files, ctx.gh, target.snapshot)

    async def judge(
        self, ctx: RunContext, target: NightlyTarget, config: RepoConfig
    ) -> NightlyResult:
        """Bisect the timeline at the judged commit (every model for a full scan), then blame."""
        full = ctx.job.payload.get("full") is True
        run = await self.timeline.judge(ctx.gh, target.snapshot, config, full=full)
        blame = await blame_first_bad(
            ctx, run, registry=config.registry, at_sha=target.snapshot.commit_sha
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
            details = error.markdown(commit=target.snapshot.commit_sha)
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
        settings = config or default_config()
        try:
            issue = await ensure_tracking_issue(
                ctx.gh,
                store,
                repo=view.repo,
                label=settings.tracking_label,
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
                mentions=settings.mention,
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
        commit_sha=target.snapshot.commit_sha,
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
