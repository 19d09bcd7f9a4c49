"""Pull requests are listed, opened and found by commit like GitHub's, sharing the issue numbers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox
from sandbox.records import DEFAULT_APP_PERMISSIONS, IssueState, MergeMethod, Repo
from tests.conftest import installation_token, seed_repo

FILES = {"registry.yaml": b"models:\n  - fr-v1\n", "README.md": b"# models\n"}
WRITE_PULLS = dict(DEFAULT_APP_PERMISSIONS) | {"pull_requests": "write"}


@dataclass
class Client:
    """An installation-token session rooted at ``/repos/acme/models``."""

    session: aiohttp.ClientSession
    sandbox: Sandbox
    repo: Repo

    async def call(self, method: str, where: str, *, json: Any = None, **params: Any) -> Any:
        url = f"{self.sandbox.url}/repos/acme/models{where}"
        async with self.session.request(method, url, json=json, params=params or None) as answer:
            self.status, self.headers = answer.status, answer.headers
            return await answer.json()


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[Client]:
    """acme/models with an installation that may write pull requests."""
    installation = sandbox.state.add_installation("acme", permissions=WRITE_PULLS)
    _, repo = seed_repo(sandbox.state, FILES, installation=installation)
    token = await installation_token(sandbox, installation)
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session:
        yield Client(session, sandbox, repo)


async def test_opened_pull_request_takes_the_next_issue_number_and_the_branch_head(
    client: Client,
) -> None:
    state = client.sandbox.state
    state.add_issue(client.repo, "an issue first")
    head = state.commit(client.repo, {"models/fr-v2.onnx": b"v2"}, message="v2", branch="add-v2")
    body = {"head": "add-v2", "base": "main", "title": "Add fr-v2", "body": "New model."}
    pull = await client.call("POST", "/pulls", json=body)
    assert client.status == 201, pull
    assert client.headers["Location"] == pull["url"]
    assert (pull["number"], pull["head"]["sha"], pull["base"]["ref"]) == (2, head, "main")
    assert (pull["changed_files"], pull["commits"], pull["user"]["login"]) == (
        1,
        1,
        "model-guard[bot]",
    )
    issue = await client.call("GET", "/issues/2")
    assert issue["pull_request"]["url"] == pull["url"]


async def test_pull_request_is_refused_without_commits_or_with_an_unknown_branch(
    client: Client,
) -> None:
    state = client.sandbox.state
    state.create_branch(client.repo, "empty")
    refused = {
        "same": {"head": "main", "base": "main"},
        "no commits": {"head": "empty", "base": "main"},
        "unknown head": {"head": "nowhere", "base": "main"},
        "unknown base": {"head": "empty", "base": "nowhere"},
    }
    answers = {name: await client.call("POST", "/pulls", json=b) for name, b in refused.items()}
    assert answers["same"]["errors"][0]["message"] == "No commits between main and main"
    assert answers["no commits"]["errors"][0]["message"] == "No commits between main and empty"
    assert answers["unknown head"]["errors"][0]["field"] == "head"
    assert answers["unknown base"]["errors"][0]["field"] == "base"
    assert all(a["message"] == "Validation Failed" for a in answers.values())
    state.commit(client.repo, {"x.txt": b"x"}, message="x", branch="empty")
    await client.call("POST", "/pulls", json={"head": "acme:empty", "base": "main"})
    assert client.status == 201
    again = await client.call("POST", "/pulls", json={"head": "empty", "base": "main"})
    assert client.status == 422
    assert again["errors"][0]["message"] == "A pull request already exists for acme:empty."


async def test_read_only_installation_may_not_open_a_pull_request(sandbox: Sandbox) -> None:
    installation, _ = seed_repo(sandbox.state, FILES)
    token = await installation_token(sandbox, installation)
    url = f"{sandbox.url}/repos/acme/models/pulls"
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session,
        session.post(url, json={"head": "x", "base": "main"}) as answer,
    ):
        body = await answer.json()
    assert (answer.status, body["message"]) == (403, "Resource not accessible by integration")


async def test_pull_list_filters_by_state_head_and_base_and_paginates(client: Client) -> None:
    state = client.sandbox.state
    first = state.add_pull(client.repo, head="one", files={"1.txt": b"1"})
    second = state.add_pull(client.repo, head="two", files={"2.txt": b"2"})
    state.create_branch(client.repo, "release")
    third = state.add_pull(client.repo, head="three", base="release", files={"3.txt": b"3"})
    state.update_issue(client.repo, first.number, state=IssueState.CLOSED)

    async def numbers(**query: str) -> list[int]:
        listed = await client.call("GET", "/pulls", **query)
        assert client.status == 200
        return [p["number"] for p in listed]

    assert await numbers() == [third.number, second.number]
    assert await numbers(state="closed") == [first.number]
    assert await numbers(state="all", direction="asc") == [
        first.number,
        second.number,
        third.number,
    ]
    assert await numbers(head="acme:two") == [second.number]
    assert await numbers(head="someone-else:two") == []
    assert await numbers(base="release") == [third.number]
    assert await numbers(state="all", per_page="2", page="2") == [first.number]
    assert 'rel="first"' in client.headers["Link"]


async def test_pulls_of_a_commit_are_those_whose_head_carries_it(client: Client) -> None:
    state = client.sandbox.state
    main = state.branches[client.repo.id]["main"]
    earlier = state.commit(client.repo, {"a.txt": b"a"}, message="a", branch="feature")
    pull = state.add_pull(client.repo, head="feature", files={"b.txt": b"b"})
    head = state.pull_head(client.repo, pull)
    for sha in (earlier, head):
        found = await client.call("GET", f"/commits/{sha}/pulls")
        assert (client.status, [p["number"] for p in found]) == (200, [pull.number])
        assert found[0]["head"]["sha"] == head
    assert await client.call("GET", f"/commits/{main}/pulls") == []
    missing = await client.call("GET", f"/commits/{'0' * 40}/pulls")
    assert client.status == 422 and "No commit found" in missing["message"]


async def test_merged_pull_request_is_found_by_its_commits_and_its_merge_commit(
    client: Client,
) -> None:
    state = client.sandbox.state
    pull = state.add_pull(client.repo, head="feature", files={"b.txt": b"b"}, title="Add b")
    head = state.pull_head(client.repo, pull)
    merge = state.merge_pull(client.repo, pull.number)
    assert state.branches[client.repo.id]["main"] == merge
    assert state.git_commit(client.repo, merge).parents[1] == head
    assert state.files_at(client.repo)["b.txt"] == b"b"
    for sha in (head, merge):
        found = await client.call("GET", f"/commits/{sha}/pulls")
        assert [(p["number"], p["state"]) for p in found] == [(pull.number, "closed")]
        assert found[0]["merged_at"] is not None and found[0]["merge_commit_sha"] == merge
    full = await client.call("GET", f"/pulls/{pull.number}")
    assert (full["merged"], full["merge_commit_sha"]) == (True, merge)
    with pytest.raises(ValueError, match="not an open pull request"):
        state.merge_pull(client.repo, pull.number)


async def test_squash_merge_lands_one_commit_that_names_the_pull_request(client: Client) -> None:
    state = client.sandbox.state
    main = state.branches[client.repo.id]["main"]
    pull = state.add_pull(client.repo, head="tidy", files={"README.md": None}, title="Tidy up")
    squash = state.merge_pull(client.repo, pull.number, method=MergeMethod.SQUASH)
    commit = state.git_commit(client.repo, squash)
    assert (commit.parents, commit.message) == ((main,), f"Tidy up (#{pull.number})")
    assert "README.md" not in state.files_at(client.repo)
    found = await client.call("GET", f"/commits/{squash}/pulls")
    assert [p["number"] for p in found] == [pull.number]


async def test_merge_refuses_a_file_both_sides_changed_differently(client: Client) -> None:
    state = client.sandbox.state
    pull = state.add_pull(client.repo, head="left", files={"README.md": b"left\n"})
    state.commit(client.repo, {"README.md": b"right\n"}, message="right")
    with pytest.raises(ValueError, match=r"conflict in README\.md"):
        state.merge_pull(client.repo, pull.number)
    assert state.issue(client.repo, pull.number).state is IssueState.OPEN


async def test_commits_by_path_skip_merges_that_kept_a_side_and_paginate(client: Client) -> None:
    state = client.sandbox.state
    registry = "registry.yaml"
    first = state.add_pull(client.repo, head="one", files={registry: b"models: [1]\n"})
    changed = state.pull_head(client.repo, first)
    state.merge_pull(client.repo, first.number)
    state.commit(client.repo, {"README.md": b"# other\n"}, message="readme only")
    second = state.add_pull(client.repo, head="two", files={registry: b"models: [1, 2]\n"})
    again = state.pull_head(client.repo, second)
    state.merge_pull(client.repo, second.number)
    initial = state.objects[client.repo.id].ancestors(changed)[-1]
    listed = await client.call("GET", "/commits", path=registry)
    assert [c["sha"] for c in listed] == [again, changed, initial]
    page = await client.call("GET", "/commits", path=registry, per_page="2", page="2")
    assert [c["sha"] for c in page] == [initial]
    assert 'rel="prev"' in client.headers["Link"]
    page = await client.call("GET", "/commits", path=registry, per_page="2", sha=changed)
    assert [c["sha"] for c in page] == [changed, initial] and "Link" not in client.headers
