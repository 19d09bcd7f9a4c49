"""Which store ``MODEL_GUARD_DB`` names: a PostgreSQL URL, a ``sqlite:///`` URL or a file path."""

from pathlib import Path

from bot.store.base import Store
from bot.store.sqlite import SqliteStore

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite:///"


def is_postgres_url(database: str) -> bool:
    """True when ``database`` names a PostgreSQL database rather than a SQLite file."""
    return database.startswith(_POSTGRES_SCHEMES)


def sqlite_path(database: str) -> Path:
    """Return the file of a SQLite setting: ``sqlite:///rel.db``, ``sqlite:////abs.db`` or a path."""
    if database.startswith(_SQLITE_SCHEME):
        return Path(database[len(_SQLITE_SCHEME) :])
    return Path(database)


def create_store(database: Path | str, *, pool_size: int = 10) -> Store:
    """Return the (unopened) store ``database`` names: a PostgreSQL URL or a SQLite file."""
    if isinstance(database, Path) or not is_postgres_url(database):
        return SqliteStore(sqlite_path(str(database)))
    # Imported here: psycopg is only loaded by a service that runs on PostgreSQL.
    from bot.store.postgres import PostgresStore

    return PostgresStore(database, max_connections=pool_size)
