"""The App's durable store: the backend-free ``Store`` interface and its SQLite implementation."""

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
    make_serial_key,
)
from bot.store.sqlite import SqliteStore

__all__ = [
    "Delivery",
    "InvalidValueError",
    "Job",
    "JobSpec",
    "JobState",
    "RunRecord",
    "SchemaVersionError",
    "SqliteStore",
    "Store",
    "StoreBusyError",
    "StoreError",
    "StoreNotOpenError",
    "make_serial_key",
]
