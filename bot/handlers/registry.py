"""The registry check on pull requests: ``model-guard/registry`` on the head commit, and a sticky comment.

On ``pull_request`` opened, synchronize, reopened and ready_for_review (drafts wait for
ready_for_review), when the change touches a model-related file, the check is created on
the head sha at once (``queued``), turns ``in_progress`` when judging starts, and completes
with the registry diff, validation and safety problems (annotated on their lines), the
bisect of the head against the base, and the verification of every promotion under the
repository's policy. A newer push supersedes the run: its check completes as
``cancelled``. "Re-run", "Full scan" and "Re-run all checks" judge the pull request again.

The promotion policy is read from the base commit, never from the pull request: a change
cannot lower the bar it is judged by (a policy change takes effect once merged).
"""

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar

from gidgethub import routing, sansio

from bot.github.pulls import changed_paths, get_pull
from bot.github.repofiles import RepoFiles, RepoSnapshot
from bot.handlers.planning import RERUN, event_origin, pressed_button
from bot.handlers.registry_view import (
    PR_PURPOSE,
    REGISTRY_CHECK,
    RegistryView,
    render_change,
    render_failure,
)
from bot.handlers.run import (
    CheckSite,
    Failure,
    JobKind,
    NothingToJudge,
    Published,
    RunContext,
    Runner,
    RunServices,
    blame_first_bad,
    read_repo_config,
)
from bot.judging.registry_run import ChangeRun, RegistryChangeJudge
from bot.repoconfig import CONFIG_PATH, ConfigError, RepoConfig, default_config
from bot.store import JobSpec, make_serial_key
from bot.surfaces.blame import Blame
from bot.surfaces.checks import CheckAction, CheckStatus, Conclusion
from bot.surfaces.sticky import IssueUnavailable
from engine.errors import one_line

KIND = "registry"
FULL_SCAN = "full-scan"
PULL_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})
# The job key (and so the check's external id) carries the pull request's number, so a
# re-run of a check on a fork's commit (whose payload lists no pull request) finds it.
_KEY = re.compile(r"^registry:(?P<repo>[^#]+)#(?P<number>[0-9]+):")
# Files a model-guard review reads, besides the registry, config and feature table.
_EVIDENCE_SUFFIXES = (".onnx", ".onnx.data", ".data", ".parquet")
_EVIDENCE_NAMES = re.compile(r"(^|_)(PROMOTE|HOLD)\.json$|^loso_seed[0-9]+\.json$")


@dataclass(frozen=True)
class PullResult:
    """A judged change, and who introduced the head's first bad model (if any)."""

    change: ChangeRun
    blame: Blame | None = None


@dataclass(frozen=True)
class PullTarget:
    """The pull request a run judges, at the head sha the event named."""

    repo: str
    number: int
    head_sha: str
    base_sha: str
    head: RepoSnapshot
    changed: tuple[str, ...]
    head_then: str  # the pull request's head when the target was resolved


def is_model_related(path: str, config: RepoConfig) -> bool:
    """Whether a changed path can change the review: registry, models, evidence, cache, config."""
    if path in (CONFIG_PATH, config.registry, config.features):
        return True
    folder = PurePosixPath(config.registry).parent
    if PurePosixPath(path).is_relative_to(folder) and folder != PurePosixPath("."):
        return True
    name = PurePosixPath(path).name
    return name.endswith(_EVIDENCE_SUFFIXES) or _EVIDENCE_NAMES.search(name) is not None


