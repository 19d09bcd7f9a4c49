"""The shared store for several replicas: PostgreSQL through psycopg 3's async connection pool.

Every guarantee of ``bot.store.base`` is kept by the database, never by a lock in this
process, so any number of replicas may share one database:

- a delivery and its jobs are written in one transaction, deduplicated by
  ``INSERT ... ON CONFLICT DO NOTHING`` on the delivery id and on the job key;
- ``claim_job`` picks the next due job with ``SELECT ... FOR UPDATE SKIP LOCKED``, so
  concurrent claimers never wait on nor take the same row
  (https://www.postgresql.org/docs/15/sql-select.html#SQL-FOR-UPDATE-SHARE);
- a job with a serial key is claimed only after a transaction-level advisory lock on the
  key is taken and a fresh statement finds no running job with a live lease holding it
  (see ``_claim_serial``), so one key never runs twice at once across replicas;
- a write that makes a job claimable sends ``NOTIFY`` in its own transaction and
  ``wait_for_work`` ``LISTEN``\\ s on one dedicated connection, polling while it is down;
- heartbeat, complete and fail are single ``UPDATE``\\ s fenced by job id, ``running`` state
  and the lease holder, so a worker whose lease was requeued and claimed again changes nothing;
- leases, due times, requeues, claims and timestamps use the database clock (``now()``),
  one clock for every replica whatever their own clocks say: a ``now`` passed by a caller
  is ignored, unless the store was made with a ``clock`` (tests drive time with one);
- migrations run at ``open()`` in one transaction holding ``pg_advisory_xact_lock`` for the
  schema, so replicas starting together apply each version exactly once.

Repository names are compared case-insensitively (as GitHub does) by keying on ``lower(repo)``.
Job and KV keys use the ``"C"`` collation, so key order is code-point order as in SQLite.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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

log = logging.getLogger("model_guard.store")

# Each entry is one schema version; never edit a released one, append a new one. Payloads
# are canonical JSON text, as in SQLite: jsonb would refuse a U+0000 inside a string.
MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (
        """CREATE TABLE deliveries (
            delivery_id TEXT PRIMARY KEY,
            event TEXT NOT NULL,
            action TEXT,
            installation_id BIGINT,
            repository TEXT,
            received_at TIMESTAMPTZ NOT NULL,
            payload_sha256 TEXT NOT NULL
        )""",
        """CREATE TABLE jobs (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind TEXT NOT NULL,
            key TEXT COLLATE "C" NOT NULL UNIQUE,
            payload TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
            run_at TIMESTAMPTZ NOT NULL,
            claimed_by TEXT,
            lease_until TIMESTAMPTZ,
            last_error TEXT,
            delivery_id TEXT REFERENCES deliveries (delivery_id) ON DELETE SET NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        # Only queued rows are ever scanned for a claim: a partial index stays small.
        "CREATE INDEX jobs_due ON jobs (run_at, id) WHERE state = 'queued'",
        "CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running'",
        "CREATE INDEX jobs_delivery ON jobs (delivery_id)",
        """CREATE TABLE sticky_comments (
            repo_key TEXT NOT NULL,
            issue_number BIGINT NOT NULL,
            marker TEXT NOT NULL,
            comment_id BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (repo_key, issue_number, marker)
        )""",
        """CREATE TABLE schedule_runs (
            kind TEXT NOT NULL,
            repo_key TEXT NOT NULL,
            day TEXT NOT NULL,
            claimed_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (kind, repo_key, day)
        )""",
        """CREATE TABLE runs (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            repo TEXT NOT NULL,
            repo_key TEXT NOT NULL,
            day TEXT NOT NULL,
            commit_sha TEXT,
            outcome TEXT NOT NULL,
            summary TEXT NOT NULL,
            finished_at TIMESTAMPTZ NOT NULL,
            run_key TEXT UNIQUE
        )""",
        "CREATE INDEX runs_recent ON runs (repo_key, finished_at, id)",
        """CREATE TABLE kv (
            namespace TEXT NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            value TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (namespace, key)
        )""",
        """CREATE TABLE claims (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )""",
    ),
    (
        # At most one running job per serial key (the sticky comment or check it writes):
        # the claim looks up running holders of a key through this small partial index.
        'ALTER TABLE jobs ADD COLUMN serial_key TEXT COLLATE "C"',
        """CREATE INDEX jobs_serial_running ON jobs (serial_key, lease_until)
           WHERE state = 'running' AND serial_key IS NOT NULL""",
    ),
)

