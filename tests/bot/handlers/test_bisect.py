"""End-to-end tests of ``/bisect``: the real app over HTTP on loopback against the sandbox.

Each test seeds a repository with the bundled regression timeline (first bad model v06 at
``min_plcc: 0.9``), opens a pull request, posts comments as people would and delivers the
signed ``issue_comment`` events to ``create_app``; it then reads what a maintainer sees in
the sandbox: reactions on the command, the sticky result comment, replies. Each test records
the GitHub requests its scenario cost (``github_requests`` in the report's user properties).
"""

import asyncio
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from gidgethub import sansio

from bot.handlers.bisect import KIND, command_key, plan_command, with_command
from bot.handlers.bisect_view import BISECT_PURPOSE
from bot.intake.commands import BisectCommand, parse_command, render_help_reply
from bot.repoconfig import default_config
from bot.settings import Settings
from bot.store import JobSpec
from bot.surfaces.sticky import marker
from sandbox import Sandbox
from sandbox.records import Comment, Issue, Repo, UserType
from tests.bot.handlers.conftest import (
    CONFIG,
    CONFIG_PATH,
    RunningApp,
    app_settings,
    repo_files,
    running_app,
    seeded,
    wait_for_jobs,
)

TAG = marker(BISECT_PURPOSE)
MAINTAINER = "maintainer"
VISITOR = "visitor"  # anyone may comment on a public repository: GitHub gives them read
DISABLED_CONFIG = CONFIG + b"commands:\n  enabled: false\n"


def open_pull(
    sandbox: Sandbox, repo: Repo, files: Mapping[str, bytes | None] | None = None
) -> Issue:
    """A pull request whose head differs from the default branch (a README by default)."""
    sandbox.state.set_permission(repo, MAINTAINER, "write")
    return sandbox.state.add_pull(repo, head="tweak", files=files or {"README.md": b"tweak\n"})


async def post(
    sandbox: Sandbox,
    running: RunningApp,
    repo: Repo,
    pull: Issue,
    body: str,
    *,
    user: str = MAINTAINER,
) -> Comment:
    """Comment ``body`` on the pull request as ``user`` and deliver the ``created`` event."""
    comment = sandbox.state.add_comment(repo, pull.number, body, user=user)
    delivery = await sandbox.deliver_issue_comment(running.webhook_url, repo, comment)
    assert delivery.status_code == 202
    return comment


def reactions(sandbox: Sandbox, comment: Comment) -> list[str]:
    """The App's reactions on ``comment``, oldest first."""
    bot = sandbox.state.app.bot
    return [r.content.value for r in sandbox.state.reactions_on(comment.id) if r.user == bot]


def app_comments(sandbox: Sandbox, repo: Repo, pull: Issue) -> list[Comment]:
    """The App's live comments on the pull request."""
    return sandbox.state.comments_by_app(repo, pull.number)


def results(sandbox: Sandbox, repo: Repo, pull: Issue) -> list[Comment]:
    """The App's sticky /bisect result comments on the pull request."""
    return [c for c in app_comments(sandbox, repo, pull) if TAG in c.body]


def replies(sandbox: Sandbox, repo: Repo, pull: Issue) -> list[Comment]:
    """The App's other comments on the pull request (replies to commands)."""
    return [c for c in app_comments(sandbox, repo, pull) if TAG not in c.body]


def engine_reads(sandbox: Sandbox, repo: Repo) -> list[str]:
    """What the App read that only a bisect needs: the pull request and blobs at its head."""
    name = re.escape(repo.full_name)
    pulls = [r.path for r in sandbox.requests_to("GET", f"/repos/{name}/pulls/\\d+")]
    blobs = [r.path for r in sandbox.requests_to("GET", f"/repos/{name}/git/blobs/[0-9a-f]+")]
    return pulls + blobs[1:]  # the first blob is the configuration on the default branch


def record_requests(request: pytest.FixtureRequest, sandbox: Sandbox, since: int) -> int:
    """Note (and return) how many GitHub requests the scenario cost since ``since``."""
    made = sandbox.requests[since:]
    request.node.user_properties.append(("github_requests", len(made)))
    request.node.user_properties.append(
        ("github_request_list", [f"{r.method} {r.path}" for r in made])
    )
    return len(made)


def settings_for(sandbox: Sandbox, root: Path, *, workers: int = 1) -> Settings:
    """The app's settings; ``workers`` job workers (the production default is more than one)."""
    return replace(app_settings(sandbox, root), workers=workers)


