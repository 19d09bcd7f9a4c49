"""Tests for the internal scheduler on a real SQLite store, with an injected clock."""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.jobs.scheduler import (
    DEFAULT_CRON,
    ScheduledRepo,
    ScheduleError,
    Scheduler,
    latest_fire_time,
)
from bot.store import Job, JobState, SqliteStore
from tests.conftest import DateClock

REPO = "octo-org/vqm-registry"
KIND = "nightly"
OTHER = "octo-org/other-models"
# The store stamps run_at with its own (real) clock; claim as if long after that.
FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db_path) as opened:
        yield opened


def listing(*repos: ScheduledRepo) -> "FixedSource":
    return FixedSource(repos)


class FixedSource:
    """A schedule source returning a fixed list, counting its calls."""

    def __init__(self, repos: Sequence[ScheduledRepo]) -> None:
        self.repos = list(repos)
        self.calls = 0

    async def __call__(self) -> Sequence[ScheduledRepo]:
        self.calls += 1
        return self.repos


def nightly(repo: str = REPO, *, cron: str = DEFAULT_CRON, enabled: bool = True) -> ScheduledRepo:
    return ScheduledRepo(installation_id=42, repo=repo, cron=cron, enabled=enabled)


async def jobs_in(db_path: Path) -> list[Job]:
    """Every job in the store, claimed and finished one by one (a worker's view), oldest first.

    Finished, since one repository's runs share a serial key: the next is claimable only
    once the one before it is done.
    """
    found: list[Job] = []
    async with SqliteStore(db_path) as reader:
        while (
            job := await reader.claim_job("reader", lease_seconds=60, now=FAR_FUTURE)
        ) is not None:
            found.append(job)
            assert await reader.complete_job(job.id, worker_id="reader")
    return found


# -- once per (repo, day) ---------------------------------------------------------------


async def test_repo_fires_once_per_day_however_many_ticks(
    store: SqliteStore, db_path: Path
) -> None:
    clock = DateClock(at(22, 4, 40))
    scheduler = Scheduler(store, listing(nightly()), clock=clock, kind=KIND)
    assert await scheduler.tick() == [REPO]
    for minutes in (0, 1, 30, 600):
        clock.now = at(22, 4, 40) + timedelta(minutes=minutes)
        assert await scheduler.tick() == []
    jobs = await jobs_in(db_path)
    assert [job.key for job in jobs] == [f"nightly:{REPO}:2026-11-22"]
    assert jobs[0].kind == "nightly"
    assert jobs[0].serial_key == f"{REPO.lower()}#nightly"  # as the nightly's other jobs
    assert dict(jobs[0].payload) == {
        "installation_id": 42,
        "repo": REPO,
        "day": "2026-11-22",
        "scheduled_for": "2026-11-22T04:37:00+00:00",
    }


async def test_the_default_branch_the_listing_named_travels_in_the_job(
    store: SqliteStore, db_path: Path
) -> None:
    entry = ScheduledRepo(installation_id=42, repo=REPO, cron=DEFAULT_CRON, default_branch="trunk")
    scheduler = Scheduler(store, listing(entry), clock=DateClock(at(22, 4, 40)), kind=KIND)
    assert await scheduler.tick() == [REPO]
    (job,) = await jobs_in(db_path)
    assert job.payload["default_branch"] == "trunk"


async def test_fire_time_not_reached_yet_does_nothing_until_it_is(
    store: SqliteStore, db_path: Path
) -> None:
    clock = DateClock(at(21, 4, 37))  # exactly at the fire time counts as reached
    scheduler = Scheduler(store, listing(nightly()), clock=clock, kind=KIND)
    assert await scheduler.tick() == [REPO]
    clock.now = at(22, 4, 36)
    assert await scheduler.tick() == []
    assert await store.last_schedule_run(REPO, kind=KIND) == "2026-11-21"
    clock.now = at(22, 4, 37)
    assert await scheduler.tick() == [REPO]
    assert await store.last_schedule_run(REPO, kind=KIND) == "2026-11-22"


async def test_run_missed_during_downtime_happens_at_the_next_start(
    store: SqliteStore, db_path: Path
) -> None:
    source = listing(nightly())
    before = Scheduler(store, source, clock=DateClock(at(21, 4, 40)), kind=KIND)
    assert await before.tick() == [REPO]
    last = Scheduler(store, source, clock=DateClock(at(22, 3, 0)), kind=KIND)
    assert await last.tick() == []  # the last tick before going down: today's fire time not yet
    # Restarted today, after the fire time: the first tick at start enqueues today's run.
    enqueued = asyncio.Event()
    restarted = Scheduler(
        store, source, clock=DateClock(at(22, 9, 15)), on_enqueued=enqueued.set, kind=KIND
    )
    await restarted.start()
    try:
        await asyncio.wait_for(enqueued.wait(), 10)
    finally:
        await restarted.stop()
    keys = [job.key for job in await jobs_in(db_path)]
    assert keys == [f"nightly:{REPO}:2026-11-21", f"nightly:{REPO}:2026-11-22"]


async def test_after_several_days_down_only_the_latest_day_runs(
    store: SqliteStore, db_path: Path
) -> None:
    source = listing(nightly())
    assert await Scheduler(store, source, clock=DateClock(at(20, 5)), kind=KIND).tick() == [REPO]
    assert await Scheduler(store, source, clock=DateClock(at(24, 12)), kind=KIND).tick() == [REPO]
    days = [job.payload["day"] for job in await jobs_in(db_path)]
    assert days == ["2026-11-20", "2026-11-24"]


async def test_day_is_the_utc_date_of_the_fire_time_not_of_the_tick(
    store: SqliteStore, db_path: Path
) -> None:
    late = nightly(cron="30 23 * * *")
    # 00:10 UTC on the 23rd, given in UTC+2: the 23:30 fire time belongs to the 22nd.
    clock = DateClock(datetime(2026, 11, 23, 2, 10, tzinfo=timezone(timedelta(hours=2))))
    scheduler = Scheduler(store, listing(late), clock=clock, kind=KIND)
    assert await scheduler.tick() == [REPO]
    [job] = await jobs_in(db_path)
    assert job.key == f"nightly:{REPO}:2026-11-22"
    assert job.payload["scheduled_for"] == "2026-11-22T23:30:00+00:00"


async def test_several_schedulers_on_one_store_enqueue_one_job(
    store: SqliteStore, db_path: Path
) -> None:
    replicas = [SqliteStore(db_path) for _ in range(4)]
    for replica in replicas:
        await replica.open()
    try:
        schedulers = [
            Scheduler(replica, listing(nightly()), clock=DateClock(at(22, 5)), kind=KIND)
            for replica in replicas
        ]
        results = await asyncio.gather(*(scheduler.tick() for scheduler in schedulers))
    finally:
        for replica in replicas:
            await replica.close()
    assert sorted(results) == [[], [], [], [REPO]]
    assert [job.key for job in await jobs_in(db_path)] == [f"nightly:{REPO}:2026-11-22"]


async def test_repository_names_differing_in_case_are_one_repository(
    store: SqliteStore, db_path: Path
) -> None:
    scheduler = Scheduler(
        store, listing(nightly(REPO), nightly(REPO.upper())), clock=DateClock(at(22, 5)), kind=KIND
    )
    assert await scheduler.tick() == [REPO]
    assert len(await jobs_in(db_path)) == 1


# -- what is skipped ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    ["61 4 * * *", "0 0 30 2 *", "\ud800 4 * * *"],
    ids=["out-of-range", "never-fires", "lone-surrogate"],
)
async def test_bad_cron_is_skipped_with_one_log_line_while_other_repos_still_run(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, cron: str
) -> None:
    source = listing(nightly(OTHER, cron=cron), nightly(REPO))
    scheduler = Scheduler(store, source, clock=DateClock(at(22, 5)), kind=KIND)
    with caplog.at_level(logging.WARNING, logger="model_guard.scheduler"):
        assert await scheduler.tick() == [REPO]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert repr(cron) in record.getMessage()
    assert "\n" not in record.getMessage()
    record.getMessage().encode("utf-8")  # a log line that can be written
    assert record.fields["repo"] == OTHER  # type: ignore[attr-defined]
    assert record.exc_info is None


async def test_disabled_repositories_are_skipped(store: SqliteStore, db_path: Path) -> None:
    source = listing(nightly(OTHER, enabled=False), nightly(REPO))
    assert await Scheduler(store, source, clock=DateClock(at(22, 5)), kind=KIND).tick() == [REPO]
    assert await store.last_schedule_run(OTHER, kind=KIND) is None


async def test_on_enqueued_is_called_only_when_a_tick_enqueued_something(
    store: SqliteStore,
) -> None:
    calls: list[int] = []
    clock = DateClock(at(22, 5))
    scheduler = Scheduler(
        store,
        listing(nightly(), nightly(OTHER)),
        clock=clock,
        on_enqueued=lambda: calls.append(1),
        kind=KIND,
    )
    assert sorted(await scheduler.tick()) == sorted([REPO, OTHER])
    assert calls == [1]
    assert await scheduler.tick() == []
    assert calls == [1]


# -- the loop ---------------------------------------------------------------------------------


async def test_a_failing_source_is_logged_and_the_loop_keeps_ticking(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def flaky() -> Sequence[ScheduledRepo]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("GitHub API unreachable")
        return [nightly()]

    enqueued = asyncio.Event()
    scheduler = Scheduler(
        store,
        flaky,
        interval_seconds=0.01,
        clock=DateClock(at(22, 5)),
        on_enqueued=enqueued.set,
        kind=KIND,
    )
    with caplog.at_level(logging.ERROR, logger="model_guard.scheduler"):
        await scheduler.start()
        try:
            await asyncio.wait_for(enqueued.wait(), 10)
        finally:
            await scheduler.stop()
    assert calls >= 3
    messages = [record.getMessage() for record in caplog.records]
    assert (
        messages[:2]
        == ["schedule source failed, retrying next tick: ConnectionError: GitHub API unreachable"]
        * 2
    )
    assert await store.last_schedule_run(REPO, kind=KIND) == "2026-11-22"


async def test_starting_twice_is_refused_and_stop_is_idempotent(store: SqliteStore) -> None:
    scheduler = Scheduler(store, listing(), clock=DateClock(at(22, 5)), kind=KIND)
    await scheduler.start()
    try:
        with pytest.raises(ScheduleError, match="already started"):
            await scheduler.start()
    finally:
        await scheduler.stop()
    await scheduler.stop()


# -- fire times ---------------------------------------------------------------------------------


def test_latest_fire_time_counts_the_exact_fire_moment_as_reached() -> None:
    assert latest_fire_time(DEFAULT_CRON, at(22, 4, 37)) == at(22, 4, 37)
    assert latest_fire_time(DEFAULT_CRON, at(22, 4, 36)) == at(21, 4, 37)


@pytest.mark.parametrize("cron", ["61 4 * * *", "nope", "", "* * *", "0 0 31 2 *"])
def test_latest_fire_time_refuses_bad_cron_with_one_line(cron: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        latest_fire_time(cron, at(22, 5))
    assert repr(cron) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_latest_fire_time_refuses_a_naive_now() -> None:
    with pytest.raises(ScheduleError, match="timezone-aware"):
        latest_fire_time(DEFAULT_CRON, datetime(2026, 11, 22, 5))


async def test_jobs_enqueued_by_the_scheduler_are_queued_for_now(
    store: SqliteStore,
) -> None:
    await Scheduler(store, listing(nightly()), clock=DateClock(at(22, 5)), kind=KIND).tick()
    counts = await store.job_counts()
    assert counts[JobState.QUEUED] == 1