_JOB_COLUMNS = (
    "id, kind, key, payload, state, attempts, max_attempts, run_at, claimed_by,"
    " lease_until, last_error, delivery_id, created_at, updated_at, serial_key"
)
# The moment of a call: the caller's ``now`` (a test clock) or else the database's clock.
_NOW = "COALESCE(%(now)s::timestamptz, now())"
_JOB_COLUMNS_OF_JOBS: LiteralString = (
    "jobs.id, jobs.kind, jobs.key, jobs.payload, jobs.state, jobs.attempts, jobs.max_attempts,"
    " jobs.run_at, jobs.claimed_by, jobs.lease_until, jobs.last_error, jobs.delivery_id,"
    " jobs.created_at, jobs.updated_at, jobs.serial_key"
)
# Every replica LISTENs here; the payload is the schema, so stores on other schemas of one
# database (tests, or two deployments) ignore each other's wake-ups.
CHANNEL: LiteralString = "model_guard_jobs"
_NOTIFY: LiteralString = f"pg_notify('{CHANNEL}', current_schema())"
# Another job holding the serial key of job ``q`` under a live lease blocks ``q``'s claim.
_KEY_HELD: LiteralString = f"""EXISTS (
    SELECT 1 FROM jobs AS holder
    WHERE holder.serial_key = q.serial_key AND holder.state = 'running'
      AND holder.lease_until > {_NOW})"""
# How many serial-keyed candidates one claim tries before reporting nothing due.
_CLAIM_TRIES = 16
_LEASE_JOB: LiteralString = f"""
    UPDATE jobs
    SET state = 'running', attempts = attempts + 1, claimed_by = %(worker)s,
        lease_until = {_NOW} + %(lease)s, updated_at = {_NOW}"""
# The oldest due queued job whose serial key no live job holds (a snapshot's view: only a
# hint for a keyed job). A job without a key is claimed by this one statement; a keyed one
# is only picked (id and key returned, nothing changed) and claimed by ``_claim_serial``.
_CLAIM_NEXT: LiteralString = f"""
    WITH picked AS (
        SELECT q.id, q.serial_key FROM jobs AS q
        WHERE q.state = 'queued' AND q.run_at <= {_NOW}
          AND (%(kinds)s::text[] IS NULL OR q.kind = ANY(%(kinds)s::text[]))
          AND (q.serial_key IS NULL
               OR (q.serial_key <> ALL(%(passed)s::text[]) AND NOT {_KEY_HELD}))
        ORDER BY q.run_at, q.id
        LIMIT 1
        FOR UPDATE OF q SKIP LOCKED),
    claimed AS (
        {_LEASE_JOB}
        FROM picked WHERE jobs.id = picked.id AND picked.serial_key IS NULL
        RETURNING {_JOB_COLUMNS_OF_JOBS})
    SELECT picked.id AS picked_id, picked.serial_key AS picked_serial_key, claimed.*
    FROM picked LEFT JOIN claimed ON TRUE"""
# Claim a picked keyed job, run after its key's advisory lock was taken (a fresh snapshot).
_CLAIM_SERIAL: LiteralString = f"""
    {_LEASE_JOB}
    FROM (SELECT q.id FROM jobs AS q
          WHERE q.id = %(id)s AND q.state = 'queued' AND q.run_at <= {_NOW}
            AND NOT {_KEY_HELD}
          FOR UPDATE OF q) AS picked
    WHERE jobs.id = picked.id
    RETURNING {_JOB_COLUMNS_OF_JOBS}"""


