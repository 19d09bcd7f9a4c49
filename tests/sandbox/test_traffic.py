"""GitHub's traffic rules: rate-limit headers, conditional GETs, request ids, Link pagination."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sandbox import Sandbox, SandboxState
from tests.conftest import FakeClock, installation_token, seed_repo


async def token_session(sandbox: Sandbox, **headers: str) -> aiohttp.ClientSession:
    installation = next(iter(sandbox.state.installations.values()))
    token = await installation_token(sandbox, installation)
    return aiohttp.ClientSession(headers={"Authorization": f"token {token}", **headers})


@pytest.fixture
async def session(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    """An installation-token session on a sandbox holding acme/models."""
    seed_repo(sandbox.state, {"a.txt": b"a"})
    async with await token_session(sandbox) as client:
        yield client


async def test_every_response_carries_github_headers_and_spends_rate_limit(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.url}/repos/acme/models"
    async with session.get(url) as first:
        await first.read()
    async with session.get(f"{sandbox.url}/repos/acme/nope") as second:
        await second.read()
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-resource"] == "core"
    used = int(first.headers["x-ratelimit-used"])
    assert int(second.headers["x-ratelimit-used"]) == used + 1
    assert int(second.headers["x-ratelimit-remaining"]) == 5000 - used - 1
    assert first.headers["x-github-api-version-selected"] == "2022-11-28"
    ids = {first.headers["x-github-request-id"], second.headers["x-github-request-id"]}
    assert len(ids) == 2
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_conditional_get_answers_304_without_spending_rate_limit(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.url}/repos/acme/models"
    async with session.get(url) as first:
        await first.read()
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    async with session.get(url, headers={"If-None-Match": etag}) as again:
        assert again.status == 304
        assert await again.read() == b""
    assert again.headers["x-ratelimit-used"] == first.headers["x-ratelimit-used"]
    assert again.headers["ETag"] == etag
    repo = sandbox.state.find_repo("acme", "models")
    assert repo is not None
    sandbox.state.add_issue(repo, "changes open_issues_count")
    async with session.get(url, headers={"If-None-Match": etag}) as changed:
        assert changed.status == 200
        assert changed.headers["ETag"] != etag


async def test_rate_limit_endpoint_does_not_count(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{sandbox.url}/rate_limit") as first:
        before = (await first.json())["resources"]["core"]["used"]
    async with session.get(f"{sandbox.url}/rate_limit") as second:
        after = (await second.json())["resources"]["core"]["used"]
    assert before == after


async def test_exhausted_primary_limit_answers_403_until_the_window_resets() -> None:
    clock = FakeClock()
    async with Sandbox(SandboxState(clock=clock, rate_limit=3)) as sandbox:
        seed_repo(sandbox.state, {"a.txt": b"a"})
        async with await token_session(sandbox) as session:
            statuses = []
            for _ in range(4):
                async with session.get(f"{sandbox.url}/repos/acme/models") as response:
                    statuses.append(response.status)
                    body = await response.json()
            assert statuses == [200, 200, 200, 403]
            assert body["message"].startswith("API rate limit exceeded for installation ID")
            assert response.headers["x-ratelimit-remaining"] == "0"
        clock.advance(3601)
        async with (
            await token_session(sandbox) as session,
            session.get(f"{sandbox.url}/repos/acme/models") as response,
        ):
            assert response.status == 200
            assert response.headers["x-ratelimit-remaining"] == "2"
        sandbox.assert_valid()


async def test_installations_have_separate_rate_limit_windows(sandbox: Sandbox) -> None:
    first, _ = seed_repo(sandbox.state, {"a.txt": b"a"}, owner="acme")
    second, _ = seed_repo(sandbox.state, {"a.txt": b"a"}, owner="globex")
    used = []
    for installation, owner in ((first, "acme"), (second, "globex")):
        token = await installation_token(sandbox, installation)
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session,
            session.get(f"{sandbox.url}/repos/{owner}/models") as response,
        ):
            used.append(response.headers["x-ratelimit-used"])
    assert used == ["1", "1"]


async def test_unsupported_api_version_is_refused(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    headers = {"X-GitHub-Api-Version": "1999-01-01"}
    async with session.get(f"{sandbox.url}/repos/acme/models", headers=headers) as response:
        assert response.status == 400
        assert "X-GitHub-Api-Version" in (await response.json())["message"]


def links(header: str) -> dict[str, str]:
    return {rel: url for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', header)}


async def test_link_pagination_walks_250_comments_in_three_pages_of_100(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    repo = sandbox.state.find_repo("acme", "models")
    assert repo is not None
    issue = sandbox.state.add_issue(repo, "long thread")
    seeded = [sandbox.state.add_comment(repo, issue.number, f"c{n}").id for n in range(250)]
    url: str | None = f"{sandbox.url}/repos/acme/models/issues/{issue.number}/comments?per_page=100"
    pages: list[list[int]] = []
    last_links: dict[str, str] = {}
    while url is not None:
        assert url.startswith(f"{sandbox.url}/")
        async with session.get(url) as response:
            pages.append([c["id"] for c in await response.json()])
            last_links = links(response.headers.get("Link", ""))
        url = last_links.get("next")
        assert len(pages) <= 3
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [cid for page in pages for cid in page] == seeded
    assert set(last_links) == {"prev", "first"}
    assert last_links["first"].startswith(f"{sandbox.url}/repos/acme/models/issues/")
    assert "per_page=100" in last_links["prev"] and "page=2" in last_links["prev"]


async def test_default_page_is_thirty_and_single_page_has_no_link(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    repo = sandbox.state.find_repo("acme", "models")
    assert repo is not None
    many = sandbox.state.add_issue(repo, "many")
    few = sandbox.state.add_issue(repo, "few")
    for n in range(31):
        sandbox.state.add_comment(repo, many.number, f"c{n}")
    sandbox.state.add_comment(repo, few.number, "only")
    base = f"{sandbox.url}/repos/acme/models/issues"
    async with session.get(f"{base}/{many.number}/comments") as response:
        assert len(await response.json()) == 30
        assert set(links(response.headers["Link"])) == {"next", "last"}
    async with session.get(f"{base}/{few.number}/comments") as response:
        assert len(await response.json()) == 1
        assert "Link" not in response.headers
