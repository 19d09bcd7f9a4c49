"""Authentication like GitHub's: App JWTs (RS256) and expiring ``ghs_`` installation tokens."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import jwt

from sandbox.errors import ApiError, bad_credentials
from sandbox.records import InstallationToken
from sandbox.state import SandboxState

# https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
MAX_JWT_LIFETIME = 600
CLOCK_SKEW = 60
ANONYMOUS_RATE_LIMIT = 60


class AuthKind(Enum):
    """Who a request authenticated as."""

    ANONYMOUS = "anonymous"
    APP = "app"
    INSTALLATION = "installation"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: nobody, the App (JWT), or an installation (token)."""

    kind: AuthKind
    token: InstallationToken | None = None

    @property
    def rate_key(self) -> str:
        """The primary rate-limit window this caller spends from."""
        if self.token is not None:
            return f"installation:{self.token.installation_id}"
        return self.kind.value

    @property
    def rate_limit(self) -> int | None:
        """The window size, None for the state's default."""
        return ANONYMOUS_RATE_LIMIT if self.kind is AuthKind.ANONYMOUS else None


ANONYMOUS = Principal(AuthKind.ANONYMOUS)


def _jwt_error(message: str) -> ApiError:
    return ApiError(401, message)


def verify_app_jwt(state: SandboxState, token: str) -> None:
    """Accept an App JWT signed with the App's key, ``iss`` its id, and at most 10 minutes long."""
    try:
        claims = jwt.decode(
            token,
            state.app.public_key_pem,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as error:
        raise _jwt_error("A JSON web token could not be decoded") from error
    issuer = claims.get("iss")
    if str(issuer) not in {str(state.app.id), state.app.client_id}:
        raise _jwt_error("'Issuer' claim ('iss') must be an Integer")
    issued_at, expires = claims.get("iat"), claims.get("exp")
    now = state.now()
    if not isinstance(issued_at, int | float) or issued_at > now + CLOCK_SKEW:
        raise _jwt_error(
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued"
        )
    if not isinstance(expires, int | float) or expires <= now - CLOCK_SKEW:
        raise _jwt_error(
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires"
        )
    if expires - issued_at > MAX_JWT_LIFETIME or expires > now + MAX_JWT_LIFETIME + CLOCK_SKEW:
        raise _jwt_error("'Expiration time' claim ('exp') is too far in the future")


def find_token(state: SandboxState, value: str) -> InstallationToken:
    """The live installation token ``value`` (401 ``Bad credentials`` if unknown or expired)."""
    token = state.tokens.get(value)
    if token is None or token.expires_at <= state.now():
        raise bad_credentials()
    if token.installation_id not in state.installations:
        raise bad_credentials()
    return token


def authenticate(state: SandboxState, authorization: str | None) -> Principal:
    """Work out the caller from an ``Authorization`` header (``Bearer …`` or ``token …``)."""
    if not authorization:
        return ANONYMOUS
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() not in {"bearer", "token"} or not credential:
        raise bad_credentials()
    if credential.startswith("ghs_"):
        return Principal(AuthKind.INSTALLATION, find_token(state, credential))
    if credential.count(".") == 2:
        if scheme.lower() != "bearer":
            raise bad_credentials()
        verify_app_jwt(state, credential)
        return Principal(AuthKind.APP)
    raise bad_credentials()
