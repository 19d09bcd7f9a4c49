"""The sandbox server: an aiohttp app that answers like GitHub's REST API and records every call."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from sandbox import (
    endpoints_apps,
    endpoints_checks,
    endpoints_git,
    endpoints_issues,
    endpoints_pulls,
    endpoints_repo,
)
from sandbox.auth import ANONYMOUS, AuthKind, Principal, authenticate
from sandbox.delivery import deliver_webhook
from sandbox.errors import ApiError, SandboxError, not_found
from sandbox.events import check_suite_payload, issue_comment_payload, pull_request_payload
from sandbox.faults import RATE_LIMIT_DOCS, FaultKind, Faults
from sandbox.openapi import NO_BODY, OpenApiValidator
from sandbox.records import Comment, Delivery, Issue, RateBucket, Repo
from sandbox.render import Renderer
from sandbox.routing import Call, Route, check_access, merge_routes
from sandbox.state import SandboxState

# Package data: GitHub's description of the operations the App uses (README.md beside it).
PACKAGED_OPENAPI: Traversable = (
    resources.files("sandbox") / "data" / "github" / "openapi-subset.json"
)
# https://docs.github.com/rest/about-the-rest-api/api-versions
API_VERSION = "2022-11-28"
SUPPORTED_API_VERSIONS = frozenset({API_VERSION})
# Requests under this prefix are the sandbox's own download URLs (codeload, raw), not REST API.
INTERNAL_PREFIX = "/_sandbox/"
# https://docs.github.com/rest/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user
UNCOUNTED_PATHS = frozenset({"/rate_limit"})
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the sandbox answered, and its answer."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    status: int
    response: Any
    auth: AuthKind
    installation_id: int | None
    at: float


@dataclass(frozen=True)
class _Outcome:
    """What the pipeline answers before headers are added."""

    status: int
    body: Any = NO_BODY
    raw: bytes | None = None
    content_type: str | None = None
    headers: Mapping[str, str] | None = None
    counted: bool = True


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    pattern: re.Pattern[str]


def _compile_path(path: str) -> re.Pattern[str]:
    out = ""
    for literal, name, regex in re.findall(r"([^{]*)(?:\{([^}:]+)(?::([^}]*))?\})?", path):
        out += re.escape(literal)
        if name:
            out += f"(?P<{name}>{regex or '[^/]+'})"
    return re.compile(out)


# The description is 800 kB; parse it once per process, the validator is read-only after.
_VALIDATORS: dict[str, OpenApiValidator] = {}


def _load_validator(source: Traversable) -> OpenApiValidator:
    key = str(source)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = OpenApiValidator.from_file(source)
    return _VALIDATORS[key]


def _template(route_path: str) -> str:
    # The OpenAPI template of an aiohttp-style route: ``{ref:.+}`` becomes ``{ref}``.
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route_path)


def _request_id() -> str:
    # GitHub's look: five hex groups, e.g. "C4F2:3B4A:1D2E3F:2A3B4C:6565F00D"
    sizes = (4, 4, 6, 6, 8)
    return ":".join(secrets.token_hex(n)[:n].upper() for n in sizes)


def _redact(name: str, value: str) -> str:
    if name != "authorization":
        return value
    return value.strip().partition(" ")[0]


def _weak_etag(payload: bytes) -> str:
    return f'W/"{hashlib.sha256(payload).hexdigest()[:40]}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    wanted = etag.removeprefix("W/")
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == wanted for c in candidates)


class Sandbox:
    """A GitHub REST API on loopback over a ``SandboxState``; see ``start``, ``requests``."""

    def __init__(
        self,
        state: SandboxState | None = None,
        *,
        openapi_path: Path | None = None,
        validate: bool = True,
    ) -> None:
        """Wrap ``state`` (new if None); validate against ``openapi_path`` (None: PACKAGED_OPENAPI)."""
        self.state = state if state is not None else SandboxState()
        self.faults = Faults(clock=self.state.clock)
        description = PACKAGED_OPENAPI if openapi_path is None else Path(openapi_path).resolve()
        if not description.is_file():
            raise SandboxError(f"OpenAPI description not found: {description}")
        self.validator = _load_validator(description)
        self.validate = validate
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.url = ""
        self._routes = [
            _CompiledRoute(route, _compile_path(route.path))
            for route in merge_routes(
                [
                    endpoints_apps.routes,
                    endpoints_checks.routes,
                    endpoints_git.routes,
                    endpoints_issues.routes,
                    endpoints_pulls.routes,
                    endpoints_repo.routes,
                ]
            )
        ]
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()

    # ---- lifecycle --------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (one catch-all route); URLs in bodies use the request's host.

        Use it with a test client when ``start`` is not wanted; ``url`` stays unset then.
        """
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (a free port when 0) and set ``url``."""
        if self._runner is not None:
            raise RuntimeError("sandbox already started")
        self._closing = asyncio.Event()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"

    async def close(self) -> None:
        """Stop listening, wake stalled requests and finish background deliveries."""
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sandbox:
        """Start on a free loopback port."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close."""
        await self.close()

    # ---- inspection -------------------------------------------------------------------------

    def route_of(self, request: RecordedRequest) -> str:
        """``METHOD /route/{template}`` of a recorded request (its plain path if none served it)."""
        found = self._match(request.method, request.path)
        return f"{request.method} {found[0].path if found is not None else request.path}"

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """Recorded requests with ``method`` (``*`` for any) whose path fully matches the regex."""
        pattern = re.compile(path_regex)
        wanted = method.upper()
        return [
            r
            for r in self.requests
            if (wanted == "*" or r.method == wanted) and pattern.fullmatch(r.path)
        ]

    def route_for(self, method: str, path: str) -> Route | None:
        """The endpoint that would answer ``method path``, or None (the sandbox answers 404)."""
        matched = self._match(method.upper(), path)
        return matched[0] if matched else None

    def assert_valid(self) -> None:
        """Raise AssertionError listing every OpenAPI violation seen so far."""
        if self.violations:
            listing = "\n".join(f"  - {v}" for v in self.violations)
            raise AssertionError(
                f"{len(self.violations)} OpenAPI violation(s) in sandbox traffic:\n{listing}"
            )

    async def deliver(
        self,
        app_url: str,
        event: str,
        payload: Mapping[str, Any] | bytes,
        *,
        secret: str | None = None,
        guid: str | None = None,
    ) -> Delivery:
        """Sign ``payload`` like GitHub (the App's webhook secret by default) and POST it."""
        return await deliver_webhook(self.state, app_url, event, payload, secret=secret, guid=guid)

    async def deliver_pull_request(
        self,
        app_url: str,
        repo: Repo,
        pull: Issue,
        *,
        action: str = "opened",
        before: str | None = None,
    ) -> Delivery:
        """Deliver a ``pull_request`` event (opened, synchronize with ``before``, ...) for ``pull``.

        URLs in the payload point at this sandbox, so the App can follow them.
        """
        render = Renderer(self.state, self.url)
        payload = pull_request_payload(render, repo, pull, action=action, before=before)
        return await self.deliver(app_url, "pull_request", payload)

    async def deliver_check_suite(
        self, app_url: str, repo: Repo, check_suite_id: int, *, action: str = "rerequested"
    ) -> Delivery:
        """Deliver a ``check_suite`` event (``rerequested`` by default) for the App's suite."""
        render = Renderer(self.state, self.url)
        payload = check_suite_payload(render, repo, check_suite_id, action=action)
        return await self.deliver(app_url, "check_suite", payload)

    async def deliver_issue_comment(
        self,
        app_url: str,
        repo: Repo,
        comment: Comment,
        *,
        action: str = "created",
        previous_body: str | None = None,
    ) -> Delivery:
        """Deliver an ``issue_comment`` event (``created`` or ``edited``) for ``comment``.

        The issue (or pull request) is the one the comment is on; URLs point at this sandbox.
        """
        render = Renderer(self.state, self.url)
        issue = self.state.issue(repo, comment.issue_number)
        payload = issue_comment_payload(
            render, repo, issue, comment, action=action, previous_body=previous_body
        )
        return await self.deliver(app_url, "issue_comment", payload)

    # ---- the pipeline -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_body = await request.read()
        body, body_error = self._parse_body(raw_body)
        request_id = _request_id()
        principal = ANONYMOUS
        outcome: _Outcome
        plan = self.faults.plan(request.method, request.path)
        if plan.delay > 0:
            await self._stall(plan.delay)
        if plan.drop:
            return self._drop(request, body)
        try:
            principal = authenticate(self.state, request.headers.get("Authorization"))
        except ApiError as error:
            if plan.failure is None:
                outcome = self._error(error)
                return self._finish(request, body, principal, outcome, request_id)
        if plan.failure is not None:
            installation = principal.token.installation_id if principal.token else None
            injected = self.faults.error_for(
                plan.failure, request_id=request_id, installation_id=installation
            )
            if plan.failure.kind is FaultKind.LOST_ANSWER and body_error is None:
                await self._dispatch(request, body, principal)  # done, then the answer is lost
            outcome = self._error(injected, counted=False)
        elif body_error is not None:
            outcome = self._error(body_error)
        else:
            outcome = await self._dispatch(request, body, principal)
        return self._finish(request, body, principal, outcome, request_id)

    @staticmethod
    def _parse_body(raw: bytes) -> tuple[Any, ApiError | None]:
        if not raw:
            return NO_BODY, None
        try:
            return json.loads(raw), None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return raw.decode("utf-8", "replace"), ApiError(400, "Problems parsing JSON")

    async def _stall(self, seconds: float) -> None:
        # Woken early by close(), so a test that timed out on a slow fault tears down at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _drop(self, request: web.Request, body: Any) -> web.StreamResponse:
        # Recorded with status 0: the client never got an answer.
        self._record(request, body, ANONYMOUS, status=0, response=NO_BODY)
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    def _error(self, error: ApiError, *, counted: bool = True) -> _Outcome:
        return _Outcome(error.status, body=error.body(), headers=error.headers, counted=counted)

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for compiled in self._routes:
            if compiled.route.method != method:
                continue
            found = compiled.pattern.fullmatch(path)
            if found is not None:
                if self._unserved(method, path, compiled.route) is not None:
                    return None
                return compiled.route, {k: v or "" for k, v in found.groupdict().items()}
        return None

    def _unserved(self, method: str, path: str, route: Route | None) -> str | None:
        """The documented operation ``method path`` is, when ``route`` is not its endpoint.

        A route whose parameter spans segments (``commits/{ref:.+}``) would otherwise answer
        for a documented operation the sandbox does not serve (``commits/{sha}/pulls``).
        """
        documented = self.validator.match(method, path)
        if documented is None:
            return None
        if route is not None and _template(route.path) == documented.operation.template:
            return None
        return documented.operation.operation_id

    async def _dispatch(self, request: web.Request, body: Any, principal: Principal) -> _Outcome:
        counted = request.path not in UNCOUNTED_PATHS
        version = request.headers.get("X-GitHub-Api-Version")
        if version is not None and version not in SUPPORTED_API_VERSIONS:
            message = f"Unsupported 'X-GitHub-Api-Version' header: {version!r}"
            return self._error(ApiError(400, message))
        if counted and self._bucket(principal).remaining <= 0:
            return self._error(self._exhausted(principal), counted=False)
        matched = self._match(request.method, request.path)
        if matched is None:
            return self._error(not_found(), counted=counted)
        route, params = matched
        call = Call(
            state=self.state,
            principal=principal,
            params=params,
            query=request.query,
            body=body,
            url=request.url,
            accept=request.headers.get("Accept", ""),
            need=route.need,
            render=Renderer(self.state, str(request.url.origin())),
            background=self._background,
        )
        try:
            check_access(route, principal)
            reply = await route.handler(call)
        except ApiError as error:
            return self._error(error, counted=counted)
        return _Outcome(
            reply.status,
            body=reply.body,
            raw=reply.raw,
            content_type=reply.content_type,
            headers=reply.headers,
            counted=counted,
        )

    def _background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bucket(self, principal: Principal) -> RateBucket:
        return self.state.rate_bucket(principal.rate_key, limit=principal.rate_limit)

    def _exhausted(self, principal: Principal) -> ApiError:
        who = (
            f"installation ID {principal.token.installation_id}"
            if principal.token is not None
            else "this client"
        )
        return ApiError(
            403,
            f"API rate limit exceeded for {who}.",
            documentation_url=RATE_LIMIT_DOCS,
        )

    def _finish(
        self,
        request: web.Request,
        body: Any,
        principal: Principal,
        outcome: _Outcome,
        request_id: str,
    ) -> web.Response:
        payload = outcome.raw
        if payload is None and outcome.body is not NO_BODY:
            payload = json.dumps(outcome.body).encode()
        status = outcome.status
        headers: dict[str, str] = {}
        if request.method == "GET" and payload is not None and status == 200:
            etag = _weak_etag(payload)
            headers["ETag"] = etag
            if _etag_matches(request.headers.get("If-None-Match"), etag):
                status, payload = 304, None
        counted = outcome.counted and status != 304
        bucket = (
            self.state.spend_rate(principal.rate_key, limit=principal.rate_limit)
            if counted
            else self._bucket(principal)
        )
        headers |= {
            "x-ratelimit-limit": str(bucket.limit),
            "x-ratelimit-remaining": str(bucket.remaining),
            "x-ratelimit-used": str(bucket.used),
            "x-ratelimit-reset": str(bucket.reset),
            "x-ratelimit-resource": bucket.resource,
            "x-github-request-id": request_id,
            "x-github-api-version-selected": API_VERSION,
            "x-github-media-type": "github.v3; format=json",
        }
        headers |= dict(outcome.headers or {})
        response_body = outcome.body if status != 304 else NO_BODY
        self._record(request, body, principal, status=status, response=response_body)
        if self.validate:
            self._validate(request, body, status, response_body, json_reply=outcome.raw is None)
        if payload is None:
            return web.Response(status=status, headers=headers)
        content_type = JSON_TYPE if outcome.raw is None else outcome.content_type
        headers["Content-Type"] = content_type or "application/octet-stream"
        return web.Response(status=status, body=payload, headers=headers)

    def _record(
        self,
        request: web.Request,
        body: Any,
        principal: Principal,
        *,
        status: int,
        response: Any,
    ) -> None:
        headers = {k.lower(): _redact(k.lower(), v) for k, v in request.headers.items()}
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=headers,
                body=body,
                status=status,
                response=response,
                auth=principal.kind,
                installation_id=principal.token.installation_id if principal.token else None,
                at=self.state.now(),
            )
        )

    def _validate(
        self, request: web.Request, body: Any, status: int, response: Any, *, json_reply: bool
    ) -> None:
        if request.path.startswith(INTERNAL_PREFIX):
            return
        if self._match(request.method, request.path) is None:
            unserved = self._unserved(request.method, request.path, None)
            if unserved is not None:
                self.violations.append(
                    f"{request.method} {request.path}: operation: {unserved} is documented "
                    "but the sandbox does not serve it"
                )
        self.violations += self.validator.check_request(
            request.method, request.path, request.query, body
        )
        if json_reply:
            self.violations += self.validator.check_response(
                request.method, request.path, status, response
            )
