"""Serial keys (one running job per sticky surface) and wake-ups, on both stores.

Every claimer below has its own store instance (its own connection to the database), as
replicas do; nothing in one process keeps two of them apart.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.jobs.worker import WorkerOptions, WorkerPool
from bot.store import (
    InvalidValueError,
    Job,
    JobSpec,
    JobState,
    Store,
    make_serial_key,
)
from tests.bot.store.conftest import Backend
from tests.conftest import DateClock

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
REPO = "octo-org/vqm-registry"
KEY = make_serial_key(REPO, "bisect", 7)


@pytest.fixture
def clock() -> DateClock:
    return DateClock(T0)


@pytest.fixture
async def pair(backend: Backend, clock: DateClock) -> AsyncIterator[tuple[Store, Store]]:
    """Two store instances on one database (two replicas), on one test clock."""
    async with backend.make(clock) as first, backend.make(clock) as second:
        yield first, second


def make_spec(key: str, serial: str | None = KEY, **kwargs: Any) -> JobSpec:
    return JobSpec("bisect", key, {"repo": REPO, "key": key}, serial_key=serial, **kwargs)


async def enqueue(store: Store, key: str, serial: str | None = KEY, **kwargs: Any) -> Job:
    job = await store.enqueue(make_spec(key, serial, **kwargs))
    assert job is not None
    return job


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds; fail the test if it never does."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


def test_serial_keys_name_the_repository_case_insensitively_the_issue_and_the_purpose() -> None:
    assert make_serial_key("Octo-Org/VQM-Registry", "pr", 12) == "octo-org/vqm-registry#12#pr"
    assert make_serial_key("Octo-Org/VQM-Registry", "nightly") == "octo-org/vqm-registry#nightly"
    with pytest.raises(InvalidValueError):
        make_serial_key("", "pr", 1)
    with pytest.raises(InvalidValueError):
        JobSpec("bisect", "k", {}, serial_key="")


# -- one running job per serial key ----------------------------------------------------------


async def test_a_job_whose_serial_key_is_held_waits_until_the_holder_completes(
    pair: tuple[Store, Store],
) -> None:
    replica_a, replica_b = pair
    first = await enqueue(replica_a, "bisect:1")
    second = await enqueue(replica_a, "bisect:2")
    assert first.serial_key == KEY
    claimed = await replica_a.claim_job("a-1", lease_seconds=60)
    assert claimed is not None and claimed.id == first.id and claimed.serial_key == KEY
    # The other replica finds the second job due but its comment is being written.
    assert await replica_b.claim_job("b-1", lease_seconds=60) is None
    assert await replica_a.claim_job("a-2", lease_seconds=60) is None
    assert await replica_a.complete_job(first.id, worker_id="a-1")
    after = await replica_b.claim_job("b-1", lease_seconds=60)
    assert after is not None and after.id == second.id


async def test_a_failed_holder_releases_its_serial_key_for_the_next_job(
    pair: tuple[Store, Store], clock: DateClock
) -> None:
    replica_a, replica_b = pair
    first = await enqueue(replica_a, "bisect:1")
    second = await enqueue(replica_a, "bisect:2")
    assert (await replica_a.claim_job("a-1", lease_seconds=60)) is not None
    assert await replica_a.fail_job(
        first.id, worker_id="a-1", error="GitHub 502", retry_at=clock.now + timedelta(minutes=5)
    )
    after = await replica_b.claim_job("b-1", lease_seconds=60)
    assert after is not None and after.id == second.id


async def test_an_expired_lease_does_not_block_its_serial_key(
    pair: tuple[Store, Store], clock: DateClock
) -> None:
    replica_a, replica_b = pair
    first = await enqueue(replica_a, "bisect:1")
    second = await enqueue(replica_a, "bisect:2")
    claimed = await replica_a.claim_job("dead-worker", lease_seconds=10)
    assert claimed is not None and claimed.id == first.id
    clock.advance(11)
    # Not requeued yet, but its holder is presumed dead: the key is free.
    after = await replica_b.claim_job("b-1", lease_seconds=60)
    assert after is not None and after.id == second.id
    held = await replica_b.get_job(first.id)
    assert held is not None and held.state is JobState.RUNNING


async def test_a_stalled_worker_cannot_renew_its_expired_lease_beside_its_successor(
    pair: tuple[Store, Store], clock: DateClock
) -> None:
    replica_a, replica_b = pair
    first = await enqueue(replica_a, "bisect:1")
    second = await enqueue(replica_a, "bisect:2")
    assert await replica_a.claim_job("stalled", lease_seconds=10) is not None
    assert await replica_a.extend_lease(first.id, worker_id="stalled", lease_seconds=10)
    clock.advance(11)
    successor = await replica_b.claim_job("b-1", lease_seconds=60)
    assert successor is not None and successor.id == second.id
    # The stalled worker wakes and heartbeats: its lease is lost, so it learns to stop and
    # the key keeps one live holder.
    assert not await replica_a.extend_lease(first.id, worker_id="stalled", lease_seconds=60)
    live = [
        job
        for job in (await replica_b.get_job(first.id), await replica_b.get_job(second.id))
        if job is not None
        and job.state is JobState.RUNNING
        and job.lease_until is not None
        and job.lease_until > clock()
    ]
    assert [job.id for job in live] == [second.id]


async def test_jobs_with_other_serial_keys_or_none_run_beside_a_held_key(
    pair: tuple[Store, Store],
) -> None:
    replica_a, replica_b = pair
    other = make_serial_key(REPO, "bisect", 8)
    await enqueue(replica_a, "bisect:1")
    await enqueue(replica_a, "bisect:2")
    await enqueue(replica_a, "bisect:3", other)
    await enqueue(replica_a, "bisect:4", None)
    claims = [
        await store.claim_job(f"w-{n}", lease_seconds=60)
        for n, store in enumerate((replica_a, replica_b, replica_a, replica_b))
    ]
    assert [None if job is None else job.key for job in claims] == [
        "bisect:1",
        "bisect:3",
        "bisect:4",
        None,
    ]
    assert (await replica_a.job_counts())[JobState.RUNNING] == 3


async def test_fifty_racers_on_one_serial_key_never_run_two_at_once(backend: Backend) -> None:
    count = 50
    stores = [backend.make() for _ in range(5)]
    for store in stores:
        await store.open()
    try:
        for number in range(count):
            await enqueue(stores[0], f"bisect:race-{number}")
        holding: set[int] = set()
        overlaps: list[tuple[int, ...]] = []
        counts: list[int] = []
        done: list[int] = []

        async def racer(store: Store, name: str) -> None:
            idle = 0
            while idle < 3 and len(done) < count:
                job = await store.claim_job(name, lease_seconds=60)
                if job is None:
                    idle += 1
                    await asyncio.sleep(0.005)
                    continue
                idle = 0
                holding.add(job.id)
                if len(holding) > 1:
                    overlaps.append(tuple(sorted(holding)))
                # The database's view at this step: exactly this job is running.
                counts.append((await store.job_counts())[JobState.RUNNING])
                await asyncio.sleep(0.002)
                holding.discard(job.id)
                assert await store.complete_job(job.id, worker_id=name)
                done.append(job.id)

        async def until_all_done(store: Store, name: str) -> None:
            while len(done) < count:
                await racer(store, name)
                await asyncio.sleep(0.01)

        async with asyncio.timeout(120):
            await asyncio.gather(*(until_all_done(stores[n % 5], f"racer-{n}") for n in range(10)))
        assert overlaps == []
        assert set(counts) == {1}
        assert len(done) == count and set(Counter(done).values()) == {1}
        assert (await stores[0].job_counts())[JobState.DONE] == count
    finally:
        for store in stores:
            await store.close()


# -- wake-ups ----------------------------------------------------------------------------


async def test_a_wake_up_that_came_while_nobody_waited_is_kept_for_the_next_waiter(
    backend: Backend,
) -> None:
    async with backend.make() as store:
        await enqueue(store, "bisect:1")
        # A worker busy when the job came still learns of it when it next waits.
        assert await store.wait_for_work(30.0)
        assert not await store.wait_for_work(0.05)


async def _listening(store: Store) -> None:
    """Start a PostgreSQL store's LISTEN connection and wait until it listens."""
    from bot.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        await store.wait_for_work(0.0)

        async def up() -> bool:
            return store.listen_backend_pid is not None

        await wait_until(up)


