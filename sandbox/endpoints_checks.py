"""CI results: check runs (create, update, get, list for a ref), check-suite rerequests, and
the combined commit status of a ref."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.errors import ApiError, invalid_field, missing_field, not_found
from sandbox.pagination import paginate
from sandbox.records import CheckAction, CheckConclusion, CheckOutput, CheckRun, CheckStatus
from sandbox.routing import (
    Call,
    Need,
    Reply,
    RouteTable,
    optional_str,
    optional_time,
    parse_enum,
    required_str,
)

routes = RouteTable()
READ = Need("checks", "read")
WRITE = Need("checks", "write")
# https://docs.github.com/rest/commits/statuses: the "Commit statuses" permission, not checks
STATUSES = Need("statuses", "read")
RESOURCE = "CheckRun"


def _output(
    body: Mapping[str, Any], *, previous: CheckOutput | None, title_required: bool
) -> CheckOutput | None:
    raw = body.get("output")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid_field(RESOURCE, "output")
    if title_required and raw.get("title") is None:
        raise missing_field(RESOURCE, "title")
    if raw.get("summary") is None:
        raise missing_field(RESOURCE, "summary")
    annotations = raw.get("annotations") or []
    # "The Checks API limits the number of annotations to a maximum of 50 per API request."
    if not isinstance(annotations, list) or len(annotations) > _MAX_ANNOTATIONS:
        raise invalid_field(RESOURCE, "annotations")
    for annotation in annotations:
        _check_annotation(annotation)
    # GitHub appends annotations on every update; the count is cumulative.
    earlier = previous.annotations_count if previous else 0
    kept = previous.annotations if previous else ()
    return CheckOutput(
        title=optional_str(raw, "title", resource=RESOURCE)
        or (previous.title if previous else None),
        summary=optional_str(raw, "summary", resource=RESOURCE),
        text=optional_str(raw, "text", resource=RESOURCE),
        annotations_count=earlier + len(annotations),
        annotations=kept + tuple(annotations),
    )


_MAX_ANNOTATIONS = 50
_ANNOTATION_LEVELS = frozenset({"notice", "warning", "failure"})


def _check_annotation(annotation: object) -> None:
    """Refuse an annotation GitHub refuses: missing path, lines, level or message."""
    if not isinstance(annotation, dict):
        raise invalid_field(RESOURCE, "annotations")
    for key in ("path", "message"):
        if not isinstance(annotation.get(key), str) or not annotation[key]:
            raise missing_field(RESOURCE, key)
    for key in ("start_line", "end_line"):
        line = annotation.get(key)
        if not isinstance(line, int) or isinstance(line, bool) or line < 1:
            raise missing_field(RESOURCE, key)
    if annotation.get("annotation_level") not in _ANNOTATION_LEVELS:
        raise invalid_field(RESOURCE, "annotation_level")


# https://docs.github.com/rest/guides/using-the-rest-api-to-interact-with-checks#check-runs-and-requested-actions
_MAX_ACTIONS = 3
_ACTION_LIMITS = {"label": 20, "description": 40, "identifier": 20}


def _actions(body: Mapping[str, Any]) -> tuple[CheckAction, ...] | None:
    """The ``actions`` (buttons) of a create or update; GitHub's limits are refused with 422."""
    raw = body.get("actions")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > _MAX_ACTIONS:
        raise invalid_field(RESOURCE, "actions")
    actions = []
    for item in raw:
        if not isinstance(item, dict):
            raise invalid_field(RESOURCE, "actions")
        values = {}
        for key, limit in _ACTION_LIMITS.items():
            value = item.get(key)
            if not isinstance(value, str):
                raise missing_field(RESOURCE, key)
            if not value or len(value) > limit:
                raise invalid_field(RESOURCE, key)
            values[key] = value
        actions.append(CheckAction(**values))
    return tuple(actions)


@routes.route("POST", "/repos/{owner}/{repo}/check-runs", need=WRITE)
async def create_check_run(call: Call) -> Reply:
    """``POST /repos/{o}/{r}/check-runs``: a check run on an existing commit."""
    repo = call.repo()
    body = call.json_object()
    run = call.state.create_check_run(
        repo,
        name=required_str(body, "name", resource=RESOURCE),
        head_sha=required_str(body, "head_sha", resource=RESOURCE),
        status=parse_enum(CheckStatus, body, "status", resource=RESOURCE),
        conclusion=parse_enum(CheckConclusion, body, "conclusion", resource=RESOURCE),
        started_at=optional_time(body, "started_at", resource=RESOURCE),
        completed_at=optional_time(body, "completed_at", resource=RESOURCE),
        output=_output(body, previous=None, title_required=True),
        external_id=optional_str(body, "external_id", resource=RESOURCE),
        details_url=optional_str(body, "details_url", resource=RESOURCE),
        actions=_actions(body) or (),
    )
    return Reply(status=201, body=call.render.check_run(repo, run))


