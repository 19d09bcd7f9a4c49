"""The embedded store: SQLite in WAL mode, one connection owned by one worker thread.

Every call runs on the store's own single thread (``sqlite3`` connections must stay on the
thread that made them), so calls on one ``SqliteStore`` are serialised; several instances
or processes on one file are coordinated by SQLite itself: writes start with
``BEGIN IMMEDIATE`` (one writer at a time, others wait up to the busy timeout) and WAL lets
readers run beside the writer. See https://www.sqlite.org/wal.html and
https://www.sqlite.org/lang_transaction.html.

Times are stored as ISO 8601 text in UTC with microseconds and a ``+00:00`` suffix
(``2026-11-22T03:00:00.000000+00:00``); the width is fixed, so text order is time order and
``run_at <= ?`` compares correctly. Payloads are stored as canonical JSON text.
"""

import asyncio
import json
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from bot.store.base import (
    Delivery,
    InvalidValueError,
    Job,
    JobSpec,
    JobState,
    RunRecord,
    SchemaVersionError,
    Store,
    StoreBusyError,
    StoreError,
    StoreNotOpenError,
    encode_payload,
    require_aware,
    require_day,
)

T = TypeVar("T")
P = ParamSpec("P")

# Each entry is one schema version; never edit a released one, append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE deliveries (
            delivery_id TEXT PRIMARY KEY,
            event TEXT NOT NULL,
            action TEXT,
            installation_id INTEGER,
            repository TEXT COLLATE NOCASE,
            received_at TEXT NOT NULL,
            payload_sha256 TEXT NOT NULL
        )""",
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            key TEXT NOT NULL UNIQUE,
            payload TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
            run_at TEXT NOT NULL,
            claimed_by TEXT,
            lease_until TEXT,
            last_error TEXT,
            delivery_id TEXT REFERENCES deliveries (delivery_id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX jobs_due ON jobs (state, run_at, id)",
        "CREATE INDEX jobs_lease ON jobs (state, lease_until)",
        "CREATE INDEX jobs_delivery ON jobs (delivery_id)",
        """CREATE TABLE sticky_comments (
            repo TEXT NOT NULL COLLATE NOCASE,
            issue_number INTEGER NOT NULL,
            marker TEXT NOT NULL,
            comment_id INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (repo, issue_number, marker)
        )""",
        """CREATE TABLE schedule_runs (
            kind TEXT NOT NULL,
            repo TEXT NOT NULL COLLATE NOCASE,
            day TEXT NOT NULL,
            claimed_at TEXT NOT NULL,
            PRIMARY KEY (kind, repo, day)
        )""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            repo TEXT NOT NULL COLLATE NOCASE,
            day TEXT NOT NULL,
            commit_sha TEXT,
            outcome TEXT NOT NULL,
            summary TEXT NOT NULL,
            finished_at TEXT NOT NULL
        )""",
        "CREATE INDEX runs_recent ON runs (repo, finished_at, id)",
        """CREATE TABLE kv (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        )""",
    ),
    (
        # A run recorded by a job carries the job's key, so a re-run records it once.
        "ALTER TABLE runs ADD COLUMN run_key TEXT",
        "CREATE UNIQUE INDEX runs_key ON runs (run_key)",
    ),
    (
        # Once-per-repository work (opening a tracking issue) claimed across processes.
        """CREATE TABLE claims (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""",
    ),
    (
        # At most one running job per serial key (the sticky comment or check it writes).
        "ALTER TABLE jobs ADD COLUMN serial_key TEXT",
        """CREATE INDEX jobs_serial ON jobs (serial_key, state, lease_until)
           WHERE serial_key IS NOT NULL""",
    ),
)

_JOB_COLUMNS = (
    "id, kind, key, payload, state, attempts, max_attempts, run_at, claimed_by,"
    " lease_until, last_error, delivery_id, created_at, updated_at, serial_key"
)
_RUN_COLUMNS = "repo, day, commit_sha, outcome, summary, finished_at"


def encode_time(value: datetime) -> str:
    """Return an aware datetime as fixed-width UTC ISO 8601 text (text order = time order)."""
    return require_aware(value, name="time").isoformat(timespec="microseconds")


def decode_time(text: str) -> datetime:
    """Return the UTC datetime that ``encode_time`` wrote."""
    return datetime.fromisoformat(text).astimezone(UTC)


def _bind(
    fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
) -> Callable[[sqlite3.Connection], T]:
    return lambda conn: fn(conn, *args, **kwargs)


def _store_error(path: str, exc: sqlite3.Error) -> StoreError:
    """The store's error for a sqlite3 one: busy/locked is StoreBusyError (try again)."""
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return StoreBusyError(f"{path}: {exc}")
    return StoreError(f"{path}: {exc}")


@dataclass(frozen=True)
class _PendingDelivery:
    """A delivery waiting for the next group commit, and the caller waiting for it."""

    delivery: Delivery
    jobs: tuple[JobSpec, ...]
    now: datetime
    waiter: "asyncio.Future[bool]"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        state=JobState(row["state"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        run_at=decode_time(row["run_at"]),
        claimed_by=row["claimed_by"],
        lease_until=None if row["lease_until"] is None else decode_time(row["lease_until"]),
        last_error=row["last_error"],
        delivery_id=row["delivery_id"],
        created_at=decode_time(row["created_at"]),
        updated_at=decode_time(row["updated_at"]),
        serial_key=row["serial_key"],
    )


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        repo=row["repo"],
        day=row["day"],
        commit_sha=row["commit_sha"],
        outcome=row["outcome"],
        summary=row["summary"],
        finished_at=decode_time(row["finished_at"]),
    )


@dataclass(frozen=True)
class _Finish:
    """What finishing a job did: whether it changed the row, and whether to wake workers."""

    changed: bool
    wake: bool


def _require_worker(worker_id: str) -> None:
    if not worker_id:
        raise InvalidValueError("worker_id must not be empty")


def _lease_end(now: datetime, lease_seconds: float) -> str:
    if not lease_seconds > 0:
        raise InvalidValueError(f"lease_seconds must be > 0, got {lease_seconds}")
    return encode_time(now + timedelta(seconds=lease_seconds))


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one ``BEGIN IMMEDIATE`` transaction: commit on success, else roll back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _insert_job(
    conn: sqlite3.Connection, spec: JobSpec, *, delivery_id: str | None, now: datetime
) -> Job | None:
    """Insert one job inside the caller's transaction; None if its key already exists."""
    stamp = encode_time(now)
    run_at = encode_time(spec.run_at) if spec.run_at is not None else stamp
    rows = conn.execute(
        f"""INSERT INTO jobs (kind, key, payload, state, attempts, max_attempts, run_at,
                              delivery_id, created_at, updated_at, serial_key)
            VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (key) DO NOTHING
            RETURNING {_JOB_COLUMNS}""",
        (
            spec.kind,
            spec.key,
            encode_payload(spec.payload),
            spec.max_attempts,
            run_at,
            delivery_id,
            stamp,
            stamp,
            spec.serial_key,
        ),
    ).fetchall()
    return _job_from_row(rows[0]) if rows else None


def _connect(path: str, *, busy_timeout: float) -> sqlite3.Connection:
    """Open a connection in autocommit mode (we issue BEGIN ourselves) with the pragmas set."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal" and path != ":memory:":
            raise StoreError(f"{path}: cannot switch SQLite to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, *, now: datetime) -> None:
    """Apply the migrations this database lacks, in one transaction shared with other openers."""
    with _write(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        version: int = current.fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaVersionError(
                f"database schema is version {version}, this code knows {len(MIGRATIONS)}"
            )
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (number, encode_time(now)),
            )


class SqliteStore(Store):
    """A ``Store`` on one SQLite file (or ``":memory:"`` for a single-instance test store)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Configure the store; nothing is opened until ``open()``."""
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # Deliveries waiting for the next group commit, and the task committing them.
        self._deliveries: list[_PendingDelivery] = []
        self._committer: asyncio.Task[None] | None = None

    # -- plumbing -------------------------------------------------------------------

    def _now(self, now: datetime | None = None) -> datetime:
        return require_aware(now if now is not None else self._clock(), name="now")

    async def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, ...)`` on the store's thread, mapping sqlite3 errors to StoreError."""
        if self._executor is None:
            raise StoreNotOpenError(f"store {self.path} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, _bind(fn, *args, **kwargs))

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreNotOpenError(f"store {self.path} is not open")
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    def _open_connection(self, now: datetime) -> None:
        try:
            conn = _connect(self.path, busy_timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from exc
        self._conn = conn
        try:
            self._run(lambda c: _migrate(c, now=now))
        except BaseException:
            self._close_connection()
            raise

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def open(self) -> None:
        """Connect, set WAL/synchronous/foreign keys and apply missing migrations."""
        if self._executor is not None:
            raise StoreError(f"store {self.path} is already open")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-guard-store")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._open_connection, self._now())
        except BaseException:
            # If open() was cancelled the thread may still connect: close after it, in order.
            executor.submit(self._close_connection)
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    async def close(self) -> None:
        """Close the connection on its own thread and stop that thread (idempotent)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_connection)
        finally:
            executor.shutdown(wait=False)

    # -- deliveries and jobs --------------------------------------------------------

    async def record_delivery(self, delivery: Delivery, jobs: Sequence[JobSpec] = ()) -> bool:
        """Record a delivery and enqueue its jobs atomically; False (nothing written) if seen.

        Deliveries that arrive while a commit is in flight are written together in the next
        transaction (group commit: one ``BEGIN IMMEDIATE ... COMMIT`` and one hop to the
        store's thread for all of them); each caller returns only after its delivery is
        committed, and each delivery stays atomic under its own savepoint.
        """
        if self._executor is None:
            raise StoreNotOpenError(f"store {self.path} is not open")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._deliveries.append(_PendingDelivery(delivery, tuple(jobs), self._now(), waiter))
        if self._committer is None:
            self._committer = loop.create_task(self._commit_deliveries())
        return await waiter

    async def _commit_deliveries(self) -> None:
        """Commit waiting deliveries, batch after batch, until none is left."""
        try:
            while self._deliveries:
                batch, self._deliveries = self._deliveries, []
                try:
                    results = await self._call(_record_deliveries, batch, self.path)
                except BaseException as exc:  # the transaction itself failed: nothing committed
                    for pending in batch:
                        if pending.waiter.done():
                            continue
                        if isinstance(exc, Exception):
                            pending.waiter.set_exception(exc)
                        else:  # cancelled with its loop: so are its callers
                            pending.waiter.cancel()
                    if not isinstance(exc, Exception):
                        raise
                    continue
                woke = False
                for pending, result in zip(batch, results, strict=True):
                    woke = woke or (result is True and bool(pending.jobs))
                    if pending.waiter.done():  # its caller went away; the row is written
                        continue
                    if isinstance(result, StoreError):
                        pending.waiter.set_exception(result)
                    else:
                        pending.waiter.set_result(result)
                if woke:
                    self.signal_work()
        finally:
            self._committer = None

    async def enqueue(self, job: JobSpec) -> Job | None:
        """Enqueue a job outside any delivery (the scheduler); None if its key exists."""
        queued = await self._call(_enqueue, job, self._now())
        if queued is not None:
            self.signal_work()
        return queued

    async def get_job(self, job_id: int) -> Job | None:
        """Return the job with this id, or None."""
        return await self._call(_get_job, job_id)

    async def jobs_with_prefix(self, kind: str, key_prefix: str, *, limit: int = 1000) -> list[Job]:
        """Return up to ``limit`` jobs of ``kind`` whose key starts with ``key_prefix``, by id."""
        if not key_prefix:
            raise InvalidValueError("key_prefix must not be empty")
        if limit < 1:
            raise InvalidValueError(f"limit must be >= 1, got {limit}")
        return await self._call(_jobs_with_prefix, kind, key_prefix, limit)

    async def claim_job(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        now: datetime | None = None,
        kinds: Collection[str] | None = None,
    ) -> Job | None:
        """Atomically lease the oldest due queued job to ``worker_id``; None when none is due."""
        _require_worker(worker_id)
        moment = self._now(now)
        lease_until = _lease_end(moment, lease_seconds)
        if isinstance(kinds, str):
            raise InvalidValueError(f"kinds must be a collection of kinds, not the str {kinds!r}")
        if kinds is not None and not kinds:
            return None
        chosen = None if kinds is None else tuple(kinds)
        return await self._call(_claim_job, worker_id, moment, lease_until, chosen)

    async def extend_lease(
        self,
        job_id: int,
        *,
        worker_id: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> bool:
        """Push the lease to ``now + lease_seconds``; False unless ``worker_id`` holds it."""
        moment = self._now(now)
        lease_until = _lease_end(moment, lease_seconds)
        return await self._call(_extend_lease, job_id, worker_id, lease_until, moment)

    async def complete_job(self, job_id: int, *, worker_id: str) -> bool:
        """Mark a running job done; False unless ``worker_id`` holds its lease."""
        return self._finished(await self._call(_complete_job, job_id, worker_id, self._now()))

    def _finished(self, finish: _Finish) -> bool:
        """Wake workers if finishing requeued a job or released a serial key."""
        if finish.wake:
            self.signal_work()
        return finish.changed

    async def fail_job(
        self,
        job_id: int,
        *,
        worker_id: str,
        error: str,
        retry_at: datetime | None = None,
    ) -> bool:
        """Record a failed attempt: requeue for ``retry_at`` if attempts remain, else FAILED."""
        retry = None if retry_at is None else encode_time(retry_at)
        finish = await self._call(_fail_job, job_id, worker_id, error, retry, self._now())
        return self._finished(finish)

    async def requeue_abandoned(self, *, now: datetime | None = None) -> int:
        """Requeue running jobs whose lease expired by ``now``; exhausted ones become FAILED."""
        requeued = await self._call(_requeue, self._now(now), True)
        if requeued:
            self.signal_work()
        return requeued

    async def requeue_all_running(self) -> int:
        """Requeue every running job (single-process restart only); exhausted ones FAIL."""
        requeued = await self._call(_requeue, self._now(), False)
        if requeued:
            self.signal_work()
        return requeued

    # -- sticky comments ------------------------------------------------------------

    async def get_sticky(self, repo: str, issue_number: int, marker: str) -> int | None:
        """Return the comment id of the sticky comment with ``marker`` on an issue, or None."""
        return await self._call(_get_sticky, repo, issue_number, marker)

    async def set_sticky(self, repo: str, issue_number: int, marker: str, comment_id: int) -> None:
        """Remember (or replace) the sticky comment id for ``marker`` on an issue."""
        stamp = encode_time(self._now())
        await self._call(_set_sticky, repo, issue_number, marker, comment_id, stamp)

    async def forget_sticky(self, repo: str, issue_number: int, marker: str) -> bool:
        """Forget a sticky comment (e.g. it was deleted); False if none was remembered."""
        return await self._call(_forget_sticky, repo, issue_number, marker)

    # -- schedules and run history --------------------------------------------------

    async def claim_schedule_run(
        self,
        repo: str,
        day: str,
        *,
        kind: str,
        job: JobSpec | None = None,
    ) -> bool:
        """Claim the ``(kind, repo, day)`` run, enqueueing ``job`` with it; True for one caller."""
        require_day(day)
        claimed = await self._call(_claim_schedule_run, kind, repo, day, job, self._now())
        if claimed and job is not None:
            self.signal_work()
        return claimed

    async def last_schedule_run(self, repo: str, *, kind: str) -> str | None:
        """Return the latest claimed day (``YYYY-MM-DD``) for ``repo`` and ``kind``, or None."""
        return await self._call(_last_schedule_run, kind, repo)

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
        """Append a finished run to the repository's history (once per ``key``) and return it."""
        record = RunRecord(repo, day, commit_sha, outcome, summary, finished_at)
        await self._call(_record_run, record, key)
        return record

    async def recent_runs(self, repo: str, *, limit: int = 14) -> list[RunRecord]:
        """Return at most ``limit`` runs of ``repo``, newest ``finished_at`` first."""
        if limit < 0:
            raise InvalidValueError(f"limit must be >= 0, got {limit}")
        return await self._call(_recent_runs, repo, limit)

    # -- metrics --------------------------------------------------------------------

    async def job_counts(self) -> dict[JobState, int]:
        """Return the number of jobs in each state (every state present, zeros included)."""
        return await self._call(_job_counts)

    async def delivery_count(self) -> int:
        """Return the number of deliveries recorded."""
        return await self._call(_count, "deliveries")

    # -- small key-value cache --------------------------------------------------------

    async def get_value(self, namespace: str, key: str) -> str | None:
        """Return the text stored under ``(namespace, key)``, or None."""
        return await self._call(_get_value, namespace, key)

    async def set_value(self, namespace: str, key: str, value: str) -> None:
        """Store (or replace) text under ``(namespace, key)``, e.g. an issue number or ETag."""
        await self._call(_set_value, namespace, key, value, encode_time(self._now()))

    async def delete_value(self, namespace: str, key: str) -> bool:
        """Delete ``(namespace, key)``; False if it was not there."""
        return await self._call(_delete_value, namespace, key)

    async def list_values(self, namespace: str, *, limit: int = 1000) -> dict[str, str]:
        """Return up to ``limit`` entries of ``namespace`` (key -> text), oldest write first."""
        if limit < 1:
            raise InvalidValueError(f"limit must be >= 1, got {limit}")
        return await self._call(_list_values, namespace, limit)

    async def known_deliveries(self, delivery_ids: Collection[str]) -> set[str]:
        """Return those of ``delivery_ids`` the store has recorded."""
        return await self._call(_known_deliveries, tuple(delivery_ids))

    async def acquire_claim(self, name: str, holder: str, *, ttl: timedelta) -> bool:
        """Take ``name`` for ``holder`` until ``ttl`` from now unless another live holder has it."""
        if not name or not holder:
            raise InvalidValueError("a claim needs a name and a holder")
        if ttl <= timedelta(0):
            raise InvalidValueError(f"a claim's ttl must be positive, got {ttl}")
        now = self._now()
        return await self._call(
            _acquire_claim, name, holder, encode_time(now), encode_time(now + ttl)
        )

    async def release_claim(self, name: str, holder: str) -> bool:
        """Release ``name`` if ``holder`` still holds it."""
        return await self._call(_release_claim, name, holder)


# -- the SQL, each run on the store's thread with its connection ------------------------


def _insert_delivery(
    conn: sqlite3.Connection, delivery: Delivery, jobs: tuple[JobSpec, ...], now: datetime
) -> bool:
    """Insert a delivery and its jobs inside the caller's transaction; False if seen."""
    inserted = conn.execute(
        """INSERT INTO deliveries (delivery_id, event, action, installation_id, repository,
                                   received_at, payload_sha256)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (delivery_id) DO NOTHING""",
        (
            delivery.delivery_id,
            delivery.event,
            delivery.action,
            delivery.installation_id,
            delivery.repository,
            encode_time(delivery.received_at),
            delivery.payload_sha256,
        ),
    ).rowcount
    if inserted == 0:
        return False
    for spec in jobs:
        _insert_job(conn, spec, delivery_id=delivery.delivery_id, now=now)
    return True


def _record_deliveries(
    conn: sqlite3.Connection, batch: Sequence[_PendingDelivery], path: str
) -> list[bool | StoreError]:
    """Record a batch of deliveries in one transaction (group commit), each atomic on its own.

    Each delivery is written under its own savepoint: one that fails (a database error on
    its rows) is rolled back alone and gets its error, the others still commit together.
    """
    results: list[bool | StoreError] = []
    with _write(conn):
        for pending in batch:
            conn.execute("SAVEPOINT delivery")
            try:
                results.append(_insert_delivery(conn, pending.delivery, pending.jobs, pending.now))
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK TO delivery")
                results.append(_store_error(path, exc))
            except StoreError as exc:  # e.g. a job payload JSON cannot hold
                conn.execute("ROLLBACK TO delivery")
                results.append(exc)
            except (OverflowError, ValueError, TypeError) as exc:  # a value SQLite cannot hold
                conn.execute("ROLLBACK TO delivery")
                results.append(InvalidValueError(f"{path}: {exc}"))
            conn.execute("RELEASE delivery")
    return results


def _enqueue(conn: sqlite3.Connection, spec: JobSpec, now: datetime) -> Job | None:
    with _write(conn):
        return _insert_job(conn, spec, delivery_id=None, now=now)


def _get_job(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job_from_row(row)


def _jobs_with_prefix(
    conn: sqlite3.Connection, kind: str, key_prefix: str, limit: int
) -> list[Job]:
    # A range on the unique key's index: keys starting with the prefix sort between it and
    # the prefix with its last character raised by one (BINARY collation is code-point order).
    upper = key_prefix[:-1] + chr(ord(key_prefix[-1]) + 1)
    rows = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE key >= ? AND key < ? AND kind = ? "
        "ORDER BY id LIMIT ?",
        (key_prefix, upper, kind, limit),
    ).fetchall()
    return [_job_from_row(row) for row in rows]


def _claim_job(
    conn: sqlite3.Connection,
    worker_id: str,
    now: datetime,
    lease_until: str,
    kinds: tuple[str, ...] | None,
) -> Job | None:
    kind_filter = "" if kinds is None else f" AND q.kind IN ({', '.join('?' * len(kinds))})"
    # BEGIN IMMEDIATE makes the check and the claim one step for every process on the
    # file: no other claim can commit between them.
    stamp = encode_time(now)
    with _write(conn):
        rows = conn.execute(
            f"""UPDATE jobs
                SET state = 'running', attempts = attempts + 1, claimed_by = ?,
                    lease_until = ?, updated_at = ?
                WHERE id = (SELECT q.id FROM jobs AS q
                            WHERE q.state = 'queued' AND q.run_at <= ?{kind_filter}
                              AND (q.serial_key IS NULL OR NOT EXISTS (
                                    SELECT 1 FROM jobs AS r
                                    WHERE r.serial_key = q.serial_key
                                      AND r.state = 'running' AND r.lease_until > ?))
                            ORDER BY q.run_at, q.id LIMIT 1)
                RETURNING {_JOB_COLUMNS}""",
            (worker_id, lease_until, stamp, stamp, *(kinds or ()), stamp),
        ).fetchall()
    return _job_from_row(rows[0]) if rows else None


def _extend_lease(
    conn: sqlite3.Connection, job_id: int, worker_id: str, lease_until: str, now: datetime
) -> bool:
    with _write(conn):
        changed = conn.execute(
            """UPDATE jobs SET lease_until = ?, updated_at = ?
               WHERE id = ? AND state = 'running' AND claimed_by = ? AND lease_until > ?""",
            (lease_until, encode_time(now), job_id, worker_id, encode_time(now)),
        ).rowcount
    return changed == 1


def _complete_job(conn: sqlite3.Connection, job_id: int, worker_id: str, now: datetime) -> _Finish:
    with _write(conn):
        rows = conn.execute(
            """UPDATE jobs SET state = 'done', lease_until = NULL, updated_at = ?
               WHERE id = ? AND state = 'running' AND claimed_by = ?
               RETURNING serial_key""",
            (encode_time(now), job_id, worker_id),
        ).fetchall()
    # A released serial key may let a job that waited for it be claimed now.
    return _Finish(changed=bool(rows), wake=bool(rows) and rows[0]["serial_key"] is not None)


def _fail_job(
    conn: sqlite3.Connection,
    job_id: int,
    worker_id: str,
    error: str,
    retry_at: str | None,
    now: datetime,
) -> _Finish:
    with _write(conn):
        row = conn.execute(
            """SELECT attempts, max_attempts, serial_key FROM jobs
               WHERE id = ? AND state = 'running' AND claimed_by = ?""",
            (job_id, worker_id),
        ).fetchone()
        if row is None:
            return _Finish(changed=False, wake=False)
        requeued = retry_at is not None and row["attempts"] < row["max_attempts"]
        if requeued:
            conn.execute(
                """UPDATE jobs SET state = 'queued', run_at = ?, claimed_by = NULL,
                                   lease_until = NULL, last_error = ?, updated_at = ?
                   WHERE id = ?""",
                (retry_at, error, encode_time(now), job_id),
            )
        else:
            conn.execute(
                """UPDATE jobs SET state = 'failed', lease_until = NULL, last_error = ?,
                                   updated_at = ?
                   WHERE id = ?""",
                (error, encode_time(now), job_id),
            )
    return _Finish(changed=True, wake=requeued or row["serial_key"] is not None)


def _requeue(conn: sqlite3.Connection, now: datetime, expired_only: bool) -> int:
    stamp = encode_time(now)
    expired = " AND lease_until <= ?" if expired_only else ""
    params: tuple[str, ...] = (stamp,) if expired_only else ()
    with _write(conn):
        conn.execute(
            f"""UPDATE jobs
                SET state = 'failed', lease_until = NULL, updated_at = ?,
                    last_error = 'abandoned by ' || COALESCE(claimed_by, '?')
                                 || ' after ' || attempts || ' of ' || max_attempts
                                 || ' attempts'
                WHERE state = 'running' AND attempts >= max_attempts{expired}""",
            (stamp, *params),
        )
        return conn.execute(
            f"""UPDATE jobs
                SET state = 'queued', claimed_by = NULL, lease_until = NULL, updated_at = ?,
                    last_error = 'abandoned by ' || COALESCE(claimed_by, '?')
                WHERE state = 'running'{expired}""",
            (stamp, *params),
        ).rowcount


def _get_sticky(conn: sqlite3.Connection, repo: str, issue_number: int, marker: str) -> int | None:
    row = conn.execute(
        """SELECT comment_id FROM sticky_comments
           WHERE repo = ? AND issue_number = ? AND marker = ?""",
        (repo, issue_number, marker),
    ).fetchone()
    return None if row is None else int(row["comment_id"])


def _set_sticky(
    conn: sqlite3.Connection,
    repo: str,
    issue_number: int,
    marker: str,
    comment_id: int,
    stamp: str,
) -> None:
    with _write(conn):
        conn.execute(
            """INSERT INTO sticky_comments (repo, issue_number, marker, comment_id, updated_at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (repo, issue_number, marker)
               DO UPDATE SET comment_id = excluded.comment_id, updated_at = excluded.updated_at""",
            (repo, issue_number, marker, comment_id, stamp),
        )


def _forget_sticky(conn: sqlite3.Connection, repo: str, issue_number: int, marker: str) -> bool:
    with _write(conn):
        deleted = conn.execute(
            "DELETE FROM sticky_comments WHERE repo = ? AND issue_number = ? AND marker = ?",
            (repo, issue_number, marker),
        ).rowcount
    return deleted == 1


def _claim_schedule_run(
    conn: sqlite3.Connection,
    kind: str,
    repo: str,
    day: str,
    job: JobSpec | None,
    now: datetime,
) -> bool:
    with _write(conn):
        claimed = conn.execute(
            """INSERT INTO schedule_runs (kind, repo, day, claimed_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (kind, repo, day) DO NOTHING""",
            (kind, repo, day, encode_time(now)),
        ).rowcount
        if claimed == 1 and job is not None:
            _insert_job(conn, job, delivery_id=None, now=now)
    return claimed == 1


def _last_schedule_run(conn: sqlite3.Connection, kind: str, repo: str) -> str | None:
    row = conn.execute(
        "SELECT MAX(day) AS day FROM schedule_runs WHERE kind = ? AND repo = ?", (kind, repo)
    ).fetchone()
    day: str | None = row["day"]
    return day


def _record_run(conn: sqlite3.Connection, record: RunRecord, key: str | None) -> None:
    with _write(conn):
        # A NULL key never conflicts; a repeated key is ignored (recorded once).
        conn.execute(
            f"INSERT OR IGNORE INTO runs ({_RUN_COLUMNS}, run_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.repo,
                record.day,
                record.commit_sha,
                record.outcome,
                record.summary,
                encode_time(record.finished_at),
                key,
            ),
        )


def _recent_runs(conn: sqlite3.Connection, repo: str, limit: int) -> list[RunRecord]:
    rows = conn.execute(
        f"""SELECT {_RUN_COLUMNS} FROM runs WHERE repo = ?
            ORDER BY finished_at DESC, id DESC LIMIT ?""",
        (repo, limit),
    ).fetchall()
    return [_run_from_row(row) for row in rows]


def _job_counts(conn: sqlite3.Connection) -> dict[JobState, int]:
    counts = dict.fromkeys(JobState, 0)
    for row in conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
        counts[JobState(row["state"])] = int(row["n"])
    return counts


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _get_value(conn: sqlite3.Connection, namespace: str, key: str) -> str | None:
    row = conn.execute(
        "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
    ).fetchone()
    return None if row is None else str(row["value"])


def _set_value(conn: sqlite3.Connection, namespace: str, key: str, value: str, stamp: str) -> None:
    with _write(conn):
        conn.execute(
            """INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (namespace, key)
               DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
            (namespace, key, value, stamp),
        )


def _list_values(conn: sqlite3.Connection, namespace: str, limit: int) -> dict[str, str]:
    rows = conn.execute(
        "SELECT key, value FROM kv WHERE namespace = ? ORDER BY updated_at, key LIMIT ?",
        (namespace, limit),
    ).fetchall()
    return {str(row["key"]): str(row["value"]) for row in rows}


def _delete_value(conn: sqlite3.Connection, namespace: str, key: str) -> bool:
    with _write(conn):
        deleted = conn.execute(
            "DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        ).rowcount
    return deleted == 1


def _acquire_claim(
    conn: sqlite3.Connection, name: str, holder: str, now: str, expires_at: str
) -> bool:
    with _write(conn):
        taken = conn.execute(
            """INSERT INTO claims (name, holder, expires_at) VALUES (?, ?, ?)
               ON CONFLICT (name) DO UPDATE
               SET holder = excluded.holder, expires_at = excluded.expires_at
               WHERE claims.holder = excluded.holder OR claims.expires_at <= ?""",
            (name, holder, expires_at, now),
        ).rowcount
    return taken == 1


def _release_claim(conn: sqlite3.Connection, name: str, holder: str) -> bool:
    with _write(conn):
        released = conn.execute(
            "DELETE FROM claims WHERE name = ? AND holder = ?", (name, holder)
        ).rowcount
    return released == 1


def _known_deliveries(conn: sqlite3.Connection, delivery_ids: tuple[str, ...]) -> set[str]:
    known: set[str] = set()
    # SQLite allows 32,766 bound parameters since 3.32; 500 a query stays far below any limit.
    for start in range(0, len(delivery_ids), 500):
        chunk = delivery_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT delivery_id FROM deliveries WHERE delivery_id IN ({marks})", chunk
        ).fetchall()
        known.update(str(row["delivery_id"]) for row in rows)
    return known