@dataclass(frozen=True)
class RegistryCheck(JobKind[PullTarget, PullResult, RegistryView]):
    """The pull-request registry check as a job kind."""

    name: ClassVar[str] = KIND
    check_name: ClassVar[str] = REGISTRY_CHECK
    opening_title: ClassVar[str] = "Judging the registry change"
    opening_status: ClassVar[CheckStatus] = CheckStatus.QUEUED
    actions: ClassVar[tuple[CheckAction, ...]] = (
        CheckAction("Full scan", "Judge every model of this commit", FULL_SCAN),
        CheckAction("Re-run", "Judge this pull request again", RERUN),
    )
    files: RepoFiles
    change: RegistryChangeJudge

    async def target(self, ctx: RunContext) -> PullTarget:
        """The pull request at the event's head sha; NothingToJudge if no model-related file changed."""
        payload = ctx.job.payload
        repo, number, head_sha = str(payload["repo"]), int(payload["number"]), payload["head_sha"]
        pull = await get_pull(ctx.gh, repo, number)
        if not isinstance(head_sha, str):
            head_sha = str(pull["head"]["sha"])
        base_sha = str(pull["base"]["sha"])
        changed = await changed_paths(ctx.gh, repo, number)
        head = await self.files.snapshot(ctx.gh, repo, head_sha)
        try:
            config = await read_repo_config(self.files, ctx.gh, head)
        except ConfigError:
            config = None  # an invalid config is itself model-related: judge it
        if config is not None and not any(is_model_related(p, config) for p in changed):
            raise NothingToJudge(f"{repo}#{number}: no model-related file changed")
        return PullTarget(repo, number, head_sha, base_sha, head, changed, _head_of(pull))

    def check_site(self, target: PullTarget) -> CheckSite:
        """The head commit: forks' pull requests are matched by head sha."""
        return CheckSite(target.repo, target.head_sha)

    async def superseded_by(
        self, ctx: RunContext, target: PullTarget, *, judged: bool
    ) -> str | None:
        """The pull request's head now, when a push moved it past the judged commit.

        Before judging, the head ``target`` read moments ago answers; after, GitHub is asked.
        """
        now = _head_of(await get_pull(ctx.gh, target.repo, target.number)) if judged else None
        sha = now if judged else target.head_then
        return sha if sha and sha != target.head_sha else None

    async def config(self, ctx: RunContext, target: PullTarget) -> RepoConfig:
        """The head's configuration (paths and gate); the policy comes from the base (``judge``)."""
        return await read_repo_config(self.files, ctx.gh, target.head)

    async def judge(self, ctx: RunContext, target: PullTarget, config: RepoConfig) -> PullResult:
        """Review the change under the base's promotion policy, bisect both sides, blame."""
        base = await self.files.snapshot(ctx.gh, target.repo, target.base_sha)
        try:
            base_config = await read_repo_config(self.files, ctx.gh, base)
        except ConfigError:
            base_config = default_config()  # the engine's defaults: the strictest known bar
        change = await self.change.judge(
            ctx.gh,
            base=base,
            head=target.head,
            config=config,
            base_config=base_config,
            policy=base_config.promotion,
            full=ctx.job.payload.get("full") is True,
        )
        if change.head.run is None:
            return PullResult(change)
        blame = await blame_first_bad(
            ctx, change.head.run, registry=config.registry, at_sha=target.head_sha
        )
        return PullResult(change, blame)

    def render(self, target: PullTarget, config: RepoConfig, result: PullResult) -> RegistryView:
        """The review and the bisect, as check output and comment."""
        return render_change(
            repo=target.repo,
            number=target.number,
            head_sha=target.head_sha,
            registry=config.registry,
            run=result.change,
            blame=result.blame.markdown() if result.blame is not None else "",
        )

    def error_view(
        self,
        target: PullTarget,
        config: RepoConfig | None,
        failure: Failure,
        error: BaseException,
    ) -> RegistryView:
        """A run that could not judge: red for the repository's content, neutral for GitHub."""
        conclusion = Conclusion.FAILURE
        if isinstance(error, ConfigError):
            title = f"The configuration is invalid: {error.one_line()}"
            details = error.markdown(commit=target.head_sha)
        elif failure is Failure.INTERNAL:
            title = f"model-guard failed: {type(error).__name__}: {one_line(error)}"
            details = "This is a bug in model-guard, not in the pull request."
        elif failure is Failure.GITHUB:
            conclusion = Conclusion.NEUTRAL
            title = f"Not judged: GitHub kept failing ({one_line(error)})"
            details = "Nothing was judged. Press **Re-run** on the check once GitHub answers."
        else:
            title = f"The registry change could not be judged: {one_line(error)}"
            details = "Nothing was judged, so nothing is known to be good. Fix the cause and push."
        return render_failure(
            repo=target.repo,
            number=target.number,
            head_sha=target.head_sha,
            conclusion=conclusion,
            title=title,
            details=details,
        )

    async def publish(
        self,
        ctx: RunContext,
        target: PullTarget,
        config: RepoConfig | None,
        view: RegistryView,
    ) -> Published:
        """Edit the pull request's sticky comment in place (one per pull request)."""
        sticky = await ctx.services.sticky()
        try:
            result = await sticky.upsert(
                ctx.gh,
                repo=target.repo,
                issue_number=target.number,
                purpose=PR_PURPOSE,
                body=view.comment(),
            )
        except IssueUnavailable as error:
            return Published(None, problem=one_line(error))
        return Published(result.html_url)


