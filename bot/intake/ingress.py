"""Webhook ingress: authenticate the body while reading it, parse, persist with its jobs, answer 202.

No GitHub API call and no engine work happens on the request path: GitHub gives a
delivery 10 seconds (https://docs.github.com/en/webhooks/using-webhooks/best-practices-for-using-webhooks).
The signature is checked here rather than by gidgethub, which accepts an unsigned body
when no secret is passed and accepts SHA-1-only signatures.

Before the body is signed off, a request costs little: its headers are judged first
(401, 400, 413 from Content-Length), at most ``max_pending_bodies`` bodies are read at
once (503 beyond), each within ``max_body_bytes`` and ``body_timeout_s`` (413, 408), fed
to HMAC-SHA256 chunk by chunk. Only a body whose signature matches is parsed, through
``bot.intake.sanitise`` (400 with one line for anything it cannot hold).
"""

import asyncio
import hashlib
import hmac
import logging
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from gidgethub import sansio

from bot.handlers import HANDLED_EVENTS
from bot.intake.planner import Planner
from bot.intake.sanitise import PayloadError, parse_json_object
from bot.logs import delivery_id as delivery_context
from bot.settings import Settings
from bot.store import Delivery, Store
from bot.telemetry import Telemetry

log = logging.getLogger("model_guard.ingress")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{1,100}$")
_EVENT = re.compile(r"^[a-z_]{1,64}$")
_SIGNATURE = re.compile(r"^sha256=[0-9a-f]{64}$")
# Metric label values: the events the App handles and ping; any other name, which an
# unsigned request may choose freely, is counted as "other" so /metrics cannot grow.
LABELLED_EVENTS: frozenset[str] = HANDLED_EVENTS | {"ping"}
RETRY_AFTER_S = 5
# Memory one unverified body may hold; the rest of it waits in a temporary file.
SPOOL_BYTES = 1024 * 1024


def event_label(name: str) -> str:
    """Return the metric label for an ``X-GitHub-Event`` value: itself when known, else other."""
    return name if name in LABELLED_EVENTS else "other"


class BodyGate:
    """Counts bodies being read before their signature is checked, up to a cap (one event loop)."""

    def __init__(self, capacity: int, *, telemetry: Telemetry) -> None:
        self.capacity = capacity
        self.held = 0
        self._telemetry = telemetry

    def try_enter(self) -> bool:
        """Take a place when one is free; never wait."""
        if self.held >= self.capacity:
            return False
        self.held += 1
        self._telemetry.pending_bodies.set(self.held)
        return True

    def leave(self) -> None:
        """Give a place back."""
        self.held -= 1
        self._telemetry.pending_bodies.set(self.held)


class _Refusal(Exception):
    """A request refused while its body was read: the status and the one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_signed(request: web.Request, *, secret: str, limit: int, timeout: float) -> bytes:
    """Read the body through HMAC-SHA256 within ``limit`` bytes and ``timeout`` seconds.

    Until the digest is known the bytes wait in a spool that moves to a temporary file past
    ``SPOOL_BYTES``, so bodies nobody has vouched for hold at most that much memory each;
    they are returned only when the digest matches the request's signature.
    """
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        size = 0
        try:
            async with asyncio.timeout(timeout):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise _Refusal(413, f"body over {limit} bytes")
                    mac.update(chunk)
                    spool.write(chunk)
        except TimeoutError:
            raise _Refusal(408, f"body not received within {timeout:g} s") from None
        expected = "sha256=" + mac.hexdigest()
        given = request.headers["X-Hub-Signature-256"].strip()
        if not hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace")):
            raise _Refusal(401, "signature does not match")
        spool.seek(0)
        return spool.read()


def _nested(data: dict[str, Any], outer: str, inner: str) -> object:
    """Return ``data[outer][inner]`` when both levels exist, else None (payloads are untrusted)."""
    container = data.get(outer)
    return container.get(inner) if isinstance(container, dict) else None


def _refuse(
    status: int,
    message: str,
    *,
    event: str,
    telemetry: Telemetry,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Answer a refused delivery with a JSON reason, and count it under the event's label."""
    telemetry.deliveries.labels(event=event, outcome=f"refused_{status}").inc()
    log.warning(
        "delivery refused", extra={"fields": {"status": status, "reason": message, "event": event}}
    )
    return web.json_response({"message": message}, status=status, headers=headers)


