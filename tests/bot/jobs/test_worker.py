"""Tests for the durable job workers on a real SQLite store: outcomes, backoff, leases, crashes."""

import asyncio
import json
import logging
import multiprocessing
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import SettingsError
from bot.jobs.worker import (
    PermanentJobError,
    RequeueMode,
    RetryableJobError,
    WorkerError,
    WorkerOptions,
    WorkerPool,
    compute_backoff,
    current_job,
)
from bot.logs import JsonFormatter
from bot.settings import Settings
from bot.store import Job, JobSpec, JobState, SqliteStore
from bot.telemetry import Telemetry
from tests.conftest import DateClock

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
REPO = "octo-org/vqm-registry"
FAST = WorkerOptions(workers=2, lease_seconds=30.0, poll_seconds=0.02, jitter=0.25)


@pytest.fixture
def clock() -> DateClock:
    return DateClock(T0)


@pytest.fixture
async def store(db_path: Path, clock: DateClock) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db_path, clock=clock) as opened:
        yield opened


@pytest.fixture
async def live_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    """A store on the real clock, for tests where leases must really run out."""
    async with SqliteStore(db_path) as opened:
        yield opened


def spec(key: str, *, kind: str = "bisect", **kwargs: Any) -> JobSpec:
    return JobSpec(kind, key, {"repo": REPO, "key": key}, **kwargs)


async def enqueue(store: SqliteStore, key: str, **kwargs: Any) -> Job:
    job = await store.enqueue(spec(key, **kwargs))
    assert job is not None
    return job


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds; fail the test if it never does."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


def failing(error: BaseException) -> Callable[[Job], Awaitable[None]]:
    async def handler(job: Job) -> None:
        raise error

    return handler


# -- outcomes ---------------------------------------------------------------------------


async def test_queued_job_runs_once_is_completed_and_its_duration_recorded(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:1")
    seen: list[tuple[int, int | None]] = []

    async def handler(claimed: Job) -> None:
        running = current_job.get()
        seen.append((claimed.id, None if running is None else running.id))

    telemetry = Telemetry.create()
    pool = WorkerPool(store, {"bisect": handler}, options=FAST, telemetry=telemetry, clock=clock)
    assert await pool.run_until_idle() == 1
    assert seen == [(job.id, job.id)]
    done = await store.get_job(job.id)
    assert done is not None
    assert done.state is JobState.DONE
    assert done.attempts == 1
    count = telemetry.registry.get_sample_value("model_guard_job_seconds_count", {"kind": "bisect"})
    assert count == 1.0
    assert await pool.run_once() is None


async def test_log_lines_a_handler_writes_name_its_job_and_carry_no_token(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:logs")
    lines: list[str] = []

    class Keep(logging.Handler):  # formats as the record is emitted, like a stream handler
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    async def handler(claimed: Job) -> None:
        logging.getLogger("model_guard.test").warning("judging with token ghs_%s", "a" * 36)

    keep = Keep()
    logger = logging.getLogger("model_guard.test")
    logger.addHandler(keep)
    try:
        pool = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
        assert await pool.run_until_idle() == 1
    finally:
        logger.removeHandler(keep)
    line = json.loads(lines[0])
    assert (line["job_id"], line["job_kind"], line["job_key"]) == (job.id, "bisect", "bisect:logs")
    assert "ghs_" not in line["message"] and "[redacted]" in line["message"]
    outside = json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "idle"})))
    assert "job_id" not in outside


