"""The internal scheduler: each installed repository's cron enqueues one job per (repo, UTC day).

Every tick looks only at the most recent fire time at or before now (no backlog of missed
days), so a run missed while the service was down happens at the next start, and the
``(kind, repo, day)`` claim in the store makes it happen once, however many ticks or
processes see it. The day is the UTC date of the fire time, not of the tick, so the key is
stable: a 23:30 cron seen at 00:10 still belongs to the day before.
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from bot.errors import BotError
from bot.jobs.periodic import Periodic
from bot.jobs.worker import describe_error, now_utc
from bot.store import JobSpec, Store, StoreError, make_serial_key

log = logging.getLogger("model_guard.scheduler")

# Minute 37, not 0: off the hour, when every other scheduled job on shared runners starts.
DEFAULT_CRON = "37 4 * * *"


class ScheduleError(BotError):
    """A cron expression cannot be used, or the scheduler was driven wrongly."""


@dataclass(frozen=True)
class ScheduledRepo:
    """One installed repository and the cron (UTC) of its scheduled run."""

    installation_id: int
    repo: str
    cron: str
    enabled: bool = True
    # As the installation listing named it (re-read every few minutes); "" when unknown.
    # The nightly takes it instead of asking GitHub for the repository again.
    default_branch: str = ""


ScheduleSource = Callable[[], Awaitable[Sequence[ScheduledRepo]]]


def latest_fire_time(cron: str, now: datetime) -> datetime:
    """Return the latest time at or before ``now`` (UTC) at which ``cron`` fires."""
    if now.tzinfo is None:
        raise ScheduleError(f"now must be timezone-aware, got {now!r}")
    moment = now.astimezone(UTC)
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise ScheduleError(f"not a valid cron expression: {cron!r}")
    try:
        # get_prev is strictly before its start; one microsecond on makes "at or before now".
        fire = croniter(cron, moment + timedelta(microseconds=1)).get_prev(datetime)
    except (ValueError, KeyError, TypeError) as error:  # croniter's errors are ValueErrors
        raise ScheduleError(f"cron expression {cron!r} cannot be evaluated: {error}") from None
    if not isinstance(fire, datetime):
        raise ScheduleError(f"cron expression {cron!r} gave no fire time")
    return fire.astimezone(UTC)


class Scheduler:
    """Ticks every ``interval_seconds``, claiming and enqueueing the runs that are due."""

    def __init__(
        self,
        store: Store,
        source: ScheduleSource,
        *,
        kind: str,
        interval_seconds: float = 60.0,
        clock: Callable[[], datetime] = now_utc,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        """Configure the scheduler; nothing runs until ``start()`` (or ``tick()``)."""
        if not kind:
            raise ScheduleError("kind must not be empty")
        if not interval_seconds > 0:
            raise ScheduleError(f"interval_seconds must be > 0, got {interval_seconds}")
        self._store = store
        self._source = source
        self.kind = kind
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._loop = Periodic(
            self.tick,
            interval_seconds=interval_seconds,
            name="schedule tick",
            log=log,
            failure_level=logging.ERROR,
        )

    async def tick(self) -> list[str]:
        """Claim and enqueue every enabled repository's latest due run; return the repos enqueued."""
        now = self._clock()
        try:
            repos = await self._source()
        except Exception as error:
            log.error("schedule source failed, retrying next tick: %s", describe_error(error))
            return []
        enqueued = [
            entry.repo for entry in repos if entry.enabled and await self._claim(entry, now)
        ]
        if enqueued and self._on_enqueued is not None:
            self._on_enqueued()
        return enqueued

    async def start(self) -> None:
        """Start ticking: once right away (a run missed while down happens now), then every interval."""
        if self._loop.running:
            raise ScheduleError("scheduler is already started")
        self._loop.start()

    async def stop(self) -> None:
        """Stop ticking (idempotent); a claim already sent completes or not as one transaction."""
        await self._loop.stop()

    async def _claim(self, entry: ScheduledRepo, now: datetime) -> bool:
        """Claim ``entry``'s latest due day, with its job; False if taken or not claimable."""
        fields: dict[str, object] = {"repo": entry.repo, "cron": entry.cron, "kind": self.kind}
        try:
            fire = latest_fire_time(entry.cron, now)
        except ScheduleError as error:
            log.warning(
                "skipping repository with a bad schedule: %s", error, extra={"fields": fields}
            )
            return False
        day = fire.date().isoformat()
        job = JobSpec(
            kind=self.kind,
            key=f"{self.kind}:{entry.repo}:{day}",
            payload={
                "installation_id": entry.installation_id,
                "repo": entry.repo,
                "day": day,
                "scheduled_for": fire.isoformat(),
                **({"default_branch": entry.default_branch} if entry.default_branch else {}),
            },
            # One run of a kind per repository at a time, across replicas: the nightly's
            # jobs all write the repository's one tracking comment (its issue number is
            # not known here), whichever event or schedule made them.
            serial_key=make_serial_key(entry.repo, self.kind),
        )
        try:
            claimed = await self._store.claim_schedule_run(entry.repo, day, kind=self.kind, job=job)
        except StoreError as error:
            log.error(
                "could not claim the scheduled run, retrying next tick: %s",
                describe_error(error),
                extra={"fields": {**fields, "day": day}},
            )
            return False
        if claimed:
            log.info("scheduled run enqueued", extra={"fields": {**fields, "day": day}})
        return claimed
