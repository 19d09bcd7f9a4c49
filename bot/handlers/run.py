"""The run skeleton every job kind shares: the check run, the comment, retries and the error view.

A job kind says what it judges, how to judge it and how to show the result (``JobKind``);
``Runner`` owns the rest, the same for every kind:

- the check run is opened in progress with ``external_id`` = the run's origin key, so a
  re-run (a worker died, a lease expired, a parked run resumed) finds it again; a kind
  whose ``check_name`` is None (its answer is a comment) opens and completes none;
- errors are sorted once: GitHub failing is retried with the retry noted on the check; what
  the repository holds (config, registry, cache, models) and the engine's limits are shown
  to the user; a bug is shown too and logged with its traceback;
- the comment is written before the check completes, so a completed check links its comment
  (or says why it is missing);
- the last attempt reports where the user looks, and a run that GitHub kept from finishing
  is parked and runs again once GitHub answers (``bot.jobs.parking``).

Every step is safe to repeat: the check run is found by its external id, sticky comments by
their marker, and records are written once per origin key.
"""

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import aiohttp
from gidgethub import GitHubException
from gidgethub.abc import GitHubAPI

from bot.github import GitHubClient, GitHubClientError
from bot.github.repofiles import RepoFileError, RepoFiles, RepoSnapshot
from bot.jobs.parking import origin_key, park
from bot.jobs.worker import PermanentJobError, RetryableJobError
from bot.judging.bisect_run import TimelineRun
from bot.judging.pool import EnginePoolError
from bot.repoconfig import CONFIG_PATH, ConfigError, RepoConfig, default_config, parse_repo_config
from bot.store import Job, Store
from bot.surfaces.blame import Blame, blame_row
from bot.surfaces.checks import (
    CheckAction,
    CheckOutput,
    CheckStatus,
    Conclusion,
    finish_check_run,
    note_check_run,
)
from bot.surfaces.checks import open_check_run as open_check
from bot.surfaces.sticky import StickyComments
from bot.telemetry import Telemetry
from engine.bisection import Outcome
from engine.errors import EngineError, one_line

log = logging.getLogger("model_guard.run")

# Errors in what the repository holds (config, registry, cache, models) or in the engine's
# work (a time limit, a crash): the user must see them, and a retry would change nothing.
USER_ERRORS = (ConfigError, RepoFileError, EngineError, EnginePoolError)
# GitHub or the network failing after the client's own retries: worth another attempt.
TRANSIENT_ERRORS = (GitHubException, GitHubClientError, aiohttp.ClientError, asyncio.TimeoutError)


class NothingToJudge(Exception):
    """Raised by ``JobKind.target``: the event concerns nothing this kind judges (no check, no comment)."""


class Failure(Enum):
    """Why a run could not judge."""

    GITHUB = "github"  # GitHub kept failing on every attempt
    REPOSITORY = "repository"  # the repository's content, or the engine's limits
    INTERNAL = "internal"  # a bug in model-guard


@dataclass(frozen=True)
class Published:
    """Where a run's comment is, or why it could not be written."""

    url: str | None
    problem: str | None = None


class View(Protocol):
    """What a job kind renders from a run: its conclusion and its check output."""

    @property
    def conclusion(self) -> Conclusion:
        """The check run's conclusion."""
        ...

    def check_output(self, published: Published) -> CheckOutput:
        """The check run's output, given where the comment went."""
        ...


@dataclass(frozen=True)
class CheckSite:
    """The repository and commit a run's check run belongs to."""

    repo: str
    head_sha: str


@dataclass(frozen=True)
class BotIdentity:
    """The App's bot account: only its comments and issues are ever edited."""

    login: str
    app_id: int


@dataclass
class RunServices:
    """What every job kind's runs share; built once per service (``create_app``)."""

    client: GitHubClient
    store: Store
    telemetry: Telemetry | None = None
    _identity: BotIdentity | None = field(default=None, init=False)
    _sticky: StickyComments | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def identity(self) -> BotIdentity:
        """The App's bot account (``<slug>[bot]``), asked of GitHub once."""
        async with self._lock:
            if self._identity is None:
                app: dict[str, Any] = await self.client.app_api().getitem("/app")
                self._identity = BotIdentity(f"{app['slug']}[bot]", int(app["id"]))
            return self._identity

    async def sticky(self) -> StickyComments:
        """One StickyComments per service: its locks serialise every job's writes."""
        identity = await self.identity()
        if self._sticky is None:
            self._sticky = StickyComments(
                self.store,
                bot_login=identity.login,
                app_id=identity.app_id,
                outcomes=None if self.telemetry is None else self.telemetry.sticky_comments,
            )
        return self._sticky


