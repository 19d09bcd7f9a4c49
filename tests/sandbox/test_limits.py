"""GitHub's size limits and locked conversations are enforced with GitHub's error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox
from sandbox.records import Issue, Repo
from tests.conftest import installation_token, seed_repo


@dataclass
class Poster:
    session: aiohttp.ClientSession
    base: str
    repo: Repo
    issue: Issue

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(f"{self.base}{path}", json=body) as response:
            return response.status, await response.json()


@pytest.fixture
async def poster(sandbox: Sandbox) -> AsyncIterator[Poster]:
    """A token session on acme/models with one open issue."""
    installation, repo = seed_repo(sandbox.state, {"a.txt": b"a"})
    issue = sandbox.state.add_issue(repo, "thread")
    token = await installation_token(sandbox, installation)
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Poster(session, f"{sandbox.url}/repos/acme/models", repo, issue)


async def test_comment_of_65536_characters_is_accepted(poster: Poster) -> None:
    status, body = await poster.post(
        f"/issues/{poster.issue.number}/comments", {"body": "é" * 65536}
    )
    assert status == 201 and len(body["body"]) == 65536


async def test_comment_of_65537_characters_is_refused_with_422(
    sandbox: Sandbox, poster: Poster
) -> None:
    status, body = await poster.post(
        f"/issues/{poster.issue.number}/comments", {"body": "x" * 65537}
    )
    assert status == 422
    assert body["message"] == "Validation Failed"
    assert "maximum is 65536 characters" in body["errors"][0]["message"]
    assert sandbox.state.issue_comments(poster.repo, poster.issue.number) == []


async def test_editing_a_comment_past_the_limit_is_refused(
    sandbox: Sandbox, poster: Poster
) -> None:
    comment = sandbox.state.add_comment(poster.repo, poster.issue.number, "short")
    url = f"{poster.base}/issues/comments/{comment.id}"
    async with poster.session.patch(url, json={"body": "x" * 65537}) as response:
        assert response.status == 422
    assert sandbox.state.comments[comment.id].body == "short"


async def test_issue_body_over_the_limit_is_refused(poster: Poster) -> None:
    status, body = await poster.post("/issues", {"title": "t", "body": "x" * 65537})
    assert status == 422 and body["errors"][0]["field"] == "body"


async def test_locked_issue_refuses_the_apps_comment(sandbox: Sandbox, poster: Poster) -> None:
    sandbox.state.update_issue(poster.repo, poster.issue.number, locked=True)
    status, body = await poster.post(f"/issues/{poster.issue.number}/comments", {"body": "hi"})
    assert (status, body["message"]) == (403, "Unable to create comment because issue is locked.")
    assert sandbox.state.issue_comments(poster.repo, poster.issue.number) == []


async def test_comment_on_a_missing_issue_is_not_found(poster: Poster) -> None:
    status, _ = await poster.post("/issues/999/comments", {"body": "hi"})
    assert status == 404


async def test_check_run_summary_over_65535_bytes_is_refused(
    sandbox: Sandbox, poster: Poster
) -> None:
    head = sandbox.state.branches[poster.repo.id]["main"]
    # 32,768 two-byte characters: under the limit in characters, one byte over it in bytes.
    output = {"title": "t", "summary": "é" * 32768}
    status, body = await poster.post(
        "/check-runs", {"name": "model-guard", "head_sha": head, "output": output}
    )
    assert status == 422
    assert body["errors"][0]["field"] == "summary"
    fits = {"title": "t", "summary": "x" * 65535}
    status, _ = await poster.post(
        "/check-runs", {"name": "model-guard", "head_sha": head, "output": fits}
    )
    assert status == 201


async def test_completed_check_run_needs_a_conclusion(sandbox: Sandbox, poster: Poster) -> None:
    head = sandbox.state.branches[poster.repo.id]["main"]
    status, body = await poster.post(
        "/check-runs", {"name": "model-guard", "head_sha": head, "status": "completed"}
    )
    assert status == 422 and "No conclusion" in body["message"]
    # GitHub's description says so too: the request itself is off-schema.
    assert [v.split(": ")[1] for v in sandbox.violations] == ["request body"]
    sandbox.violations.clear()