@routes.route("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}", need=READ)
async def get_check_run(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/check-runs/{id}``."""
    repo = call.repo()
    run = call.state.check_run(call.int_param("check_run_id"), repo=repo)
    return Reply(body=call.render.check_run(repo, run))


@routes.route("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}", need=WRITE)
async def update_check_run(call: Call) -> Reply:
    """``PATCH /repos/{o}/{r}/check-runs/{id}``: progress, output, conclusion."""
    repo = call.repo()
    run_id = call.int_param("check_run_id")
    current = call.state.check_run(run_id, repo=repo)
    body = call.json_object()
    run = call.state.update_check_run(
        repo,
        run_id,
        name=optional_str(body, "name", resource=RESOURCE),
        status=parse_enum(CheckStatus, body, "status", resource=RESOURCE),
        conclusion=parse_enum(CheckConclusion, body, "conclusion", resource=RESOURCE),
        started_at=optional_time(body, "started_at", resource=RESOURCE),
        completed_at=optional_time(body, "completed_at", resource=RESOURCE),
        output=_output(body, previous=current.output, title_required=False),
        external_id=optional_str(body, "external_id", resource=RESOURCE),
        details_url=optional_str(body, "details_url", resource=RESOURCE),
        actions=_actions(body),
    )
    return Reply(body=call.render.check_run(repo, run))


def _latest_per_name(runs: list[CheckRun]) -> list[CheckRun]:
    seen: set[str] = set()
    latest = []
    for run in runs:  # newest first
        if run.name not in seen:
            seen.add(run.name)
            latest.append(run)
    return latest


@routes.route("GET", "/repos/{owner}/{repo}/commits/{ref:.+}/check-runs", need=READ)
async def list_check_runs(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/commits/{ref}/check-runs``: ``check_name``/``status``/``filter``."""
    repo = call.repo()
    ref = call.params["ref"]
    sha = call.state.resolve_ref(repo, ref)
    if sha is None:
        raise ApiError(422, f"No commit found for SHA: {ref}")
    runs = call.state.check_runs_for(repo, sha)
    if call.query.get("filter", "latest") == "latest":
        runs = _latest_per_name(runs)
    name = call.query.get("check_name")
    if name is not None:
        runs = [r for r in runs if r.name == name]
    status = call.query.get("status")
    if status is not None:
        runs = [r for r in runs if r.status.value == status]
    app_id = call.query.get("app_id")
    if app_id is not None:
        runs = [r for r in runs if str(r.app_id) == app_id]
    page = paginate(runs, call.url)
    body = {
        "total_count": page.total,
        "check_runs": [call.render.check_run(repo, r) for r in page.items],
    }
    return Reply(body=body, headers=page.headers)


@routes.route("POST", "/repos/{owner}/{repo}/check-suites/{check_suite_id}/rerequest", need=WRITE)
async def rerequest_check_suite(call: Call) -> Reply:
    """``POST …/check-suites/{id}/rerequest``: 201 ``{}``; the App's own suites only.

    GitHub then sends the App a ``check_suite`` ``rerequested`` event; the sandbox knows no
    App URL, so a test delivers it with ``Sandbox.deliver_check_suite``.
    """
    repo = call.repo()
    call.state.rerequest_check_suite(repo, call.int_param("check_suite_id"))
    return Reply(status=201, body={})


@routes.route("GET", "/repos/{owner}/{repo}/commits/{ref:.+}/status", need=STATUSES)
async def get_combined_status(call: Call) -> Reply:
    """``GET …/commits/{ref}/status``: no commit statuses in the sandbox, so ``pending``.

    GitHub's combined state is pending when there are no statuses:
    https://docs.github.com/rest/commits/statuses#get-the-combined-status-for-a-specific-reference
    """
    repo = call.repo()
    ref = call.params["ref"]
    sha = call.state.resolve_ref(repo, ref)
    if sha is None:
        raise not_found(
            "https://docs.github.com/rest/commits/statuses"
            "#get-the-combined-status-for-a-specific-reference"
        )
    base = f"{call.render.api}/repos/{repo.full_name}/commits/{sha}"
    body = {
        "state": "pending",
        "statuses": [],
        "sha": sha,
        "total_count": 0,
        "repository": call.render.repo(repo),
        "commit_url": base,
        "url": f"{base}/status",
    }
    return Reply(body=body)