@dataclass(frozen=True)
class RunContext:
    """One run of a job: its GitHub API, the job, and the key its check and records use.

    ``origin_key`` is the job's key, or for a parked run resumed later the key of the job it
    resumes, so both find the same check run and write the same records.
    """

    gh: GitHubAPI
    job: Job
    origin_key: str
    services: RunServices


TargetT = TypeVar("TargetT")
ResultT = TypeVar("ResultT")
ViewT = TypeVar("ViewT", bound=View)


class JobKind(ABC, Generic[TargetT, ResultT, ViewT]):
    """One kind of job: what it judges, how, and how it shows the result."""

    name: ClassVar[str]  # the stored job kind
    check_name: ClassVar[str | None]  # None: the kind answers in a comment, with no check run
    opening_title: ClassVar[str]  # the check run's title while it runs
    actions: ClassVar[tuple[CheckAction, ...]] = ()  # buttons on the completed check run
    # QUEUED: the check shows at once and turns in progress when the judging starts.
    opening_status: ClassVar[CheckStatus] = CheckStatus.IN_PROGRESS

    @abstractmethod
    async def target(self, ctx: RunContext) -> TargetT:
        """Resolve what the job judges (repository, commit) from its payload.

        Raise ``NothingToJudge`` when the event turns out to concern nothing of this kind's.
        """

    async def reshown(self, ctx: RunContext, target: TargetT) -> bool:
        """True when a result judged earlier still holds for ``target`` and was shown again.

        Asked once the target is resolved, before any check run is opened: a kind whose
        target is exactly what it judged before (same commit, configuration and model-guard)
        may show that result again and answer True; the run then opens no check run and
        judges nothing. The default judges every time.
        """
        return False

    async def concluded(
        self, ctx: RunContext, target: TargetT, config: RepoConfig | None, view: ViewT
    ) -> None:
        """The run's comment is written and its check run completed; remember what it showed.

        Called only after both succeeded, so what a kind remembers here is on GitHub.
        """

    async def superseded_by(self, ctx: RunContext, target: TargetT, *, judged: bool) -> str | None:
        """What replaced the target since the job was planned (a newer head sha), or None.

        Asked before the judging (``judged`` False: ``target`` was resolved moments ago, so
        a kind may answer from it) and again before publishing (``judged`` True: ask anew).
        A superseded run publishes nothing and its check is completed as ``cancelled``.
        """
        return None

    @abstractmethod
    def check_site(self, target: TargetT) -> CheckSite:
        """Where the run's check run goes."""

    @abstractmethod
    async def config(self, ctx: RunContext, target: TargetT) -> RepoConfig:
        """The repository configuration the run obeys (raises ConfigError if invalid)."""

    @abstractmethod
    async def judge(self, ctx: RunContext, target: TargetT, config: RepoConfig) -> ResultT:
        """Do the work; raise for what stops it (the runner sorts the error)."""

    @abstractmethod
    def render(self, target: TargetT, config: RepoConfig, result: ResultT) -> ViewT:
        """Show a judged run."""

    @abstractmethod
    def error_view(
        self,
        target: TargetT,
        config: RepoConfig | None,
        failure: Failure,
        error: BaseException,
    ) -> ViewT:
        """Show a run that could not judge (``config`` None when it could not be read)."""

    @abstractmethod
    async def publish(
        self, ctx: RunContext, target: TargetT, config: RepoConfig | None, view: ViewT
    ) -> Published:
        """Write the run's comment and records; say where the comment is."""


async def read_repo_config(files: RepoFiles, gh: GitHubAPI, snapshot: RepoSnapshot) -> RepoConfig:
    """The repository's ``.github/model-guard.yml`` at the snapshot's commit (defaults if absent)."""
    if not files.exists(snapshot, CONFIG_PATH):
        return default_config()
    text = await files.read(gh, snapshot, CONFIG_PATH)
    return parse_repo_config(text, source=CONFIG_PATH, commit=snapshot.commit_sha)


