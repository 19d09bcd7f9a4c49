"""Runs that GitHub kept from finishing: parked on their last attempt, resumed once GitHub answers.

A scheduled run whose five attempts all met a GitHub outage used to end there: its
(repository, day) claim was spent, so the day was never judged, and its check run could
stay in progress. Now the run skeleton parks such a job (store KV namespace ``parked``, keyed by the
job's origin key) and ``Resumer`` probes GitHub while anything is parked; once GitHub
answers it enqueues each parked run again as a new job carrying the origin key, which finds
the same check run and writes the same records. A run is resumed at most ``MAX_RESUMES``
times, so a repository GitHub refuses for good does not loop.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.jobs.periodic import Periodic
from bot.jobs.worker import describe_error
from bot.store import Job, JobSpec, Store

log = logging.getLogger("model_guard.parking")

NAMESPACE = "parked"
MAX_RESUMES = 3
ORIGIN_FIELD = "origin_key"
RESUMES_FIELD = "resumes"


def origin_key(job: Job) -> str:
    """The key a run's check run and records use: the job's, or the one a resumed job resumes."""
    origin = job.payload.get(ORIGIN_FIELD)
    return origin if isinstance(origin, str) and origin else job.key


async def park(store: Store, job: Job, *, why: str) -> bool:
    """Park ``job`` to run again once GitHub answers; False when it was resumed too often.

    Logged at error level: a run that could not finish is something to look at.
    """
    origin = origin_key(job)
    resumes = job.payload.get(RESUMES_FIELD, 0)
    resumes = resumes if isinstance(resumes, int) and resumes >= 0 else MAX_RESUMES
    fields = {"origin_key": origin, "resumes": resumes, "why": why}
    if resumes >= MAX_RESUMES:
        log.error("run could not finish and is not resumed again", extra={"fields": fields})
        return False
    payload = {**job.payload, ORIGIN_FIELD: origin, RESUMES_FIELD: resumes + 1}
    record = {
        "kind": job.kind,
        "payload": payload,
        "max_attempts": job.max_attempts,
        "serial_key": job.serial_key,
    }
    await store.set_value(NAMESPACE, origin, json.dumps(record, sort_keys=True))
    log.error("run could not finish: it runs again once GitHub answers", extra={"fields": fields})
    return True


def _spec(origin: str, text: str) -> JobSpec | None:
    """The job that resumes a parked run, or None for a record that cannot be read."""
    try:
        record: dict[str, Any] = json.loads(text)
        payload = record["payload"]
        return JobSpec(
            kind=str(record["kind"]),
            key=f"{origin}~resume{int(payload[RESUMES_FIELD])}",
            payload=payload,
            max_attempts=int(record.get("max_attempts", 5)),
            serial_key=_serial_key(record.get("serial_key")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _serial_key(value: object) -> str | None:
    """A parked record's serial key (records parked before serial keys existed have none)."""
    return value if isinstance(value, str) and value else None


class Resumer:
    """While runs are parked, asks GitHub whether it answers; if so, enqueues them again."""

    def __init__(
        self,
        store: Store,
        probe: Callable[[], Awaitable[object]],
        *,
        interval_seconds: float = 60.0,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        """``probe`` is a cheap GitHub request (the App's ``GET /app``) that raises if it fails."""
        self._store = store
        self._probe = probe
        self.interval_seconds = interval_seconds
        self._on_enqueued = on_enqueued
        self._loop = Periodic(
            self.resume, interval_seconds=interval_seconds, name="resuming parked runs", log=log
        )

    async def resume(self) -> list[str]:
        """Enqueue every parked run if GitHub answers; return the keys of the jobs enqueued."""
        parked = await self._store.list_values(NAMESPACE)
        if not parked:
            return []
        try:
            await self._probe()
        except Exception as error:  # still down: try again next interval
            log.info("GitHub still does not answer: %s", describe_error(error))
            return []
        enqueued = []
        for origin, text in parked.items():
            spec = _spec(origin, text)
            if spec is None:
                log.error("unreadable parked run dropped", extra={"fields": {"origin_key": origin}})
            elif await self._store.enqueue(spec) is not None:
                enqueued.append(spec.key)
                log.info("parked run resumed", extra={"fields": {"key": spec.key}})
            # Deleted after the enqueue: a crash between leaves the record, whose job key
            # then exists, so the next pass enqueues nothing twice.
            await self._store.delete_value(NAMESPACE, origin)
        if enqueued and self._on_enqueued is not None:
            self._on_enqueued()
        return enqueued

    async def start(self) -> None:
        """Look every interval, starting now (runs parked before a restart resume too)."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop looking (idempotent)."""
        await self._loop.stop()
