"""Issue endpoints: issues, comments (create, edit, delete), reactions, labels."""

from __future__ import annotations

from typing import Any

from sandbox.errors import invalid_field, missing_field
from sandbox.pagination import paginate
from sandbox.records import Issue, IssueState, ReactionContent, ReactionResult, Repo, StateReason
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
READ = Need("issues", "read")
WRITE = Need("issues", "write")


def _label_names(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid_field("Issue", "labels")
    names = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str):
            raise invalid_field("Issue", "labels")
        names.append(name)
    return names


def _filter_issues(call: Call, repo: Repo, issues: list[Issue]) -> list[Issue]:
    state = call.query.get("state", "open")
    if state != "all":
        issues = [i for i in issues if i.state.value == state]
    labels = [
        name.strip().lower() for name in call.query.get("labels", "").split(",") if name.strip()
    ]
    if labels:
        issues = [i for i in issues if set(labels) <= {n.lower() for n in i.labels}]
    creator = call.query.get("creator")
    if creator:
        issues = [i for i in issues if i.user.login.lower() == creator.lower()]
    since = optional_time(call.query, "since", resource="Issue")
    if since is not None:
        issues = [i for i in issues if i.updated_at >= since]
    sort = call.query.get("sort", "created")
    keys = {
        "created": lambda i: (i.created_at, i.number),
        "updated": lambda i: (i.updated_at, i.number),
        "comments": lambda i: (len(call.state.issue_comments(repo, i.number)), i.number),
    }
    key = keys.get(sort, keys["created"])
    return sorted(issues, key=key, reverse=call.query.get("direction", "desc") != "asc")


