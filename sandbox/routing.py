"""Route tables for the sandbox's endpoints: who may call them, and what a handler sees and returns."""

from __future__ import annotations

import datetime
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from multidict import MultiMapping
from yarl import URL

from sandbox.auth import AuthKind, Principal
from sandbox.errors import ApiError, invalid_field, missing_field, not_accessible, not_found
from sandbox.openapi import NO_BODY
from sandbox.records import Repo, User
from sandbox.render import Renderer
from sandbox.state import SandboxState, permission_allows


class Access(Enum):
    """Which credentials an endpoint takes."""

    PUBLIC = "public"
    APP = "app"
    INSTALLATION = "installation"


@dataclass(frozen=True)
class Need:
    """An installation permission an endpoint needs, e.g. ``Need("issues", "write")``."""

    name: str
    level: str


@dataclass(frozen=True)
class Reply:
    """What a handler answers: status, JSON body (or raw bytes), extra headers."""

    status: int = 200
    body: Any = NO_BODY
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Call:
    """One authenticated request as a handler sees it."""

    state: SandboxState
    principal: Principal
    params: Mapping[str, str]
    query: MultiMapping[str]
    body: Any
    url: URL
    accept: str
    need: Need | None
    render: Renderer
    background: Callable[[Coroutine[Any, Any, Any]], None]

    @property
    def actor(self) -> User:
        """Who acts: the App's bot user for installation tokens."""
        return self.state.app.bot

    def repo(self) -> Repo:
        """The ``{owner}/{repo}`` of the path, if this token may see it (404 otherwise)."""
        repo = self.state.find_repo(self.params["owner"], self.params["repo"])
        token = self.principal.token
        if repo is None or token is None:
            raise not_found()
        installation = self.state.installations.get(token.installation_id)
        if installation is None or repo.id not in installation.repository_ids:
            raise not_found()
        if token.repository_ids is not None and repo.id not in token.repository_ids:
            raise not_found()
        if self.need is not None and not permission_allows(
            token.permissions, self.need.name, self.need.level
        ):
            raise not_accessible()
        return repo

    def int_param(self, name: str) -> int:
        """A numeric path parameter (404 when it is not a number, like GitHub)."""
        raw = self.params[name]
        if not raw.isdigit():
            raise not_found()
        return int(raw)

    def json_object(self) -> dict[str, Any]:
        """The JSON request body as an object ({} when none was sent)."""
        if self.body is NO_BODY or self.body is None:
            return {}
        if not isinstance(self.body, dict):
            raise ApiError(400, "Problems parsing JSON")
        return self.body


Handler = Callable[[Call], Awaitable[Reply]]
E = TypeVar("E", bound=Enum)


@dataclass(frozen=True)
class Route:
    """One endpoint: method, aiohttp path, handler, credentials and permission."""

    method: str
    path: str
    handler: Handler
    access: Access
    need: Need | None

    @property
    def specificity(self) -> int:
        """Literal characters of the path: more specific routes are registered first."""
        return len(re.sub(r"\{[^}]*\}", "", self.path))


class RouteTable:
    """A set of routes for one concern, declared with ``@table.route(...)``."""

    def __init__(self) -> None:
        """Start empty."""
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        access: Access = Access.INSTALLATION,
        need: Need | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated handler for ``method path``."""

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method.upper(), path, handler, access, need))
            return handler

        return register


def merge_routes(tables: Iterable[RouteTable]) -> list[Route]:
    """All routes of ``tables``, most specific first (so ``…/commits/{ref}/check-runs`` wins)."""
    routes = [route for table in tables for route in table.routes]
    return sorted(routes, key=lambda r: r.specificity, reverse=True)


def check_access(route: Route, principal: Principal) -> None:
    """Refuse a caller whose credentials do not fit the route, with GitHub's 401s."""
    if route.access is Access.APP and principal.kind is not AuthKind.APP:
        raise ApiError(401, "A JSON web token could not be decoded")
    if route.access is Access.INSTALLATION and principal.kind is not AuthKind.INSTALLATION:
        if principal.kind is AuthKind.ANONYMOUS:
            raise ApiError(401, "Requires authentication")
        raise ApiError(401, "Bad credentials")


# ---- body parsing helpers -----------------------------------------------------------------


def required_str(body: Mapping[str, Any], name: str, *, resource: str) -> str:
    """A required string field (422 ``missing_field`` / ``invalid``)."""
    if name not in body or body[name] is None:
        raise missing_field(resource, name)
    value = body[name]
    if not isinstance(value, str):
        raise invalid_field(resource, name, f"{name} must be a string")
    return value


def optional_str(body: Mapping[str, Any], name: str, *, resource: str) -> str | None:
    """An optional string field (422 ``invalid`` for another type)."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_field(resource, name, f"{name} must be a string")
    return value


def optional_time(body: Mapping[str, Any], name: str, *, resource: str) -> float | None:
    """An optional ISO 8601 timestamp field, as a Unix time."""
    raw = optional_str(body, name, resource=resource)
    if raw is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as error:
        raise invalid_field(resource, name, f"{name} is not an ISO 8601 timestamp") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def parse_enum(kind: type[E], body: Mapping[str, Any], name: str, *, resource: str) -> E | None:
    """An optional enum field (422 ``invalid`` for a value outside the enum)."""
    raw = body.get(name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError as error:
        raise invalid_field(resource, name, f"{raw!r} is not a valid {name}") from error
