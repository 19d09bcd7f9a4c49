"""The missed-delivery sweep: ask GitHub again for deliveries that failed while the App was down.

GitHub never retries a failed webhook delivery by itself
(https://docs.github.com/webhooks/using-webhooks/handling-failed-webhook-deliveries). At start
and then every ``interval_seconds`` one replica (the holder of the store's claim
``sweep:deliveries``, which expires after the interval, so replicas take turns and never
sweep twice in one interval) lists the App's recent deliveries (``GET /app/hook/deliveries``,
newest first, failed ones only, followed by cursor) back to ``window`` ago and asks GitHub to
redeliver (``POST /app/hook/deliveries/{id}/attempts``) each one that

- failed in a way a second attempt can mend: no answer (status 0), a 5xx, 408 or 429 (a 4xx
  the App gave on purpose, such as a payload it refused, would be refused again);
- is of an event the App handles;
- has a delivery id (``guid``) the store has not recorded (a delivery GitHub saw fail but
  the App stored, e.g. it answered after GitHub's 10 s, needs nothing); and
- was not asked for already: each request is remembered in the store (KV namespace
  ``redelivery``) once GitHub accepts it, so one delivery is redelivered at most once.

The redelivery arrives as an ordinary webhook with the same delivery id; the ingress stores
it like any other, and its dedupe makes a redelivery that races a late original harmless.
"""

import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.jobs.periodic import Periodic
from bot.jobs.worker import describe_error
from bot.store import Store

log = logging.getLogger("model_guard.sweep")

NAMESPACE = "redelivery"
CLAIM = "sweep:deliveries"
# GitHub keeps deliveries for 3 days and only redelivers within that time.
WINDOW = timedelta(days=3)
# A bound on one sweep's cost: 50 pages of 100 deliveries.
MAX_PAGES = 50
_PER_PAGE = 100
_RETRYABLE = frozenset({0, 408, 429})


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did: deliveries looked at, redeliveries asked for, and why others were not."""

    swept: bool  # False: another replica holds this interval's claim
    seen: int = 0
    asked: tuple[str, ...] = ()
    already_stored: int = 0
    already_asked: int = 0
    not_retryable: int = 0


def _retryable(status_code: object) -> bool:
    return isinstance(status_code, int) and (status_code in _RETRYABLE or status_code >= 500)


def _delivered_at(item: Mapping[str, Any]) -> datetime | None:
    text = item.get("delivered_at")
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class DeliverySweep:
    """Finds failed deliveries the store never saw and asks GitHub once to deliver each again."""

    def __init__(
        self,
        store: Store,
        app_api: Callable[[], GitHubAPI],
        *,
        events: Collection[str],
        interval_seconds: float = 900.0,
        window: timedelta = WINDOW,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``app_api`` gives the API authenticated as the App; ``events`` those worth redelivering."""
        self._store = store
        self._app_api = app_api
        self._events = frozenset(events)
        self.interval_seconds = interval_seconds
        self._window = window
        self._clock = clock
        self._holder = uuid.uuid4().hex
        self._loop = Periodic(
            self._pass, interval_seconds=interval_seconds, name="delivery sweep", log=log
        )

    async def sweep(self) -> SweepResult:
        """One pass, if this replica holds the interval's claim."""
        # Not released: the claim lapses after the interval, so the next sweep, on whichever
        # replica gets there first, is one interval later.
        ttl = timedelta(seconds=self.interval_seconds * 0.9)
        if not await self._store.acquire_claim(CLAIM, self._holder, ttl=ttl):
            return SweepResult(swept=False)
        gh = self._app_api()
        cutoff = self._clock() - self._window
        candidates: dict[str, int] = {}  # guid -> newest failed delivery id
        seen = not_retryable = 0
        url = f"/app/hook/deliveries?per_page={_PER_PAGE}&status=failure"
        async for item in gh.getiter(url):
            seen += 1
            when = _delivered_at(item)
            if when is not None and when < cutoff:
                break  # newest first: the rest are older
            guid, delivery_id = item.get("guid"), item.get("id")
            if not isinstance(guid, str) or not isinstance(delivery_id, int):
                continue
            if item.get("event") not in self._events:
                continue
            if not _retryable(item.get("status_code")):
                not_retryable += 1
                continue
            candidates.setdefault(guid, delivery_id)
            if seen >= MAX_PAGES * _PER_PAGE:
                log.warning("delivery sweep stopped at %d deliveries", seen)
                break
        stored = await self._store.known_deliveries(candidates)
        asked: list[str] = []
        already_asked = 0
        for guid, delivery_id in candidates.items():
            if guid in stored:
                continue
            if await self._store.get_value(NAMESPACE, guid) is not None:
                already_asked += 1
                continue
            try:
                await gh.post(
                    "/app/hook/deliveries/{delivery_id}/attempts",
                    {"delivery_id": str(delivery_id)},
                    data=b"",  # the endpoint takes no body
                )
            except BadRequest as error:
                # 422: GitHub will not redeliver it (too old, say): asking again cannot help.
                if int(error.status_code) != 422:
                    raise
                log.info("GitHub refused to redeliver %s: %s", guid, describe_error(error))
            else:
                asked.append(guid)
                log.info(
                    "asked GitHub to redeliver a missed delivery",
                    extra={"fields": {"delivery": guid, "hook_delivery_id": delivery_id}},
                )
            await self._store.set_value(NAMESPACE, guid, self._clock().isoformat())
        await self._forget_old()
        return SweepResult(
            swept=True,
            seen=seen,
            asked=tuple(asked),
            already_stored=len(stored),
            already_asked=already_asked,
            not_retryable=not_retryable,
        )

    async def _forget_old(self) -> None:
        """Drop remembered requests older than the window: GitHub lists them no more."""
        cutoff = self._clock() - self._window - timedelta(days=1)
        for guid, text in (await self._store.list_values(NAMESPACE)).items():
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                when = None
            if when is None or when < cutoff:
                await self._store.delete_value(NAMESPACE, guid)

    async def start(self) -> None:
        """Sweep now (deliveries lost while every replica was down) and every interval."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop sweeping (idempotent)."""
        await self._loop.stop()

    async def _pass(self) -> None:
        result = await self.sweep()
        if result.asked:
            log.info("delivery sweep asked for %d redeliveries", len(result.asked))
