"""The ``/bisect`` command: a pull-request comment that bisects the registry at the head commit.

A user of the run skeleton (``bot.handlers.run``) without a check run: the answer is the
sticky ``bisect`` comment on the pull request and reactions on the command (👀 accepted,
🚀 done, 😕 failed), or a short reply for help, a malformed command or a missing permission.

Who may run it is asked of GitHub's collaborator permission API, never read from the
payload's ``author_association``; the repository configuration comes from the default
branch, so a pull request cannot grant itself anything. Bots and edited comments are not
commands, and neither are comments on plain issues.

Newest wins, one result per pull request. Every command is its own job (key per comment id,
so a redelivery runs nothing twice). A job whose command has a newer ``/bisect`` on the same
pull request, posted by someone allowed to run it, does nothing: it is replaced. The jobs
table is the record of newer commands (``Store.jobs_with_prefix``): it is written with the
delivery, so a command GitHub delivered is seen by every older job that looks afterwards.
A job looks before it starts, before each model it judges (a bisect running when a newer
command is planned stops at the next model, so two bisects of one pull request overlap by
at most one model's judging, even with several workers) and again before it writes, so it
never overwrites the newer result. A replaced command gets no reaction beyond the 👀 it may
already have: no 🚀, no 😕.
"""

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from gidgethub import BadRequest, RateLimitExceeded, routing, sansio
from gidgethub.abc import GitHubAPI

from bot.github.permissions import Permission
from bot.github.pulls import get_pull
from bot.github.repofiles import RepoFiles
from bot.github.repos import repo_vars
from bot.handlers.bisect_view import (
    BISECT_PURPOSE,
    REPLIES,
    Answer,
    BisectView,
    render_refusal,
    render_result_comment,
)
from bot.handlers.planning import event_origin
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
from bot.intake.commands import (
    BisectCommand,
    CommandError,
    HelpRequest,
    ParsedCommand,
    parse_command,
    render_error_reply,
    render_help_reply,
)
from bot.judging.bisect_run import RunStopped, TimelineJudge, TimelineRun
from bot.repoconfig import ConfigError, RepoConfig, default_config
from bot.store import JobSpec, make_serial_key
from bot.surfaces.blame import Blame
from bot.surfaces.notices import post_notice_once
from bot.surfaces.reactions import Reaction, react_to_comment
from bot.surfaces.sticky import IssueUnavailable
from engine.errors import one_line

KIND = "bisect"
RUN, HELP, ERROR = "run", "help", "error"  # the payload's ``request``


def command_prefix(repo: str, number: int) -> str:
    """The key prefix of every ``/bisect`` job of one pull request."""
    return f"{KIND}:{repo.lower()}#{number}:"


def command_key(repo: str, number: int, comment_id: int) -> str:
    """The job key of one ``/bisect`` comment: one job per comment, however often delivered."""
    return f"{command_prefix(repo, number)}{comment_id}"


@dataclass(frozen=True)
class BisectTarget:
    """One ``/bisect`` comment: where it is, who wrote it and what it asks."""

    repo: str
    number: int
    comment_id: int
    comment_url: str
    login: str
    request: ParsedCommand

    @property
    def command(self) -> BisectCommand | None:
        """The bisect asked for, or None for help and a malformed command."""
        return self.request if isinstance(self.request, BisectCommand) else None


@dataclass(frozen=True)
class BisectAnswer:
    """What judging a command decided, and the bisect when it ran."""

    answer: Answer
    run: TimelineRun | None = None
    head_sha: str | None = None
    held: Permission = Permission.NONE
    blame: Blame | None = None  # who introduced the first bad model


async def fetch_permission(gh: GitHubAPI, repo: str, login: str) -> Permission:
    """``login``'s role on ``repo`` from GitHub (``NONE`` for an unknown account)."""
    # https://docs.github.com/rest/collaborators/collaborators#get-repository-permissions-for-a-user
    try:
        data: dict[str, Any] = await gh.getitem(
            "/repos/{owner}/{repo}/collaborators/{username}/permission",
            {**repo_vars(repo), "username": login},
        )
    except BadRequest as error:
        if isinstance(error, RateLimitExceeded) or int(error.status_code) != 404:
            raise
        return Permission.NONE
    return Permission.from_collaborator(data)