# ---- planning: which comments are commands -----------------------------------------------


def created_event(*, body: str, user_type: str = "User", on_pull: bool = True) -> sansio.Event:
    issue: dict[str, object] = {"number": 7}
    if on_pull:
        issue["pull_request"] = {"url": "https://api.github.com/repos/acme/models/pulls/7"}
    data = {
        "action": "created",
        "issue": issue,
        "comment": {
            "id": 1001,
            "body": body,
            "html_url": "https://github.com/acme/models/pull/7#issuecomment-1001",
            "user": {"login": "someone", "type": user_type},
        },
        "repository": {"full_name": "acme/models", "default_branch": "main"},
        "installation": {"id": 5},
    }
    return sansio.Event(data, event="issue_comment", delivery_id="d-1")


def test_a_command_on_a_pull_request_plans_one_job_keyed_by_its_comment() -> None:
    jobs: list[JobSpec] = []
    plan_command(created_event(body="/bisect --min-plcc 0.95 --full\n\nplease"), jobs)
    (job,) = jobs
    assert (job.kind, job.key) == (KIND, command_key("acme/models", 7, 1001))
    # Two /bisect jobs of one pull request never write its sticky comment at once.
    assert job.serial_key == "acme/models#7#bisect"
    assert job.payload["request"] == "run"
    assert (job.payload["min_plcc"], job.payload["full"], job.payload["statistical"]) == (
        0.95,
        True,
        False,
    )
    assert (job.payload["login"], job.payload["comment_id"], job.payload["number"]) == (
        "someone",
        1001,
        7,
    )
    # The webhook names the default branch, so the job need not ask GitHub for it.
    assert job.payload["default_branch"] == "main"


@pytest.mark.parametrize(
    ("body", "user_type", "on_pull"),
    [
        ("> /bisect", "User", True),  # a quote of someone's command
        ("I ran /bisect yesterday", "User", True),
        ("/bisect", "Bot", True),  # a bot (this App included)
        ("/bisect", "User", False),  # a plain issue, not a pull request
    ],
)
def test_comments_that_are_not_commands_plan_nothing(
    body: str, user_type: str, on_pull: bool
) -> None:
    jobs: list[JobSpec] = []
    plan_command(created_event(body=body, user_type=user_type, on_pull=on_pull), jobs)
    assert jobs == []


def test_help_and_malformed_commands_plan_a_reply_job() -> None:
    jobs: list[JobSpec] = []
    plan_command(created_event(body="/bisect help"), jobs)
    plan_command(created_event(body="/bisect --bogus"), jobs)
    assert [job.payload["request"] for job in jobs] == ["help", "error"]
    assert "--bogus" in jobs[1].payload["reason"]


def test_the_commands_thresholds_replace_the_gate_and_statistical_turns_intervals_on() -> None:
    config = default_config()
    command = parse_command("/bisect --max-rmse 0.5 --statistical")
    assert isinstance(command, BisectCommand)
    judged = with_command(config, command)
    assert (judged.min_plcc, judged.min_srocc, judged.max_rmse) == (None, None, 0.5)
    assert judged.metric_settings().statistical
    assert judged.metric_settings().bootstrap == config.bootstrap
    plain = with_command(config, BisectCommand())
    assert plain.thresholds() == config.thresholds()
    assert not plain.metric_settings().statistical


# ---- the real app ------------------------------------------------------------------------


