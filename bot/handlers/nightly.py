"""The nightly job: bisect the default branch's timeline, update the tracking comment and the check.

Every step is safe to repeat, because a job whose worker died is run again: the check run
is found again by its external id, the sticky comment by its stored id or marker, and the
run history is written once per job key. Whatever goes wrong, the run still ends where a
maintainer looks: the check run is completed with the error and the tracking comment says
what happened. Only when GitHub itself cannot be reached does the job give up for now and
retry later (its last attempt reports the error instead).
"""

import asyncio
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
from gidgethub import GitHubException, routing, sansio
from gidgethub.abc import GitHubAPI

from bot.github import GitHubClient, GitHubClientError
from bot.github.repofiles import RepoFileError, RepoFiles, RepoSnapshot
from bot.github.repos import repo_vars
from bot.handlers.nightly_view import (
    ERROR_OUTCOME,
    NIGHTLY_PURPOSE,
    NightlyView,
    render_check_output,
    render_tracking_comment,
)
from bot.jobs.worker import PermanentJobError, RetryableJobError
from bot.judging.bisect_run import TimelineJudge
from bot.judging.pool import EnginePoolError
from bot.repoconfig import CONFIG_PATH, ConfigError, RepoConfig, default_config, parse_repo_config
from bot.store import Job, JobSpec, Store
from bot.surfaces.checks import (
    NIGHTLY_CHECK,
    CheckOutput,
    conclusion_for,
    finish_check_run,
    note_check_run,
    open_check_run,
)
from bot.surfaces.sticky import IssueUnavailable, StickyComments
from bot.surfaces.tracking import TrackingError, ensure_tracking_issue
from bot.telemetry import Telemetry
from engine.bisection import Outcome
from engine.errors import EngineError, one_line

log = logging.getLogger("model_guard.nightly")
KIND = "nightly"
HISTORY_RUNS = 14
# Errors in what the repository holds (config, registry, cache, models) or in the engine's
# work (a time limit, a crash): the user must see them, and a retry would change nothing.
_USER_ERRORS = (ConfigError, RepoFileError, EngineError, EnginePoolError)
# GitHub or the network failing after the client's own retries: worth another attempt.
_TRANSIENT = (GitHubException, GitHubClientError, aiohttp.ClientError, asyncio.TimeoutError)


@dataclass(frozen=True)
class _Target:
    """The repository and commit a run judges."""

    repo: str
    branch: str
    html_url: str
    snapshot: RepoSnapshot


@dataclass(frozen=True)
class _Published:
    """Where the tracking comment is, or why it could not be written."""

    url: str | None
    problem: str | None = None