async def blame_first_bad(
    ctx: RunContext, run: TimelineRun, *, registry: str, at_sha: str
) -> Blame | None:
    """The commit and pull request that introduced a bisect's first bad model (None if none).

    Every kind that reports a first bad model links who introduced it; best-effort and
    cached by commit (``bot.surfaces.blame``), so an unchanged commit costs no request.
    """
    first_bad = run.report.get("first_bad_model")
    if run.outcome not in (Outcome.REGRESSION, Outcome.ALREADY_BAD) or not first_bad:
        return None
    return await blame_row(
        ctx.gh,
        ctx.services.store,
        repo=run.repo,
        registry_path=registry,
        model_id=str(first_bad),
        at_sha=at_sha,
    )


def _installation(job: Job) -> tuple[int, str]:
    try:
        return int(job.payload["installation_id"]), str(job.payload["repo"])
    except (KeyError, TypeError, ValueError):
        raise PermanentJobError(f"{job.kind} job {job.key}: no installation_id/repo") from None


@dataclass(frozen=True)
class _Opened(Generic[TargetT]):
    ctx: RunContext
    target: TargetT
    site: CheckSite
    check_id: int | None  # None for a kind without a check run


class Runner(Generic[TargetT, ResultT, ViewT]):
    """Runs the jobs of one kind (the worker's handler for ``kind.name``)."""

    def __init__(self, kind: JobKind[TargetT, ResultT, ViewT], services: RunServices) -> None:
        """Run ``kind``'s jobs with the service's shared ``services``."""
        self.kind = kind
        self.services = services

    async def __call__(self, job: Job) -> None:
        """Run one job: open the check, judge, render, comment, complete the check."""
        opened = await self._open(job)
        if opened is None:
            return
        ctx, target = opened.ctx, opened.target
        config: RepoConfig | None = None
        failure: Failure | None = None
        try:
            if await self._cancel_if_superseded(opened, judged=False):
                return
            config = await self.kind.config(ctx, target)
            if self.kind.opening_status is CheckStatus.QUEUED and opened.check_id is not None:
                title = self.kind.opening_title
                output = CheckOutput(title=title, summary=title)
                await note_check_run(
                    ctx.gh, opened.site.repo, opened.check_id, output=output, started=True
                )
            result = await self.kind.judge(ctx, target, config)
            if await self._cancel_if_superseded(opened, judged=True):
                return
            view = self.kind.render(target, config, result)
        except TRANSIENT_ERRORS as error:
            await self._retry_if_attempts_left(opened, error)
            failure = Failure.GITHUB
            view = self.kind.error_view(target, config, failure, error)
        except USER_ERRORS as error:
            view = self.kind.error_view(target, config, Failure.REPOSITORY, error)
        except Exception as error:  # a bug: still tell the user, then record the failure
            log.exception("%s job %s failed", self.kind.name, job.key)
            view = self.kind.error_view(target, config, Failure.INTERNAL, error)
        finished = await self._conclude(opened, config, view)
        if failure is Failure.GITHUB or not finished:
            await park(self.services.store, job, why="GitHub kept failing; the run reported it")
        log.info("%s %s: %s", self.kind.name, opened.site.repo, view.conclusion.value)

    async def _cancel_if_superseded(self, opened: _Opened[TargetT], *, judged: bool) -> bool:
        """Complete the check as ``cancelled`` if something newer replaced the target."""
        newer = await self.kind.superseded_by(opened.ctx, opened.target, judged=judged)
        if newer is None:
            return False
        if opened.check_id is None:
            log.info("%s %s: superseded by %s", self.kind.name, opened.site.repo, newer)
            return True
        output = CheckOutput(
            title=f"Superseded by {newer[:7]}",
            summary=f"A newer commit ({newer}) replaced this one; its own check has the verdict.",
        )
        await finish_check_run(
            opened.ctx.gh,
            opened.site.repo,
            opened.check_id,
            conclusion=Conclusion.CANCELLED,
            output=output,
        )
        log.info("%s %s: superseded by %s", self.kind.name, opened.site.repo, newer)
        return True

    async def _open(self, job: Job) -> _Opened[TargetT] | None:
        """Resolve the target and open (or find again) the run's check run; None: nothing to judge."""
        installation_id, repo = _installation(job)
        try:
            gh = await self.services.client.installation_api(installation_id)
            ctx = RunContext(gh, job, origin_key(job), self.services)
            try:
                target = await self.kind.target(ctx)
            except NothingToJudge:
                log.info("%s job %s: nothing to judge", self.kind.name, job.key)
                return None
            if await self.kind.reshown(ctx, target):
                log.info("%s job %s: unchanged since judged; shown again", self.kind.name, job.key)
                return None
            site = self.kind.check_site(target)
            check_id = None
            if self.kind.check_name is not None:
                check_id = await open_check(
                    gh,
                    site.repo,
                    site.head_sha,
                    name=self.kind.check_name,
                    external_id=ctx.origin_key,
                    title=self.kind.opening_title,
                    status=self.kind.opening_status,
                    # A first attempt of a job that resumes nothing cannot have opened it.
                    fresh=job.attempts <= 1 and ctx.origin_key == job.key,
                )
        except TRANSIENT_ERRORS as error:
            await self._give_up_if_last(job, error)
            raise RetryableJobError(f"GitHub unavailable: {one_line(error)}") from error
        except RepoFileError as error:  # the branch or ref cannot be read: no commit to check
            raise PermanentJobError(f"{repo}: {one_line(error)}") from error
        return _Opened(ctx, target, site, check_id)

    async def _conclude(
        self, opened: _Opened[TargetT], config: RepoConfig | None, view: ViewT
    ) -> bool:
        """Write the comment, then complete the check run; False if the comment is missing.

        A comment GitHub keeps refusing is retried while attempts are left (the check says
        so); the last attempt still completes the check, saying why the comment is missing.
        """
        finished = True
        try:
            published = await self.kind.publish(opened.ctx, opened.target, config, view)
        except TRANSIENT_ERRORS as error:
            await self._retry_if_attempts_left(opened, error)
            log.error("comment not written: GitHub kept failing: %s", one_line(error))
            published = Published(None, problem=f"GitHub kept failing ({one_line(error)})")
            finished = False
        except Exception as error:  # a bug must not leave the check in progress
            log.exception("%s job %s: the comment failed", self.kind.name, opened.ctx.job.key)
            problem = f"model-guard failed: {type(error).__name__}: {one_line(error)}"
            published = Published(None, problem=problem)
        if opened.check_id is None:
            return finished
        try:
            await finish_check_run(
                opened.ctx.gh,
                opened.site.repo,
                opened.check_id,
                conclusion=view.conclusion,
                output=view.check_output(published),
                actions=self.kind.actions,
            )
        except TRANSIENT_ERRORS as error:
            await self._give_up_if_last(opened.ctx.job, error)
            raise RetryableJobError(f"GitHub unavailable: {one_line(error)}") from error
        if finished and published.url is not None:
            await self.kind.concluded(opened.ctx, opened.target, config, view)
        return finished

    async def _retry_if_attempts_left(self, opened: _Opened[TargetT], error: BaseException) -> None:
        """With attempts left, say so on the running check and give up this attempt (raises).

        On the last attempt it returns, and the caller reports the error instead.
        """
        job = opened.ctx.job
        if job.attempts >= job.max_attempts:
            return
        if opened.check_id is None:
            raise RetryableJobError(f"GitHub unavailable: {one_line(error)}") from error
        output = CheckOutput(
            title="Retrying: GitHub did not answer",
            summary=f"Attempt {job.attempts} of {job.max_attempts} failed ({one_line(error)}).",
        )
        try:
            await note_check_run(opened.ctx.gh, opened.site.repo, opened.check_id, output=output)
        except TRANSIENT_ERRORS:
            log.warning("could not note the retry on check run %s", opened.check_id)
        raise RetryableJobError(f"GitHub unavailable: {one_line(error)}") from error

    async def _give_up_if_last(self, job: Job, error: BaseException) -> None:
        """On the last attempt, park the run: it runs again once GitHub answers."""
        if job.attempts >= job.max_attempts:
            await park(self.services.store, job, why=f"GitHub kept failing ({one_line(error)})")