async def test_a_maintainers_bisect_gets_eyes_then_rocket_and_one_result_for_the_head(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    head = sandbox.state.pull_head(repo, pull)
    main = sandbox.state.branches[repo.id]["main"]
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        command = await post(sandbox, running, repo, pull, "/bisect")
        await wait_for_jobs(running.store, done=1)
    record_requests(request, sandbox, since)
    assert reactions(sandbox, command) == ["eyes", "rocket"]
    (result,) = results(sandbox, repo, pull)
    assert "## model-guard /bisect: ❌ regression" in result.body
    assert f"Judged `{head[:7]}` for [`/bisect`]" in result.body
    assert f"Judged `{main[:7]}`" not in result.body
    # Blame: fr-mlp-v06's row came with the repository's first commit, through no pull request.
    assert f"Introduced by [`{main[:7]}`]" in result.body
    assert f"#issuecomment-{command.id}" in result.body
    assert "fr-mlp-v06 (index 6) is the first model that fails plcc >= 0.9" in result.body
    assert replies(sandbox, repo, pull) == []
    assert sandbox.state.check_runs == {}  # the answer is the comment: no check run


async def test_min_plcc_changes_the_outcome_and_the_second_result_replaces_the_first(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        await post(sandbox, running, repo, pull, "/bisect")
        await wait_for_jobs(running.store, done=1)
        (first,) = results(sandbox, repo, pull)
        default_body = first.body
        since = len(sandbox.requests)
        strict = await post(sandbox, running, repo, pull, "/bisect --min-plcc 0.99")
        await wait_for_jobs(running.store, done=2)
    record_requests(request, sandbox, since)
    (result,) = results(sandbox, repo, pull)
    assert result.id == first.id  # edited in place
    assert "❌ regression" in default_body
    assert "❌ already bad" in result.body
    assert "plcc >= 0.99" in result.body
    assert "for [`/bisect --min-plcc 0.99`]" in result.body
    assert reactions(sandbox, strict) == ["eyes", "rocket"]


async def test_a_read_only_users_bisect_runs_nothing_and_gets_a_polite_reply(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        command = await post(sandbox, running, repo, pull, "/bisect --full", user=VISITOR)
        await wait_for_jobs(running.store, done=1)
    record_requests(request, sandbox, since)
    assert reactions(sandbox, command) == []
    assert results(sandbox, repo, pull) == []
    (reply,) = replies(sandbox, repo, pull)
    assert f"@{VISITOR} thank you for asking" in reply.body
    assert "needs the **write** role or higher, and GitHub gives you **read**" in reply.body
    assert engine_reads(sandbox, repo) == []
    asked = sandbox.requests_to("GET", r".*/collaborators/visitor/permission")
    assert len(asked) == 1


async def test_an_unknown_option_gets_the_usage_and_help_gets_the_help(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        bogus = await post(sandbox, running, repo, pull, "/bisect --bogus")
        await wait_for_jobs(running.store, done=1)
        record_requests(request, sandbox, since)
        (usage,) = replies(sandbox, repo, pull)
        helped = await post(sandbox, running, repo, pull, "/bisect help")
        await wait_for_jobs(running.store, done=2)
    assert "**model-guard cannot run this `/bisect`:** unknown option `--bogus`" in usage.body
    assert "/bisect [--min-plcc X]" in usage.body
    help_reply = [c for c in replies(sandbox, repo, pull) if c.id != usage.id]
    assert [c.body.split("\n", 1)[1] for c in help_reply] == [render_help_reply()]
    assert reactions(sandbox, bogus) == reactions(sandbox, helped) == []
    assert results(sandbox, repo, pull) == []
    assert engine_reads(sandbox, repo) == []


async def test_edited_bot_quoted_and_plain_issue_comments_cost_no_request(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    state = sandbox.state
    state.user("renovate[bot]", type=UserType.BOT)
    issue = state.add_issue(repo, "A question")
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        edited = state.add_comment(repo, pull.number, "thanks", user=MAINTAINER)
        edited = state.update_comment(repo, edited.id, "/bisect", editor=edited.user)
        await sandbox.deliver_issue_comment(running.webhook_url, repo, edited, action="edited")
        await post(sandbox, running, repo, pull, "/bisect", user="renovate[bot]")
        await post(sandbox, running, repo, pull, "> /bisect\n\nshould we run this?")
        on_issue = state.add_comment(repo, issue.number, "/bisect", user=MAINTAINER)
        await sandbox.deliver_issue_comment(running.webhook_url, repo, on_issue)
        await wait_for_jobs(running.store, done=0)
        jobs = await running.store.job_counts()
    assert record_requests(request, sandbox, since) == 0
    assert sum(jobs.values()) == 0
    assert app_comments(sandbox, repo, pull) == []


async def test_twenty_commands_at_once_leave_one_result_for_the_newest(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    bodies = [f"/bisect --min-plcc 0.{50 + i}" for i in range(19)] + ["/bisect --min-plcc 0.99"]
    comments = [sandbox.state.add_comment(repo, pull.number, b, user=MAINTAINER) for b in bodies]
    async with running_app(settings_for(sandbox, tmp_path, workers=2), schedule=False) as running:
        since = len(sandbox.requests)
        deliveries = await asyncio.gather(
            *(sandbox.deliver_issue_comment(running.webhook_url, repo, c) for c in comments)
        )
        assert {d.status_code for d in deliveries} == {202}
        await wait_for_jobs(running.store, done=20)
    record_requests(request, sandbox, since)
    newest = comments[-1]
    (result,) = results(sandbox, repo, pull)
    assert "for [`/bisect --min-plcc 0.99`]" in result.body
    assert f"#issuecomment-{newest.id}" in result.body
    assert reactions(sandbox, newest) == ["eyes", "rocket"]
    assert all("rocket" not in reactions(sandbox, c) for c in comments[:-1])
    assert replies(sandbox, repo, pull) == []


async def test_a_read_only_users_later_command_does_not_replace_a_maintainers(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    state = sandbox.state
    mine = state.add_comment(repo, pull.number, "/bisect --min-plcc 0.99", user=MAINTAINER)
    theirs = state.add_comment(repo, pull.number, "/bisect", user=VISITOR)
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        for comment in (mine, theirs):
            await sandbox.deliver_issue_comment(running.webhook_url, repo, comment)
        await wait_for_jobs(running.store, done=2)
    record_requests(request, sandbox, since)
    (result,) = results(sandbox, repo, pull)
    assert "for [`/bisect --min-plcc 0.99`]" in result.body
    assert reactions(sandbox, mine) == ["eyes", "rocket"]
    assert reactions(sandbox, theirs) == []
    (reply,) = replies(sandbox, repo, pull)
    assert f"@{VISITOR} thank you for asking" in reply.body


async def test_commands_disabled_on_the_default_branch_run_nothing_whatever_the_pull_says(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files(config=DISABLED_CONFIG))
    pull = open_pull(sandbox, repo, {CONFIG_PATH: CONFIG})  # the pull request turns them on
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        command = await post(sandbox, running, repo, pull, "/bisect")
        await wait_for_jobs(running.store, done=1)
    record_requests(request, sandbox, since)
    assert reactions(sandbox, command) == []
    assert app_comments(sandbox, repo, pull) == []
    assert engine_reads(sandbox, repo) == []
    assert sandbox.requests_to("GET", r".*/collaborators/.*/permission") == []


async def test_an_invalid_registry_at_the_head_gets_confused_and_the_error_in_the_result(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo, {"models/registry.json": b"{not json"})
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        command = await post(sandbox, running, repo, pull, "/bisect")
        await wait_for_jobs(running.store, done=1)
    record_requests(request, sandbox, since)
    assert reactions(sandbox, command) == ["eyes", "confused"]
    (result,) = results(sandbox, repo, pull)
    assert "## model-guard /bisect: ⚠️ could not judge" in result.body
    assert "**The timeline could not be judged:" in result.body
    assert "registry" in result.body
    assert "Could not judge the head of this pull request for [`/bisect`]" in result.body


# ---- GitHub failing --------------------------------------------------------------------------


async def test_502s_on_reads_and_a_lost_answer_on_the_result_still_leave_one_result(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, repo = seeded(sandbox, repo_files())
    pull = open_pull(sandbox, repo)
    faults = sandbox.faults
    faults.fail_next("GET", r"/collaborators/[^/]+/permission$", status=502, times=2)
    faults.fail_next("GET", r"/pulls/\d+$", status=502, times=1)
    faults.lose_answer("POST", r"/issues/\d+/comments$", status=502)
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        since = len(sandbox.requests)
        command = await post(sandbox, running, repo, pull, "/bisect")
        await wait_for_jobs(running.store, done=1)
    record_requests(request, sandbox, since)
    assert faults.pending == []
    assert reactions(sandbox, command) == ["eyes", "rocket"]
    (result,) = results(sandbox, repo, pull)
    assert "❌ regression" in result.body
    assert len(sandbox.requests_to("POST", r".*/issues/\d+/comments")) == 1


async def test_bisect_on_a_registry_of_families_answers_with_one_comment_per_family_section(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from tests.bot.handlers.conftest import CONFIG, CONFIG_PATH
    from tests.families import mixed_files

    _, repo = seeded(sandbox, {**mixed_files(), CONFIG_PATH: CONFIG})
    pull = open_pull(sandbox, repo)
    async with running_app(settings_for(sandbox, tmp_path), schedule=False) as running:
        await post(sandbox, running, repo, pull, "/bisect")
        await wait_for_jobs(running.store, done=1)
    (result,) = results(sandbox, repo, pull)
    assert "## model-guard /bisect: ❌ regression" in result.body
    assert "#### Family `fr/features6`: ❌ Regression: fr-mlp-v06" in result.body
    assert "#### Family `fr/good`: ✅ No regression" in result.body
    assert "not judged (kind filter: needs frames)" in result.body
    assert replies(sandbox, repo, pull) == []