def redact_conninfo(conninfo: str) -> str:
    """Return the connection string with any password replaced by ``***``, safe to log."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable connection string)"
    if "password" in params:
        params["password"] = "***"
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    user = params.get("user", "")
    name = params.get("dbname", "")
    secret = ":***" if "password" in params else ""
    return f"postgresql://{user}{secret}{'@' if user else ''}{host}:{port}/{name}"


def _describe(error: BaseException) -> str:
    """An error's message on one line (libpq's messages span several)."""
    return " ".join(str(error).split())


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _job_from_row(row: dict[str, Any]) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        state=JobState(row["state"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        run_at=row["run_at"].astimezone(UTC),
        claimed_by=row["claimed_by"],
        lease_until=_utc(row["lease_until"]),
        last_error=row["last_error"],
        delivery_id=row["delivery_id"],
        created_at=row["created_at"].astimezone(UTC),
        updated_at=row["updated_at"].astimezone(UTC),
        serial_key=row["serial_key"],
    )


def _require_worker(worker_id: str) -> None:
    if not worker_id:
        raise InvalidValueError("worker_id must not be empty")


def _require_lease(lease_seconds: float) -> timedelta:
    if not lease_seconds > 0:
        raise InvalidValueError(f"lease_seconds must be > 0, got {lease_seconds}")
    return timedelta(seconds=lease_seconds)


# A new job wakes the listening workers of every replica (NOTIFY is sent at commit).
_INSERT_JOB: LiteralString = f"""
    WITH inserted AS (
        INSERT INTO jobs (kind, key, payload, state, attempts, max_attempts, run_at,
                          delivery_id, created_at, updated_at, serial_key)
        VALUES (%(kind)s, %(key)s, %(payload)s, 'queued', 0, %(max_attempts)s,
                COALESCE(%(run_at)s::timestamptz, {_NOW}), %(delivery_id)s, {_NOW}, {_NOW},
                %(serial_key)s)
        ON CONFLICT (key) DO NOTHING
        RETURNING {_JOB_COLUMNS})
    SELECT inserted.*, {_NOTIFY} IS NULL AS notified FROM inserted"""


def _job_params(spec: JobSpec, *, delivery_id: str | None, now: datetime | None) -> dict[str, Any]:
    """Bind one job's insert, encoding its payload (InvalidValueError if JSON cannot hold it)."""
    return {
        "kind": spec.kind,
        "key": spec.key,
        "payload": encode_payload(spec.payload),
        "max_attempts": spec.max_attempts,
        "run_at": spec.run_at,
        "delivery_id": delivery_id,
        "serial_key": spec.serial_key,
        "now": now,
    }


