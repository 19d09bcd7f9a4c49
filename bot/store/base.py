"""The durable store's interface, its values and its one error hierarchy, free of any backend.

An implementation (SQLite today, PostgreSQL for several replicas later) must give these
guarantees, whatever process or thread calls it:

- **Dedup by delivery id.** ``record_delivery`` writes the delivery and its jobs in one
  transaction, or nothing; a delivery id is recorded at most once, so a redelivery is
  acknowledged and its jobs never run twice.
- **Unique job keys, forever.** A job key is an idempotency key: once a job with that key
  exists, in any state (finished ones included), enqueueing the key again does nothing.
  Put whatever makes a run distinct (day, comment id, delivery id) into the key.
- **Atomic claim.** ``claim_job`` hands each due queued job to exactly one caller, even
  with many workers in many processes on one database (SQLite: ``BEGIN IMMEDIATE``;
  PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``).
- **One running job per serial key.** A job with a ``serial_key`` (the sticky comment or
  check it writes: repository, issue, purpose) is not claimed while another job with that
  key is running under an unexpired lease, whichever process holds it. An expired lease
  does not block: its holder is presumed dead and its job will be requeued.
- **Wake-ups.** ``wait_for_work`` returns as soon as a job may have become claimable (a
  job enqueued or requeued, a serial key released) in this process, and on PostgreSQL in
  any replica (``LISTEN``/``NOTIFY``); else after its timeout, so polling is the fallback.
- **Fenced finish.** Only the worker holding a job's lease may complete, fail or extend it;
  everyone else gets ``False`` and changes nothing. Delivery is at least once: a job whose
  lease expired may be requeued and run again, so a job must be safe to repeat.
- **Once per key runs.** ``record_run(key=...)`` appends a run at most once per key.
- **Once per key schedule runs.** ``claim_schedule_run`` returns ``True`` to exactly one
  caller per ``(kind, repo, day)``, across processes.
- **Times** are timezone-aware datetimes; they come back in UTC. Naive datetimes are refused.
- **Repository names** (``owner/name``) compare case-insensitively, as on GitHub.
"""

import asyncio
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Any, Self


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class StoreNotOpenError(StoreError):
    """The store was used before ``open()`` or after ``close()``."""


class StoreBusyError(StoreError):
    """The database stayed locked by another writer for longer than the busy timeout."""


class SchemaVersionError(StoreError):
    """The database was migrated by a newer model-guard than this one."""


class InvalidValueError(StoreError, ValueError):
    """An argument cannot be stored as given (naive datetime, bad day, payload not JSON)."""


class JobState(Enum):
    """Where a job is in its life: queued -> running -> done or failed (or back to queued)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def require_aware(value: datetime, *, name: str) -> datetime:
    """Return ``value`` converted to UTC, refusing a naive datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def require_day(value: str) -> str:
    """Return ``value`` if it is an ISO calendar day (``YYYY-MM-DD``), else raise."""
    if not _DAY.fullmatch(value):
        raise InvalidValueError(f"day must be YYYY-MM-DD, got {value!r}")
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidValueError(f"day must be a real calendar day, got {value!r}") from exc
    return value


def encode_payload(payload: Mapping[str, Any]) -> str:
    """Return a job payload as canonical JSON text, refusing anything JSON cannot hold."""
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"job payload is not JSON-serialisable: {exc}") from exc


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery as received, keyed by its ``X-GitHub-Delivery`` id."""

    delivery_id: str
    event: str
    action: str | None
    installation_id: int | None
    repository: str | None
    received_at: datetime
    payload_sha256: str

    def __post_init__(self) -> None:
        """Refuse an empty delivery id and normalise ``received_at`` to UTC."""
        if not self.delivery_id:
            raise InvalidValueError("delivery_id must not be empty")
        object.__setattr__(self, "received_at", require_aware(self.received_at, name="received_at"))


def make_serial_key(repo: str, purpose: str, number: int | None = None) -> str:
    """The serial key of the jobs writing ``purpose``'s surface on issue ``number`` of ``repo``.

    ``owner/name#number#purpose`` (``owner/name#purpose`` when the issue is not known when the
    job is made, e.g. a nightly's tracking issue), the repository lower-cased as GitHub
    compares it.
    """
    if not repo or not purpose:
        raise InvalidValueError("a serial key needs a repository and a purpose")
    where = repo.lower() if number is None else f"{repo.lower()}#{number}"
    return f"{where}#{purpose}"


@dataclass(frozen=True)
class JobSpec:
    """A job to enqueue; ``key`` is its idempotency key and is unique forever.

    ``serial_key`` (optional) names what the job writes (see ``make_serial_key``): at most one
    job per serial key runs at a time, across every process on the store.
    """

    kind: str
    key: str
    payload: Mapping[str, Any] = field(hash=False)
    run_at: datetime | None = None
    max_attempts: int = 5
    serial_key: str | None = None

    def __post_init__(self) -> None:
        """Refuse empty names, a naive ``run_at`` and fewer than one attempt."""
        if not self.kind or not self.key:
            raise InvalidValueError("job kind and key must not be empty")
        if self.serial_key is not None and not self.serial_key:
            raise InvalidValueError("a job's serial_key must be None or not empty")
        if self.max_attempts < 1:
            raise InvalidValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.run_at is not None:
            object.__setattr__(self, "run_at", require_aware(self.run_at, name="run_at"))


@dataclass(frozen=True)
class Job:
    """A stored job; ``claimed_by`` and ``lease_until`` describe the current (or last) lease."""

    id: int
    kind: str
    key: str
    payload: Mapping[str, Any] = field(hash=False)
    state: JobState
    attempts: int
    max_attempts: int
    run_at: datetime
    claimed_by: str | None
    lease_until: datetime | None
    last_error: str | None
    delivery_id: str | None
    created_at: datetime
    updated_at: datetime
    serial_key: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One finished scheduled (or re-run) run of a repository, for the history table."""

    repo: str
    day: str
    commit_sha: str | None
    outcome: str
    summary: str
    finished_at: datetime

    def __post_init__(self) -> None:
        """Refuse a day that is not ``YYYY-MM-DD`` and normalise ``finished_at`` to UTC."""
        require_day(self.day)
        object.__setattr__(self, "finished_at", require_aware(self.finished_at, name="finished_at"))