@dataclass
class NightlyHandler:
    """Runs ``nightly`` jobs; one instance per service, shared by every worker."""

    client: GitHubClient
    store: Store
    files: RepoFiles
    judge: TimelineJudge
    telemetry: Telemetry | None = None
    _sticky: StickyComments | None = field(default=None, init=False)
    _bot_login: str = field(default="", init=False)

    async def __call__(self, job: Job) -> None:
        """Run one nightly job (the worker's handler for kind ``nightly``)."""
        try:
            installation_id = int(job.payload["installation_id"])
            repo = str(job.payload["repo"])
        except (KeyError, TypeError, ValueError):
            raise PermanentJobError(f"nightly job {job.key}: no installation_id/repo") from None
        ref = job.payload.get("ref")
        try:
            gh = await self.client.installation_api(installation_id)
            branch = job.payload.get("branch")
            target = await self._target(
                gh,
                repo,
                ref if isinstance(ref, str) else None,
                branch=branch if isinstance(branch, str) else None,
            )
            check_id = await open_check_run(
                gh,
                repo,
                target.snapshot.commit_sha,
                name=NIGHTLY_CHECK,
                external_id=job.key,
                title="Bisecting the model timeline",
            )
        except _TRANSIENT as error:
            raise RetryableJobError(f"GitHub unavailable: {one_line(error)}") from error
        except RepoFileError as error:  # the branch or ref cannot be read: no commit to check
            raise PermanentJobError(f"{repo}: {one_line(error)}") from error
        config = default_config()
        try:
            config = await self._config(gh, target.snapshot)
            run = await self.judge.judge(gh, target.snapshot, config)
            view = self._view(target, config, run.outcome.value, run.summary, run.markdown)
        except _TRANSIENT as error:
            await self._retry_if_attempts_left(gh, repo, check_id, job, error)
            view = self._error_view(target, config, error)
        except _USER_ERRORS as error:
            view = self._error_view(target, config, error)
        except Exception as error:  # a bug: still tell the user, then record the failure
            log.exception("nightly job %s failed", job.key)
            view = self._error_view(target, config, error, internal=True)
        await self._conclude(gh, job, view, config, check_id=check_id)
        log.info("nightly %s: %s", repo, view.outcome)  # the worker adds the job's fields

    async def _conclude(
        self, gh: GitHubAPI, job: Job, view: NightlyView, config: RepoConfig, *, check_id: int
    ) -> None:
        """Write the tracking comment, then complete the check run with the verdict.

        A comment GitHub keeps refusing is retried while attempts are left (the check says
        so); the last attempt still completes the check, saying why the comment is missing.
        """
        try:
            published = await self._publish(gh, job, view, config)
        except _TRANSIENT as error:
            await self._retry_if_attempts_left(gh, view.repo, check_id, job, error)
            log.warning("tracking comment not written: GitHub kept failing: %s", one_line(error))
            published = _Published(None, problem=f"GitHub kept failing ({one_line(error)})")
        output = render_check_output(
            view, comment_url=published.url, comment_problem=published.problem
        )
        try:
            await finish_check_run(
                gh,
                view.repo,
                check_id,
                conclusion=conclusion_for(_outcome(view.outcome)),
                output=output,
            )
        except _TRANSIENT as error:
            raise RetryableJobError(f"GitHub unavailable: {one_line(error)}") from error

    async def _target(
        self, gh: GitHubAPI, repo: str, ref: str | None, *, branch: str | None = None
    ) -> _Target:
        """The default branch's head, or ``ref`` for a re-run (named by its ``branch``)."""
        info: dict[str, Any] = await gh.getitem("/repos/{owner}/{repo}", url_vars=repo_vars(repo))
        default = str(info["default_branch"])
        snapshot = await self.files.snapshot(gh, repo, ref or default)
        shown = default if ref is None else (branch or f"commit {ref[:7]}")
        return _Target(repo, shown, str(info.get("html_url") or ""), snapshot)

    async def _config(self, gh: GitHubAPI, snapshot: RepoSnapshot) -> RepoConfig:
        """The repository's ``.github/model-guard.yml`` at the judged commit (defaults if absent)."""
        if not self.files.exists(snapshot, CONFIG_PATH):
            return default_config()
        text = await self.files.read(gh, snapshot, CONFIG_PATH)
        return parse_repo_config(text, source=CONFIG_PATH, commit=snapshot.commit_sha)

    @staticmethod
    def _view(
        target: _Target, config: RepoConfig, outcome: str, summary: str, details: str
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

    def _error_view(
        self, target: _Target, config: RepoConfig, error: BaseException, *, internal: bool = False
    ) -> NightlyView:
        """A run that could not judge: the reason in one line, and what to do about it."""
        if isinstance(error, ConfigError):
            summary = f"The configuration is invalid: {error.one_line()}"
            details = error.markdown(commit=target.snapshot.commit_sha)
            # ``config`` holds the defaults then, not the paths this repository configured.
            view = self._view(target, config, ERROR_OUTCOME, summary, details)
            return replace(view, registry="", features="")
        elif internal:
            summary = f"model-guard failed: {type(error).__name__}: {one_line(error)}"
            details = "This is a bug in model-guard, not in the repository."
        elif isinstance(error, _TRANSIENT):
            # A bare "Bad Gateway" reads like the repository's fault; say who failed.
            summary = (
                f"The timeline could not be judged: GitHub kept failing ({one_line(error)}) "
                "on every attempt"
            )
            details = (
                "Nothing was judged, so nothing is known to be good. This is GitHub failing, "
                "not the repository: the next nightly run (or **Re-run** on the check) tries again."
            )
        else:
            summary = f"The timeline could not be judged: {one_line(error)}"
            details = (
                "Nothing was judged, so nothing is known to be good. Fix the cause above; the "
                "next nightly run (or **Re-run** on the check) judges the timeline again."
            )
        return self._view(target, config, ERROR_OUTCOME, summary, details)

    async def _retry_if_attempts_left(
        self, gh: GitHubAPI, repo: str, check_id: int, job: Job, error: BaseException
    ) -> None:
        """With attempts left, say so on the running check and give up this attempt (raises).

        On the last attempt it returns, and the caller reports the error instead.
        """
        if job.attempts >= job.max_attempts:
            return
        output = CheckOutput(
            title="Retrying: GitHub did not answer",
            summary=f"Attempt {job.attempts} of {job.max_attempts} failed ({one_line(error)}).",
        )
        try:
            await note_check_run(gh, repo, check_id, output=output)
        except _TRANSIENT:
            log.warning("could not note the retry on check run %s", check_id)
        raise RetryableJobError(f"GitHub unavailable: {one_line(error)}") from error

    async def _sticky_comments(self) -> StickyComments:
        """One StickyComments per service (its locks serialise writes), made on first use.

        It needs the App's bot account (``<slug>[bot]``): only its comments are ever edited.
        """
        if self._sticky is None:
            app: dict[str, Any] = await self.client.app_api().getitem("/app")
            self._bot_login = f"{app['slug']}[bot]"
            self._sticky = StickyComments(
                self.store,
                bot_login=self._bot_login,
                app_id=int(app["id"]),
                outcomes=None if self.telemetry is None else self.telemetry.sticky_comments,
            )
        return self._sticky

    async def _publish(
        self, gh: GitHubAPI, job: Job, view: NightlyView, config: RepoConfig
    ) -> _Published:
        """Record the run once, then update the sticky tracking comment; say where it is."""
        await self.store.record_run(
            view.repo,
            day=str(job.payload.get("day") or view.finished_at.date().isoformat()),
            commit_sha=view.commit_sha,
            outcome=view.outcome,
            summary=view.summary,
            finished_at=view.finished_at,
            key=job.key,
        )
        history = await self.store.recent_runs(view.repo, limit=HISTORY_RUNS)
        sticky = await self._sticky_comments()
        try:
            issue = await ensure_tracking_issue(
                gh,
                self.store,
                repo=view.repo,
                label=config.tracking_label,
                bot_login=self._bot_login,
            )
            result = await sticky.upsert(
                gh,
                repo=view.repo,
                issue_number=issue.number,
                purpose=NIGHTLY_PURPOSE,
                body=render_tracking_comment(view, history),
            )
        except (IssueUnavailable, TrackingError) as error:
            log.warning("tracking comment not written: %s", error)
            return _Published(None, problem=one_line(error))
        return _Published(result.html_url)


def _outcome(value: str) -> Outcome | None:
    """The engine outcome named ``value``, or None for a run that could not judge."""
    return None if value == ERROR_OUTCOME else Outcome(value)


def plan_rerun(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """A maintainer pressed "Re-run" on the nightly check: judge that commit again now."""
    data = event.data
    run = data.get("check_run")
    installation = data.get("installation")
    repository = data.get("repository")
    if not (
        isinstance(run, dict) and isinstance(installation, dict) and isinstance(repository, dict)
    ):
        return
    installation_id, repo, head_sha = (
        installation.get("id"),
        repository.get("full_name"),
        run.get("head_sha"),
    )
    if run.get("name") != NIGHTLY_CHECK:
        return
    if not (
        isinstance(installation_id, int) and isinstance(repo, str) and isinstance(head_sha, str)
    ):
        return
    suite = run.get("check_suite")
    branch = suite.get("head_branch") if isinstance(suite, dict) else None
    jobs.append(
        JobSpec(
            kind=KIND,
            key=f"nightly-rerun:{event.delivery_id}",
            payload={
                "installation_id": installation_id,
                "repo": repo,
                "ref": head_sha,
                **({"branch": branch} if isinstance(branch, str) and branch else {}),
                "day": datetime.now(UTC).date().isoformat(),
                "reason": "re-run requested",
            },
        )
    )


router = routing.Router()


@router.register("check_run", action="rerequested")
async def _on_check_rerequested(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan a re-run of the nightly bisect when its check run is re-requested."""
    plan_rerun(event, jobs)