@routes.route("GET", "/repos/{owner}/{repo}/issues", need=READ)
async def list_issues(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/issues``: issues and pull requests, ``state``/``labels`` filters."""
    repo = call.repo()
    issues = _filter_issues(call, repo, call.state.list_issues(repo))
    page = paginate(issues, call.url)
    return Reply(body=[call.render.issue(repo, i) for i in page.items], headers=page.headers)


@routes.route("POST", "/repos/{owner}/{repo}/issues", need=WRITE)
async def create_issue(call: Call) -> Reply:
    """``POST /repos/{o}/{r}/issues``: open an issue as the App's bot."""
    repo = call.repo()
    body = call.json_object()
    title = body.get("title")
    if title is None:
        raise missing_field("Issue", "title")
    if not isinstance(title, str | int) or isinstance(title, bool):
        raise invalid_field("Issue", "title")
    issue = call.state.create_issue(
        repo,
        title=str(title),
        body=optional_str(body, "body", resource="Issue"),
        labels=_label_names(body.get("labels")),
        user=call.actor,
    )
    rendered = call.render.issue(repo, issue)
    return Reply(status=201, body=rendered, headers={"Location": rendered["url"]})


@routes.route("GET", "/repos/{owner}/{repo}/issues/{issue_number}", need=READ)
async def get_issue(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/issues/{n}``: one issue (410 once deleted)."""
    repo = call.repo()
    issue = call.state.issue(repo, call.int_param("issue_number"))
    return Reply(body=call.render.issue(repo, issue))


@routes.route("PATCH", "/repos/{owner}/{repo}/issues/{issue_number}", need=WRITE)
async def update_issue(call: Call) -> Reply:
    """``PATCH /repos/{o}/{r}/issues/{n}``: title, body, state (with state_reason), labels."""
    repo = call.repo()
    number = call.int_param("issue_number")
    issue = call.state.issue(repo, number)
    body = call.json_object()
    title = body.get("title", issue.title)
    if title is None or not isinstance(title, str | int) or isinstance(title, bool):
        raise invalid_field("Issue", "title")
    new_body = optional_str(body, "body", resource="Issue") if "body" in body else issue.body
    labels = _label_names(body["labels"]) if "labels" in body else list(issue.labels)
    updated = call.state.edit_issue(
        repo,
        number,
        title=str(title),
        body=new_body,
        state=parse_enum(IssueState, body, "state", resource="Issue") or issue.state,
        state_reason=parse_enum(StateReason, body, "state_reason", resource="Issue"),
        labels=labels,
    )
    return Reply(body=call.render.issue(repo, updated))


@routes.route("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments", need=READ)
async def list_comments(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/issues/{n}/comments``: comments oldest first, ``since``, paginated."""
    repo = call.repo()
    number = call.int_param("issue_number")
    call.state.issue(repo, number)
    comments = call.state.issue_comments(repo, number)
    since = optional_time(call.query, "since", resource="IssueComment")
    if since is not None:
        comments = [c for c in comments if c.updated_at >= since]
    page = paginate(comments, call.url)
    return Reply(body=[call.render.comment(repo, c) for c in page.items], headers=page.headers)


@routes.route("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments", need=WRITE)
async def create_comment(call: Call) -> Reply:
    """``POST /repos/{o}/{r}/issues/{n}/comments``: comment as the App's bot."""
    repo = call.repo()
    number = call.int_param("issue_number")
    text = required_str(call.json_object(), "body", resource="IssueComment")
    comment = call.state.create_comment(repo, number, text, user=call.actor)
    rendered = call.render.comment(repo, comment)
    return Reply(status=201, body=rendered, headers={"Location": rendered["url"]})


@routes.route("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}", need=READ)
async def get_comment(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/issues/comments/{id}``: one comment (404 once deleted)."""
    repo = call.repo()
    comment = call.state.comment(call.int_param("comment_id"), repo=repo)
    return Reply(body=call.render.comment(repo, comment))


@routes.route("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}", need=WRITE)
async def update_comment(call: Call) -> Reply:
    """``PATCH /repos/{o}/{r}/issues/comments/{id}``: replace a comment's body."""
    repo = call.repo()
    text = required_str(call.json_object(), "body", resource="IssueComment")
    comment = call.state.update_comment(repo, call.int_param("comment_id"), text, editor=call.actor)
    return Reply(body=call.render.comment(repo, comment))


@routes.route("DELETE", "/repos/{owner}/{repo}/issues/comments/{comment_id}", need=WRITE)
async def delete_comment(call: Call) -> Reply:
    """``DELETE /repos/{o}/{r}/issues/comments/{id}``: 204."""
    repo = call.repo()
    call.state.delete_comment(repo, call.int_param("comment_id"))
    return Reply(status=204)


def _reaction_content(call: Call) -> ReactionContent:
    body = call.json_object()
    if body.get("content") is None:
        raise missing_field("Reaction", "content")
    content = parse_enum(ReactionContent, body, "content", resource="Reaction")
    assert content is not None
    return content


def _reaction_reply(call: Call, result: ReactionResult) -> Reply:
    return Reply(status=201 if result.created else 200, body=call.render.reaction(result.reaction))


@routes.route("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions", need=WRITE)
async def create_reaction(call: Call) -> Reply:
    """``POST …/comments/{id}/reactions``: 201 for a new reaction, 200 if it was already there."""
    repo = call.repo()
    content = _reaction_content(call)
    return _reaction_reply(
        call, call.state.react(repo, call.int_param("comment_id"), content, user=call.actor)
    )


@routes.route("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions", need=READ)
async def list_comment_reactions(call: Call) -> Reply:
    """``GET …/comments/{id}/reactions``: oldest first, ``content`` filter, paginated."""
    repo = call.repo()
    comment = call.state.comment(call.int_param("comment_id"), repo=repo)
    reactions = call.state.reactions_on(comment.id)
    wanted = parse_enum(ReactionContent, call.query, "content", resource="Reaction")
    if wanted is not None:
        reactions = [r for r in reactions if r.content is wanted]
    page = paginate(reactions, call.url)
    return Reply(body=[call.render.reaction(r) for r in page.items], headers=page.headers)


@routes.route("POST", "/repos/{owner}/{repo}/issues/{issue_number}/reactions", need=WRITE)
async def create_issue_reaction(call: Call) -> Reply:
    """``POST …/issues/{n}/reactions``: react to an issue or pull request (201, or 200 again)."""
    repo = call.repo()
    content = _reaction_content(call)
    number = call.int_param("issue_number")
    return _reaction_reply(call, call.state.react_to_issue(repo, number, content, user=call.actor))


@routes.route("GET", "/repos/{owner}/{repo}/labels", need=READ)
async def list_labels(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/labels`` (not in the OpenAPI subset: using it is a violation)."""
    repo = call.repo()
    page = paginate(call.state.repo_labels(repo), call.url)
    return Reply(
        body=[call.render.label(repo, label) for label in page.items], headers=page.headers
    )


@routes.route("GET", "/repos/{owner}/{repo}/labels/{name}", need=READ)
async def get_label(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/labels/{name}``: one label (case-insensitive)."""
    repo = call.repo()
    return Reply(body=call.render.label(repo, call.state.label(repo, call.params["name"])))


@routes.route("POST", "/repos/{owner}/{repo}/labels", need=WRITE)
async def create_label(call: Call) -> Reply:
    """``POST /repos/{o}/{r}/labels``: a new label (422 ``already_exists`` for a taken name)."""
    repo = call.repo()
    body = call.json_object()
    label = call.state.create_label(
        repo,
        required_str(body, "name", resource="Label"),
        color=optional_str(body, "color", resource="Label"),
        description=optional_str(body, "description", resource="Label"),
    )
    rendered = call.render.label(repo, label)
    return Reply(status=201, body=rendered, headers={"Location": rendered["url"]})
