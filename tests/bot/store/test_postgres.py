"""PostgreSQL-only behaviour: which setting selects it, and a password never shown."""

from pathlib import Path

import pytest

from bot.settings import Settings
from bot.store import StoreError
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
    assert settings.database_url == url
    assert "pw" not in repr(settings)
    store = create_store(database=settings.database, database_url=settings.database_url)
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
    assert settings.database_url is None
    assert settings.database == path == sqlite_path(setting)
    store = create_store(database=settings.database, database_url=settings.database_url)
    assert isinstance(store, SqliteStore)
    assert store.path == str(path)


async def test_a_wrong_password_fails_open_with_an_error_that_does_not_show_it() -> None:
    from psycopg.conninfo import make_conninfo

    from bot.store.postgres import PostgresStore

    url = make_conninfo(postgres_url(), password="not-the-Secret-42")
    store = PostgresStore(url, connect_timeout=5)
    with pytest.raises(StoreError) as failure:
        await store.open()
    assert "not-the-Secret-42" not in str(failure.value)
    assert "***" in str(failure.value)
