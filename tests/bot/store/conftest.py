"""The store tests' backends: every ``store`` test runs on SQLite and on PostgreSQL.

PostgreSQL needs ``MODEL_GUARD_TEST_PG`` (a connection string to a database the tests may
create schemas in; ``.ci/run`` starts the server and sets it). Without it the PostgreSQL
cases skip locally and fail under ``CI=true``. Each PostgreSQL case gets a fresh schema,
dropped afterwards, so cases never see each other's rows.
"""

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from bot.store import SqliteStore, Store

PG_ENV = "MODEL_GUARD_TEST_PG"


def postgres_url() -> str:
    """The test server's connection string; skip (or fail under CI=true) without one."""
    url = os.environ.get(PG_ENV)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {PG_ENV} is not set: .ci/run must start PostgreSQL")
    pytest.skip(f"PostgreSQL store tests need {PG_ENV}=postgresql://... (.ci/run sets it)")


@dataclass(frozen=True)
class Backend:
    """One test's database on one backend: make stores on it and run raw SQL against it."""

    name: str
    target: str  # the SQLite file, or the PostgreSQL conninfo selecting the test's schema

    def make(self, clock: Callable[[], datetime] | None = None) -> Store:
        """Return a new, unopened store on this test's database."""
        if self.name == "sqlite":
            return (
                SqliteStore(self.target) if clock is None else SqliteStore(self.target, clock=clock)
            )
        from bot.store.postgres import PostgresStore

        return PostgresStore(self.target, clock=clock, max_connections=4)

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """Run one statement outside the store (committed); return its rows."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.target)
            try:
                with conn:
                    return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as pg:
            cursor = pg.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description is not None else []


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A conninfo on a fresh schema of the test server, dropped after the test."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    url = postgres_url()
    schema = f"store_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield make_conninfo(url, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The test's database on each backend in turn."""
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "store.db"))
    return Backend("postgres", request.getfixturevalue("postgres_schema"))