def with_command(config: RepoConfig, command: BisectCommand) -> RepoConfig:
    """The configuration the command judges by: its gate, and intervals if it asks for them."""
    gate = command.gate(config.thresholds())
    return replace(
        config,
        min_plcc=gate.min_plcc,
        min_srocc=gate.min_srocc,
        max_rmse=gate.max_rmse,
        statistical=config.statistical or command.statistical,
    )


@dataclass(frozen=True)
class Bisect(JobKind[BisectTarget, BisectAnswer, BisectView]):
    """The ``/bisect`` command as a job kind (no check run: it answers in the pull request)."""

    name: ClassVar[str] = KIND
    check_name: ClassVar[str | None] = None
    opening_title: ClassVar[str] = "Bisecting the model timeline"
    files: RepoFiles
    timeline: TimelineJudge

    async def target(self, ctx: RunContext) -> BisectTarget:
        """The command as planned from the comment (no GitHub call)."""
        payload = ctx.job.payload
        return BisectTarget(
            repo=str(payload["repo"]),
            number=int(payload["number"]),
            comment_id=int(payload["comment_id"]),
            comment_url=str(payload.get("comment_url") or ""),
            login=str(payload["login"]),
            request=_request(payload),
        )

    def check_site(self, target: BisectTarget) -> CheckSite:
        """Never used: the kind opens no check run (the head is only known when judging)."""
        return CheckSite(target.repo, "")

    async def config(self, ctx: RunContext, target: BisectTarget) -> RepoConfig:
        """The configuration on the default branch: a pull request cannot change who may run it.

        The default branch comes from the comment's webhook when it named one.
        """
        default = ctx.job.payload.get("default_branch")
        if not isinstance(default, str) or not default:
            info: dict[str, Any] = await ctx.gh.getitem(
                "/repos/{owner}/{repo}", url_vars=repo_vars(target.repo)
            )
            default = str(info["default_branch"])
        snapshot = await self.files.snapshot(ctx.gh, target.repo, default)
        return await read_repo_config(self.files, ctx.gh, snapshot)

    async def judge(
        self, ctx: RunContext, target: BisectTarget, config: RepoConfig
    ) -> BisectAnswer:
        """Decide whether the command runs; if it does, bisect the pull request's head."""
        if not config.commands_enabled:
            return BisectAnswer(Answer.DISABLED)
        held = await fetch_permission(ctx.gh, target.repo, target.login)
        if not config.min_permission.allows(held):
            return BisectAnswer(Answer.REFUSED, held=held)
        command = target.command
        if command is None:
            help_asked = isinstance(target.request, HelpRequest)
            return BisectAnswer(Answer.HELP if help_asked else Answer.USAGE, held=held)
        known = {target.login.lower(): held}  # roles asked of GitHub, once per login per run

        async def replaced() -> bool:
            return await _newer_command(ctx, target, config, known=known) is not None

        if await replaced():
            return BisectAnswer(Answer.SUPERSEDED, held=held)
        await react_to_comment(
            ctx.gh, repo=target.repo, comment_id=target.comment_id, reaction=Reaction.EYES
        )
        pull = await get_pull(ctx.gh, target.repo, target.number)
        head_sha = str(pull["head"]["sha"])
        # The base repository serves a fork's head commit too (refs/pull/<n>/head).
        snapshot = await self.files.snapshot(ctx.gh, target.repo, head_sha)
        try:
            # A newer command planned while this one runs stops it before its next model.
            run = await self.timeline.judge(
                ctx.gh, snapshot, with_command(config, command), full=command.full, stop=replaced
            )
        except RunStopped:
            return BisectAnswer(Answer.SUPERSEDED, held=held)
        blame = await blame_first_bad(
            ctx, run, registry=config.registry, at_sha=snapshot.commit_sha
        )
        return BisectAnswer(
            Answer.JUDGED, run=run, head_sha=snapshot.commit_sha, held=held, blame=blame
        )

    def render(self, target: BisectTarget, config: RepoConfig, result: BisectAnswer) -> BisectView:
        """The verdict and table of a bisect, or the reply a command gets instead."""
        view = _view(target, result.answer)
        if result.answer is Answer.REFUSED:
            reply = render_refusal(target.login, held=result.held, needed=config.min_permission)
            return replace(view, reply=reply)
        if result.answer is Answer.HELP:
            return replace(view, reply=render_help_reply())
        if isinstance(target.request, CommandError) and result.answer is Answer.USAGE:
            return replace(view, reply=render_error_reply(target.request))
        if result.run is None:
            return view
        return replace(
            view,
            head_sha=result.head_sha,
            outcome=result.run.outcome,
            summary=result.run.summary,
            details=result.run.markdown,
            blame=result.blame.markdown() if result.blame is not None else "",
        )

    def error_view(
        self,
        target: BisectTarget,
        config: RepoConfig | None,
        failure: Failure,
        error: BaseException,
    ) -> BisectView:
        """A command that could not run: the reason in one line, and what to do about it."""
        if isinstance(error, ConfigError):
            summary = f"The configuration on the default branch is invalid: {error.one_line()}"
            details = error.markdown()
        elif failure is Failure.INTERNAL:
            summary = f"model-guard failed: {type(error).__name__}: {one_line(error)}"
            details = "This is a bug in model-guard, not in the repository."
        elif failure is Failure.GITHUB:
            summary = f"GitHub kept failing ({one_line(error)}) on every attempt"
            details = "This is GitHub failing, not the pull request: post `/bisect` again later."
        else:
            summary = f"The timeline could not be judged: {one_line(error)}"
            details = "Fix the cause above, then post `/bisect` again."
        return replace(_view(target, Answer.FAILED), summary=summary, details=details)

    async def publish(
        self,
        ctx: RunContext,
        target: BisectTarget,
        config: RepoConfig | None,
        view: BisectView,
    ) -> Published:
        """Write the answer: a reply, or the sticky result and the reaction that closes it."""
        if view.answer in REPLIES:
            return await self._reply(ctx, target, view)
        if view.answer not in (Answer.JUDGED, Answer.FAILED):
            return Published(None)
        if view.command_line is None:  # help or a malformed command that failed: react only
            await self._react(ctx, target, Reaction.CONFUSED)
            return Published(None)
        settings = config or default_config()
        # A judged command's author was allowed (at least the minimum role) moments ago.
        known = (
            {target.login.lower(): settings.min_permission} if view.answer is Answer.JUDGED else {}
        )
        if await _newer_command(ctx, target, settings, known=known) is not None:
            return Published(None, problem="a newer /bisect on the pull request replaces it")
        sticky = await ctx.services.sticky()
        try:
            result = await sticky.upsert(
                ctx.gh,
                repo=target.repo,
                issue_number=target.number,
                purpose=BISECT_PURPOSE,
                body=render_result_comment(view),
            )
        except IssueUnavailable as error:
            await self._react(ctx, target, Reaction.CONFUSED)
            return Published(None, problem=one_line(error))
        done = Reaction.ROCKET if view.answer is Answer.JUDGED else Reaction.CONFUSED
        await self._react(ctx, target, done)
        return Published(result.html_url)

    async def _reply(self, ctx: RunContext, target: BisectTarget, view: BisectView) -> Published:
        """Post the reply once (a job run again finds it instead of posting it twice)."""
        identity = await ctx.services.identity()
        try:
            notice = await post_notice_once(
                ctx.gh,
                repo=target.repo,
                issue_number=target.number,
                key=f"bisect-reply:{target.repo.lower()}:{target.comment_id}",
                body=view.reply,
                bot_login=identity.login,
                app_id=identity.app_id,
            )
        except BadRequest as error:
            if isinstance(error, RateLimitExceeded) or int(error.status_code) not in (
                403,
                404,
                410,
            ):
                raise
            return Published(None, problem=f"the reply was refused ({one_line(error)})")
        return Published(notice.html_url)

    async def _react(self, ctx: RunContext, target: BisectTarget, reaction: Reaction) -> None:
        await react_to_comment(
            ctx.gh, repo=target.repo, comment_id=target.comment_id, reaction=reaction
        )


