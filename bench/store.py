"""Benchmark: store throughput, SQLite against PostgreSQL, for the webhook-to-done job path.

Run: ``python -m bench.store [--jobs 1000] [--repeats 3] [--tasks 1 8] [--postgres URL]``.
Each run opens a fresh database (a new SQLite file in WAL mode; a new schema on the
PostgreSQL server at ``--postgres`` or ``$MODEL_GUARD_TEST_PG``, dropped afterwards), records
``--jobs`` deliveries with one job each, then claims and completes every job with ``--tasks``
concurrent workers on one store (one SQLite connection on its thread; a PostgreSQL pool of
that many connections). PostgreSQL runs twice: as configured (each commit waits for its WAL
flush) and with ``synchronous_commit=off``, SQLite's own durability in WAL mode with
``synchronous=NORMAL``. It reports the median over ``--repeats`` runs of the wall time of
each phase and of the whole path, in jobs per second, and checks every job ran once.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.store import Delivery, JobSpec, JobState, SqliteStore, Store


@dataclass(frozen=True)
class Timing:
    """One run's wall time for recording the deliveries and for draining the jobs, seconds."""

    record_s: float
    drain_s: float


@asynccontextmanager
async def sqlite_store(tasks: int) -> AsyncIterator[Store]:
    """A fresh SQLite store in a temporary folder."""
    del tasks  # one connection, one thread, whatever the number of tasks
    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore(Path(folder) / "bench.sqlite3") as store:
            yield store


Opener = Callable[[int], AbstractAsyncContextManager[Store]]


def postgres_factory(url: str, *, options: str = "") -> Opener:
    """Fresh PostgreSQL stores, each on a new schema of ``url`` dropped after the run.

    ``options`` are extra server settings for the store's sessions (``-c name=value``).
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from bot.store.postgres import PostgresStore

    @asynccontextmanager
    async def open_store(tasks: int) -> AsyncIterator[Store]:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        name = sql.Identifier(schema)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        try:
            conninfo = make_conninfo(url, options=f"-c search_path={schema} {options}".strip())
            store = PostgresStore(conninfo, min_connections=tasks, max_connections=tasks)
            async with store:
                yield store
        finally:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(name))

    return open_store


async def _drain(store: Store, worker_id: str) -> list[int]:
    done: list[int] = []
    while (job := await store.claim_job(worker_id, lease_seconds=60)) is not None:
        if not await store.complete_job(job.id, worker_id=worker_id):
            raise RuntimeError(f"{worker_id} lost the lease of job {job.id}")
        done.append(job.id)
    return done


async def run_once(open_store: Opener, *, jobs: int, tasks: int) -> Timing:
    """Record ``jobs`` deliveries, then drain them with ``tasks`` workers; time both."""
    async with open_store(tasks) as store:
        received = datetime.now(UTC)
        started = time.perf_counter()
        for number in range(jobs):
            delivery = Delivery(
                delivery_id=f"bench-{number}",
                event="issue_comment",
                action="created",
                installation_id=1,
                repository="octo-org/vqm-registry",
                received_at=received,
                payload_sha256="0" * 64,
            )
            spec = JobSpec("bisect", f"bisect:{number}", {"n": number})
            if not await store.record_delivery(delivery, [spec]):
                raise RuntimeError(f"delivery {number} was not new")
        recorded = time.perf_counter()
        batches = await asyncio.gather(*(_drain(store, f"bench-{n}") for n in range(tasks)))
        drained = time.perf_counter()
        claims = Counter(job_id for batch in batches for job_id in batch)
        counts = await store.job_counts()
        if len(claims) != jobs or set(claims.values()) != {1} or counts[JobState.DONE] != jobs:
            raise RuntimeError(f"jobs not run exactly once: {counts}")
        return Timing(record_s=recorded - started, drain_s=drained - recorded)


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--postgres", default=os.environ.get("MODEL_GUARD_TEST_PG"))
    args = parser.parse_args()
    backends: list[tuple[str, Opener]] = [("SQLite (WAL)", sqlite_store)]
    if args.postgres:
        backends.append(("PostgreSQL", postgres_factory(args.postgres)))
        # SQLite's synchronous=NORMAL in WAL mode does not flush each commit to disk; this
        # is PostgreSQL's setting with the same durability (crash-safe, last commits may be
        # lost on power loss), to separate the fsync from everything else.
        backends.append(
            (
                "PostgreSQL, synchronous_commit=off",
                postgres_factory(args.postgres, options="-c synchronous_commit=off"),
            )
        )
    else:
        print("no --postgres URL (or MODEL_GUARD_TEST_PG): SQLite only")
    print(f"{args.jobs} deliveries, one job each; median of {args.repeats} runs\n")
    print("| store | workers | record s | claim+complete s | total s | jobs/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, factory in backends:
        for tasks in args.tasks:
            timings = [
                asyncio.run(run_once(factory, jobs=args.jobs, tasks=tasks))
                for _ in range(args.repeats)
            ]
            record = statistics.median(t.record_s for t in timings)
            drain = statistics.median(t.drain_s for t in timings)
            total = statistics.median(t.record_s + t.drain_s for t in timings)
            print(
                f"| {name} | {tasks} | {record:.2f} | {drain:.2f} | {total:.2f}"
                f" | {args.jobs / total:.0f} |"
            )


if __name__ == "__main__":
    main()
