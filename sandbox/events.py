"""Webhook payloads built from the sandbox's records, shaped like octokit's examples."""

from __future__ import annotations

from typing import Any

from sandbox.endpoints_repo import changes_between, commits_between
from sandbox.records import Issue, Repo, User
from sandbox.render import Renderer, node_id
from sandbox.webhooks import load_example

# The example payloads this module adapts (data/github/webhooks/examples/pull_request/).
PULL_REQUEST_ACTIONS = frozenset({"opened", "synchronize", "reopened", "closed"})


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
    payload = load_example("pull_request", action)
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
