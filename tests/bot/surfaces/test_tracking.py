"""The tracking issue over real HTTP against the sandbox: found, remembered, or opened exactly once."""

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI

from bot.store import SqliteStore
from bot.surfaces.tracking import (
    NAMESPACE,
    TrackingError,
    TrackingIssue,
    TrackingSpec,
    ensure_tracking_issue,
)
from sandbox import Sandbox
from sandbox.records import IssueState, Repo
from tests.conftest import installation_token, seed_repo

REPO = "acme/models"
LABEL = "model-guard"
SPEC = TrackingSpec(
    title="model-guard: nightly model-quality bisect",
    body="Where model-guard reports.",
    label_description="The issue model-guard reports on",
)


@dataclass
class World:
    """A seeded sandbox repo, an API client and a store."""

    sandbox: Sandbox
    repo: Repo
    gh: GitHubAPI
    store: SqliteStore

    @property
    def bot(self) -> str:
        return self.sandbox.state.app.bot.login

    async def ensure(self, label: str = LABEL) -> TrackingIssue:
        return await ensure_tracking_issue(
            self.gh, self.store, repo=REPO, label=label, spec=SPEC, bot_login=self.bot
        )

    def issue_posts(self) -> int:
        return len(self.sandbox.requests_to("POST", r"/repos/acme/models/issues"))


@pytest.fixture
async def world(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[World]:
    installation, repo = seed_repo(sandbox.state, {"README.md": b"models\n"})
    token = await installation_token(sandbox, installation)
    async with (
        aiohttp.ClientSession() as session,
        SqliteStore(tmp_path / "store.db") as store,
    ):
        gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=sandbox.url)
        yield World(sandbox, repo, gh, store)


async def test_finds_existing_open_issue_with_the_label(world: World) -> None:
    state = world.sandbox.state
    state.add_issue(world.repo, "Unrelated bug", labels=["bug"])
    wanted = state.add_issue(world.repo, "Our tracker", labels=["bug", LABEL])
    found = await world.ensure()
    assert found == TrackingIssue(wanted.number, found.html_url, created=False)
    assert found.html_url.endswith(f"/acme/models/issues/{wanted.number}")
    assert world.issue_posts() == 0
    assert await world.store.get_value(NAMESPACE, f"{REPO}:{LABEL}") == str(wanted.number)


async def test_ignores_closed_issues_and_pull_requests_with_the_label(world: World) -> None:
    state = world.sandbox.state
    closed = state.add_issue(world.repo, "Old tracker", labels=[LABEL], state=IssueState.CLOSED)
    pull = state.add_pull(world.repo, head="feature", files={"x.txt": b"x"})
    state.issues[(world.repo.id, pull.number)] = replace(pull, labels=(LABEL,))
    found = await world.ensure()
    assert found.created
    assert found.number not in (closed.number, pull.number)
    issue = state.issues[(world.repo.id, found.number)]
    assert issue.pull is None and issue.state is IssueState.OPEN and LABEL in issue.labels


async def test_prefers_the_bots_issue_over_an_older_one_by_a_person(world: World) -> None:
    state = world.sandbox.state
    state.add_issue(world.repo, "A person's note", labels=[LABEL], user="maintainer")
    ours = state.add_issue(world.repo, SPEC.title, labels=[LABEL], user=world.bot)
    found = await world.ensure()
    assert (found.number, found.created) == (ours.number, False)


async def test_oldest_labelled_issue_wins_when_none_is_the_bots(world: World) -> None:
    state = world.sandbox.state
    older = state.add_issue(world.repo, "First", labels=[LABEL], user="maintainer")
    state.add_issue(world.repo, "Second", labels=[LABEL], user="someone")
    assert (await world.ensure()).number == older.number


async def test_creates_issue_and_label_when_none_exists(world: World) -> None:
    found = await world.ensure()
    assert found.created
    issue = world.sandbox.state.issues[(world.repo.id, found.number)]
    assert issue.title == SPEC.title
    assert issue.labels == (LABEL,)
    assert issue.user.login == world.bot
    assert issue.body == SPEC.body
    assert len(world.sandbox.requests_to("POST", r"/repos/acme/models/labels")) == 1
    again = await world.ensure()
    assert (again.number, again.created) == (found.number, False)
    assert world.issue_posts() == 1


async def test_existing_label_answering_422_already_exists_is_fine(world: World) -> None:
    world.sandbox.state.add_label(world.repo, LABEL, color="ff0000")
    found = await world.ensure()
    assert found.created
    [label_post] = world.sandbox.requests_to("POST", r"/repos/acme/models/labels")
    assert label_post.status == 422


async def test_ten_concurrent_calls_open_exactly_one_issue(world: World) -> None:
    results = await asyncio.gather(*(world.ensure() for _ in range(10)))
    assert len({r.number for r in results}) == 1
    assert [r.created for r in results].count(True) == 1
    assert world.issue_posts() == 1
    assert len(world.sandbox.state.list_issues(world.repo)) == 1