async def test_handler_raising_is_retried_later_with_doubling_backoff_and_a_one_line_error(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:flaky")
    base = 30.0
    options = WorkerOptions(retry_base_seconds=base, retry_max_seconds=3600.0, jitter=0.25)
    pool = WorkerPool(
        store,
        {"bisect": failing(RuntimeError("GitHub answered 502\n  Bad Gateway"))},
        options=options,
        clock=clock,
    )
    assert await pool.run_once() is not None
    first = await store.get_job(job.id)
    assert first is not None
    assert first.state is JobState.QUEUED
    assert first.last_error == "RuntimeError: GitHub answered 502 Bad Gateway"
    assert T0 + timedelta(seconds=base * 0.75) <= first.run_at <= T0 + timedelta(seconds=base)
    # Not due yet: nothing runs until the backoff has passed.
    assert await pool.run_once() is None

    clock.now = first.run_at
    assert await pool.run_once() is not None
    second = await store.get_job(job.id)
    assert second is not None
    assert second.attempts == 2
    assert second.state is JobState.QUEUED
    low, high = (
        first.run_at + timedelta(seconds=2 * base * 0.75),
        first.run_at + timedelta(seconds=2 * base),
    )
    assert low <= second.run_at <= high


async def test_unexpected_error_is_logged_with_job_id_and_traceback_at_error_level(
    store: SqliteStore, clock: DateClock, caplog: pytest.LogCaptureFixture
) -> None:
    job = await enqueue(store, "bisect:boom")
    pool = WorkerPool(store, {"bisect": failing(KeyError("sha"))}, options=FAST, clock=clock)
    with caplog.at_level(logging.INFO, logger="model_guard.worker"):
        await pool.run_once()
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    fields = errors[0].fields  # type: ignore[attr-defined]
    assert fields["job_id"] == job.id
    assert fields["kind"] == "bisect"
    assert fields["key"] == "bisect:boom"
    assert "Traceback (most recent call last)" in fields["traceback"]
    assert fields["last_error"] == "KeyError: 'sha'"


async def test_retryable_job_error_is_requeued_and_logged_as_a_warning(
    store: SqliteStore, clock: DateClock, caplog: pytest.LogCaptureFixture
) -> None:
    job = await enqueue(store, "bisect:github-down")
    handler = failing(RetryableJobError("GitHub is down"))
    pool = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
    with caplog.at_level(logging.INFO, logger="model_guard.worker"):
        await pool.run_once()
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.QUEUED
    assert stored.last_error == "RetryableJobError: GitHub is down"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_retryable_error_on_the_last_attempt_fails_the_job_at_error_level(
    store: SqliteStore, clock: DateClock, caplog: pytest.LogCaptureFixture
) -> None:
    spec = JobSpec(kind="bisect", key="bisect:down-for-good", payload={}, max_attempts=1)
    job = await store.enqueue(spec)
    assert job is not None
    pool = WorkerPool(
        store, {"bisect": failing(RetryableJobError("GitHub is down"))}, options=FAST, clock=clock
    )
    with caplog.at_level(logging.INFO, logger="model_guard.worker"):
        await pool.run_once()
    stored = await store.get_job(job.id)
    assert stored is not None and stored.state is JobState.FAILED
    (error,) = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert error.getMessage() == "job failed, no attempts left: RetryableJobError: GitHub is down"


async def test_permanent_job_error_fails_the_job_at_once_with_its_message(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:bad-config", max_attempts=5)
    handler = failing(PermanentJobError("config/model-guard.yml: 'cache' is required"))
    pool = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
    await pool.run_once()
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.FAILED
    assert stored.attempts == 1
    assert stored.last_error == "config/model-guard.yml: 'cache' is required"
    clock.advance(86_400)
    assert await pool.run_once() is None


async def test_job_that_keeps_failing_is_failed_when_its_attempts_run_out(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:always-broken", max_attempts=3)
    pool = WorkerPool(store, {"bisect": failing(OSError("disk full"))}, options=FAST, clock=clock)
    for _ in range(3):
        clock.advance(86_400)
        assert await pool.run_once() is not None
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.FAILED
    assert stored.attempts == 3
    assert stored.last_error == "OSError: disk full"
    clock.advance(86_400)
    assert await pool.run_once() is None


async def test_jobs_of_kinds_without_a_handler_are_left_queued(
    store: SqliteStore, clock: DateClock
) -> None:
    other = await enqueue(store, "comment:1", kind="comment")
    mine = await enqueue(store, "bisect:2")
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    pool = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
    assert await pool.run_until_idle() == 1
    assert ran == [mine.id]
    untouched = await store.get_job(other.id)
    assert untouched is not None
    assert untouched.state is JobState.QUEUED
    assert untouched.attempts == 0


# -- leases -----------------------------------------------------------------------------


async def test_lease_is_extended_while_a_slow_handler_runs_so_no_one_can_take_the_job(
    live_store: SqliteStore, db_path: Path
) -> None:
    job = await enqueue(live_store, "bisect:slow")
    options = WorkerOptions(lease_seconds=1.0, heartbeat_seconds=0.1, poll_seconds=0.02)
    started = asyncio.Event()

    async def slow(claimed: Job) -> None:
        started.set()
        await asyncio.sleep(2.5)  # more than two leases

    pool = WorkerPool(live_store, {"bisect": slow}, options=options, worker_prefix="owner")
    stolen: list[Job] = []
    requeued = 0
    async with SqliteStore(db_path) as other:
        run = asyncio.create_task(pool.run_once())
        await asyncio.wait_for(started.wait(), 10)
        while not run.done():
            requeued += await other.requeue_abandoned()
            if (taken := await other.claim_job("thief", lease_seconds=60)) is not None:
                stolen.append(taken)
            await asyncio.sleep(0.05)
        assert await run is not None
    assert stolen == []
    assert requeued == 0
    stored = await live_store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.DONE
    assert stored.attempts == 1


async def test_worker_that_loses_its_lease_cancels_the_handler_and_leaves_the_job_alone(
    live_store: SqliteStore, db_path: Path
) -> None:
    job = await enqueue(live_store, "bisect:lost")
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(claimed: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    options = WorkerOptions(lease_seconds=5.0, heartbeat_seconds=0.05, poll_seconds=0.02)
    pool = WorkerPool(live_store, {"bisect": handler}, options=options)
    run = asyncio.create_task(pool.run_once())
    await asyncio.wait_for(started.wait(), 10)
    async with SqliteStore(db_path) as other:
        # What a second replica does on restart in a single-process deployment.
        assert await other.requeue_all_running() == 1
    await asyncio.wait_for(run, 10)
    assert cancelled.is_set()
    stored = await live_store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.QUEUED
    assert stored.claimed_by is None
    assert stored.attempts == 1


# -- several workers and processes ------------------------------------------------------


async def test_two_pools_on_one_file_never_run_the_same_job_twice_over_200_jobs(
    store: SqliteStore, db_path: Path
) -> None:
    expected = {(await enqueue(store, f"job-{n}")).id for n in range(200)}
    runs: Counter[int] = Counter()
    by_pool: Counter[str] = Counter()

    def handler_for(name: str) -> Callable[[Job], Awaitable[None]]:
        async def handler(job: Job) -> None:
            runs[job.id] += 1
            by_pool[name] += 1
            await asyncio.sleep(0.001)

        return handler

    options = WorkerOptions(workers=3, lease_seconds=60.0, poll_seconds=0.02)
    stores = [SqliteStore(db_path), SqliteStore(db_path)]
    pools = []
    for name, own in zip(("a", "b"), stores, strict=True):
        await own.open()
        pools.append(WorkerPool(own, {"bisect": handler_for(name)}, options=options))
    try:
        for pool in pools:
            await pool.start()
        await wait_until(lambda: _done_count(store, 200))
    finally:
        for pool in pools:
            await pool.stop()
        for own in stores:
            await own.close()
    assert set(runs) == expected
    assert set(runs.values()) == {1}
    assert by_pool["a"] > 0
    assert by_pool["b"] > 0


async def _done_count(store: SqliteStore, count: int) -> bool:
    return (await store.job_counts())[JobState.DONE] == count


def _work_in_process(path: str, start: Any, stop: Any, results: Any) -> None:
    """Child process: run a WorkerPool on the shared file until told to stop; report job ids."""
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)
        await asyncio.sleep(0.001)

    async def run() -> None:
        async with SqliteStore(path) as store:
            options = WorkerOptions(workers=3, lease_seconds=60.0, poll_seconds=0.02)
            pool = WorkerPool(store, {"bisect": handler}, options=options, worker_prefix="child")
            start.wait(30)
            await pool.start()
            await asyncio.to_thread(stop.wait, 60)
            await pool.stop()

    asyncio.run(run())
    results.put(ran)


async def test_pool_in_a_second_os_process_and_this_one_never_run_the_same_job_twice(
    store: SqliteStore, db_path: Path
) -> None:
    expected = {(await enqueue(store, f"job-{n}")).id for n in range(200)}
    context = multiprocessing.get_context("spawn")
    start, stop, results = context.Barrier(2), context.Event(), context.Queue()
    child = context.Process(target=_work_in_process, args=(str(db_path), start, stop, results))
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)
        await asyncio.sleep(0.001)

    async with SqliteStore(db_path) as own:
        options = WorkerOptions(workers=3, lease_seconds=60.0, poll_seconds=0.02)
        pool = WorkerPool(own, {"bisect": handler}, options=options, worker_prefix="parent")
        child.start()
        try:
            await asyncio.to_thread(start.wait, 30)
            await pool.start()
            await wait_until(lambda: _done_count(store, 200))
        finally:
            await pool.stop()
            stop.set()
            child_ran = await asyncio.to_thread(results.get, True, 30)
            await asyncio.to_thread(child.join, 30)
            results.close()
            results.join_thread()
    assert child.exitcode == 0
    assert ran, "this process ran no job: the test did not exercise two processes"
    assert child_ran, "the child ran no job: the test did not exercise two processes"
    runs = Counter(ran + child_ran)
    assert set(runs) == expected
    assert set(runs.values()) == {1}


# -- start and stop ---------------------------------------------------------------------


async def test_job_left_running_with_an_expired_lease_is_requeued_on_start_and_finishes(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "nightly:octo-org/vqm-registry:2026-11-22")
    assert await store.claim_job("crashed-host:1:abc/0", lease_seconds=120) is not None
    clock.advance(121)
    finished = asyncio.Event()

    async def handler(claimed: Job) -> None:
        finished.set()

    pool = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
    await pool.start()
    try:
        await asyncio.wait_for(finished.wait(), 10)
        await wait_until(lambda: _done_count(store, 1))
    finally:
        await pool.stop()
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.attempts == 2


async def test_running_pool_requeues_a_job_whose_worker_died_elsewhere_and_runs_it(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:orphan")
    assert await store.claim_job("dead-replica/0", lease_seconds=30) is not None
    options = WorkerOptions(workers=1, lease_seconds=30.0, poll_seconds=0.02, reap_seconds=0.02)
    finished = asyncio.Event()

    async def handler(claimed: Job) -> None:
        finished.set()

    pool = WorkerPool(store, {"bisect": handler}, options=options, clock=clock)
    await pool.start()  # the lease is still live: nothing to requeue yet
    try:
        clock.advance(31)  # the other replica never extends it: it expires while we run
        await asyncio.wait_for(finished.wait(), 10)
        await wait_until(lambda: _done_count(store, 1))
    finally:
        await pool.stop()
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.attempts == 2


async def test_start_leaves_a_live_lease_alone_unless_told_to_requeue_all(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:live")
    assert await store.claim_job("other-replica/0", lease_seconds=120) is not None

    async def handler(claimed: Job) -> None:
        return None

    careful = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
    await careful.start()
    await careful.stop()
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.RUNNING
    assert stored.claimed_by == "other-replica/0"

    single = WorkerOptions(poll_seconds=0.02, requeue_on_start=RequeueMode.ALL)
    owner = WorkerPool(store, {"bisect": handler}, options=single, clock=clock)
    await owner.start()
    try:
        await wait_until(lambda: _done_count(store, 1))
    finally:
        await owner.stop()


async def test_stop_with_grace_lets_a_running_job_finish(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:finishing")
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(claimed: Job) -> None:
        started.set()
        await release.wait()

    pool = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
    await pool.start()
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(pool.stop(grace=30))
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 30)
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.DONE


async def test_stop_cancels_a_job_still_running_after_grace_and_keeps_its_lease(
    store: SqliteStore, clock: DateClock
) -> None:
    job = await enqueue(store, "bisect:stuck")
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(claimed: Job) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    pool = WorkerPool(store, {"bisect": handler}, options=FAST, clock=clock)
    await pool.start()
    await asyncio.wait_for(started.wait(), 10)
    await pool.stop(grace=0.05)
    assert cancelled.is_set()
    assert not pool.running
    stored = await store.get_job(job.id)
    assert stored is not None
    # Left to its lease: the next start (or any replica) requeues it once the lease expires.
    assert stored.state is JobState.RUNNING
    clock.advance(FAST.lease_seconds + 1)
    assert await store.requeue_abandoned() == 1


async def test_wake_makes_an_idle_worker_claim_without_waiting_for_its_poll(
    store: SqliteStore, clock: DateClock
) -> None:
    finished = asyncio.Event()

    async def handler(claimed: Job) -> None:
        finished.set()

    # A poll far longer than the test's timeout: only wake() can get the job run in time.
    options = WorkerOptions(workers=1, poll_seconds=3600.0, lease_seconds=7200.0)
    pool = WorkerPool(store, {"bisect": handler}, options=options, clock=clock)
    await pool.start()
    try:
        await asyncio.sleep(0.05)  # let the worker find nothing and go idle
        await enqueue(store, "bisect:woken")
        pool.wake()
        await asyncio.wait_for(finished.wait(), 10)
    finally:
        await pool.stop()


async def test_starting_a_started_pool_is_refused(store: SqliteStore, clock: DateClock) -> None:
    pool = WorkerPool(store, {}, options=FAST, clock=clock)
    await pool.start()
    try:
        with pytest.raises(WorkerError, match="already started"):
            await pool.start()
    finally:
        await pool.stop()


# -- backoff, options and settings ------------------------------------------------------


def test_backoff_doubles_per_attempt_until_the_cap() -> None:
    delays = [compute_backoff(n, base=30.0, cap=3600.0) for n in range(1, 10)]
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0]
    assert compute_backoff(10_000, base=30.0, cap=3600.0) == 3600.0


def test_backoff_jitter_only_shortens_the_delay_within_its_fraction() -> None:
    rng = random.Random(7)
    delays = [compute_backoff(3, base=30.0, cap=3600.0, jitter=0.5, rng=rng) for _ in range(200)]
    assert all(60.0 <= delay <= 120.0 for delay in delays)
    assert len(set(delays)) > 100


def test_worker_options_refuse_a_heartbeat_not_shorter_than_the_lease() -> None:
    with pytest.raises(WorkerError, match="heartbeat"):
        WorkerOptions(lease_seconds=10.0, heartbeat_seconds=10.0)
    assert WorkerOptions(lease_seconds=90.0).heartbeat == 30.0


def test_settings_give_worker_options_from_lease_poll_and_requeue_variables() -> None:
    settings = Settings.from_env(
        {
            "GITHUB_WEBHOOK_SECRET": "x",
            "MODEL_GUARD_WORKERS": "3",
            "MODEL_GUARD_LEASE_S": "45",
            "MODEL_GUARD_POLL_S": "0.25",
            "MODEL_GUARD_REQUEUE_ON_START": "all",
        }
    )
    options = settings.worker_options()
    assert options.workers == 3
    assert options.lease_seconds == 45.0
    assert options.poll_seconds == 0.25
    assert options.requeue_on_start is RequeueMode.ALL
    defaults = Settings.from_env({"GITHUB_WEBHOOK_SECRET": "x"}).worker_options()
    assert (defaults.lease_seconds, defaults.poll_seconds) == (120.0, 1.0)
    assert defaults.requeue_on_start is RequeueMode.EXPIRED


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MODEL_GUARD_REQUEUE_ON_START", "sometimes", "must be expired|all, not 'sometimes'"),
        ("MODEL_GUARD_LEASE_S", "soon", "MODEL_GUARD_LEASE_S must be a number, not 'soon'"),
        ("MODEL_GUARD_POLL_S", "nan", "MODEL_GUARD_POLL_S must be between"),
        ("MODEL_GUARD_LEASE_S", "1", "MODEL_GUARD_LEASE_S must be between 3 and 86400, not 1"),
    ],
)
def test_settings_refuse_bad_worker_variables_with_one_line(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"GITHUB_WEBHOOK_SECRET": "x", name: value})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
