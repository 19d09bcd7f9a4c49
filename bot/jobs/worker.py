"""Durable job workers: claim due jobs from the store, run each under a kept-alive lease, finish fenced.

Delivery is at least once (see ``bot.store.base``): a job whose worker died is requeued when
its lease expires and runs again, so every handler must be idempotent. A worker that loses
its lease (another replica requeued the job) cancels its handler and leaves the job alone:
whoever holds the lease now owns the outcome.
"""

import asyncio
import contextvars
import itertools
import logging
import os
import random
import secrets
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from types import MappingProxyType

from bot.errors import BotError
from bot.logs import context_fields
from bot.logs import delivery_id as delivery_context
from bot.store import Job, Store
from bot.telemetry import Telemetry
from engine.errors import one_line

log = logging.getLogger("model_guard.worker")

JobHandler = Callable[[Job], Awaitable[None]]

# The job being handled, for handlers and log formatters that want its id, kind or key.
current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar(
    "current_job", default=None
)

_ERROR_LIMIT = 400


class RetryableJobError(BotError):
    """The job failed for a passing reason (e.g. GitHub is down): run it again after a backoff."""


class PermanentJobError(BotError):
    """The job cannot succeed as asked: mark it failed with this message and do not retry."""


class WorkerError(BotError):
    """The worker pool was configured or driven wrongly (bad options, started twice)."""


class RequeueMode(Enum):
    """Which running jobs ``WorkerPool.start`` hands back to the queue."""

    # Only jobs whose lease expired: safe beside other live replicas.
    EXPIRED = "expired"
    # Every running job: only for a single-process deployment, where no other worker lives.
    ALL = "all"


def now_utc() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkerOptions:
    """How many workers run, how long their leases last and how failed jobs back off."""

    workers: int = 2
    lease_seconds: float = 120.0
    heartbeat_seconds: float | None = None
    poll_seconds: float = 1.0
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    # Each backoff is shortened by a random fraction up to this, so retries spread out.
    jitter: float = 0.25
    requeue_on_start: RequeueMode = RequeueMode.EXPIRED
    # How often a running pool requeues jobs abandoned by dead replicas (default: one lease).
    reap_seconds: float | None = None

    def __post_init__(self) -> None:
        """Refuse options that cannot work (a heartbeat no shorter than the lease, ...)."""
        if self.workers < 0:
            raise WorkerError(f"workers must be >= 0, got {self.workers}")
        for name in ("lease_seconds", "poll_seconds", "retry_base_seconds"):
            if not getattr(self, name) > 0:
                raise WorkerError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.retry_max_seconds < self.retry_base_seconds:
            raise WorkerError(
                f"retry_max_seconds ({self.retry_max_seconds}) must be >= retry_base_seconds"
                f" ({self.retry_base_seconds})"
            )
        if not 0.0 <= self.jitter < 1.0:
            raise WorkerError(f"jitter must be in [0, 1), got {self.jitter}")
        if not 0 < self.heartbeat < self.lease_seconds:
            raise WorkerError(
                f"heartbeat_seconds ({self.heartbeat}) must be > 0 and shorter than"
                f" lease_seconds ({self.lease_seconds}), or the lease lapses between beats"
            )
        if not self.reap_interval > 0:
            raise WorkerError(f"reap_seconds must be > 0, got {self.reap_seconds}")

    @property
    def heartbeat(self) -> float:
        """Seconds between lease extensions: ``heartbeat_seconds``, or a third of the lease."""
        if self.heartbeat_seconds is None:
            return self.lease_seconds / 3
        return self.heartbeat_seconds

    @property
    def reap_interval(self) -> float:
        """Seconds between sweeps for expired leases: ``reap_seconds``, or one lease."""
        return self.lease_seconds if self.reap_seconds is None else self.reap_seconds


def compute_backoff(
    attempts: int, *, base: float, cap: float, jitter: float = 0.0, rng: random.Random | None = None
) -> float:
    """Return the seconds to wait after failed attempt ``attempts``: base * 2**(attempts-1), capped.

    Jitter shortens the delay by a random fraction up to ``jitter`` (never lengthens it, so
    the cap holds), which keeps jobs that failed together from retrying together.
    """
    exponent = min(max(attempts - 1, 0), 60)
    delay = min(cap, base * 2.0**exponent)
    draw = (rng or random).random()
    return delay * (1.0 - jitter * draw)


def describe_error(error: BaseException) -> str:
    """Return an error as one line, its class name then its message, without a traceback."""
    detail = one_line(str(error), limit=_ERROR_LIMIT)
    name = type(error).__name__
    return f"{name}: {detail}" if detail else name


