"""Shared fixtures for the App's tests: a started GitHub sandbox, seeded repos, App JWTs.

Typical use::

    async def test_something(sandbox: Sandbox) -> None:
        installation, repo = seed_repo(sandbox.state, {"registry.yaml": b"..."})
        token = await installation_token(sandbox, installation)
        ...  # talk to sandbox.url over HTTP; the fixture checks OpenAPI conformance at teardown
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from sandbox import Sandbox, SandboxState
from sandbox.records import Installation, Repo


class FakeClock:
    """A settable clock for ``SandboxState(clock=...)``: call it for the time, ``advance`` it."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        """Start at ``start`` (2026-01-01T00:00:00Z by default)."""
        self.now = start

    def __call__(self) -> float:
        """The current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


class DateClock:
    """A settable timezone-aware clock for the store, the workers and the scheduler."""

    def __init__(self, now: datetime) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> datetime:
        """The current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's SQLite store lives."""
    return tmp_path / "store.db"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """A started sandbox over a fresh world; fails the test at teardown on any OpenAPI violation."""
    server = Sandbox(SandboxState())
    await server.start()
    try:
        yield server
        server.assert_valid()
    finally:
        await server.close()


def seed_repo(
    state: SandboxState,
    files: Mapping[str, bytes],
    *,
    name: str = "models",
    owner: str = "acme",
    installation: Installation | None = None,
    private: bool = False,
) -> tuple[Installation, Repo]:
    """Create ``owner/name`` holding ``files`` (one commit on main), covered by an installation.

    The installation is ``installation`` when given, else the one already on ``owner``, else a
    new one with the App's default permissions.
    """
    if installation is None:
        installation = next(
            (i for i in state.installations.values() if i.account.login == owner), None
        ) or state.add_installation(owner)
    repo = state.add_repo(owner, name, files, installation=installation, private=private)
    return state.installations[installation.id], repo


def app_jwt(
    state: SandboxState,
    *,
    now: float | None = None,
    lifetime: int = 600,
    iss: Any = None,
    key_pem: str | None = None,
) -> str:
    """An App JWT signed RS256 with the App's key: ``iat`` 60 s back, ``exp`` = iat + lifetime.

    ``now`` defaults to the sandbox clock; ``iss``/``key_pem`` override the issuer and key.
    """
    # https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
    issued = int(state.now() if now is None else now) - 60
    claims: dict[str, Any] = {
        "iat": issued,
        "exp": issued + lifetime,
        "iss": str(state.app.id) if iss is None else iss,
    }
    # PyJWT refuses to encode a non-string ``iss``, though GitHub takes the integer app id too;
    # sign the claims as a plain JWS then.
    payload = json.dumps(claims, separators=(",", ":")).encode()
    token: str = jwt.PyJWS().encode(payload, key_pem or state.private_key_pem, algorithm="RS256")
    return token


async def installation_token(sandbox: Sandbox, installation: Installation, **body: Any) -> str:
    """Mint a ``ghs_`` token over HTTP, as the App does (``body`` narrows it: repositories=...)."""
    url = f"{sandbox.url}/app/installations/{installation.id}/access_tokens"
    headers = {"Authorization": f"Bearer {app_jwt(sandbox.state)}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body or None, headers=headers) as response,
    ):
        payload = await response.json()
        if response.status != 201:
            raise AssertionError(f"token request answered {response.status}: {payload}")
        token: str = payload["token"]
        return token


# Property tests: reproducible in CI (derandomize), no per-example deadline (the machines
# are shared and busy), and bounded so the fuzz set stays within about a minute.
# HYPOTHESIS_PROFILE=thorough explores far more examples locally.
hypothesis_settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
hypothesis_settings.register_profile(
    "thorough", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
