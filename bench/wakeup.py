"""Benchmark: how long an enqueued job waits for an idle worker, woken against polled.

Run: ``python -m bench.wakeup [--samples 15] [--repeats 3] [--poll 1.0] [--postgres URL]``.
One ``WorkerPool`` (one worker, ``poll_seconds = --poll``) idles on a store; another store
instance on the same database (another replica) enqueues a job at a random moment of the
poll interval, ``--samples`` times, one job at a time. The latency is from just before the
enqueue call to the handler starting (the job claimed). Each case is paired with its
polling baseline in the same run:

- PostgreSQL, woken: the worker's store ``LISTEN``\\ s, the enqueue ``NOTIFY``\\ s;
- PostgreSQL, polled: the same with ``listen=False`` (as behind a transaction pooler);
- SQLite, woken: the job enqueued through the worker's own store (in-process wake-up);
- SQLite, polled: enqueued through another store instance on the file (no wake-up).

It prints the median and 90th percentile of each run's samples and the median of those
over ``--repeats`` runs, in milliseconds.
"""

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.jobs.worker import WorkerOptions, WorkerPool
from bot.store import Job, JobSpec, SqliteStore, Store

# A pair of stores on one fresh database: (the worker's, the enqueuer's).
Pair = Callable[[], AbstractAsyncContextManager[tuple[Store, Store]]]


@dataclass(frozen=True)
class Run:
    """One run's enqueue-to-claim latencies, milliseconds."""

    median_ms: float
    p90_ms: float


@asynccontextmanager
async def sqlite_pair(*, same: bool) -> AsyncIterator[tuple[Store, Store]]:
    """A worker's SQLite store and the enqueuer's: itself (woken) or another instance."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.sqlite3"
        async with SqliteStore(path) as worker, SqliteStore(path) as other:
            yield worker, (worker if same else other)


def postgres_pair(url: str, *, listen: bool) -> Pair:
    """Two PostgreSQL stores on a new schema of ``url`` (dropped after the run)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from bot.store.postgres import PostgresStore

    @asynccontextmanager
    async def pair() -> AsyncIterator[tuple[Store, Store]]:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        name = sql.Identifier(schema)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        try:
            conninfo = make_conninfo(url, options=f"-c search_path={schema}")
            async with (
                PostgresStore(conninfo, max_connections=4, listen=listen) as worker,
                PostgresStore(conninfo, max_connections=2) as other,
            ):
                yield worker, other
        finally:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(name))

    return pair


async def _listening(store: Store) -> None:
    """Wait until a PostgreSQL store's LISTEN connection is up (if it listens at all)."""
    from bot.store.postgres import PostgresStore

    if isinstance(store, PostgresStore) and store.listen:
        async with asyncio.timeout(30):
            while store.listen_backend_pid is None:
                await asyncio.sleep(0.01)


async def run_once(pair: Pair, *, samples: int, poll: float, rng: random.Random) -> Run:
    """Enqueue ``samples`` jobs one at a time; return the latency to each one's claim."""
    started: dict[str, float] = {}
    claimed: dict[str, asyncio.Event] = {}

    async def handler(job: Job) -> None:
        started[job.key] = time.perf_counter()
        claimed[job.key].set()

    latencies: list[float] = []
    async with pair() as (worker, enqueuer):
        options = WorkerOptions(workers=1, lease_seconds=60.0, poll_seconds=poll)
        pool = WorkerPool(worker, {"bench": handler}, options=options)
        await pool.start()
        try:
            await _listening(worker)
            for number in range(samples):
                key = f"bench:{number}"
                claimed[key] = asyncio.Event()
                # At a random moment of the worker's poll cycle, as a webhook would come.
                await asyncio.sleep(rng.uniform(0.0, poll))
                before = time.perf_counter()
                if await enqueuer.enqueue(JobSpec("bench", key, {"n": number})) is None:
                    raise RuntimeError(f"job {key} was not new")
                await asyncio.wait_for(claimed[key].wait(), timeout=poll * 5 + 10)
                latencies.append((started[key] - before) * 1000)
        finally:
            await pool.stop()
    ordered = sorted(latencies)
    return Run(
        median_ms=statistics.median(ordered),
        p90_ms=ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    )


def main() -> None:
    """Parse the options, run every case ``--repeats`` times and print a Markdown table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--postgres", default=os.environ.get("MODEL_GUARD_TEST_PG"))
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    cases: list[tuple[str, Pair]] = []
    if args.postgres:
        cases += [
            (
                "PostgreSQL, another replica, LISTEN/NOTIFY",
                postgres_pair(args.postgres, listen=True),
            ),
            ("PostgreSQL, another replica, polling", postgres_pair(args.postgres, listen=False)),
        ]
    cases += [
        ("SQLite, same process, in-process wake-up", lambda: sqlite_pair(same=True)),
        ("SQLite, another store instance, polling", lambda: sqlite_pair(same=False)),
    ]
    rng = random.Random(args.seed)
    results: dict[str, list[Run]] = {name: [] for name, _ in cases}
    # Interleaved, so a burst of load on the machine hits every case alike.
    for _ in range(args.repeats):
        for name, pair in cases:
            results[name].append(
                asyncio.run(run_once(pair, samples=args.samples, poll=args.poll, rng=rng))
            )
    print(f"poll interval {args.poll} s, {args.samples} jobs a run, {args.repeats} runs")
    print("| case | median ms (runs) | median ms | p90 ms |")
    print("|---|---|---:|---:|")
    for name, runs in results.items():
        medians = ", ".join(f"{run.median_ms:.1f}" for run in runs)
        median = statistics.median(run.median_ms for run in runs)
        p90 = statistics.median(run.p90_ms for run in runs)
        print(f"| {name} | {medians} | {median:.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
