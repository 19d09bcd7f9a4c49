"""Deliver webhooks to an App the way GitHub does, and remember each delivery."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp

from sandbox.records import Delivery
from sandbox.state import SandboxState
from sandbox.webhooks import webhook_headers

# GitHub gives up on a delivery after 10 seconds.
DELIVERY_TIMEOUT = 10.0


def _payload_object(body: bytes) -> dict[str, Any]:
    # Tests may deliver deliberately broken bodies; they are sent as they are, just not indexed.
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def deliver_webhook(
    state: SandboxState,
    url: str,
    event: str,
    payload: Mapping[str, Any] | bytes,
    *,
    secret: str | None = None,
    guid: str | None = None,
    redelivery: bool = False,
) -> Delivery:
    """POST a signed webhook to ``url`` (the App's secret by default) and record the delivery."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    parsed = _payload_object(body)
    guid = guid or str(uuid.uuid4())
    headers = webhook_headers(
        event, guid, body, secret if secret is not None else state.app.webhook_secret
    )
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    delivery = Delivery(
        id=state.next_id(),
        guid=guid,
        event=event,
        action=parsed.get("action"),
        installation_id=(parsed.get("installation") or {}).get("id"),
        repository_id=(parsed.get("repository") or {}).get("id"),
        delivered_at=state.now(),
        status_code=status,
        duration=round(time.perf_counter() - started, 3),
        url=url,
        body=body,
        redelivery=redelivery,
    )
    return state.record_delivery(delivery)