async def test_remembered_issue_since_closed_is_replaced(world: World) -> None:
    first = await world.ensure()
    world.sandbox.state.update_issue(world.repo, first.number, state=IssueState.CLOSED)
    second = await world.ensure()
    assert second.created and second.number != first.number
    stored = await world.store.get_value(NAMESPACE, f"{REPO}:{LABEL}")
    assert stored == str(second.number)


async def test_remembered_issue_deleted_is_replaced(world: World) -> None:
    first = await world.ensure()
    world.sandbox.state.update_issue(world.repo, first.number, deleted=True)
    second = await world.ensure()
    assert second.created and second.number != first.number


async def test_remembered_issue_is_verified_with_one_get_and_no_search(world: World) -> None:
    first = await world.ensure()
    listed = len(world.sandbox.requests_to("GET", r"/repos/acme/models/issues"))
    again = await world.ensure()
    assert again.number == first.number
    assert len(world.sandbox.requests_to("GET", r"/repos/acme/models/issues")) == listed
    gets = world.sandbox.requests_to("GET", rf"/repos/acme/models/issues/{first.number}")
    assert len(gets) == 1


async def test_label_with_comma_is_refused_in_one_line(world: World) -> None:
    with pytest.raises(TrackingError, match=r"^tracking label must be 1-50 characters"):
        await world.ensure("a,b")
    assert all("/issues" not in r.path for r in world.sandbox.requests)


async def test_issue_opened_at_the_same_moment_by_another_replica_wins_when_older(
    world: World,
) -> None:
    # Another replica (another process: the lock cannot see it) opens its issue between
    # our search and our POST; after opening ours we search again and settle on the older.
    state = world.sandbox.state
    gh = world.gh
    opened_elsewhere: list[int] = []

    class OtherReplicaFirst(GitHubAPI):
        async def post(self, url: str, *args: object, **kwargs: object) -> object:
            if url == "/repos/{owner}/{repo}/issues" and not opened_elsewhere:
                other = state.add_issue(world.repo, SPEC.title, labels=[LABEL], user=world.bot)
                opened_elsewhere.append(other.number)
            return await super().post(url, *args, **kwargs)  # type: ignore[arg-type]

    world.gh = OtherReplicaFirst(
        gh._session, "model-guard-tests", oauth_token=gh.oauth_token, base_url=gh.base_url
    )
    found = await world.ensure()
    assert found == TrackingIssue(opened_elsewhere[0], found.html_url, created=False)
    ours = max(number for (repo_id, number) in state.issues if repo_id == world.repo.id)
    assert ours != found.number
    notes = [c.body for c in state.comments.values() if c.issue_number == ours]
    assert notes and f"reports on #{found.number}" in notes[0]
    assert await world.store.get_value(NAMESPACE, f"{REPO}:{LABEL}") == str(found.number)


_OTHER_PROCESS = """
import asyncio, json, sys
import aiohttp
from gidgethub.aiohttp import GitHubAPI
from bot.store import SqliteStore
from bot.surfaces.tracking import TrackingSpec, ensure_tracking_issue

async def main(url, token, db, bot):
    spec = TrackingSpec(title="t", body="b", label_description="d")
    async with aiohttp.ClientSession() as session, SqliteStore(db) as store:
        gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=url)
        issue = await ensure_tracking_issue(
            gh, store, repo="acme/models", label="model-guard", spec=spec, bot_login=bot
        )
    print(json.dumps({"number": issue.number, "created": issue.created}))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_on_one_store_with_a_slow_github_open_one_issue(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # The in-process lock cannot see another process; the store's claim can. GitHub is slow
    # to open the issue, so without the claim both processes would find none and open one.
    installation, _repo = seed_repo(sandbox.state, {"README.md": b"models\n"})
    token = await installation_token(sandbox, installation)
    sandbox.faults.slow("POST", r"^/repos/acme/models/issues$", seconds=1.5, times=None)
    db = tmp_path / "shared.db"
    async with SqliteStore(db):
        pass  # migrate once up front, as the service does at start
    bot = sandbox.state.app.bot.login
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _OTHER_PROCESS,
            sandbox.url,
            token,
            str(db),
            bot,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await run.communicate() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.decode() for _, err in outputs]
    answers = [json.loads(out) for out, _ in outputs]
    assert answers[0]["number"] == answers[1]["number"]
    assert sorted(answer["created"] for answer in answers) == [False, True]
    assert len(sandbox.requests_to("POST", r"^/repos/acme/models/issues$")) == 1


async def test_a_claim_left_by_a_dead_holder_expires(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "store.db") as store:
        assert await store.acquire_claim("tracking:x", "dead", ttl=timedelta(milliseconds=50))
        assert not await store.acquire_claim("tracking:x", "alive", ttl=timedelta(seconds=5))
        await asyncio.sleep(0.1)
        assert await store.acquire_claim("tracking:x", "alive", ttl=timedelta(seconds=5))
        assert not await store.release_claim("tracking:x", "dead")
        assert await store.release_claim("tracking:x", "alive")
        assert await store.acquire_claim("tracking:x", "next", ttl=timedelta(seconds=5))