async def test_a_job_enqueued_elsewhere_wakes_an_idle_worker_long_before_its_poll(
    backend: Backend,
) -> None:
    """SQLite wakes the workers of its own process; PostgreSQL those of every replica."""
    done: list[str] = []

    async def handler(job: Job) -> None:
        done.append(job.key)

    async with backend.make() as worker_store, backend.make() as other:
        # SQLite's wake-up is in-process: the enqueuing store is the worker's own.
        enqueuer = worker_store if backend.name == "sqlite" else other
        options = WorkerOptions(workers=1, lease_seconds=60.0, poll_seconds=30.0)
        pool = WorkerPool(worker_store, {"bisect": handler}, options=options)
        await pool.start()
        try:
            await _listening(worker_store)
            await asyncio.sleep(0.2)  # the worker found nothing and sleeps out its poll
            await enqueue(enqueuer, "bisect:wake", None)

            async def finished() -> bool:
                return done == ["bisect:wake"]

            # Well inside the 30-second poll: only a wake-up explains it.
            await wait_until(finished, timeout=10.0)
        finally:
            await pool.stop()


async def test_a_worker_waiting_for_a_serial_key_is_woken_when_another_replica_releases_it(
    postgres_schema: str,
) -> None:
    """PostgreSQL only: SQLite wakes in-process waiters, not another replica's."""
    backend = Backend("postgres", postgres_schema)
    done: list[str] = []

    async def handler(job: Job) -> None:
        done.append(job.key)

    async with backend.make() as worker_store, backend.make() as other:
        await enqueue(other, "bisect:held")
        held = await other.claim_job("other-replica", lease_seconds=60)
        assert held is not None
        await enqueue(other, "bisect:waiting")
        options = WorkerOptions(workers=1, lease_seconds=60.0, poll_seconds=30.0)
        pool = WorkerPool(worker_store, {"bisect": handler}, options=options)
        await pool.start()
        try:
            await _listening(worker_store)
            await asyncio.sleep(0.2)
            assert done == []
            assert await other.complete_job(held.id, worker_id="other-replica")

            async def finished() -> bool:
                return done == ["bisect:waiting"]

            await wait_until(finished, timeout=10.0)
        finally:
            await pool.stop()


