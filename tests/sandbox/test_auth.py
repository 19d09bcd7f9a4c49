"""App JWTs and installation tokens are checked by GitHub's rules, on the sandbox clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox import Sandbox, SandboxState
from tests.conftest import FakeClock, app_jwt, installation_token, seed_repo


@pytest.fixture
def clock() -> FakeClock:
    """The sandbox's clock, settable by the test."""
    return FakeClock()


@pytest.fixture
async def timed(clock: FakeClock) -> AsyncIterator[Sandbox]:
    """A sandbox whose world runs on ``clock``."""
    async with Sandbox(SandboxState(clock=clock)) as server:
        yield server
        server.assert_valid()


async def get(url: str, authorization: str | None) -> tuple[int, Any]:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_app_jwt_with_string_or_integer_issuer_is_accepted(timed: Sandbox) -> None:
    for iss in (str(timed.state.app.id), timed.state.app.id):
        status, body = await get(f"{timed.url}/app", f"Bearer {app_jwt(timed.state, iss=iss)}")
        assert (status, body["slug"]) == (200, "model-guard")


async def test_expired_app_jwt_is_refused(timed: Sandbox, clock: FakeClock) -> None:
    token = app_jwt(timed.state, now=clock() - 1200)
    status, body = await get(f"{timed.url}/app", f"Bearer {token}")
    assert status == 401
    assert body["message"].startswith("'Expiration time' claim ('exp') must be a numeric value")


async def test_app_jwt_within_clock_skew_is_still_accepted(
    timed: Sandbox, clock: FakeClock
) -> None:
    # exp 30 s in the past: GitHub tolerates 60 s of clock drift.
    token = app_jwt(timed.state, now=clock() - 570)
    status, _ = await get(f"{timed.url}/app", f"Bearer {token}")
    assert status == 200


async def test_app_jwt_signed_with_another_key_cannot_be_decoded(timed: Sandbox) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    status, body = await get(f"{timed.url}/app", f"Bearer {app_jwt(timed.state, key_pem=pem)}")
    assert (status, body["message"]) == (401, "A JSON web token could not be decoded")


async def test_app_jwt_living_longer_than_ten_minutes_is_refused(timed: Sandbox) -> None:
    token = app_jwt(timed.state, lifetime=601)
    status, body = await get(f"{timed.url}/app", f"Bearer {token}")
    assert (status, body["message"]) == (
        401,
        "'Expiration time' claim ('exp') is too far in the future",
    )


async def test_app_jwt_with_a_foreign_issuer_is_refused(timed: Sandbox) -> None:
    status, _ = await get(f"{timed.url}/app", f"Bearer {app_jwt(timed.state, iss='1')}")
    assert status == 401


async def test_installation_token_expires_by_the_sandbox_clock(
    timed: Sandbox, clock: FakeClock
) -> None:
    installation, _ = seed_repo(timed.state, {"a.txt": b"a"})
    token = await installation_token(timed, installation)
    url = f"{timed.url}/repos/acme/models"
    assert (await get(url, f"token {token}"))[0] == 200
    assert (await get(url, f"Bearer {token}"))[0] == 200
    clock.advance(3600)
    status, body = await get(url, f"token {token}")
    assert (status, body["message"]) == (401, "Bad credentials")


async def test_narrowed_token_cannot_see_another_repo_of_the_installation(
    sandbox: Sandbox,
) -> None:
    installation, _ = seed_repo(sandbox.state, {"a.txt": b"a"}, name="models")
    installation, _ = seed_repo(sandbox.state, {"b.txt": b"b"}, name="other")
    wide = await installation_token(sandbox, installation)
    narrow = await installation_token(sandbox, installation, repositories=["models"])
    other = f"{sandbox.url}/repos/acme/other"
    assert (await get(other, f"token {wide}"))[0] == 200
    status, body = await get(other, f"token {narrow}")
    assert (status, body["message"]) == (404, "Not Found")
    assert (await get(f"{sandbox.url}/repos/acme/models", f"token {narrow}"))[0] == 200


async def test_repo_outside_the_installation_is_not_found(sandbox: Sandbox) -> None:
    installation, _ = seed_repo(sandbox.state, {"a.txt": b"a"})
    sandbox.state.add_repo("someone", "private", {"x": b"x"}, installation=None, private=True)
    token = await installation_token(sandbox, installation)
    status, _ = await get(f"{sandbox.url}/repos/someone/private", f"token {token}")
    assert status == 404


async def test_token_without_issues_write_cannot_comment(sandbox: Sandbox) -> None:
    installation, repo = seed_repo(sandbox.state, {"a.txt": b"a"})
    issue = sandbox.state.add_issue(repo, "read only")
    token = await installation_token(
        sandbox, installation, permissions={"issues": "read", "metadata": "read"}
    )
    url = f"{sandbox.url}/repos/acme/models/issues/{issue.number}/comments"
    headers = {"Authorization": f"token {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"body": "hi"}, headers=headers) as response,
    ):
        body = await response.json()
    assert (response.status, body["message"]) == (403, "Resource not accessible by integration")
    assert sandbox.state.issue_comments(repo, issue.number) == []


async def test_token_cannot_ask_for_more_than_the_installation_grants(sandbox: Sandbox) -> None:
    installation, _ = seed_repo(sandbox.state, {"a.txt": b"a"})
    with pytest.raises(AssertionError, match="422"):
        await installation_token(sandbox, installation, permissions={"administration": "write"})


async def test_app_endpoints_refuse_installation_tokens_and_anonymous_callers(
    sandbox: Sandbox,
) -> None:
    installation, _ = seed_repo(sandbox.state, {"a.txt": b"a"})
    token = await installation_token(sandbox, installation)
    assert (await get(f"{sandbox.url}/app", f"token {token}"))[0] == 401
    status, body = await get(f"{sandbox.url}/repos/acme/models", None)
    assert (status, body["message"]) == (401, "Requires authentication")
    jwt_status, _ = await get(
        f"{sandbox.url}/repos/acme/models", f"Bearer {app_jwt(sandbox.state)}"
    )
    assert jwt_status == 401
    assert (await get(f"{sandbox.url}/app", "token not-a-token"))[0] == 401


async def test_token_for_an_unknown_installation_is_not_found(sandbox: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {app_jwt(sandbox.state)}"}
    url = f"{sandbox.url}/app/installations/999/access_tokens"
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers) as response:
        assert response.status == 404


async def test_app_jwt_issued_in_the_future_is_refused(timed: Sandbox, clock: FakeClock) -> None:
    token = app_jwt(timed.state, now=clock() + 600)
    status, body = await get(f"{timed.url}/app", f"Bearer {token}")
    assert status == 401 and body["message"].startswith("'Issued at' claim ('iat')")