def _request(payload: Any) -> ParsedCommand:
    """The parsed command a job's payload holds."""
    request = payload.get("request")
    if request == HELP:
        return HelpRequest()
    if request == ERROR:
        return CommandError(str(payload.get("reason") or "the command cannot be read"))

    def number(name: str) -> float | None:
        value = payload.get(name)
        return None if value is None else float(value)

    return BisectCommand(
        min_plcc=number("min_plcc"),
        min_srocc=number("min_srocc"),
        max_rmse=number("max_rmse"),
        full=payload.get("full") is True,
        statistical=payload.get("statistical") is True,
    )


def _view(target: BisectTarget, answer: Answer) -> BisectView:
    command = target.command
    return BisectView(
        answer=answer,
        repo=target.repo,
        number=target.number,
        comment_id=target.comment_id,
        comment_url=target.comment_url,
        login=target.login,
        command_line=None if command is None else command.command_line(),
    )


async def _newer_command(
    ctx: RunContext, target: BisectTarget, config: RepoConfig, *, known: dict[str, Permission]
) -> int | None:
    """The id of the newest later ``/bisect`` on the pull request by someone allowed, or None.

    Comment ids grow with time. A later command by someone without the permission replaces
    nothing (it is refused), so a read-only user cannot cancel a maintainer's bisect.
    ``known`` caches roles by lower-cased login; the roles asked of GitHub are added to it.
    """
    jobs = await ctx.services.store.jobs_with_prefix(
        KIND, command_prefix(target.repo, target.number)
    )
    later: dict[int, str] = {}
    for job in jobs:
        comment_id, login = job.payload.get("comment_id"), job.payload.get("login")
        is_run = job.payload.get("request") == RUN
        if is_run and isinstance(comment_id, int) and comment_id > target.comment_id:
            later[comment_id] = str(login)
    for comment_id in sorted(later, reverse=True):
        login = later[comment_id]
        if login.lower() not in known:
            known[login.lower()] = await fetch_permission(ctx.gh, target.repo, login)
        if config.min_permission.allows(known[login.lower()]):
            return comment_id
    return None