class Store(ABC):
    """The App's durable state: deliveries, jobs, sticky comments, schedules, runs and a KV."""

    # Set when a job may have become claimable in this process; see ``wait_for_work``.
    _work_signal: asyncio.Event | None = None

    async def __aenter__(self) -> Self:
        """Open the store for an ``async with`` block."""
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store when the ``async with`` block ends."""
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date (idempotent across processes)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; jobs still running stay running until requeued."""

    # -- deliveries and jobs --------------------------------------------------------

    @abstractmethod
    async def record_delivery(self, delivery: Delivery, jobs: Sequence[JobSpec] = ()) -> bool:
        """Record a delivery and enqueue its jobs atomically; False (nothing written) if seen.

        A job whose key already exists is skipped; the delivery is still recorded.
        """

    @abstractmethod
    async def enqueue(self, job: JobSpec) -> Job | None:
        """Enqueue a job outside any delivery (the scheduler); None if its key exists."""

    def signal_work(self) -> None:
        """Wake the callers of ``wait_for_work`` (or the next one, if none waits now)."""
        if self._work_signal is None:
            self._work_signal = asyncio.Event()
        self._work_signal.set()

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait until a job may have become claimable, or ``timeout`` seconds; True if woken.

        A wake-up that came while nobody waited is kept for the next caller, so a worker
        that was busy when a job arrived does not sleep through it. Every caller waiting
        when it comes is woken. A store that hears of other processes' jobs (PostgreSQL's
        ``LISTEN``) overrides this to start listening; the timeout is the polling fallback.
        """
        if self._work_signal is None:
            self._work_signal = asyncio.Event()
        signal = self._work_signal
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await signal.wait()
        except TimeoutError:
            return False
        signal.clear()
        return True

    @abstractmethod
    async def get_job(self, job_id: int) -> Job | None:
        """Return the job with this id, or None."""

    @abstractmethod
    async def jobs_with_prefix(self, kind: str, key_prefix: str, *, limit: int = 1000) -> list[Job]:
        """Return up to ``limit`` jobs of ``kind`` whose key starts with ``key_prefix``, oldest first.

        Any state, finished ones included: e.g. every ``/bisect`` job of one pull request, so
        a job can see whether a newer command for the same pull request was planned.
        """

    @abstractmethod
    async def claim_job(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        now: datetime | None = None,
        kinds: Collection[str] | None = None,
    ) -> Job | None:
        """Atomically lease the oldest due queued job (``run_at <= now``) to ``worker_id``.

        The job becomes running with ``lease_until = now + lease_seconds`` and one more
        attempt; None when nothing is due. ``kinds`` limits the job kinds considered. A job
        whose ``serial_key`` is held by another running job with an unexpired lease is
        passed over (the next due job is taken instead) until that job finishes.
        ``worker_id`` must be unique among workers running at the same time.
        """

    @abstractmethod
    async def extend_lease(
        self,
        job_id: int,
        *,
        worker_id: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> bool:
        """Push the lease to ``now + lease_seconds``; False unless ``worker_id`` holds it.

        A lease that has already expired is lost, not renewed: once it expired another
        worker may have claimed the next job of its serial key (or be about to requeue
        it), so a worker that stalled past its lease must stop rather than run beside it.
        """

    @abstractmethod
    async def complete_job(self, job_id: int, *, worker_id: str) -> bool:
        """Mark a running job done; False unless ``worker_id`` holds its lease."""

    @abstractmethod
    async def fail_job(
        self,
        job_id: int,
        *,
        worker_id: str,
        error: str,
        retry_at: datetime | None = None,
    ) -> bool:
        """Record a failed attempt; False unless ``worker_id`` holds the lease.

        With ``retry_at`` and attempts left the job is queued again for ``retry_at``;
        otherwise it is FAILED. ``last_error`` keeps ``error`` either way.
        """

    @abstractmethod
    async def requeue_abandoned(self, *, now: datetime | None = None) -> int:
        """Requeue running jobs whose lease expired by ``now``; return how many were requeued.

        Safe with several live replicas (a live worker keeps its lease fresh). Call it on
        start and now and then. A job with no attempts left is FAILED instead (not counted),
        so a job that kills its worker cannot loop forever.
        """

    @abstractmethod
    async def requeue_all_running(self) -> int:
        """Requeue every running job, lease or not; return how many were requeued.

        Only for a single-process deployment on restart, when no other worker can be alive.
        Jobs with no attempts left are FAILED instead, as in ``requeue_abandoned``.
        """

    # -- sticky comments ------------------------------------------------------------

    @abstractmethod
    async def get_sticky(self, repo: str, issue_number: int, marker: str) -> int | None:
        """Return the comment id of the sticky comment with ``marker`` on an issue, or None."""

    @abstractmethod
    async def set_sticky(self, repo: str, issue_number: int, marker: str, comment_id: int) -> None:
        """Remember (or replace) the sticky comment id for ``marker`` on an issue."""

    @abstractmethod
    async def forget_sticky(self, repo: str, issue_number: int, marker: str) -> bool:
        """Forget a sticky comment (e.g. it was deleted); False if none was remembered."""

    # -- schedules and run history --------------------------------------------------

    @abstractmethod
    async def claim_schedule_run(
        self,
        repo: str,
        day: str,
        *,
        kind: str,
        job: JobSpec | None = None,
    ) -> bool:
        """Claim the ``(kind, repo, day)`` run; True for exactly one caller, ever.

        ``day`` is ``YYYY-MM-DD``. When given, ``job`` is enqueued in the same transaction
        as the claim, so a crash cannot leave a claimed day without its job.
        """

    @abstractmethod
    async def last_schedule_run(self, repo: str, *, kind: str) -> str | None:
        """Return the latest claimed day (``YYYY-MM-DD``) for ``repo`` and ``kind``, or None."""

    @abstractmethod
    async def record_run(
        self,
        repo: str,
        *,
        day: str,
        commit_sha: str | None,
        outcome: str,
        summary: str,
        finished_at: datetime,
        key: str | None = None,
    ) -> RunRecord:
        """Append a finished run to the repository's history and return it.

        With ``key`` (e.g. the job's key) the run is recorded once: a job run again after a
        crash records nothing a second time.
        """

    @abstractmethod
    async def recent_runs(self, repo: str, *, limit: int = 14) -> list[RunRecord]:
        """Return at most ``limit`` runs of ``repo``, newest ``finished_at`` first."""

    # -- metrics --------------------------------------------------------------------

    @abstractmethod
    async def job_counts(self) -> dict[JobState, int]:
        """Return the number of jobs in each state (every state present, zeros included)."""

    @abstractmethod
    async def delivery_count(self) -> int:
        """Return the number of deliveries recorded."""

    @abstractmethod
    async def known_deliveries(self, delivery_ids: Collection[str]) -> set[str]:
        """Return those of ``delivery_ids`` the store has recorded."""

    # -- small key-value cache --------------------------------------------------------

    @abstractmethod
    async def get_value(self, namespace: str, key: str) -> str | None:
        """Return the text stored under ``(namespace, key)``, or None."""

    @abstractmethod
    async def set_value(self, namespace: str, key: str, value: str) -> None:
        """Store (or replace) text under ``(namespace, key)``, e.g. an issue number or ETag."""

    @abstractmethod
    async def delete_value(self, namespace: str, key: str) -> bool:
        """Delete ``(namespace, key)``; False if it was not there."""

    @abstractmethod
    async def list_values(self, namespace: str, *, limit: int = 1000) -> dict[str, str]:
        """Return up to ``limit`` entries of ``namespace`` (key -> text), oldest write first."""

    # -- claims: once-per-repository work across processes ------------------------------

    @abstractmethod
    async def acquire_claim(self, name: str, holder: str, *, ttl: timedelta) -> bool:
        """Take the claim ``name`` for ``holder`` until ``ttl`` from now; True if taken.

        A claim is held by one holder at a time across every process on the store; an
        expired claim (its holder died or hung) can be taken by anyone, and the holder can
        take its own claim again to extend it.
        """

    @abstractmethod
    async def release_claim(self, name: str, holder: str) -> bool:
        """Release ``name`` if ``holder`` still holds it; False if it did not."""