def _head_of(pull: dict[str, Any]) -> str:
    """The head sha of a pull request ("" when the payload has none)."""
    head = pull.get("head")
    sha = head.get("sha") if isinstance(head, dict) else None
    return sha if isinstance(sha, str) else ""


def registry_runner(
    services: RunServices, *, files: RepoFiles, change: RegistryChangeJudge
) -> Runner[PullTarget, PullResult, RegistryView]:
    """The worker's handler for ``registry`` jobs."""
    return Runner(RegistryCheck(files=files, change=change), services)


def _job(
    data: dict[str, Any],
    *,
    number: object,
    head_sha: object,
    key_suffix: str,
    reason: str,
    full: bool = False,
) -> JobSpec | None:
    """A registry job for pull request ``number`` of the event's repository; None if malformed."""
    origin = event_origin(data)
    if origin is None or not (
        isinstance(number, int) and number > 0 and (head_sha is None or isinstance(head_sha, str))
    ):
        return None
    installation_id, repo = origin
    return JobSpec(
        kind=KIND,
        key=f"registry:{repo}#{number}:{key_suffix}",
        payload={
            "installation_id": installation_id,
            "repo": repo,
            "number": number,
            "head_sha": head_sha,
            "reason": reason,
            **({"full": True} if full else {}),
        },
        # One check of a pull request at a time across replicas: they share its sticky comment.
        serial_key=make_serial_key(repo, PR_PURPOSE, number),
    )


def plan_pull_request(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """A pull request was opened, pushed to, reopened or marked ready: judge its head."""
    data = event.data
    pull = data.get("pull_request")
    if not isinstance(pull, dict) or data.get("action") not in PULL_ACTIONS:
        return
    if pull.get("draft") is True:
        return  # judged when marked ready for review
    head = pull.get("head")
    job = _job(
        data,
        number=pull.get("number"),
        head_sha=head.get("sha") if isinstance(head, dict) else None,
        key_suffix=event.delivery_id,
        reason=f"pull request {data.get('action')}",
    )
    if job is not None and job.payload["head_sha"] is not None:
        jobs.append(job)


def plan_rerun(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """ "Re-run" or a button on the registry check: judge that pull request's commit again."""
    data = event.data
    run = data.get("check_run")
    if not isinstance(run, dict) or run.get("name") != REGISTRY_CHECK:
        return
    button = pressed_button(data, (FULL_SCAN, RERUN))
    if button is None:
        return
    number = _number_of(run)
    job = _job(
        data,
        number=number,
        head_sha=run.get("head_sha"),
        key_suffix=f"{button}:{event.delivery_id}",
        reason="full scan requested" if button == FULL_SCAN else "re-run requested",
        full=button == FULL_SCAN,
    )
    if job is not None:
        jobs.append(job)


def _number_of(run: dict[str, Any]) -> int | None:
    """The pull request of a registry check run: its payload, else its external id (forks)."""
    pulls = run.get("pull_requests")
    if isinstance(pulls, list):
        for pull in pulls:
            if isinstance(pull, dict) and isinstance(pull.get("number"), int):
                return int(pull["number"])
    external = run.get("external_id")
    match = _KEY.match(external) if isinstance(external, str) else None
    return int(match["number"]) if match else None


def plan_suite_rerun(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """ "Re-run all checks" on a pull request's commit: judge each pull request it heads again."""
    data = event.data
    suite = data.get("check_suite")
    if not isinstance(suite, dict):
        return
    pulls = suite.get("pull_requests")
    for pull in pulls if isinstance(pulls, list) else ():
        if not isinstance(pull, dict):
            continue
        job = _job(
            data,
            number=pull.get("number"),
            head_sha=suite.get("head_sha"),
            key_suffix=f"suite:{event.delivery_id}",
            reason="re-run of all checks requested",
        )
        if job is not None:
            jobs.append(job)


router = routing.Router()


@router.register("pull_request")
async def _on_pull_request(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan the registry check of a pull request's new head."""
    plan_pull_request(event, jobs)


@router.register("check_run", action="rerequested")
@router.register("check_run", action="requested_action")
async def _on_check_rerequested(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan a re-run (or a full scan) of the registry check."""
    plan_rerun(event, jobs)


@router.register("check_suite", action="rerequested")
async def _on_suite_rerequested(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan a re-run of the registry check on each pull request the suite's commit heads."""
    plan_suite_rerun(event, jobs)
