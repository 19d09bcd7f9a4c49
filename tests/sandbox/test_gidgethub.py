"""gidgethub, the App's client library, works against the sandbox as against api.github.com."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from gidgethub import BadRequest, apps
from gidgethub.aiohttp import GitHubAPI

from sandbox import Sandbox
from tests.conftest import seed_repo


async def test_gidgethub_mints_a_token_pages_comments_and_uses_its_etag_cache(
    sandbox: Sandbox,
) -> None:
    installation, repo = seed_repo(sandbox.state, {"a.txt": b"a"})
    issue = sandbox.state.add_issue(repo, "thread")
    for n in range(120):
        sandbox.state.add_comment(repo, issue.number, f"c{n}")
    cache: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        app_api = GitHubAPI(session, "model-guard-tests", base_url=sandbox.url)
        minted = await apps.get_installation_access_token(
            app_api,
            installation_id=str(installation.id),
            app_id=str(sandbox.state.app.id),
            private_key=sandbox.state.private_key_pem,
        )
        gh = GitHubAPI(
            session,
            "model-guard-tests",
            oauth_token=minted["token"],
            cache=cache,
            base_url=sandbox.url,
        )
        url = f"/repos/acme/models/issues/{issue.number}/comments?per_page=50"
        bodies = [c["body"] async for c in gh.getiter(url)]
        created = await gh.post(url.split("?")[0], data={"body": "from the App"})
        first = await gh.getitem("/repos/acme/models")
        again = await gh.getitem("/repos/acme/models")
        with pytest.raises(BadRequest) as refused:
            await gh.post(url.split("?")[0], data={"body": "x" * 65537})
    assert bodies == [f"c{n}" for n in range(120)]
    assert created["user"]["login"] == "model-guard[bot]"
    assert first == again
    assert [r.status for r in sandbox.requests_to("GET", "/repos/acme/models")] == [200, 304]
    assert refused.value.status_code == 422
    assert gh.rate_limit is not None and gh.rate_limit.limit == 5000
