"""Tests for the durable store: dedup, atomic writes, exclusive claims, leases, schedules."""

import asyncio
import multiprocessing
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.store import (
    Delivery,
    InvalidValueError,
    JobSpec,
    JobState,
    SchemaVersionError,
    SqliteStore,
    Store,
    StoreNotOpenError,
)
from bot.store.sqlite import MIGRATIONS
from tests.bot.store.conftest import Backend
from tests.conftest import DateClock

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=365)
REPO = "octo-org/vqm-registry"


@pytest.fixture
def clock() -> DateClock:
    return DateClock(T0)


@pytest.fixture
async def store(backend: Backend, clock: DateClock) -> AsyncIterator[Store]:
    async with backend.make(clock) as opened:
        yield opened


def make_delivery(delivery_id: str = "d-1") -> Delivery:
    return Delivery(
        delivery_id=delivery_id,
        event="issue_comment",
        action="created",
        installation_id=42,
        repository=REPO,
        received_at=T0,
        payload_sha256="0" * 64,
    )


def make_spec(key: str, **kwargs: Any) -> JobSpec:
    return JobSpec("bisect", key, {"repo": REPO, "key": key}, **kwargs)


async def test_store_runs_sqlite_in_wal_mode_with_schema_version_recorded(db_path: Path) -> None:
    async with SqliteStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    finally:
        conn.close()
    assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)] == [(1,), (2,), (3,), (4,)]


def _versions(backend: Backend) -> list[int]:
    return [
        int(str(row[0]))
        for row in backend.query("SELECT version FROM schema_migrations ORDER BY version")
    ]


def _known_versions(backend: Backend) -> int:
    if backend.name == "sqlite":
        return len(MIGRATIONS)
    from bot.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS

    return len(POSTGRES_MIGRATIONS)


async def test_reopening_a_store_keeps_its_data_and_applies_no_migration_twice(
    backend: Backend, clock: DateClock
) -> None:
    async with backend.make(clock) as first:
        await first.set_value("tracking", REPO, "7")
    async with backend.make(clock) as second:
        assert await second.get_value("tracking", REPO) == "7"
    assert _versions(backend) == list(range(1, _known_versions(backend) + 1))