def default_worker_prefix() -> str:
    """Return ``host:pid:random``, unique among the workers alive at one time."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class _Lease:
    """Whether the heartbeat found the lease taken away while the handler ran."""

    def __init__(self) -> None:
        self.lost = False


class WorkerPool:
    """A set of asyncio workers that claim jobs of the kinds they have handlers for."""

    def __init__(
        self,
        store: Store,
        handlers: Mapping[str, JobHandler],
        *,
        options: WorkerOptions = WorkerOptions(),
        telemetry: Telemetry | None = None,
        worker_prefix: str | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        """Configure the pool; nothing runs until ``start()`` (or ``run_once()``)."""
        self._store = store
        self._handlers = dict(handlers)
        self._options = options
        self._telemetry = telemetry
        self._prefix = worker_prefix or default_worker_prefix()
        self._clock = clock
        self._rng = random.Random()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._reaper: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._once = itertools.count(1)

    @property
    def worker_prefix(self) -> str:
        """The prefix of every worker id this pool leases jobs under."""
        return self._prefix

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return bool(self._loops) or self._reaper is not None

    async def start(self) -> None:
        """Requeue jobs abandoned by a dead process, then start the worker tasks."""
        if self.running:
            raise WorkerError("worker pool is already started")
        self._stopping = False
        if self._options.requeue_on_start is RequeueMode.ALL:
            requeued = await self._store.requeue_all_running()
        else:
            requeued = await self._store.requeue_abandoned(now=self._clock())
        log.info(
            "worker pool starting",
            extra={
                "fields": {
                    "workers": self._options.workers,
                    "worker_prefix": self._prefix,
                    "requeued": requeued,
                    "requeue_mode": self._options.requeue_on_start.value,
                    "kinds": sorted(self._handlers),
                }
            },
        )
        self._loops = [
            asyncio.create_task(self._work(f"{self._prefix}/{n}"), name=f"worker-{n}")
            for n in range(self._options.workers)
        ]
        self._reaper = asyncio.create_task(self._reap(), name="worker-reaper")
        if self._loops:
            self._listener = asyncio.create_task(self._listen(), name="worker-listener")

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop claiming; let running jobs finish within ``grace`` seconds, then cancel them.

        A cancelled job keeps its lease until it expires; then any replica (or this one on
        its next start) requeues it.
        """
        self._stopping = True
        self._wakeup.set()
        reaper, self._reaper = self._reaper, None
        listener, self._listener = self._listener, None
        loops, self._loops = self._loops, []
        for task in (reaper, listener):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not loops:
            return
        _, pending = await asyncio.wait(loops, timeout=max(grace, 0.0))
        if pending:
            log.warning(
                "cancelling jobs still running after the grace period",
                extra={"fields": {"grace_seconds": grace, "workers": len(pending)}},
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("worker pool stopped", extra={"fields": {"worker_prefix": self._prefix}})

    def wake(self) -> None:
        """Nudge idle workers to claim now instead of at their next poll."""
        self._wakeup.set()

    async def run_once(self) -> Job | None:
        """Claim and run at most one due job; return the job as claimed, or None if none was due."""
        worker_id = f"{self._prefix}/once-{next(self._once)}"
        job = await self._claim(worker_id)
        if job is not None:
            await self._execute(job, worker_id)
        return job

    async def run_until_idle(self, *, limit: int = 1000) -> int:
        """Run due jobs one after another until none is due (or ``limit`` ran); return how many."""
        ran = 0
        while ran < limit and await self.run_once() is not None:
            ran += 1
        return ran

    # -- the loops ------------------------------------------------------------------

    async def _work(self, worker_id: str) -> None:
        """One worker: claim, run, repeat; wait for a wake-up or the poll interval when idle."""
        while not self._stopping:
            try:
                job = await self._claim(worker_id)
                if job is not None:
                    await self._execute(job, worker_id)
                    continue
            except Exception as error:
                # A busy or failing store must not kill the worker; the lease (if any) expires
                # and the job is requeued, so nothing is lost by trying again later.
                log.error(
                    "worker iteration failed: %s",
                    describe_error(error),
                    extra={"fields": {"worker": worker_id}},
                )
            await self._idle()

    async def _listen(self) -> None:
        """Wake idle workers whenever the store says a job may be claimable (any replica's).

        The store's wake-up (PostgreSQL: ``LISTEN``/``NOTIFY``) replaces waiting out the
        poll interval; while it is unavailable the workers' own poll still finds every job.
        """
        while True:
            try:
                woken = await self._store.wait_for_work(self._options.poll_seconds)
            except Exception as error:
                log.warning("waiting for work failed: %s", describe_error(error))
                await asyncio.sleep(self._options.poll_seconds)
                continue
            if woken:
                self.wake()

    async def _idle(self) -> None:
        try:
            async with asyncio.timeout(self._options.poll_seconds):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _reap(self) -> None:
        """Now and then requeue jobs whose lease expired (their worker died elsewhere)."""
        while True:
            await asyncio.sleep(self._options.reap_interval)
            try:
                requeued = await self._store.requeue_abandoned(now=self._clock())
            except Exception as error:
                log.warning("requeue of abandoned jobs failed: %s", describe_error(error))
                continue
            if requeued:
                log.info("requeued abandoned jobs", extra={"fields": {"requeued": requeued}})
                self.wake()

    async def _claim(self, worker_id: str) -> Job | None:
        if not self._handlers:
            return None
        return await self._store.claim_job(
            worker_id,
            lease_seconds=self._options.lease_seconds,
            now=self._clock(),
            kinds=tuple(self._handlers),
        )

    # -- one job --------------------------------------------------------------------

    async def _execute(self, job: Job, worker_id: str) -> None:
        """Run the handler for a claimed job under a heartbeat, then record its outcome."""
        fields: dict[str, object] = {
            "job_id": job.id,
            "kind": job.kind,
            "key": job.key,
            "attempt": job.attempts,
            "worker": worker_id,
        }
        job_token = current_job.set(job)
        delivery_token = delivery_context.set(job.delivery_id)
        # Every log line of the handler (it runs in a copy of this context) names the job.
        fields_token = context_fields.set(
            MappingProxyType({"job_id": job.id, "job_kind": job.kind, "job_key": job.key})
        )
        started = time.perf_counter()
        try:
            log.info("job started", extra={"fields": fields})
            # The handler task copies this context, so its own logs carry the delivery id.
            handler = asyncio.create_task(self._invoke(job), name=f"job-{job.id}")
            lease = _Lease()
            beat = asyncio.create_task(self._heartbeat(job, worker_id, handler, lease, fields))
            try:
                await asyncio.wait({handler})
            finally:
                beat.cancel()
                if not handler.done():
                    handler.cancel()
                await asyncio.gather(handler, beat, return_exceptions=True)
            await self._finish(job, worker_id, handler, lease=lease, fields=fields)
        finally:
            if self._telemetry is not None:
                elapsed = time.perf_counter() - started
                self._telemetry.job_seconds.labels(kind=job.kind).observe(elapsed)
            context_fields.reset(fields_token)
            delivery_context.reset(delivery_token)
            current_job.reset(job_token)

    async def _invoke(self, job: Job) -> None:
        await self._handlers[job.kind](job)

    async def _heartbeat(
        self,
        job: Job,
        worker_id: str,
        handler: "asyncio.Task[None]",
        lease: _Lease,
        fields: Mapping[str, object],
    ) -> None:
        """Extend the lease every heartbeat; cancel the handler as soon as the lease is gone."""
        while True:
            await asyncio.sleep(self._options.heartbeat)
            try:
                held = await self._store.extend_lease(
                    job.id,
                    worker_id=worker_id,
                    lease_seconds=self._options.lease_seconds,
                    now=self._clock(),
                )
            except Exception as error:
                # Keep trying: the lease is still ours until someone requeues it.
                log.warning(
                    "lease extension failed: %s", describe_error(error), extra={"fields": fields}
                )
                continue
            if not held:
                lease.lost = True
                log.error(
                    "lease lost while the job ran; cancelling it and leaving the job to its new"
                    " holder",
                    extra={"fields": fields},
                )
                handler.cancel()
                return

    async def _finish(
        self,
        job: Job,
        worker_id: str,
        handler: "asyncio.Task[None]",
        *,
        lease: _Lease,
        fields: dict[str, object],
    ) -> None:
        """Complete or fail the job from its handler's outcome (nothing if the lease was lost)."""
        if lease.lost:
            return
        if handler.cancelled():
            error: BaseException | None = RetryableJobError("the handler was cancelled")
        else:
            error = handler.exception()
        if error is None:
            if await self._store.complete_job(job.id, worker_id=worker_id):
                log.info("job done", extra={"fields": fields})
            else:
                log.warning("job finished but its lease was lost", extra={"fields": fields})
            return
        if isinstance(error, PermanentJobError):
            text = one_line(str(error), limit=_ERROR_LIMIT) or type(error).__name__
            retry_at = None
            log.error("job failed permanently: %s", text, extra={"fields": fields})
        else:
            text = describe_error(error)
            delay = compute_backoff(
                job.attempts,
                base=self._options.retry_base_seconds,
                cap=self._options.retry_max_seconds,
                jitter=self._options.jitter,
                rng=self._rng,
            )
            retry_at = self._clock() + timedelta(seconds=delay)
            final = job.attempts >= job.max_attempts
            detail = {
                **fields,
                "last_error": text,
                "retry_at": None if final else retry_at.isoformat(),
                "attempts_left": max(job.max_attempts - job.attempts, 0),
            }
            message = "job failed, no attempts left" if final else "job failed, will retry"
            if isinstance(error, RetryableJobError):
                # A job out of attempts did not happen: an error, not a passing warning.
                level = logging.ERROR if final else logging.WARNING
                log.log(level, "%s: %s", message, text, extra={"fields": detail})
            else:
                # The JSON formatter keeps only the exception's one line, so send the
                # traceback as a field: an unexpected error needs it to be fixed.
                detail["traceback"] = "".join(traceback.format_exception(error))
                log.error("%s: %s", message, text, exc_info=error, extra={"fields": detail})
        if not await self._store.fail_job(
            job.id, worker_id=worker_id, error=text, retry_at=retry_at
        ):
            log.warning("job failed but its lease was lost", extra={"fields": fields})
