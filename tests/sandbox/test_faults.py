"""Injected failures: a status once, secondary and primary rate limits, stalls, dropped sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from sandbox import Sandbox
from tests.conftest import installation_token, seed_repo


@pytest.fixture
async def session(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    """An installation-token session on a sandbox holding acme/models with issue #1."""
    installation, repo = seed_repo(sandbox.state, {"a.txt": b"a"})
    sandbox.state.add_issue(repo, "thread")
    token = await installation_token(sandbox, installation)
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as client:
        yield client


async def test_fail_next_answers_502_once_then_succeeds(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.faults.fail_next("GET", r"^/repos/acme/models$")
    url = f"{sandbox.url}/repos/acme/models"
    async with session.get(url) as failed:
        body = await failed.json()
    async with session.get(url) as ok:
        await ok.read()
    assert (failed.status, body["message"]) == (502, "Bad Gateway")
    assert ok.status == 200
    assert sandbox.faults.pending == []
    assert [r.status for r in sandbox.requests_to("GET", "/repos/acme/models")] == [502, 200]


async def test_fault_only_hits_matching_method_and_path(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.faults.fail_next("POST", r"/comments$", status=500, times=2)
    async with session.get(f"{sandbox.url}/repos/acme/models/issues/1/comments") as listed:
        assert listed.status == 200
    url = f"{sandbox.url}/repos/acme/models/issues/1/comments"
    statuses = []
    for _ in range(3):
        async with session.post(url, json={"body": "hi"}) as response:
            statuses.append(response.status)
    assert statuses == [500, 500, 201]


async def test_secondary_rate_limit_answers_403_with_retry_after(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.faults.secondary_rate_limit("POST", r"/comments$", retry_after=7)
    url = f"{sandbox.url}/repos/acme/models/issues/1/comments"
    async with session.post(url, json={"body": "hi"}) as limited:
        body = await limited.json()
    assert limited.status == 403
    assert limited.headers["retry-after"] == "7"
    assert body["message"].startswith("You have exceeded a secondary rate limit")
    assert limited.headers["x-github-request-id"] in body["message"]
    async with session.post(url, json={"body": "hi"}) as retried:
        assert retried.status == 201


async def test_primary_limit_fault_reports_zero_remaining_and_a_reset(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.faults.primary_rate_limit_exhausted("GET", r"^/repos/", status=429, reset_in=120)
    async with session.get(f"{sandbox.url}/repos/acme/models") as response:
        body = await response.json()
    assert response.status == 429
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert int(response.headers["x-ratelimit-reset"]) >= int(sandbox.state.now()) + 119
    assert "API rate limit exceeded for installation ID" in body["message"]


async def test_slow_request_outlasts_a_client_timeout_then_the_next_one_is_normal(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.faults.slow("GET", r"^/repos/acme/models$", seconds=30)
    url = f"{sandbox.url}/repos/acme/models"
    with pytest.raises(TimeoutError):
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=0.2)) as response:
            await response.read()
    async with session.get(url) as response:
        assert response.status == 200


async def test_dropped_connection_gives_the_client_a_disconnect(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.faults.drop_connection("POST", r"/comments$")
    url = f"{sandbox.url}/repos/acme/models/issues/1/comments"
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(url, json={"body": "hi"}) as response:
            await response.read()
    repo = sandbox.state.find_repo("acme", "models")
    assert repo is not None
    assert sandbox.state.issue_comments(repo, 1) == []
    async with session.post(url, json={"body": "hi"}) as response:
        assert response.status == 201
    recorded = sandbox.requests_to("POST", r"/repos/acme/models/issues/1/comments")
    assert [(r.status, r.body) for r in recorded] == [(0, {"body": "hi"}), (201, {"body": "hi"})]


async def test_lost_answer_does_the_write_then_answers_an_error(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.faults.lose_answer("POST", r"/comments$", status=502)
    url = f"{sandbox.url}/repos/acme/models/issues/1/comments"
    async with session.post(url, json={"body": "made"}) as lost:
        assert lost.status == 502
    async with session.get(url) as listed:
        bodies = [c["body"] for c in await listed.json()]
    assert bodies == ["made"]  # GitHub did it; only the answer was lost
    assert sandbox.faults.pending == []


async def test_removed_fault_stops_firing_and_leaves_the_others(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    stall = sandbox.faults.slow("GET", r"^/repos/acme/models$", seconds=60, times=None)
    kept = sandbox.faults.fail_next("GET", r"^/repos/acme/models/issues/1$")
    sandbox.faults.remove(stall)
    async with session.get(f"{sandbox.url}/repos/acme/models") as ok:
        await ok.read()
    assert ok.status == 200
    assert sandbox.faults.pending == [kept]
