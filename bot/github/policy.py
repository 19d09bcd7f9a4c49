"""The client's retry, pacing and caching policy, and what it says to do with each response."""

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum

from bot.github.errors import GitHubClientError

# https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#handle-rate-limit-errors-appropriately
# "Otherwise, wait for at least one minute before retrying ... wait for an exponentially
# increasing amount of time between retries" when a secondary limit names no wait.
SECONDARY_FALLBACK_WAIT = 60.0
# x-ratelimit-reset is whole seconds; one more second keeps us past the reset, not on it.
RESET_SLACK = 1.0


@dataclass(frozen=True)
class ClientPolicy:
    """Limits of one client; the defaults follow GitHub's documented limits and advice."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_rate_limit_wait: float = 900.0  # longer waits raise instead of sleeping
    # GitHub allows 80 content-creating requests a minute and 500 an hour, counted when they
    # arrive; the pacer times them when sent, so it keeps a margin: 180 writes paced at
    # exactly 80 a minute drew two secondary-limit 403s.
    writes_per_minute: int = 64
    writes_per_hour: int = 450
    per_installation_concurrency: int = 4
    request_timeout: float = 30.0
    token_refresh_margin: float = 60.0
    etag_cache_entries: int = 512
    # The answers all installations' ETag caches hold together, in bytes as they arrived (the
    # decoded objects take several times that), and the largest answer worth keeping.
    etag_cache_bytes: int = 4 * 1024 * 1024
    etag_entry_max_bytes: int = 512 * 1024

    def __post_init__(self) -> None:
        """Refuse values that would make the client spin, never send, or never wait."""
        for name in (
            "max_attempts",
            "writes_per_minute",
            "writes_per_hour",
            "per_installation_concurrency",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise GitHubClientError(
                    f"ClientPolicy.{name} must be a positive integer, not {value!r}"
                )
        for name in ("etag_cache_bytes", "etag_entry_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GitHubClientError(
                    f"ClientPolicy.{name} must be a positive integer, not {value!r}"
                )
        if self.etag_cache_entries < 1:
            raise GitHubClientError(
                f"ClientPolicy.etag_cache_entries must be at least 1, not {self.etag_cache_entries!r}"
            )
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float | int) and not value >= 0:
                raise GitHubClientError(
                    f"ClientPolicy.{field.name} must not be negative, not {value!r}"
                )
        if self.request_timeout <= 0:
            raise GitHubClientError(
                f"ClientPolicy.request_timeout must be positive, not {self.request_timeout!r}"
            )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff after failed attempt ``attempt`` (1-based).

        https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/: a uniform
        draw below the capped exponential spreads retries of many callers apart.
        """
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


class RetryReason(Enum):
    """Why a request is sent again (the label of the ``github_retries`` metric)."""

    SERVER_ERROR = "server_error"
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    SECONDARY_RATE_LIMIT = "secondary_rate_limit"
    PRIMARY_RATE_LIMIT = "primary_rate_limit"
    BAD_CREDENTIALS = "bad_credentials"


@dataclass(frozen=True)
class Retry:
    """Send the request again for ``reason``: after ``wait`` seconds, or with backoff if None."""

    reason: RetryReason
    wait: float | None = None


def decide_retry(
    status: int, headers: Mapping[str, str], *, body: bytes, now: float, attempt: int
) -> Retry | None:
    """What to do with a response: None returns it to gidgethub, a Retry sends it again.

    ``headers`` is looked up by lower-case name; ``attempt`` is the 1-based attempt that got this answer.
    """
    if status >= 500:
        return Retry(RetryReason.SERVER_ERROR)
    if status == 401 and _message(body) == "Bad credentials":
        return Retry(RetryReason.BAD_CREDENTIALS, 0.0)
    if status not in (403, 429):
        return None
    # The order is GitHub's: retry-after first, then an exhausted primary window, then a minute.
    retry_after = _number(headers.get("retry-after"))
    if retry_after is not None:
        return Retry(RetryReason.SECONDARY_RATE_LIMIT, max(retry_after, 0.0))
    reset = _number(headers.get("x-ratelimit-reset"))
    if headers.get("x-ratelimit-remaining") == "0" and reset is not None:
        return Retry(RetryReason.PRIMARY_RATE_LIMIT, max(reset - now, 0.0) + RESET_SLACK)
    if status == 429 or "secondary rate limit" in _message(body).lower():
        return Retry(RetryReason.SECONDARY_RATE_LIMIT, SECONDARY_FALLBACK_WAIT * 2 ** (attempt - 1))
    return None


def _number(text: str | None) -> float | None:
    """A header holding seconds or a Unix time, as a float (None if absent or not a number)."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _message(body: bytes) -> str:
    """The ``message`` of a GitHub error body, or "" when there is none."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) else ""
