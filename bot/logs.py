"""Structured JSON logs that carry the delivery id and never carry secrets or tokens."""

import contextvars
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

delivery_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "delivery_id", default=None
)
# Fields every record of the current task carries, e.g. the job a worker is running.
context_fields: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "context_fields", default=MappingProxyType({})
)

# Installation tokens (ghs_), user tokens (ghp_, gho_, ghu_, github_pat_), JWTs and signatures.
_SECRETS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|sha(?:1|256)=[0-9a-fA-F]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----[^-]*-----END [A-Z ]*PRIVATE KEY-----)"
)


def redact(text: str) -> str:
    """Replace anything shaped like a token, JWT, signature or private key with ``[redacted]``."""
    return _SECRETS.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, delivery id and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as redacted JSON."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := delivery_id.get()) is not None:
            entry["delivery_id"] = current
        entry.update(context_fields.get())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
        return redact(json.dumps(entry, default=str))


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
