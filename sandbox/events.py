"""Webhook payloads built from the sandbox's records, shaped like octokit's examples."""

from __future__ import annotations

from typing import Any

from sandbox.endpoints_repo import changes_between, commits_between
from sandbox.records import Comment, Issue, Repo, User
from sandbox.render import Renderer, iso, node_id
from sandbox.webhooks import load_example

# The example payloads this module adapts (data/github/webhooks/examples/pull_request/).
PULL_REQUEST_ACTIONS = frozenset(
    {"opened", "synchronize", "reopened", "closed", "ready_for_review"}
)
# octokit ships no ``ready_for_review`` example; its payload has the same shape as ``reopened``
# (https://docs.github.com/webhooks/webhook-events-and-payloads#pull_request).
_EXAMPLE_FOR = {"ready_for_review": "reopened"}
# data/github/webhooks/examples/issue_comment/: the actions with an example payload.
ISSUE_COMMENT_ACTIONS = frozenset({"created", "edited"})


def _envelope(render: Renderer, repo: Repo, sender: User) -> dict[str, Any]:
    installation = render.state.installation_for(repo)
    body: dict[str, Any] = {"repository": render.repo(repo), "sender": render.user(sender)}
    if installation is not None:
        body["installation"] = {
            "id": installation.id,
            "node_id": node_id("IntegrationInstallation", installation.id),
        }
    return body


def pull_request_payload(
    render: Renderer,
    repo: Repo,
    pull: Issue,
    *,
    action: str = "opened",
    before: str | None = None,
    sender: User | None = None,
) -> dict[str, Any]:
    """A ``pull_request`` event for ``pull`` with real ids and shas.

    ``synchronize`` needs ``before``, the head sha the push replaced; ``after`` is the head now.
    """
    if action not in PULL_REQUEST_ACTIONS:
        raise ValueError(f"no pull_request example for action {action!r}")
    if pull.pull is None:
        raise ValueError(f"#{pull.number} is an issue, not a pull request")
    state = render.state
    heads = state.branches[repo.id]
    base, head = heads[pull.pull.base_ref], heads[pull.pull.head_ref]
    changes = changes_between(state, repo, base, head)
    commits = len(commits_between(state, repo, base, head))
    payload = load_example("pull_request", _EXAMPLE_FOR.get(action, action))
    payload |= {
        "action": action,
        "number": pull.number,
        "pull_request": render.pull(repo, pull, changes, commits),
    }
    payload |= _envelope(render, repo, sender or pull.user)
    if action == "synchronize":
        if before is None:
            raise ValueError("a synchronize event needs the head sha it replaced (before=)")
        payload |= {"before": before, "after": head}
    return payload


def check_suite_payload(
    render: Renderer,
    repo: Repo,
    check_suite_id: int,
    *,
    action: str = "rerequested",
    sender: User | None = None,
) -> dict[str, Any]:
    """A ``check_suite`` event (``requested`` or ``rerequested``) for one of the App's suites."""
    if action not in ("requested", "rerequested"):
        raise ValueError(f"no check_suite example for action {action!r}")
    state = render.state
    sha = state.check_suite_sha(repo, check_suite_id)
    commit = state.git_commit(repo, sha)
    runs = state.check_runs_for(repo, sha)
    branch = next((name for name, head in state.branches[repo.id].items() if head == sha), None)
    url = f"{render.api}/repos/{repo.full_name}/check-suites/{check_suite_id}"
    latest = runs[0] if runs else None
    done = bool(runs) and all(r.completed_at is not None for r in runs)
    payload = load_example("check_suite", action)
    payload["action"] = action
    payload["check_suite"] |= {
        "id": check_suite_id,
        "node_id": node_id("CheckSuite", check_suite_id),
        "head_branch": branch,
        "head_sha": sha,
        "status": "completed" if done else "queued",
        "conclusion": latest.conclusion.value if done and latest and latest.conclusion else None,
        "url": url,
        "before": commit.parents[0] if commit.parents else "0" * 40,
        "after": sha,
        "pull_requests": [render.pull_minimal(repo, p) for p in state.pulls_for_sha(repo, sha)],
        "app": render.app(),
        "created_at": iso(
            min((r.started_at or 0 for r in runs), default=commit.committer.timestamp)
        ),
        "updated_at": iso(state.now()),
        "latest_check_runs_count": len({r.name for r in runs}),
        "check_runs_url": f"{url}/check-runs",
        "head_commit": {
            "id": sha,
            "tree_id": commit.tree,
            "message": commit.message,
            "timestamp": iso(commit.committer.timestamp),
            "author": {"name": commit.author.name, "email": commit.author.email},
            "committer": {"name": commit.committer.name, "email": commit.committer.email},
        },
    }
    payload |= _envelope(render, repo, sender or state.app.owner)
    return payload


def issue_comment_payload(
    render: Renderer,
    repo: Repo,
    issue: Issue,
    comment: Comment,
    *,
    action: str = "created",
    previous_body: str | None = None,
    sender: User | None = None,
) -> dict[str, Any]:
    """An ``issue_comment`` event for ``comment`` on ``issue`` (a pull request carries its link).

    ``edited`` says what the body was before in ``changes.body.from``: ``previous_body``, else
    the body the comment's last edit replaced (its body now if it was never edited).
    """
    if action not in ISSUE_COMMENT_ACTIONS:
        raise ValueError(f"no issue_comment example for action {action!r}")
    if comment.issue_number != issue.number or comment.repo_id != repo.id:
        raise ValueError(f"comment {comment.id} is not on {repo.full_name}#{issue.number}")
    payload = load_example("issue_comment", action)
    payload |= {
        "action": action,
        "issue": render.issue(repo, issue),
        "comment": render.comment(repo, comment),
    }
    if action == "edited":
        before = previous_body
        if before is None:
            before = comment.edits[-1].previous_body if comment.edits else comment.body
        payload["changes"] = {"body": {"from": before}}
    payload |= _envelope(render, repo, sender or comment.user)
    return payload