def bisect_runner(
    services: RunServices, *, files: RepoFiles, timeline: TimelineJudge
) -> Runner[BisectTarget, BisectAnswer, BisectView]:
    """The worker's handler for ``bisect`` jobs."""
    return Runner(Bisect(files=files, timeline=timeline), services)


def plan_command(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """A new comment on a pull request whose first line is ``/bisect``: plan its job.

    Only ``created`` reaches here (an edit is not a new command). A plain issue's comment, a
    bot's comment (this App's own included) and a comment that is not a command plan nothing.
    """
    data = event.data
    issue, comment = data.get("issue"), data.get("comment")
    if not isinstance(issue, dict) or not isinstance(comment, dict):
        return
    if not issue.get("pull_request"):
        return
    user = comment.get("user")
    if not isinstance(user, dict) or user.get("type") == "Bot":
        return
    parsed = parse_command(comment.get("body"))
    if parsed is None:
        return
    origin = event_origin(data)
    number, comment_id, login = issue.get("number"), comment.get("id"), user.get("login")
    if origin is None or not (
        isinstance(number, int) and isinstance(comment_id, int) and isinstance(login, str)
    ):
        return
    installation_id, repo = origin
    payload: dict[str, Any] = {
        "installation_id": installation_id,
        "repo": repo,
        "number": number,
        "comment_id": comment_id,
        "comment_url": str(comment.get("html_url") or ""),
        "login": login,
        **_request_fields(parsed),
    }
    repository = data.get("repository")
    default = repository.get("default_branch") if isinstance(repository, dict) else None
    if isinstance(default, str) and default:
        payload["default_branch"] = default  # as of the comment: no request to learn it
    jobs.append(
        JobSpec(
            kind=KIND,
            key=command_key(repo, number, comment_id),
            payload=payload,
            # One /bisect of a pull request at a time across replicas: one sticky comment.
            serial_key=make_serial_key(repo, BISECT_PURPOSE, number),
        )
    )


def _request_fields(parsed: ParsedCommand) -> dict[str, Any]:
    """The parsed command as the job's payload holds it."""
    if isinstance(parsed, HelpRequest):
        return {"request": HELP}
    if isinstance(parsed, CommandError):
        return {"request": ERROR, "reason": parsed.reason}
    return {
        "request": RUN,
        "min_plcc": parsed.min_plcc,
        "min_srocc": parsed.min_srocc,
        "max_rmse": parsed.max_rmse,
        "full": parsed.full,
        "statistical": parsed.statistical,
    }


router = routing.Router()


@router.register("issue_comment", action="created")
async def _on_comment(event: sansio.Event, jobs: list[JobSpec]) -> None:
    """Plan a ``/bisect`` job for a new command comment on a pull request."""
    plan_command(event, jobs)
