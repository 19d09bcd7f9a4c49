"""PostgreSQL-only behaviour: which setting selects it, and a password never shown."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.store import Delivery, JobSpec, StoreError
from bot.store.select import create_store, sqlite_path
from bot.store.sqlite import SqliteStore
from tests.bot.store.conftest import postgres_url

SECRET = "x" * 32


def _settings(database: str) -> Settings:
    return Settings.from_env({"GITHUB_WEBHOOK_SECRET": SECRET, "MODEL_GUARD_DB": database})


@pytest.mark.parametrize("url", ["postgresql://u:pw@db:5432/guard", "postgres://u:pw@db/guard"])
def test_a_postgres_url_in_model_guard_db_selects_the_postgres_store(url: str) -> None:
    from bot.store.postgres import PostgresStore

    settings = _settings(url)
    assert settings.database == url
    assert "pw" not in repr(settings)
    store = create_store(settings.database)
    assert isinstance(store, PostgresStore)
    assert "pw" not in repr(store)
    assert store.name == "postgresql://u:***@db:5432/guard"


@pytest.mark.parametrize(
    ("setting", "path"),
    [
        ("state/guard.sqlite3", Path("state/guard.sqlite3")),
        ("sqlite:///state/guard.sqlite3", Path("state/guard.sqlite3")),
        ("sqlite:////var/lib/guard.sqlite3", Path("/var/lib/guard.sqlite3")),
    ],
)
def test_a_file_path_or_sqlite_url_keeps_the_sqlite_store(setting: str, path: Path) -> None:
    settings = _settings(setting)
    assert settings.database == path == sqlite_path(setting)
    store = create_store(settings.database)
    assert isinstance(store, SqliteStore)
    assert store.path == str(path)


async def test_a_wrong_password_fails_open_with_an_error_that_does_not_show_it() -> None:
    from psycopg.conninfo import make_conninfo

    from bot.store.postgres import PostgresStore

    url = make_conninfo(postgres_url(), password="not-the-Secret-42")
    store = PostgresStore(url, connect_timeout=5)
    with pytest.raises(StoreError) as failure:
        await store.open()
    message = str(failure.value)
    assert "not-the-Secret-42" not in message
    assert "***" in message
    assert "password authentication failed" in message  # the cause, not just a timeout


async def test_a_replica_with_a_clock_a_year_ahead_neither_stretches_nor_steals_leases(
    postgres_schema: str,
) -> None:
    from bot.store.postgres import PostgresStore

    ahead = datetime.now(UTC) + timedelta(days=365)
    async with PostgresStore(postgres_schema) as honest, PostgresStore(postgres_schema) as skewed:
        await honest.enqueue(JobSpec("bisect", "k", {}))
        # Its wall clock says next year: the lease still ends 30 s after the database's now.
        job = await skewed.claim_job("skewed-worker", lease_seconds=30, now=ahead)
        assert job is not None and job.lease_until is not None
        assert job.lease_until == job.updated_at + timedelta(seconds=30)
        assert job.lease_until < ahead
        # Nor can it requeue a live lease by believing it expired long ago.
        assert await skewed.requeue_abandoned(now=ahead) == 0
        assert not await skewed.extend_lease(job.id, worker_id="other", lease_seconds=30)
        assert await honest.complete_job(job.id, worker_id="skewed-worker")


@pytest.mark.parametrize(
    "url", ["postgresql://u:hunter2@127.0.0.1:notaport/guard", "postgresql://u:hunter2@[::1/guard"]
)
async def test_a_malformed_connection_string_fails_open_without_showing_the_password(
    url: str,
) -> None:
    from bot.store.postgres import PostgresStore

    store = PostgresStore(url)
    assert "hunter2" not in repr(store)
    with pytest.raises(StoreError) as failure:
        await store.open()
    assert "hunter2" not in str(failure.value)
    assert "\n" not in str(failure.value)


async def test_a_store_whose_connections_the_server_dropped_reconnects_without_losing_a_call(
    postgres_schema: str,
) -> None:
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    from bot.store.postgres import PostgresStore

    app = f"model-guard-test-{uuid.uuid4().hex[:8]}"
    async with PostgresStore(
        make_conninfo(postgres_schema, application_name=app), min_connections=2
    ) as store:
        await store.set_value("tracking", "o/r", "7")
        # As after a server restart or failover: every connection of the pool is cut.
        with psycopg.connect(postgres_schema, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (app,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        assert await store.get_value("tracking", "o/r") == "7"
        assert await store.record_delivery(
            Delivery("d-after", "ping", None, None, None, datetime.now(UTC), "0" * 64)
        )
