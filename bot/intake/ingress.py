"""Webhook ingress: verify the signature, parse, persist the delivery with its jobs, answer 202.

No GitHub API call and no engine work happens on the request path: GitHub gives a
delivery 10 seconds (https://docs.github.com/en/webhooks/using-webhooks/best-practices-for-using-webhooks).
The signature is checked here rather than by gidgethub, which accepts an unsigned body
when no secret is passed and accepts SHA-1-only signatures.
"""

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from gidgethub import sansio

from bot.intake.planner import Planner
from bot.logs import delivery_id as delivery_context
from bot.settings import Settings
from bot.store import Delivery, Store
from bot.telemetry import Telemetry

log = logging.getLogger("model_guard.ingress")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{1,100}$")
_EVENT = re.compile(r"^[a-z_]{1,64}$")


def signature_matches(secret: str, body: bytes, header: str) -> bool:
    """Check an ``X-Hub-Signature-256`` value in constant time."""
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


def _nested(data: dict[str, Any], outer: str, inner: str) -> object:
    """Return ``data[outer][inner]`` when both levels exist, else None (payloads are untrusted)."""
    container = data.get(outer)
    return container.get(inner) if isinstance(container, dict) else None


def _refuse(status: int, message: str, *, event: str, telemetry: Telemetry) -> web.Response:
    """Answer a refused delivery with a JSON reason, and count it."""
    telemetry.deliveries.labels(event=event, outcome=f"refused_{status}").inc()
    log.warning(
        "delivery refused", extra={"fields": {"status": status, "reason": message, "event": event}}
    )
    return web.json_response({"message": message}, status=status)


async def receive(
    request: web.Request,
    *,
    settings: Settings,
    store: Store,
    planner: Planner,
    telemetry: Telemetry,
    on_jobs: Callable[[], None] | None = None,
) -> web.Response:
    """Handle ``POST /webhook``; ``on_jobs`` nudges the workers after new jobs are stored."""
    event_name = request.headers.get("X-GitHub-Event", "")
    shown = event_name if _EVENT.match(event_name) else "invalid"
    try:
        body = await request.read()  # client_max_size turns an oversize body into 413
    except web.HTTPRequestEntityTooLarge:
        return _refuse(
            413, f"body over {settings.max_body_bytes} bytes", event=shown, telemetry=telemetry
        )
    signature = request.headers.get("X-Hub-Signature-256")
    if signature is None:
        why = (
            "SHA-1 signatures are not accepted; send X-Hub-Signature-256"
            if "X-Hub-Signature" in request.headers
            else "missing X-Hub-Signature-256"
        )
        return _refuse(401, why, event=shown, telemetry=telemetry)
    if not signature_matches(settings.webhook_secret, body, signature):
        return _refuse(401, "signature does not match", event=shown, telemetry=telemetry)
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if not _DELIVERY_ID.match(delivery) or shown == "invalid":
        return _refuse(
            400,
            "missing or malformed X-GitHub-Delivery / X-GitHub-Event",
            event=shown,
            telemetry=telemetry,
        )
    token = delivery_context.set(delivery)
    try:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return _refuse(400, f"body is not JSON: {error}", event=shown, telemetry=telemetry)
        if not isinstance(data, dict):
            return _refuse(400, "body is not a JSON object", event=shown, telemetry=telemetry)
        if event_name == "ping":
            telemetry.deliveries.labels(event="ping", outcome="pong").inc()
            return web.json_response({"message": "pong", "zen": data.get("zen")}, status=200)
        event = sansio.Event(data, event=event_name, delivery_id=delivery)
        jobs = await planner.plan(event)
        installation_id = _nested(data, "installation", "id")
        repository = _nested(data, "repository", "full_name")
        record = Delivery(
            delivery_id=delivery,
            event=event_name,
            action=data["action"] if isinstance(data.get("action"), str) else None,
            installation_id=installation_id if isinstance(installation_id, int) else None,
            repository=repository if isinstance(repository, str) else None,
            received_at=datetime.now(UTC),
            payload_sha256=hashlib.sha256(body).hexdigest(),
        )
        created = await store.record_delivery(record, jobs)
        outcome = "accepted" if created else "duplicate"
        if created and jobs and on_jobs is not None:
            on_jobs()
        telemetry.deliveries.labels(event=event_name, outcome=outcome).inc()
        log.info(
            "delivery %s",
            outcome,
            extra={"fields": {"event": event_name, "action": record.action, "jobs": len(jobs)}},
        )
        return web.json_response(
            {"delivery": delivery, "duplicate": not created, "jobs": len(jobs) if created else 0},
            status=202,
        )
    finally:
        delivery_context.reset(token)
