"""The sandbox answers the App's core calls like GitHub: tokens, repos, issues, comments, checks."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from sandbox import Sandbox
from sandbox.auth import AuthKind
from tests.conftest import app_jwt, installation_token, seed_repo

FILES = {"registry.yaml": b"models: []\n", "models/v1.onnx": b"\x08\x07onnx-bytes"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}", "Accept": "application/vnd.github+json"}


async def get_json(
    session: aiohttp.ClientSession, url: str, token: str, **params: Any
) -> tuple[int, Any]:
    async with session.get(url, headers=auth(token), params=params or None) as response:
        return response.status, await response.json()


async def test_installation_token_reads_repo_and_writes_comment_as_app_bot(
    sandbox: Sandbox,
) -> None:
    installation, repo = seed_repo(sandbox.state, FILES)
    issue = sandbox.state.add_issue(repo, "Model regression")
    token = await installation_token(sandbox, installation)
    base = f"{sandbox.url}/repos/acme/models"
    async with aiohttp.ClientSession() as session:
        status, body = await get_json(session, base, token)
        assert (status, body["full_name"], body["default_branch"]) == (200, "acme/models", "main")
        async with session.post(
            f"{base}/issues/{issue.number}/comments", json={"body": "hello"}, headers=auth(token)
        ) as response:
            assert response.status == 201
            created = await response.json()
        status, listed = await get_json(session, f"{base}/issues/{issue.number}/comments", token)
    assert status == 200
    assert [c["id"] for c in listed] == [created["id"]]
    assert created["user"]["login"] == "model-guard[bot]"
    assert created["user"]["type"] == "Bot"
    assert created["performed_via_github_app"]["slug"] == "model-guard"
    stored = sandbox.state.comments[created["id"]]
    assert stored.body == "hello" and stored.via_app
    posts = sandbox.requests_to("POST", r"/repos/acme/models/issues/\d+/comments")
    assert len(posts) == 1
    assert posts[0].auth is AuthKind.INSTALLATION
    assert posts[0].installation_id == installation.id
    assert posts[0].headers["authorization"] == "token"
    assert posts[0].body == {"body": "hello"}


async def test_seeded_comment_is_by_a_person(sandbox: Sandbox) -> None:
    installation, repo = seed_repo(sandbox.state, FILES)
    issue = sandbox.state.add_issue(repo, "Question")
    sandbox.state.add_comment(repo, issue.number, "/model-guard bisect", user="alice")
    token = await installation_token(sandbox, installation)
    url = f"{sandbox.url}/repos/acme/models/issues/{issue.number}/comments"
    async with aiohttp.ClientSession() as session:
        _, listed = await get_json(session, url, token)
    assert (listed[0]["user"]["login"], listed[0]["user"]["type"]) == ("alice", "User")
    assert listed[0]["performed_via_github_app"] is None


async def test_app_jwt_lists_installations_and_reads_app(sandbox: Sandbox) -> None:
    installation, _ = seed_repo(sandbox.state, FILES)
    headers = {"Authorization": f"Bearer {app_jwt(sandbox.state)}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{sandbox.url}/app") as response:
            app = await response.json()
        async with session.get(f"{sandbox.url}/app/installations") as response:
            installations = await response.json()
        async with session.get(f"{sandbox.url}/repos/acme/models/installation") as response:
            found = await response.json()
    assert app["id"] == sandbox.state.app.id
    assert [i["id"] for i in installations] == [installation.id]
    assert found["id"] == installation.id


async def test_fifty_concurrent_comment_posts_make_fifty_distinct_comments(
    sandbox: Sandbox,
) -> None:
    installation, repo = seed_repo(sandbox.state, FILES)
    issue = sandbox.state.add_issue(repo, "Busy")
    token = await installation_token(sandbox, installation)
    url = f"{sandbox.url}/repos/acme/models/issues/{issue.number}/comments"
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector, headers=auth(token)) as session:

        async def post(n: int) -> int:
            async with session.post(url, json={"body": f"comment {n}"}) as response:
                assert response.status == 201
                created: int = (await response.json())["id"]
                return created

        ids = await asyncio.gather(*(post(n) for n in range(50)))
    assert len(set(ids)) == 50
    bodies = {c.body for c in sandbox.state.issue_comments(repo, issue.number)}
    assert bodies == {f"comment {n}" for n in range(50)}


async def test_make_app_serves_through_pytest_aiohttp_client(aiohttp_client: Any) -> None:
    sandbox = Sandbox()
    seed_repo(sandbox.state, FILES)
    client = await aiohttp_client(sandbox.make_app())
    token = sandbox.state.issue_token(next(iter(sandbox.state.installations))).token
    response = await client.get("/repos/acme/models", headers=auth(token))
    body = await response.json()
    assert response.status == 200
    assert body["url"] == f"{client.make_url('')}".rstrip("/") + "/repos/acme/models"
    sandbox.assert_valid()
