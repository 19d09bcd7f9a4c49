"""Endpoints about the App itself: installations, access tokens, deliveries, rate limit."""

from __future__ import annotations

from sandbox.delivery import deliver_webhook
from sandbox.errors import ApiError, invalid_field, not_found, validation_failed
from sandbox.pagination import DEFAULT_PER_PAGE, MAX_PER_PAGE, paginate
from sandbox.routing import Access, Call, Reply, RouteTable

routes = RouteTable()
TOKEN_DOCS = "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app"


@routes.route("GET", "/app", access=Access.APP)
async def get_app(call: Call) -> Reply:
    """``GET /app``: the authenticated App."""
    return Reply(body=call.render.app())


@routes.route("GET", "/app/installations", access=Access.APP)
async def list_installations(call: Call) -> Reply:
    """``GET /app/installations``: every installation of the App, paginated."""
    installations = sorted(call.state.installations.values(), key=lambda i: i.id)
    page = paginate(installations, call.url)
    body = [call.render.installation(i) for i in page.items]
    return Reply(body=body, headers=page.headers)


@routes.route("POST", "/app/installations/{installation_id}/access_tokens", access=Access.APP)
async def create_access_token(call: Call) -> Reply:
    """``POST /app/installations/{id}/access_tokens``: a ``ghs_`` token, optionally narrowed."""
    installation_id = call.int_param("installation_id")
    installation = call.state.installations.get(installation_id)
    if installation is None:
        raise not_found(TOKEN_DOCS)
    body = call.json_object()
    repository_ids: list[int] | None = None
    if body.get("repositories") is not None:
        names = body["repositories"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise invalid_field("Installation", "repositories")
        covered = {r.name.lower(): r.id for r in call.state.repos_of(installation)}
        missing = [n for n in names if n.lower() not in covered]
        if missing:
            raise ApiError(
                422,
                "There is at least one repository that does not exist or is not accessible "
                "to the parent installation.",
                documentation_url=TOKEN_DOCS,
            )
        repository_ids = [covered[n.lower()] for n in names]
    if body.get("repository_ids") is not None:
        ids = body["repository_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise invalid_field("Installation", "repository_ids")
        repository_ids = [*(repository_ids or []), *ids]
    permissions = body.get("permissions")
    if permissions is not None and not isinstance(permissions, dict):
        raise invalid_field("Installation", "permissions")
    token = call.state.issue_token(
        installation_id, repository_ids=repository_ids, permissions=permissions
    )
    return Reply(status=201, body=call.render.token(token))


@routes.route("GET", "/repos/{owner}/{repo}/installation", access=Access.APP)
async def get_repo_installation(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/installation``: the installation covering a repository."""
    repo = call.state.find_repo(call.params["owner"], call.params["repo"])
    installation = call.state.installation_for(repo) if repo else None
    if installation is None:
        raise not_found(
            "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app"
        )
    return Reply(body=call.render.installation(installation))


@routes.route("GET", "/installation/repositories")
async def list_installation_repos(call: Call) -> Reply:
    """``GET /installation/repositories``: what the token's installation may reach."""
    token = call.principal.token
    assert token is not None
    installation = call.state.installations[token.installation_id]
    repos = call.state.repos_of(installation)
    if token.repository_ids is not None:
        repos = [r for r in repos if r.id in token.repository_ids]
    page = paginate(repos, call.url)
    body = {
        "total_count": page.total,
        "repositories": [call.render.repo(r) for r in page.items],
        "repository_selection": installation.repository_selection,
    }
    return Reply(body=body, headers=page.headers)


@routes.route("GET", "/rate_limit", access=Access.PUBLIC)
async def get_rate_limit(call: Call) -> Reply:
    """``GET /rate_limit``: the caller's windows (this request is not counted, like GitHub)."""
    bucket = call.state.rate_bucket(call.principal.rate_key, limit=call.principal.rate_limit)
    return Reply(body=call.render.rate_limit(bucket))


@routes.route("GET", "/app/hook/deliveries", access=Access.APP)
async def list_deliveries(call: Call) -> Reply:
    """``GET /app/hook/deliveries``: recorded webhook deliveries, newest first, by cursor.

    GitHub pages this list with an opaque ``cursor`` (not ``page``) named in the ``Link``
    header's ``next``; here the cursor is ``v1_<id>``, the id the next page starts below.
    """
    deliveries = sorted(call.state.deliveries.values(), key=lambda d: d.id, reverse=True)
    status = call.query.get("status")
    if status == "success":
        deliveries = [d for d in deliveries if d.ok]
    elif status == "failure":
        deliveries = [d for d in deliveries if not d.ok]
    cursor = call.query.get("cursor")
    if cursor is not None:
        if not (cursor.startswith("v1_") and cursor[3:].isdigit()):
            raise validation_failed("HookDelivery", "cursor", "invalid", f"bad cursor {cursor!r}")
        below = int(cursor[3:])
        deliveries = [d for d in deliveries if d.id < below]
    per_page = call.query.get("per_page")
    size = int(per_page) if per_page is not None and per_page.isdigit() else DEFAULT_PER_PAGE
    size = min(max(size, 1), MAX_PER_PAGE)
    page, rest = deliveries[:size], deliveries[size:]
    headers: dict[str, str] = {}
    if rest:
        following = call.url.update_query(cursor=f"v1_{page[-1].id}")
        headers["Link"] = f'<{following}>; rel="next"'
    return Reply(body=[call.render.delivery(d) for d in page], headers=headers)


@routes.route("POST", "/app/hook/deliveries/{delivery_id}/attempts", access=Access.APP)
async def redeliver(call: Call) -> Reply:
    """``POST /app/hook/deliveries/{id}/attempts``: deliver the same payload again, later."""
    delivery = call.state.deliveries.get(call.int_param("delivery_id"))
    if delivery is None:
        raise not_found()
    call.background(
        deliver_webhook(
            call.state,
            delivery.url,
            delivery.event,
            delivery.body,
            guid=delivery.guid,
            redelivery=True,
        )
    )
    return Reply(status=202, body={})


@routes.route("POST", "/app-manifests/{code}/conversions", access=Access.PUBLIC)
async def convert_manifest(call: Call) -> Reply:
    """``POST /app-manifests/{code}/conversions``: the App's credentials, once per code."""
    code = call.params["code"]
    if code not in call.state.manifest_codes:
        raise not_found()
    call.state.manifest_codes.discard(code)
    return Reply(status=201, body=call.render.manifest_app())
