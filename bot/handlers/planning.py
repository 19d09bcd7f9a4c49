"""What every kind's router reads from an event the same way: where it comes from, which button.

Routers never trust a payload's shape: each helper returns None for a malformed event, and
the router then plans nothing.
"""

from collections.abc import Collection
from typing import Any

from bot.github.repos import is_full_name

# The identifier a plain "Re-run" (``check_run.rerequested``) stands for.
RERUN = "rerun"


def event_origin(data: dict[str, Any]) -> tuple[int, str] | None:
    """The installation id and ``owner/name`` of the event's repository, or None if malformed."""
    installation, repository = data.get("installation"), data.get("repository")
    installation_id = installation.get("id") if isinstance(installation, dict) else None
    repo = repository.get("full_name") if isinstance(repository, dict) else None
    if isinstance(installation_id, int) and isinstance(repo, str) and is_full_name(repo):
        return installation_id, repo
    return None


def pressed_button(data: dict[str, Any], buttons: Collection[str]) -> str | None:
    """The button a ``check_run`` event asks for: ``RERUN`` for a re-request, else the
    ``requested_action`` identifier when it is one of ``buttons`` (None for anything else)."""
    if data.get("action") != "requested_action":
        return RERUN
    action = data.get("requested_action")
    identifier = action.get("identifier") if isinstance(action, dict) else None
    return identifier if isinstance(identifier, str) and identifier in buttons else None
