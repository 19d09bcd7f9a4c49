"""Webhook helpers for tests: sign payloads like GitHub and load the shared payload examples."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

# Package data: a copy of octokit's examples (data/github/README.md says where it comes from).
EXAMPLES: Traversable = resources.files("sandbox") / "data" / "github" / "webhooks" / "examples"


def sign_payload(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=`` + HMAC-SHA256 hex digest."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_headers(
    event: str, delivery_id: str | None, body: bytes, secret: str | None
) -> dict[str, str]:
    """The headers GitHub sends with a webhook delivery (signed when ``secret`` is given)."""
    headers = {
        "content-type": "application/json",
        "user-agent": "GitHub-Hookshot/sandbox",
        "x-github-event": event,
        "x-github-delivery": delivery_id or str(uuid.uuid4()),
        "x-github-hook-id": "1",
        "x-github-hook-installation-target-type": "integration",
    }
    if secret is not None:
        headers["x-hub-signature-256"] = sign_payload(body, secret)
        sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        headers["x-hub-signature"] = f"sha1={sha1}"
    return headers


def example_path(
    event: str, action_or_name: str, *, root: Traversable | None = None
) -> Traversable:
    """Where ``examples/<event>/<action_or_name>.json`` lives."""
    name = action_or_name.removesuffix(".json")
    return (root or EXAMPLES) / event / f"{name}.json"


def load_example(
    event: str, action_or_name: str, *, root: Traversable | None = None
) -> dict[str, Any]:
    """Parse a shared webhook example, e.g. ``load_example("issue_comment", "created")``."""
    path = example_path(event, action_or_name, root=root)
    if not path.is_file():
        raise FileNotFoundError(f"no webhook example {event}/{action_or_name} at {path}")
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload
