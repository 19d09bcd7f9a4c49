"""Parked runs: recorded on the last attempt, resumed once GitHub answers, at most MAX_RESUMES times."""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.jobs.parking import MAX_RESUMES, NAMESPACE, Resumer, origin_key, park
from bot.store import Job, JobSpec, JobState, SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "store.sqlite3") as opened:
        yield opened


async def enqueued(store: SqliteStore, key: str, **payload: object) -> Job:
    job = await store.enqueue(
        JobSpec(
            kind="nightly",
            key=key,
            payload={"repo": "acme/m", **payload},
            serial_key="acme/m#nightly",
        )
    )
    assert job is not None
    return job


class Probe:
    """GitHub's answer to the resumer's probe: down (raises) or up."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        if not self.up:
            raise ConnectionError("GitHub is down")
        return {"slug": "model-guard"}


async def test_a_parked_run_is_resumed_with_its_origin_key_once_github_answers(
    store: SqliteStore,
) -> None:
    job = await enqueued(store, "nightly:acme/m:2026-12-01", day="2026-12-01")
    assert await park(store, job, why="GitHub kept failing")
    probe = Probe()
    resumer = Resumer(store, probe)
    assert await resumer.resume() == []
    probe.up = True
    assert await resumer.resume() == ["nightly:acme/m:2026-12-01~resume1"]
    claimed = await store.claim_job("w", lease_seconds=60)
    assert claimed is not None and claimed.key == "nightly:acme/m:2026-12-01"  # the original
    await store.complete_job(claimed.id, worker_id="w")
    resumed = await store.claim_job("w", lease_seconds=60)
    assert resumed is not None and resumed.state is JobState.RUNNING
    assert origin_key(resumed) == job.key
    assert resumed.serial_key == "acme/m#nightly"  # still one run of the repository at a time
    assert resumed.payload["day"] == "2026-12-01" and resumed.payload["resumes"] == 1
    assert await store.list_values(NAMESPACE) == {}


async def test_nothing_parked_asks_github_nothing(store: SqliteStore) -> None:
    probe = Probe()
    assert await Resumer(store, probe).resume() == []
    assert probe.calls == 0


async def test_a_run_resumed_max_times_is_not_parked_again(store: SqliteStore) -> None:
    job = await enqueued(store, "k~resume3", origin_key="k", resumes=MAX_RESUMES)
    assert not await park(store, job, why="GitHub kept failing")
    assert await store.list_values(NAMESPACE) == {}


async def test_an_unreadable_parked_record_is_dropped_not_retried_for_ever(
    store: SqliteStore,
) -> None:
    await store.set_value(NAMESPACE, "k", json.dumps({"kind": "nightly"}))
    probe = Probe()
    probe.up = True
    assert await Resumer(store, probe).resume() == []
    assert await store.list_values(NAMESPACE) == {}


async def test_a_crash_after_the_enqueue_enqueues_nothing_twice(store: SqliteStore) -> None:
    job = await enqueued(store, "k")
    await park(store, job, why="down")
    record = await store.get_value(NAMESPACE, "k")
    assert record is not None
    probe = Probe()
    probe.up = True
    assert await Resumer(store, probe).resume() == ["k~resume1"]
    await store.set_value(NAMESPACE, "k", record)  # as if the delete never happened
    assert await Resumer(store, probe).resume() == []
    assert await store.list_values(NAMESPACE) == {}