def _refuse_headers(request: web.Request, settings: Settings) -> tuple[int, str] | None:
    """Judge a request by its headers alone, before any of its body is read."""
    headers = request.headers
    signature = headers.get("X-Hub-Signature-256")
    if signature is None:
        if "X-Hub-Signature" in headers:
            return 401, "SHA-1 signatures are not accepted; send X-Hub-Signature-256"
        return 401, "missing X-Hub-Signature-256"
    if not _SIGNATURE.match(signature.strip()):
        return 401, "malformed X-Hub-Signature-256: expected sha256= and 64 hex digits"
    delivery = headers.get("X-GitHub-Delivery", "")
    if not _DELIVERY_ID.match(delivery) or not _EVENT.match(headers.get("X-GitHub-Event", "")):
        return 400, "missing or malformed X-GitHub-Delivery / X-GitHub-Event"
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        return 413, f"body over {settings.max_body_bytes} bytes"
    return None


async def receive(
    request: web.Request,
    *,
    settings: Settings,
    store: Store,
    planner: Planner,
    telemetry: Telemetry,
    gate: BodyGate,
    on_jobs: Callable[[], None] | None = None,
) -> web.Response:
    """Handle ``POST /webhook``; ``on_jobs`` nudges the workers after new jobs are stored."""
    event_name = request.headers.get("X-GitHub-Event", "")
    shown = event_label(event_name)
    refused = _refuse_headers(request, settings)
    if refused is not None:
        return _refuse(*refused, event=shown, telemetry=telemetry)
    if not gate.try_enter():
        return _refuse(
            503,
            f"{gate.capacity} webhook bodies are being read already; retry later",
            event=shown,
            telemetry=telemetry,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        body = await _read_signed(
            request,
            secret=settings.webhook_secret,
            limit=settings.max_body_bytes,
            timeout=settings.body_timeout_s,
        )
    except _Refusal as refusal:
        return _refuse(refusal.status, refusal.message, event=shown, telemetry=telemetry)
    finally:
        gate.leave()
    delivery = request.headers["X-GitHub-Delivery"]
    token = delivery_context.set(delivery)
    try:
        return await _accept(
            body,
            event_name=event_name,
            delivery=delivery,
            store=store,
            planner=planner,
            telemetry=telemetry,
            on_jobs=on_jobs,
        )
    except PayloadError as error:
        return _refuse(400, str(error), event=shown, telemetry=telemetry)
    finally:
        delivery_context.reset(token)


async def _accept(
    body: bytes,
    *,
    event_name: str,
    delivery: str,
    store: Store,
    planner: Planner,
    telemetry: Telemetry,
    on_jobs: Callable[[], None] | None,
) -> web.Response:
    """Parse a signed body, plan its jobs and store them with the delivery; PayloadError if odd."""
    data = parse_json_object(body)
    if event_name == "ping":
        telemetry.deliveries.labels(event="ping", outcome="pong").inc()
        return web.json_response({"message": "pong", "zen": data.get("zen")}, status=200)
    event = sansio.Event(data, event=event_name, delivery_id=delivery)
    try:
        jobs = await planner.plan(event)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        # A signed payload without the fields its event carries: the sender's fault, not ours.
        raise PayloadError(
            f"payload is not a well-formed {event_name} event: {type(error).__name__} {error}"
        ) from None
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
    telemetry.deliveries.labels(event=event_label(event_name), outcome=outcome).inc()
    log.info(
        "delivery %s",
        outcome,
        extra={"fields": {"event": event_name, "action": record.action, "jobs": len(jobs)}},
    )
    return web.json_response(
        {"delivery": delivery, "duplicate": not created, "jobs": len(jobs) if created else 0},
        status=202,
    )
