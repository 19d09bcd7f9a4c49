"""Credentials of the App: a short-lived JWT, and installation tokens cached until near expiry."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bot.github.errors import GitHubClientError

# https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
# iat is backdated 60 s against clock drift; exp may be at most 10 minutes after iat.
JWT_BACKDATE = 60
JWT_LIFETIME = 540


def load_private_key(pem: str) -> RSAPrivateKey:
    """Parse the App's private key, refusing anything but an unencrypted RSA key in PEM."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        # The library's own message can quote key bytes; ours never does.
        raise GitHubClientError(
            "the GitHub App private key is not a PEM private key "
            "(expected '-----BEGIN RSA PRIVATE KEY-----' as downloaded from the App settings)"
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise GitHubClientError(
            f"the GitHub App private key must be an RSA key (GitHub signs App JWTs with RS256), "
            f"not {type(key).__name__.removeprefix('_')}"
        )
    return key


class Credentials(Protocol):
    """Something that yields an ``Authorization`` header value for each request."""

    async def authorization(self) -> str:
        """The header value to send now."""

    def invalidate(self, authorization: str) -> bool:
        """Forget ``authorization`` after GitHub refused it; True if a new one may work."""


class AppCredentials:
    """Signs App JWTs with the client's clock and reuses one until it is near expiry."""

    def __init__(
        self, app_id: str, key: RSAPrivateKey, *, clock: Callable[[], float], margin: float
    ) -> None:
        """Hold the App id and key; nothing is signed until first use."""
        self._app_id = app_id
        self._key = key
        self._clock = clock
        self._margin = min(margin, JWT_LIFETIME / 2)
        self._jwt: str | None = None
        self._expires_at = 0.0

    def jwt(self) -> str:
        """A JWT valid for at least the refresh margin."""
        now = self._clock()
        if self._jwt is None or now >= self._expires_at - self._margin:
            issued_at = int(now) - JWT_BACKDATE
            payload = {"iat": issued_at, "exp": issued_at + JWT_LIFETIME, "iss": self._app_id}
            self._jwt = jwt.encode(payload, self._key, algorithm="RS256")
            self._expires_at = float(issued_at + JWT_LIFETIME)
        return self._jwt

    async def authorization(self) -> str:
        """``Bearer <jwt>``."""
        return f"Bearer {self.jwt()}"

    def invalidate(self, authorization: str) -> bool:
        """A refused JWT was freshly signed: a new one fails the same way (wrong key or id)."""
        return False

    def forget(self) -> None:
        """Drop the signed JWT."""
        self._jwt = None


@dataclass(frozen=True)
class InstallationToken:
    """An installation access token and when it expires (Unix time)."""

    token: str
    expires_at: float


def parse_token(response: Any, *, installation_id: int) -> InstallationToken:
    """Read ``POST /app/installations/{id}/access_tokens``'s answer (``token``, ``expires_at``)."""
    token = response.get("token") if isinstance(response, dict) else None
    expires = response.get("expires_at") if isinstance(response, dict) else None
    try:
        moment = datetime.fromisoformat(str(expires))
    except ValueError:
        expires_at = None
    else:
        # GitHub writes UTC ("2016-07-11T22:14:10Z"); a bare time is read as UTC too.
        expires_at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not isinstance(token, str) or not token or expires_at is None:
        raise GitHubClientError(
            f"GitHub's access token response for installation {installation_id} has no "
            "token or no ISO 8601 expires_at"
        )
    return InstallationToken(token, expires_at)


class InstallationCredentials:
    """One installation's token, fetched on demand and refreshed ``margin`` s before expiry."""

    def __init__(
        self,
        installation_id: int,
        *,
        fetch: Callable[[int], Awaitable[InstallationToken]],
        clock: Callable[[], float],
        margin: float,
    ) -> None:
        """Hold no token until the first request needs one."""
        self.installation_id = installation_id
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._token: InstallationToken | None = None
        # Concurrent first requests share one fetch instead of minting a token each.
        self._lock = asyncio.Lock()

    def _usable(self) -> InstallationToken | None:
        token = self._token
        if token is None or self._clock() >= token.expires_at - self._margin:
            return None
        return token

    async def authorization(self) -> str:
        """``token <installation token>``, fetching a new token when needed."""
        token = self._usable()
        if token is None:
            async with self._lock:
                token = self._usable()
                if token is None:
                    token = await self._fetch(self.installation_id)
                    self._token = token
        return f"token {token.token}"

    def invalidate(self, authorization: str) -> bool:
        """Drop the refused token (unless another request already replaced it)."""
        if self._token is not None and authorization == f"token {self._token.token}":
            self._token = None
        return True

    def forget(self) -> None:
        """Drop the cached token."""
        self._token = None