class PostgresStore(Store):
    """A ``Store`` on one PostgreSQL database (or one schema of it), shared by every replica."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
        listen: bool = True,
        listen_retry_seconds: float = 1.0,
        listen_retry_max_seconds: float = 30.0,
        listen_check_seconds: float = 30.0,
    ) -> None:
        """Configure the store; nothing connects until ``open()``.

        ``conninfo`` is a libpq connection string or ``postgresql://`` URL. Without a
        ``clock`` every time comes from the database's ``now()`` and the ``now`` arguments
        of the calls are ignored; with one (tests) they are honoured as in SQLite.

        With ``listen=False`` ``wait_for_work`` hears only this process's own jobs and the
        workers poll for the rest (for a pooler such as PgBouncer in transaction mode, which
        cannot hold a ``LISTEN``). The ``listen_*`` settings time the ``LISTEN`` connection:
        the first reconnect delay after it drops (doubled up to the max), and how long it may
        sit silent before a round trip checks that it is still alive.
        """
        if not 1 <= min_connections <= max_connections:
            raise InvalidValueError(
                f"need 1 <= min_connections <= max_connections, got"
                f" {min_connections} and {max_connections}"
            )
        self.conninfo = conninfo
        self.name = redact_conninfo(conninfo)
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._clock = clock
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] | None = None
        self._conninfo = conninfo
        self.listen = listen
        self.listen_retry_seconds = listen_retry_seconds
        self.listen_retry_max_seconds = max(listen_retry_max_seconds, listen_retry_seconds)
        self.listen_check_seconds = listen_check_seconds
        self._listener: asyncio.Task[None] | None = None
        self._listen_pid: int | None = None

    def __repr__(self) -> str:
        """Name the database without its password."""
        return f"PostgresStore({self.name!r})"

    # -- plumbing -------------------------------------------------------------------

    def _now(self, now: datetime | None = None) -> datetime | None:
        """None (the database clock), or with a test clock the caller's time or the clock's.

        Without a clock a caller's ``now`` is checked but not used: each replica's workers
        pass their own wall clock, and leases must be timed on one clock shared by all.
        """
        if now is not None:
            now = require_aware(now, name="now")
        if self._clock is None:
            return None
        return now if now is not None else require_aware(self._clock(), name="now")

    def _require_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]:
        if self._pool is None:
            raise StoreNotOpenError(f"store {self.name} is not open")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A pooled connection in autocommit mode (each statement its own transaction)."""
        pool = self._require_pool()
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreBusyError(f"{self.name}: no free connection: {_describe(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.name}: {_describe(exc)}") from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A pooled connection inside one transaction: committed on success, else rolled back."""
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _execute(
        self, query: LiteralString, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run one statement (atomic on its own); return its rows (empty if none)."""
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description is not None else []

    async def _rowcount(self, query: LiteralString, params: dict[str, Any]) -> int:
        """Run one writing statement (atomic on its own); return how many rows it changed."""
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    async def open(self) -> None:
        """Open the pool (failing fast if the database is unreachable) and migrate."""
        if self._pool is not None:
            raise StoreError(f"store {self.name} is already open")
        try:
            extra: dict[str, Any] = {"connect_timeout": max(1, int(self.connect_timeout))}
            if "application_name" not in conninfo_to_dict(self.conninfo):
                extra["application_name"] = "model-guard"  # how pg_stat_activity names us
            conninfo = make_conninfo(self.conninfo, **extra)
            # One plain connection first: the pool retries quietly and would only report a
            # timeout, where this names the cause (unknown host, refused, wrong password).
            probe = await psycopg.AsyncConnection.connect(conninfo)
            await probe.close()
        except psycopg.Error as exc:
            # libpq quotes a connection string it cannot parse: never show it, password and all.
            message = _describe(exc).replace(self.conninfo, "(the connection string)")
            raise StoreError(f"{self.name}: cannot connect: {message}") from None
        pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            conninfo,
            min_size=self.min_connections,
            max_size=self.max_connections,
            # Autocommit: a lone statement is its own transaction, with no BEGIN and COMMIT
            # round trips; several statements that must hold together use transaction().
            kwargs={"row_factory": dict_row, "autocommit": True},
            # A round trip per checkout, so a connection the server dropped (restart,
            # failover, idle timeout) is replaced before a delivery is written on it.
            check=AsyncConnectionPool.check_connection,
            timeout=self.connect_timeout,
            name="model-guard-store",
            open=False,
        )
        self._conninfo = conninfo
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
            self._pool = pool
            await self._migrate()
        except BaseException as exc:
            self._pool = None
            await pool.close()
            if isinstance(exc, PoolTimeout):
                raise StoreError(f"{self.name}: cannot connect: {_describe(exc)}") from None
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"{self.name}: {_describe(exc)}") from exc
            raise

    async def _migrate(self) -> None:
        """Apply the versions this database lacks, one transaction, one opener at a time."""
        pool = self._require_pool()
        async with pool.connection() as conn, conn.transaction():
            # Held until commit: a second replica waits here, then finds nothing to do.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('model-guard:migrate:' || current_schema()))"
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute(
                "SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations"
            )
            row = await cursor.fetchone()
            version = int(row["version"]) if row is not None else 0
            if version > len(MIGRATIONS):
                raise SchemaVersionError(
                    f"database schema is version {version}, this code knows {len(MIGRATIONS)}"
                )
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES (%(v)s)", {"v": number}
                )

    async def close(self) -> None:
        """Stop listening and close every pooled connection (idempotent)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- wake-ups ---------------------------------------------------------------------

    @property
    def listen_backend_pid(self) -> int | None:
        """The server process id of the ``LISTEN`` connection, or None while it is down."""
        return self._listen_pid

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait for a job enqueued or released by any replica (``LISTEN``), or ``timeout``.

        The first call starts the listening connection; while it is down (and until it is
        back) the timeout is the only wake-up, so workers poll as they would without it.
        """
        self._require_pool()
        if self.listen and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(self._listen(), name="model-guard-listen")
        return await super().wait_for_work(timeout)

    async def _listen(self) -> None:
        """Hold one ``LISTEN`` connection, waking ``wait_for_work`` on each notification.

        When the connection cannot be made or drops, warn once, reconnect with a doubling
        backoff and say when it is back; workers poll meanwhile, and one wake-up on
        reconnect covers whatever was enqueued while nobody listened.
        """
        delay = self.listen_retry_seconds
        lost = False
        while True:
            try:
                await self._listen_once(recovering=lost)
            except Exception as exc:  # whatever broke it, polling goes on and we reconnect
                if not lost:
                    log.warning(
                        "LISTEN connection to %s lost, polling until it is back: %s",
                        self.name,
                        _describe(exc),
                    )
                lost = True
            else:
                lost, delay = False, self.listen_retry_seconds
            await asyncio.sleep(delay)
            if lost:
                delay = min(delay * 2, self.listen_retry_max_seconds)

    async def _listen_once(self, *, recovering: bool) -> None:
        """Connect, ``LISTEN`` and relay notifications until the connection fails."""
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            cursor = await conn.execute("SELECT current_schema()")
            row = await cursor.fetchone()
            schema = None if row is None else row[0]
            await conn.execute(f"LISTEN {CHANNEL}")
            self._listen_pid = conn.info.backend_pid
            if recovering:
                log.info("LISTEN connection to %s is back", self.name)
                self.signal_work()
            while True:
                async for note in conn.notifies(timeout=self.listen_check_seconds):
                    if note.payload == schema:
                        self.signal_work()
                # Silent for a while: a round trip proves the connection still lives.
                async with asyncio.timeout(self.connect_timeout):
                    await conn.execute("SELECT 1")
        finally:
            self._listen_pid = None
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    # -- deliveries and jobs --------------------------------------------------------

    async def record_delivery(self, delivery: Delivery, jobs: Sequence[JobSpec] = ()) -> bool:
        """Record a delivery and enqueue its jobs in one transaction; False if seen before."""
        now = self._now()
        # Encoded first: a payload JSON cannot hold is refused before anything is written.
        inserts = [_job_params(spec, delivery_id=delivery.delivery_id, now=now) for spec in jobs]
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """INSERT INTO deliveries (delivery_id, event, action, installation_id,
                                           repository, received_at, payload_sha256)
                   VALUES (%(id)s, %(event)s, %(action)s, %(installation)s, %(repo)s,
                           %(received)s, %(sha)s)
                   ON CONFLICT (delivery_id) DO NOTHING""",
                {
                    "id": delivery.delivery_id,
                    "event": delivery.event,
                    "action": delivery.action,
                    "installation": delivery.installation_id,
                    "repo": delivery.repository,
                    "received": delivery.received_at,
                    "sha": delivery.payload_sha256,
                },
            )
            if cursor.rowcount == 0:
                return False
            for params in inserts:
                await conn.execute(_INSERT_JOB, params)
        if inserts:
            self.signal_work()
        return True

    async def enqueue(self, job: JobSpec) -> Job | None:
        """Enqueue a job outside any delivery (the scheduler); None if its key exists."""
        rows = await self._execute(_INSERT_JOB, _job_params(job, delivery_id=None, now=self._now()))
        if not rows:
            return None
        self.signal_work()  # this process's workers at once, even while LISTEN is down
        return _job_from_row(rows[0])

    async def get_job(self, job_id: int) -> Job | None:
        """Return the job with this id, or None."""
        rows = await self._execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %(id)s", {"id": job_id}
        )
        return _job_from_row(rows[0]) if rows else None

    async def jobs_with_prefix(self, kind: str, key_prefix: str, *, limit: int = 1000) -> list[Job]:
        """Return up to ``limit`` jobs of ``kind`` whose key starts with ``key_prefix``, by id."""
        if not key_prefix:
            raise InvalidValueError("key_prefix must not be empty")
        if limit < 1:
            raise InvalidValueError(f"limit must be >= 1, got {limit}")
        # A range on the unique key's "C"-collated index, as in the SQLite store.
        upper = key_prefix[:-1] + chr(ord(key_prefix[-1]) + 1)
        rows = await self._execute(
            f"""SELECT {_JOB_COLUMNS} FROM jobs
                WHERE key >= %(low)s AND key < %(high)s AND kind = %(kind)s
                ORDER BY id LIMIT %(limit)s""",
            {"low": key_prefix, "high": upper, "kind": kind, "limit": limit},
        )
        return [_job_from_row(row) for row in rows]

    async def claim_job(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        now: datetime | None = None,
        kinds: Collection[str] | None = None,
    ) -> Job | None:
        """Lease the oldest due queued job to ``worker_id`` (``FOR UPDATE SKIP LOCKED``)."""
        _require_worker(worker_id)
        lease = _require_lease(lease_seconds)
        moment = self._now(now)
        if isinstance(kinds, str):
            raise InvalidValueError(f"kinds must be a collection of kinds, not the str {kinds!r}")
        if kinds is not None and not kinds:
            return None
        params: dict[str, Any] = {
            "now": moment,
            "kinds": None if kinds is None else list(kinds),
            "worker": worker_id,
            "lease": lease,
            "passed": [],
        }
        for _ in range(_CLAIM_TRIES):
            rows = await self._execute(_CLAIM_NEXT, params)
            if not rows:
                return None
            row = rows[0]
            if row["id"] is not None:
                return _job_from_row(row)
            job = await self._claim_serial(row["picked_id"], row["picked_serial_key"], params)
            if job is not None:
                return job
            params["passed"].append(row["picked_serial_key"])
        return None

    async def _claim_serial(self, job_id: int, key: str, params: dict[str, Any]) -> Job | None:
        """Claim job ``job_id`` unless another running job holds its serial key ``key``.

        Two claimers can each pick a queued job of one key (different rows: SKIP LOCKED does
        not stop them), and a check inside their claiming statement would read a snapshot
        taken before the other's claim committed. So the key is first locked with a
        transaction-level advisory lock (held until commit, as the claim's row is) and only
        then checked, by a new statement whose snapshot sees every claim committed before
        the lock was granted. A claimer that cannot get the lock at once skips the key: the
        holder of the lock is claiming a job of that key right now.
        """
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """SELECT pg_try_advisory_xact_lock(
                       hashtextextended('model-guard:serial:' || current_schema() || ':'
                                        || %(key)s, 0)) AS locked""",
                {"key": key},
            )
            locked = await cursor.fetchone()
            if locked is None or not locked["locked"]:
                return None
            cursor = await conn.execute(_CLAIM_SERIAL, {**params, "id": job_id})
            row = await cursor.fetchone()
        return None if row is None else _job_from_row(row)

    async def extend_lease(
        self,
        job_id: int,
        *,
        worker_id: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> bool:
        """Push the lease to ``now + lease_seconds``; False unless ``worker_id`` holds it."""
        lease = _require_lease(lease_seconds)
        changed = await self._rowcount(
            f"""UPDATE jobs SET lease_until = {_NOW} + %(lease)s, updated_at = {_NOW}
                WHERE id = %(id)s AND state = 'running' AND claimed_by = %(worker)s
                  AND lease_until > {_NOW}""",
            {"now": self._now(now), "lease": lease, "id": job_id, "worker": worker_id},
        )
        return changed == 1

    async def complete_job(self, job_id: int, *, worker_id: str) -> bool:
        """Mark a running job done; False unless ``worker_id`` holds its lease."""
        # A released serial key may let a job waiting for it be claimed: wake the workers.
        rows = await self._execute(
            f"""WITH done AS (
                    UPDATE jobs SET state = 'done', lease_until = NULL, updated_at = {_NOW}
                    WHERE id = %(id)s AND state = 'running' AND claimed_by = %(worker)s
                    RETURNING serial_key)
                SELECT CASE WHEN serial_key IS NOT NULL THEN {_NOTIFY} IS NULL END AS woke
                FROM done""",
            {"now": self._now(), "id": job_id, "worker": worker_id},
        )
        return len(rows) == 1

    async def fail_job(
        self,
        job_id: int,
        *,
        worker_id: str,
        error: str,
        retry_at: datetime | None = None,
    ) -> bool:
        """Record a failed attempt: requeue for ``retry_at`` if attempts remain, else FAILED."""
        retry = None if retry_at is None else require_aware(retry_at, name="retry_at")
        # PostgreSQL text cannot hold NUL; an error message is for people, so show it escaped.
        error = error.replace("\x00", "\\x00")
        # One statement: the retry decision reads the row it updates, under its row lock. A
        # requeued job or a released serial key wakes the workers.
        rows = await self._execute(
            f"""WITH failed AS (
                UPDATE jobs SET
                    state = CASE WHEN %(retry)s::timestamptz IS NOT NULL
                                      AND attempts < max_attempts
                                 THEN 'queued' ELSE 'failed' END,
                    run_at = CASE WHEN %(retry)s::timestamptz IS NOT NULL
                                       AND attempts < max_attempts
                                  THEN %(retry)s::timestamptz ELSE run_at END,
                    claimed_by = CASE WHEN %(retry)s::timestamptz IS NOT NULL
                                           AND attempts < max_attempts
                                      THEN NULL ELSE claimed_by END,
                    lease_until = NULL, last_error = %(error)s, updated_at = {_NOW}
                WHERE id = %(id)s AND state = 'running' AND claimed_by = %(worker)s
                RETURNING state, serial_key)
                SELECT CASE WHEN state = 'queued' OR serial_key IS NOT NULL
                            THEN {_NOTIFY} IS NULL END AS woke
                FROM failed""",
            {
                "retry": retry,
                "error": error,
                "now": self._now(),
                "id": job_id,
                "worker": worker_id,
            },
        )
        return len(rows) == 1

    async def _requeue(self, *, now: datetime | None, expired_only: bool) -> int:
        expired: LiteralString = f" AND lease_until <= {_NOW}" if expired_only else ""
        async with self._transaction() as conn:
            await conn.execute(
                f"""UPDATE jobs
                    SET state = 'failed', lease_until = NULL, updated_at = {_NOW},
                        last_error = 'abandoned by ' || COALESCE(claimed_by, '?')
                                     || ' after ' || attempts || ' of ' || max_attempts
                                     || ' attempts'
                    WHERE state = 'running' AND attempts >= max_attempts{expired}""",
                {"now": now},
            )
            cursor = await conn.execute(
                f"""UPDATE jobs
                    SET state = 'queued', claimed_by = NULL, lease_until = NULL,
                        updated_at = {_NOW},
                        last_error = 'abandoned by ' || COALESCE(claimed_by, '?')
                    WHERE state = 'running'{expired}""",
                {"now": now},
            )
            if cursor.rowcount:
                await conn.execute(f"SELECT {_NOTIFY}")
            return cursor.rowcount

    async def requeue_abandoned(self, *, now: datetime | None = None) -> int:
        """Requeue running jobs whose lease expired by ``now``; exhausted ones become FAILED."""
        return await self._requeue(now=self._now(now), expired_only=True)

    async def requeue_all_running(self) -> int:
        """Requeue every running job (single-process restart only); exhausted ones FAIL."""
        return await self._requeue(now=self._now(), expired_only=False)

    # -- sticky comments ------------------------------------------------------------

    async def get_sticky(self, repo: str, issue_number: int, marker: str) -> int | None:
        """Return the comment id of the sticky comment with ``marker`` on an issue, or None."""
        rows = await self._execute(
            """SELECT comment_id FROM sticky_comments
               WHERE repo_key = lower(%(repo)s) AND issue_number = %(issue)s
                 AND marker = %(marker)s""",
            {"repo": repo, "issue": issue_number, "marker": marker},
        )
        return int(rows[0]["comment_id"]) if rows else None

    async def set_sticky(self, repo: str, issue_number: int, marker: str, comment_id: int) -> None:
        """Remember (or replace) the sticky comment id for ``marker`` on an issue."""
        await self._execute(
            f"""INSERT INTO sticky_comments (repo_key, issue_number, marker, comment_id,
                                             updated_at)
                VALUES (lower(%(repo)s), %(issue)s, %(marker)s, %(comment)s, {_NOW})
                ON CONFLICT (repo_key, issue_number, marker)
                DO UPDATE SET comment_id = excluded.comment_id, updated_at = excluded.updated_at""",
            {
                "repo": repo,
                "issue": issue_number,
                "marker": marker,
                "comment": comment_id,
                "now": self._now(),
            },
        )

    async def forget_sticky(self, repo: str, issue_number: int, marker: str) -> bool:
        """Forget a sticky comment (e.g. it was deleted); False if none was remembered."""
        deleted = await self._rowcount(
            """DELETE FROM sticky_comments
               WHERE repo_key = lower(%(repo)s) AND issue_number = %(issue)s
                 AND marker = %(marker)s""",
            {"repo": repo, "issue": issue_number, "marker": marker},
        )
        return deleted == 1

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
        now = self._now()
        insert = None if job is None else _job_params(job, delivery_id=None, now=now)
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"""INSERT INTO schedule_runs (kind, repo_key, day, claimed_at)
                    VALUES (%(kind)s, lower(%(repo)s), %(day)s, {_NOW})
                    ON CONFLICT (kind, repo_key, day) DO NOTHING""",
                {"kind": kind, "repo": repo, "day": day, "now": now},
            )
            claimed = cursor.rowcount == 1
            if claimed and insert is not None:
                await conn.execute(_INSERT_JOB, insert)
        if claimed and insert is not None:
            self.signal_work()
        return claimed

    async def last_schedule_run(self, repo: str, *, kind: str) -> str | None:
        """Return the latest claimed day (``YYYY-MM-DD``) for ``repo`` and ``kind``, or None."""
        rows = await self._execute(
            """SELECT MAX(day) AS day FROM schedule_runs
               WHERE kind = %(kind)s AND repo_key = lower(%(repo)s)""",
            {"kind": kind, "repo": repo},
        )
        day: str | None = rows[0]["day"]
        return day

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
        # A NULL key never conflicts; a repeated key is ignored (recorded once).
        await self._execute(
            """INSERT INTO runs (repo, repo_key, day, commit_sha, outcome, summary, finished_at,
                                 run_key)
               VALUES (%(repo)s, lower(%(repo)s), %(day)s, %(sha)s, %(outcome)s, %(summary)s,
                       %(finished)s, %(key)s)
               ON CONFLICT (run_key) DO NOTHING""",
            {
                "repo": record.repo,
                "day": record.day,
                "sha": record.commit_sha,
                "outcome": record.outcome,
                "summary": record.summary,
                "finished": record.finished_at,
                "key": key,
            },
        )
        return record

    async def recent_runs(self, repo: str, *, limit: int = 14) -> list[RunRecord]:
        """Return at most ``limit`` runs of ``repo``, newest ``finished_at`` first."""
        if limit < 0:
            raise InvalidValueError(f"limit must be >= 0, got {limit}")
        rows = await self._execute(
            """SELECT repo, day, commit_sha, outcome, summary, finished_at FROM runs
               WHERE repo_key = lower(%(repo)s)
               ORDER BY finished_at DESC, id DESC LIMIT %(limit)s""",
            {"repo": repo, "limit": limit},
        )
        return [
            RunRecord(
                repo=row["repo"],
                day=row["day"],
                commit_sha=row["commit_sha"],
                outcome=row["outcome"],
                summary=row["summary"],
                finished_at=row["finished_at"].astimezone(UTC),
            )
            for row in rows
        ]

    # -- metrics --------------------------------------------------------------------

    async def job_counts(self) -> dict[JobState, int]:
        """Return the number of jobs in each state (every state present, zeros included)."""
        counts = dict.fromkeys(JobState, 0)
        for row in await self._execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[JobState(row["state"])] = int(row["n"])
        return counts

    async def delivery_count(self) -> int:
        """Return the number of deliveries recorded."""
        rows = await self._execute("SELECT COUNT(*) AS n FROM deliveries")
        return int(rows[0]["n"])

    async def known_deliveries(self, delivery_ids: Collection[str]) -> set[str]:
        """Return those of ``delivery_ids`` the store has recorded."""
        if not delivery_ids:
            return set()
        rows = await self._execute(
            "SELECT delivery_id FROM deliveries WHERE delivery_id = ANY(%(ids)s::text[])",
            {"ids": list(delivery_ids)},
        )
        return {str(row["delivery_id"]) for row in rows}

    # -- small key-value cache --------------------------------------------------------

    async def get_value(self, namespace: str, key: str) -> str | None:
        """Return the text stored under ``(namespace, key)``, or None."""
        rows = await self._execute(
            "SELECT value FROM kv WHERE namespace = %(ns)s AND key = %(key)s",
            {"ns": namespace, "key": key},
        )
        return str(rows[0]["value"]) if rows else None

    async def set_value(self, namespace: str, key: str, value: str) -> None:
        """Store (or replace) text under ``(namespace, key)``, e.g. an issue number or ETag."""
        await self._execute(
            f"""INSERT INTO kv (namespace, key, value, updated_at)
                VALUES (%(ns)s, %(key)s, %(value)s, {_NOW})
                ON CONFLICT (namespace, key)
                DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
            {"ns": namespace, "key": key, "value": value, "now": self._now()},
        )

    async def delete_value(self, namespace: str, key: str) -> bool:
        """Delete ``(namespace, key)``; False if it was not there."""
        deleted = await self._rowcount(
            "DELETE FROM kv WHERE namespace = %(ns)s AND key = %(key)s",
            {"ns": namespace, "key": key},
        )
        return deleted == 1

    async def list_values(self, namespace: str, *, limit: int = 1000) -> dict[str, str]:
        """Return up to ``limit`` entries of ``namespace`` (key -> text), oldest write first."""
        if limit < 1:
            raise InvalidValueError(f"limit must be >= 1, got {limit}")
        rows = await self._execute(
            """SELECT key, value FROM kv WHERE namespace = %(ns)s
               ORDER BY updated_at, key LIMIT %(limit)s""",
            {"ns": namespace, "limit": limit},
        )
        return {str(row["key"]): str(row["value"]) for row in rows}

    # -- claims: once-per-repository work across processes ------------------------------

    async def acquire_claim(self, name: str, holder: str, *, ttl: timedelta) -> bool:
        """Take ``name`` for ``holder`` until ``ttl`` from now unless another live holder has it."""
        if not name or not holder:
            raise InvalidValueError("a claim needs a name and a holder")
        if ttl <= timedelta(0):
            raise InvalidValueError(f"a claim's ttl must be positive, got {ttl}")
        taken = await self._rowcount(
            f"""INSERT INTO claims (name, holder, expires_at)
                VALUES (%(name)s, %(holder)s, {_NOW} + %(ttl)s)
                ON CONFLICT (name) DO UPDATE
                SET holder = excluded.holder, expires_at = excluded.expires_at
                WHERE claims.holder = excluded.holder OR claims.expires_at <= {_NOW}""",
            {"name": name, "holder": holder, "ttl": ttl, "now": self._now()},
        )
        return taken == 1

    async def release_claim(self, name: str, holder: str) -> bool:
        """Release ``name`` if ``holder`` still holds it."""
        released = await self._rowcount(
            "DELETE FROM claims WHERE name = %(name)s AND holder = %(holder)s",
            {"name": name, "holder": holder},
        )
        return released == 1