async def test_a_dropped_listen_connection_falls_back_to_polling_then_reconnects(
    postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL only: SQLite has no LISTEN connection to lose."""
    import psycopg

    from bot.store.postgres import PostgresStore

    done: list[str] = []

    async def handler(job: Job) -> None:
        done.append(job.key)

    backend = Backend("postgres", postgres_schema)

    def cut(pid: int) -> None:
        with psycopg.connect(backend.target, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    # A long first retry: the listener stays down while the job below is enqueued.
    deaf = PostgresStore(backend.target, max_connections=4, listen_retry_seconds=600.0)
    async with deaf, backend.make() as other:
        options = WorkerOptions(workers=1, lease_seconds=60.0, poll_seconds=0.2)
        pool = WorkerPool(deaf, {"bisect": handler}, options=options)
        await pool.start()
        try:
            await _listening(deaf)
            pid = deaf.listen_backend_pid
            assert pid is not None
            with caplog.at_level(logging.WARNING, logger="model_guard.store"):
                cut(pid)

                async def down() -> bool:
                    return deaf.listen_backend_pid is None

                await wait_until(down)
                await enqueue(other, "bisect:polled", None)

                async def polled() -> bool:
                    return done == ["bisect:polled"]

                await wait_until(polled)
            assert deaf.listen_backend_pid is None  # it was the poll, not a wake-up
            lost = [r for r in caplog.records if "LISTEN connection" in r.getMessage()]
            assert len(lost) == 1 and lost[0].levelno == logging.WARNING
            assert "model_guard:model_guard@" not in lost[0].getMessage()  # no password
        finally:
            await pool.stop()

    # With a short retry the listener comes back by itself and wakes waiters again.
    quick = PostgresStore(backend.target, max_connections=4, listen_retry_seconds=0.05)
    async with quick, backend.make() as other:
        await _listening(quick)
        first = quick.listen_backend_pid
        assert first is not None
        cut(first)

        async def back() -> bool:
            return quick.listen_backend_pid not in (None, first)

        await wait_until(back)
        await quick.wait_for_work(0.0)  # the wake-up given on reconnect, for jobs missed
        await enqueue(other, "bisect:after", None)
        assert await quick.wait_for_work(10.0)


async def test_a_database_from_before_serial_keys_is_migrated_keeping_its_queued_jobs(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.store.sqlite as sqlite_module

    if backend.name == "sqlite":
        module: Any = sqlite_module
    else:
        import bot.store.postgres as module
    current = module.MIGRATIONS
    monkeypatch.setattr(module, "MIGRATIONS", current[:-1])
    # The old code's jobs table has no serial_key column: write a queued job the old way.
    async with backend.make():
        pass
    backend.query(
        "INSERT INTO jobs (kind, key, payload, state, attempts, max_attempts, run_at,"
        " created_at, updated_at) VALUES ('bisect', 'old', '{}', 'queued', 0, 5,"
        " '2026-11-22T03:00:00.000000+00:00', '2026-11-22T03:00:00.000000+00:00',"
        " '2026-11-22T03:00:00.000000+00:00')"
    )
    monkeypatch.setattr(module, "MIGRATIONS", current)
    # Three replicas of the new code start at once: the new version is applied once.
    stores = [backend.make() for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        claimed = await stores[1].claim_job("w", lease_seconds=60)
        assert claimed is not None and (claimed.key, claimed.serial_key) == ("old", None)
        await enqueue(stores[2], "new")
        fresh = await stores[0].claim_job("w2", lease_seconds=60)
        assert fresh is not None and fresh.serial_key == KEY
    finally:
        for store in stores:
            await store.close()
    versions = [int(str(row[0])) for row in backend.query("SELECT version FROM schema_migrations")]
    assert sorted(versions) == list(range(1, len(current) + 1))