async def test_three_stores_opening_one_new_database_at_once_migrate_it_once(
    backend: Backend,
) -> None:
    stores = [backend.make() for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        # Every opener works on the one schema: a delivery one records, the others see.
        assert await stores[0].record_delivery(make_delivery(), [make_spec("a")])
        assert [await store.delivery_count() for store in stores] == [1, 1, 1]
    finally:
        for store in stores:
            await store.close()
    assert _versions(backend) == list(range(1, _known_versions(backend) + 1))


async def test_open_refuses_a_database_migrated_by_newer_code(backend: Backend) -> None:
    async with backend.make():
        pass
    backend.query("INSERT INTO schema_migrations (version, applied_at) VALUES (99, '2030-01-01')")
    with pytest.raises(SchemaVersionError):
        await backend.make().open()


async def test_calls_before_open_or_after_close_raise_store_not_open(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(StoreNotOpenError):
        await store.delivery_count()
    await store.open()
    await store.close()
    with pytest.raises(StoreNotOpenError):
        await store.delivery_count()


async def test_record_delivery_returns_false_and_adds_no_jobs_when_delivery_id_repeats(
    store: Store,
) -> None:
    assert await store.record_delivery(make_delivery(), [make_spec("a"), make_spec("b")])
    again = await store.record_delivery(make_delivery(), [make_spec("c")])
    assert again is False
    assert await store.delivery_count() == 1
    assert (await store.job_counts())[JobState.QUEUED] == 2


async def test_record_delivery_writes_nothing_when_a_job_fails_mid_transaction(
    store: Store,
) -> None:
    bad = JobSpec("bisect", "bad", {"not json": object()})
    with pytest.raises(InvalidValueError):
        await store.record_delivery(make_delivery(), [make_spec("good"), bad])
    assert await store.delivery_count() == 0
    assert sum((await store.job_counts()).values()) == 0
    # The failed attempt left no trace: the same delivery can still be recorded.
    assert await store.record_delivery(make_delivery(), [make_spec("good")])


async def test_concurrent_deliveries_commit_together_yet_each_stands_or_falls_alone(
    store: Store,
) -> None:
    """64 deliveries at once (SQLite writes them in group commits): each id is stored once
    with its jobs, a copy of an id is refused, and one delivery whose job cannot be stored
    fails alone without taking the deliveries committed beside it down."""
    bad = JobSpec("bisect", "bad", {"not json": object()})

    async def deliver(n: int) -> bool:
        delivery_id = f"d-{n % 48}"  # ids 0-15 arrive twice
        jobs = [bad] if n == 5 else [make_spec(f"job-{n}")]
        return await store.record_delivery(make_delivery(delivery_id), jobs)

    results = await asyncio.gather(*(deliver(n) for n in range(64)), return_exceptions=True)
    failed = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [5] and isinstance(results[5], InvalidValueError)
    recorded = Counter(f"d-{n % 48}" for n, r in enumerate(results) if r is True)
    # d-5's copy (n = 53) is stored in its place; every other id once.
    assert sorted(recorded) == sorted(f"d-{i}" for i in range(48))
    assert set(recorded.values()) == {1}
    assert await store.delivery_count() == 48
    assert (await store.job_counts())[JobState.QUEUED] == 48


async def test_record_delivery_skips_a_job_whose_key_exists_but_records_the_delivery(
    store: Store,
) -> None:
    await store.enqueue(make_spec("shared"))
    assert await store.record_delivery(make_delivery(), [make_spec("shared"), make_spec("new")])
    job = await store.claim_job("w", lease_seconds=60)
    assert job is not None
    assert job.key == "shared"
    assert job.delivery_id is None
    second = await store.claim_job("w", lease_seconds=60)
    assert second is not None
    assert second.delivery_id == "d-1"
    assert await store.claim_job("w", lease_seconds=60) is None


async def test_enqueue_returns_none_when_the_key_exists_even_after_the_job_finished(
    store: Store,
) -> None:
    job = await store.enqueue(make_spec("nightly:o/r:2026-11-22"))
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.payload == {"repo": REPO, "key": "nightly:o/r:2026-11-22"}
    claimed = await store.claim_job("w", lease_seconds=60)
    assert claimed is not None
    assert await store.complete_job(claimed.id, worker_id="w")
    assert await store.enqueue(make_spec("nightly:o/r:2026-11-22")) is None


async def test_claim_takes_the_oldest_due_job_and_leaves_future_ones(
    store: Store, clock: DateClock
) -> None:
    await store.enqueue(make_spec("future", run_at=T0 + timedelta(hours=1)))
    await store.enqueue(make_spec("newer", run_at=T0 - timedelta(minutes=1)))
    await store.enqueue(make_spec("older", run_at=T0 - timedelta(minutes=5)))
    first = await store.claim_job("w", lease_seconds=30)
    assert first is not None
    assert first.key == "older"
    assert first.state is JobState.RUNNING
    assert first.attempts == 1
    assert first.claimed_by == "w"
    assert first.lease_until == T0 + timedelta(seconds=30)
    second = await store.claim_job("w", lease_seconds=30)
    assert second is not None
    assert second.key == "newer"
    assert await store.claim_job("w", lease_seconds=30) is None
    later = await store.claim_job("w", lease_seconds=30, now=T0 + timedelta(hours=1))
    assert later is not None
    assert later.key == "future"


async def test_claim_with_kinds_only_takes_jobs_of_those_kinds(store: Store) -> None:
    await store.enqueue(JobSpec("nightly", "n", {}))
    await store.enqueue(JobSpec("bisect", "b", {}))
    assert await store.claim_job("w", lease_seconds=30, kinds=[]) is None
    job = await store.claim_job("w", lease_seconds=30, kinds={"bisect"})
    assert job is not None
    assert job.key == "b"
    assert await store.claim_job("w", lease_seconds=30, kinds={"bisect"}) is None
    with pytest.raises(InvalidValueError):
        await store.claim_job("w", lease_seconds=30, kinds="nightly")


async def _drain(store: Store, worker_id: str) -> list[int]:
    """Claim and complete jobs until none is due; return the ids claimed."""
    claimed: list[int] = []
    while (job := await store.claim_job(worker_id, lease_seconds=300, now=LATER)) is not None:
        claimed.append(job.id)
        assert await store.complete_job(job.id, worker_id=worker_id)
    return claimed


async def _enqueue_many(store: Store, count: int) -> set[int]:
    ids: set[int] = set()
    for number in range(count):
        job = await store.enqueue(make_spec(f"job-{number}"))
        assert job is not None
        ids.add(job.id)
    return ids


async def test_eight_concurrent_workers_claim_each_of_200_jobs_exactly_once(
    store: Store, backend: Backend
) -> None:
    expected = await _enqueue_many(store, 200)
    # Each worker has its own store instance, so its own connection(s) to the database.
    workers = [backend.make() for _ in range(8)]
    for worker in workers:
        await worker.open()
    try:
        results = await asyncio.gather(
            *(_drain(worker, f"worker-{n}") for n, worker in enumerate(workers))
        )
    finally:
        for worker in workers:
            await worker.close()
    claims = Counter(job_id for ids in results for job_id in ids)
    assert set(claims) == expected
    assert set(claims.values()) == {1}
    assert await store.job_counts() == {
        JobState.QUEUED: 0,
        JobState.RUNNING: 0,
        JobState.DONE: 200,
        JobState.FAILED: 0,
    }


def _claim_in_process(backend: Backend, name: str, start: Any, results: Any) -> None:
    """Child process: open the store, wait for the start gate, drain with 4 workers."""

    async def run() -> list[int]:
        async with backend.make() as store:
            start.wait(30)
            batches = await asyncio.gather(*(_drain(store, f"{name}-{n}") for n in range(4)))
        return [job_id for batch in batches for job_id in batch]

    results.put((name, asyncio.run(run())))


async def test_two_processes_on_one_database_claim_each_of_200_jobs_exactly_once(
    store: Store, backend: Backend
) -> None:
    expected = await _enqueue_many(store, 200)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    results = context.Queue()
    processes = [
        context.Process(target=_claim_in_process, args=(backend, name, start, results))
        for name in ("proc-a", "proc-b")
    ]
    for process in processes:
        process.start()
    try:
        await asyncio.to_thread(start.wait, 30)
        outputs = [await asyncio.to_thread(results.get, True, 30) for _ in processes]
    finally:
        for process in processes:
            await asyncio.to_thread(process.join, 30)
        results.close()
        results.join_thread()
    assert [process.exitcode for process in processes] == [0, 0]
    claims = Counter(job_id for _, ids in outputs for job_id in ids)
    assert set(claims) == expected
    assert set(claims.values()) == {1}
    assert (await store.job_counts())[JobState.DONE] == 200


async def test_job_left_running_by_a_crashed_store_is_requeued_on_next_open(
    backend: Backend, clock: DateClock
) -> None:
    async with backend.make(clock) as crashed:
        await crashed.enqueue(make_spec("nightly"))
        job = await crashed.claim_job("old-worker", lease_seconds=60)
        assert job is not None
    async with backend.make(clock) as restarted:
        # Another replica's job is not stolen while its lease is live.
        assert await restarted.requeue_abandoned() == 0
        assert await restarted.claim_job("new-worker", lease_seconds=60) is None
        clock.advance(61)
        assert await restarted.requeue_abandoned() == 1
        again = await restarted.claim_job("new-worker", lease_seconds=60)
    assert again is not None
    assert again.id == job.id
    assert again.attempts == 2
    assert again.claimed_by == "new-worker"
    assert again.last_error == "abandoned by old-worker"


async def test_requeue_all_running_requeues_even_jobs_with_live_leases(
    store: Store,
) -> None:
    await store.enqueue(make_spec("a"))
    await store.enqueue(make_spec("b"))
    await store.claim_job("w", lease_seconds=3600)
    await store.claim_job("w", lease_seconds=3600)
    assert await store.requeue_all_running() == 2
    assert (await store.job_counts())[JobState.QUEUED] == 2


async def test_abandoned_job_with_no_attempts_left_is_failed_not_requeued(
    store: Store, clock: DateClock
) -> None:
    await store.enqueue(make_spec("poison", max_attempts=1))
    job = await store.claim_job("w", lease_seconds=10)
    assert job is not None
    clock.advance(11)
    assert await store.requeue_abandoned() == 0
    failed = await store.get_job(job.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.last_error == "abandoned by w after 1 of 1 attempts"


async def test_fail_job_with_retry_at_requeues_the_job_for_that_time(
    store: Store,
) -> None:
    await store.enqueue(make_spec("flaky"))
    job = await store.claim_job("w", lease_seconds=60)
    assert job is not None
    retry_at = T0 + timedelta(minutes=10)
    assert await store.fail_job(job.id, worker_id="w", error="502 from GitHub", retry_at=retry_at)
    queued = await store.get_job(job.id)
    assert queued is not None
    assert queued.state is JobState.QUEUED
    assert queued.run_at == retry_at
    assert queued.claimed_by is None
    assert queued.last_error == "502 from GitHub"
    assert await store.claim_job("w", lease_seconds=60, now=retry_at - timedelta(seconds=1)) is None
    retried = await store.claim_job("w", lease_seconds=60, now=retry_at)
    assert retried is not None
    assert retried.attempts == 2


async def test_fail_job_marks_the_job_failed_with_last_error_after_max_attempts(
    store: Store,
) -> None:
    doomed = await store.enqueue(make_spec("doomed", max_attempts=3))
    assert doomed is not None
    for attempt in range(1, 4):
        job = await store.claim_job("w", lease_seconds=60, now=LATER)
        assert job is not None
        assert job.attempts == attempt
        await store.fail_job(job.id, worker_id="w", error=f"boom {attempt}", retry_at=T0)
    assert await store.claim_job("w", lease_seconds=60, now=LATER) is None
    failed = await store.get_job(doomed.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.attempts == 3
    assert failed.last_error == "boom 3"


async def test_fail_job_without_retry_at_fails_the_job_at_once(store: Store) -> None:
    await store.enqueue(make_spec("fatal"))
    job = await store.claim_job("w", lease_seconds=60)
    assert job is not None
    assert await store.fail_job(job.id, worker_id="w", error="bad config")
    assert (await store.job_counts())[JobState.FAILED] == 1


async def test_only_the_lease_holder_can_complete_fail_or_extend_a_job(
    store: Store,
) -> None:
    await store.enqueue(make_spec("mine"))
    job = await store.claim_job("holder", lease_seconds=60)
    assert job is not None
    assert not await store.complete_job(job.id, worker_id="intruder")
    assert not await store.fail_job(job.id, worker_id="intruder", error="x")
    assert not await store.extend_lease(job.id, worker_id="intruder", lease_seconds=60)
    assert await store.complete_job(job.id, worker_id="holder")
    assert not await store.complete_job(job.id, worker_id="holder")
    done = await store.get_job(job.id)
    assert done is not None
    assert done.state is JobState.DONE


async def test_worker_whose_lease_was_requeued_cannot_complete_the_job(
    store: Store, clock: DateClock
) -> None:
    await store.enqueue(make_spec("slow"))
    job = await store.claim_job("slow-worker", lease_seconds=10)
    assert job is not None
    clock.advance(11)
    assert await store.requeue_abandoned() == 1
    taken = await store.claim_job("fast-worker", lease_seconds=10)
    assert taken is not None
    assert not await store.complete_job(job.id, worker_id="slow-worker")
    assert await store.complete_job(job.id, worker_id="fast-worker")


async def test_extend_lease_keeps_a_live_job_from_being_requeued(
    store: Store, clock: DateClock
) -> None:
    await store.enqueue(make_spec("long"))
    job = await store.claim_job("w", lease_seconds=10)
    assert job is not None
    clock.advance(8)
    assert await store.extend_lease(job.id, worker_id="w", lease_seconds=10)
    clock.advance(8)
    assert await store.requeue_abandoned() == 0
    extended = await store.get_job(job.id)
    assert extended is not None
    assert extended.lease_until == T0 + timedelta(seconds=18)


async def test_two_store_instances_racing_for_one_schedule_run_get_exactly_one_true(
    backend: Backend,
) -> None:
    async with backend.make() as first, backend.make() as second:
        outcomes = await asyncio.gather(
            *(
                instance.claim_schedule_run(REPO, "2026-11-22", kind="nightly")
                for _ in range(5)
                for instance in (first, second)
            )
        )
        assert outcomes.count(True) == 1
        assert await second.claim_schedule_run(REPO, "2026-11-22", kind="weekly")


async def test_claim_schedule_run_enqueues_its_job_only_for_the_winner(
    store: Store,
) -> None:
    assert await store.last_schedule_run(REPO, kind="nightly") is None
    spec = JobSpec("nightly", f"nightly:{REPO}:2026-11-21", {"repo": REPO})
    assert await store.claim_schedule_run(REPO, "2026-11-21", job=spec, kind="nightly")
    other = JobSpec("nightly", "some-other-key", {"repo": REPO})
    assert not await store.claim_schedule_run(REPO, "2026-11-21", job=other, kind="nightly")
    assert await store.claim_schedule_run(REPO, "2026-11-22", kind="nightly")
    assert (await store.job_counts())[JobState.QUEUED] == 1
    assert await store.last_schedule_run(REPO, kind="nightly") == "2026-11-22"
    assert await store.last_schedule_run(REPO, kind="weekly") is None


async def test_claim_schedule_run_refuses_a_day_that_is_not_yyyy_mm_dd(
    store: Store,
) -> None:
    with pytest.raises(InvalidValueError):
        await store.claim_schedule_run(REPO, "22/11/2026", kind="nightly")
    with pytest.raises(InvalidValueError):
        await store.claim_schedule_run(REPO, "2026-02-30", kind="nightly")


async def test_sticky_comment_is_set_replaced_read_and_forgotten(store: Store) -> None:
    assert await store.get_sticky(REPO, 1, "nightly") is None
    await store.set_sticky(REPO, 1, "nightly", 1001)
    await store.set_sticky(REPO, 1, "nightly", 1002)
    await store.set_sticky(REPO, 1, "pr-report", 2001)
    assert await store.get_sticky(REPO, 1, "nightly") == 1002
    assert await store.get_sticky(REPO.upper(), 1, "nightly") == 1002
    assert await store.get_sticky(REPO, 2, "nightly") is None
    assert await store.forget_sticky(REPO, 1, "nightly")
    assert not await store.forget_sticky(REPO, 1, "nightly")
    assert await store.get_sticky(REPO, 1, "nightly") is None
    assert await store.get_sticky(REPO, 1, "pr-report") == 2001


async def test_recent_runs_returns_at_most_14_newest_first(store: Store) -> None:
    for number in range(20):
        day = (T0 + timedelta(days=number)).date().isoformat()
        await store.record_run(
            REPO,
            day=day,
            commit_sha=f"{number:040x}",
            outcome="no_regression",
            summary=f"run {number}",
            finished_at=T0 + timedelta(days=number, hours=1),
        )
    await store.record_run(
        "someone/else",
        day="2030-01-01",
        commit_sha=None,
        outcome="error",
        summary="other repo",
        finished_at=LATER,
    )
    runs = await store.recent_runs(REPO)
    assert [run.summary for run in runs] == [f"run {n}" for n in range(19, 5, -1)]
    assert runs[0].finished_at == T0 + timedelta(days=19, hours=1)
    assert len(await store.recent_runs(REPO, limit=3)) == 3


async def test_a_run_recorded_with_a_key_is_recorded_once(store: Store) -> None:
    for attempt in range(3):  # the job ran again after a crash, twice
        await store.record_run(
            REPO,
            day="2026-11-22",
            commit_sha="a" * 40,
            outcome="regression",
            summary=f"attempt {attempt}",
            finished_at=T0 + timedelta(minutes=attempt),
            key="nightly:octo-org/vqm-registry:2026-11-22",
        )
    for _ in range(2):  # runs without a key are all kept
        await store.record_run(
            REPO, day="2026-11-23", commit_sha=None, outcome="error", summary="x", finished_at=LATER
        )
    runs = await store.recent_runs(REPO)
    assert [run.summary for run in runs] == ["x", "x", "attempt 0"]


async def test_a_version_1_database_is_migrated_keeping_its_runs(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)"
        )
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1, '2026-11-22')")
        conn.execute(
            "INSERT INTO runs (repo, day, commit_sha, outcome, summary, finished_at)"
            " VALUES (?, '2026-11-21', NULL, 'error', 'old run', ?)",
            (REPO, T0.isoformat(timespec="microseconds")),
        )
    conn.close()
    async with SqliteStore(db_path) as store:
        await store.record_run(
            REPO,
            day="2026-11-22",
            commit_sha=None,
            outcome="error",
            summary="new",
            finished_at=LATER,
            key="k",
        )
        assert [run.summary for run in await store.recent_runs(REPO)] == ["new", "old run"]


async def test_key_value_cache_sets_replaces_and_deletes_values(store: Store) -> None:
    assert await store.get_value("tracking-issue", REPO) is None
    await store.set_value("tracking-issue", REPO, "12")
    await store.set_value("tracking-issue", REPO, "13")
    await store.set_value("etag", REPO, 'W/"abc"')
    assert await store.get_value("tracking-issue", REPO) == "13"
    assert await store.delete_value("tracking-issue", REPO)
    assert not await store.delete_value("tracking-issue", REPO)
    assert await store.get_value("etag", REPO) == 'W/"abc"'


async def test_list_values_returns_one_namespace_oldest_write_first_up_to_a_limit(
    store: Store, clock: DateClock
) -> None:
    await store.set_value("parked", "b", "2")
    clock.now += timedelta(seconds=1)
    await store.set_value("parked", "a", "1")
    await store.set_value("tracking", "c", "3")
    assert await store.list_values("parked") == {"b": "2", "a": "1"}
    assert list(await store.list_values("parked")) == ["b", "a"]
    assert await store.list_values("parked", limit=1) == {"b": "2"}
    assert await store.list_values("nothing") == {}
    with pytest.raises(InvalidValueError):
        await store.list_values("parked", limit=0)


async def test_times_come_back_in_utc_and_naive_times_are_refused(store: Store) -> None:
    tokyo = timezone(timedelta(hours=9))
    job = await store.enqueue(make_spec("tz", run_at=datetime(2026, 11, 22, 12, 0, tzinfo=tokyo)))
    assert job is not None
    assert job.run_at == T0
    assert job.run_at.utcoffset() == timedelta(0)
    with pytest.raises(InvalidValueError):
        make_spec("naive", run_at=datetime(2026, 11, 22, 3, 0))
    with pytest.raises(InvalidValueError):
        await store.claim_job("w", lease_seconds=60, now=datetime(2026, 11, 22))


async def test_in_memory_store_keeps_state_for_its_lifetime() -> None:
    async with SqliteStore(":memory:") as memory:
        assert await memory.record_delivery(make_delivery(), [make_spec("a")])
        assert not await memory.record_delivery(make_delivery())
        assert await memory.delivery_count() == 1


async def test_jobs_with_prefix_lists_one_kinds_jobs_under_the_prefix_in_any_state_oldest_first(
    store: Store,
) -> None:
    await store.enqueue(make_spec("bisect:o/r#1:10"))
    await store.enqueue(make_spec("bisect:o/r#12:11"))  # #12 is not #1: the ":" ends the number
    await store.enqueue(make_spec("bisect:o/r#1:12"))
    await store.enqueue(JobSpec("nightly", "bisect:o/r#1:13", {}))  # another kind
    claimed = await store.claim_job("w", lease_seconds=60)
    assert claimed is not None and claimed.key == "bisect:o/r#1:10"
    assert await store.complete_job(claimed.id, worker_id="w")
    found = await store.jobs_with_prefix("bisect", "bisect:o/r#1:")
    assert [(job.key, job.state) for job in found] == [
        ("bisect:o/r#1:10", JobState.DONE),
        ("bisect:o/r#1:12", JobState.QUEUED),
    ]
    assert [
        job.key for job in await store.jobs_with_prefix("bisect", "bisect:o/r#1:", limit=1)
    ] == ["bisect:o/r#1:10"]
    assert await store.jobs_with_prefix("bisect", "bisect:o/r#2:") == []


async def test_jobs_with_prefix_refuses_an_empty_prefix(store: Store) -> None:
    with pytest.raises(InvalidValueError):
        await store.jobs_with_prefix("bisect", "")


# -- races across store instances (each its own connection), on both backends -------------


async def _open_many(backend: Backend, count: int) -> list[Store]:
    stores = [backend.make() for _ in range(count)]
    for store in stores:
        await store.open()
    return stores


async def _close_all(stores: list[Store]) -> None:
    for store in stores:
        await store.close()


async def test_fifty_copies_of_one_delivery_at_once_store_it_once_with_its_jobs_once(
    backend: Backend,
) -> None:
    stores = await _open_many(backend, 5)
    try:
        outcomes = await asyncio.gather(
            *(
                stores[n % 5].record_delivery(
                    make_delivery("d-race"), [make_spec("race:a"), make_spec("race:b")]
                )
                for n in range(50)
            )
        )
        assert outcomes.count(True) == 1
        assert await stores[0].delivery_count() == 1
        assert await stores[0].job_counts() == {
            JobState.QUEUED: 2,
            JobState.RUNNING: 0,
            JobState.DONE: 0,
            JobState.FAILED: 0,
        }
        jobs = await stores[0].jobs_with_prefix("bisect", "race:")
        assert [(job.key, job.delivery_id) for job in jobs] == [
            ("race:a", "d-race"),
            ("race:b", "d-race"),
        ]
        assert await stores[1].known_deliveries(["d-race", "d-other"]) == {"d-race"}
    finally:
        await _close_all(stores)


async def test_fifty_replicas_racing_for_one_schedule_day_enqueue_one_job(
    backend: Backend,
) -> None:
    stores = await _open_many(backend, 5)
    try:
        outcomes = await asyncio.gather(
            *(
                stores[n % 5].claim_schedule_run(
                    # GitHub names are case-insensitive: every spelling is the same repository.
                    REPO if n % 2 else REPO.upper(),
                    "2026-11-22",
                    kind="nightly",
                    job=JobSpec("nightly", f"nightly:racer-{n}", {"repo": REPO}),
                )
                for n in range(50)
            )
        )
        assert outcomes.count(True) == 1
        assert (await stores[0].job_counts())[JobState.QUEUED] == 1
        assert await stores[2].last_schedule_run(REPO, kind="nightly") == "2026-11-22"
    finally:
        await _close_all(stores)


async def test_fifty_racers_for_one_sticky_comment_claim_let_exactly_one_write_it(
    backend: Backend,
) -> None:
    stores = await _open_many(backend, 5)
    name = f"sticky:{REPO}#7:nightly"
    try:
        outcomes = await asyncio.gather(
            *(
                stores[n % 5].acquire_claim(name, f"replica-{n}", ttl=timedelta(minutes=5))
                for n in range(50)
            )
        )
        assert outcomes.count(True) == 1
        winner = f"replica-{outcomes.index(True)}"
        # The racers that lost may all remember a comment at once: one id is kept, not many.
        await asyncio.gather(
            *(stores[n % 5].set_sticky(REPO, 7, "nightly", 9000 + n) for n in range(50))
        )
        assert await stores[0].get_sticky(REPO, 7, "nightly") in range(9000, 9050)
        assert not await stores[1].release_claim(name, "replica-nobody")
        assert await stores[1].release_claim(name, winner)
        assert await stores[2].acquire_claim(name, "replica-next", ttl=timedelta(minutes=5))
    finally:
        await _close_all(stores)


async def test_worker_fenced_out_after_its_lease_was_taken_over_changes_nothing(
    backend: Backend, clock: DateClock
) -> None:
    async with backend.make(clock) as presumed_dead, backend.make(clock) as replica:
        await replica.enqueue(make_spec("fenced", max_attempts=3))
        first = await presumed_dead.claim_job("dead-worker", lease_seconds=10)
        assert first is not None
        clock.advance(11)
        assert await replica.requeue_abandoned() == 1
        second = await replica.claim_job("live-worker", lease_seconds=60)
        assert second is not None
        assert (second.id, second.attempts) == (first.id, 2)
        # The old attempt wakes up and tries to finish, fail or heartbeat: nothing changes.
        assert not await presumed_dead.complete_job(first.id, worker_id="dead-worker")
        assert not await presumed_dead.fail_job(
            first.id, worker_id="dead-worker", error="late", retry_at=T0
        )
        assert not await presumed_dead.extend_lease(
            first.id, worker_id="dead-worker", lease_seconds=600
        )
        current = await replica.get_job(first.id)
        assert current is not None
        assert (current.state, current.claimed_by, current.attempts) == (
            JobState.RUNNING,
            "live-worker",
            2,
        )
        assert current.lease_until == clock.now + timedelta(seconds=60)
        assert current.last_error == "abandoned by dead-worker"
        assert await replica.complete_job(first.id, worker_id="live-worker")


async def test_retries_back_off_then_the_job_is_failed_for_good_across_replicas(
    backend: Backend, clock: DateClock
) -> None:
    async with backend.make(clock) as first, backend.make(clock) as second:
        job = await first.enqueue(make_spec("flaky", max_attempts=3))
        assert job is not None
        replicas = (first, second, first)
        for attempt, replica in enumerate(replicas, start=1):
            claimed = await replica.claim_job(f"w{attempt}", lease_seconds=60)
            assert claimed is not None
            assert claimed.attempts == attempt
            backoff = clock.now + timedelta(seconds=30 * 2**attempt)
            assert await replica.fail_job(
                claimed.id, worker_id=f"w{attempt}", error=f"502 #{attempt}", retry_at=backoff
            )
            # Not due before its backoff elapses, on any replica.
            assert await second.claim_job("early", lease_seconds=60) is None
            clock.now = backoff
        dead = await second.get_job(job.id)
        assert dead is not None
        assert (dead.state, dead.attempts, dead.last_error) == (JobState.FAILED, 3, "502 #3")
        assert await first.claim_job("w", lease_seconds=60, now=LATER) is None


async def test_without_a_clock_the_lease_is_timed_by_the_store_clock_of_the_claim(
    backend: Backend,
) -> None:
    async with backend.make() as store:
        await store.enqueue(make_spec("now"))
        job = await store.claim_job("w", lease_seconds=30)
        assert job is not None
        assert job.run_at <= job.updated_at
        assert job.lease_until == job.updated_at + timedelta(seconds=30)
        assert job.lease_until.utcoffset() == timedelta(0)
        assert await store.requeue_abandoned() == 0


async def test_payloads_and_errors_with_nul_characters_are_kept(store: Store) -> None:
    # A comment body may carry U+0000; PostgreSQL's text and jsonb refuse a raw NUL.
    await store.enqueue(JobSpec("bisect", "nul", {"body": "a\x00b"}))
    job = await store.claim_job("w", lease_seconds=60)
    assert job is not None
    assert job.payload == {"body": "a\x00b"}
    assert await store.fail_job(job.id, worker_id="w", error="bad byte \x00 here")
    failed = await store.get_job(job.id)
    assert failed is not None
    assert failed.last_error is not None and failed.last_error.startswith("bad byte ")
