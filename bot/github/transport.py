"""gidgethub's aiohttp API with our transport: auth, retries, rate-limit waits, pacing, a cap."""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import gidgethub.aiohttp

from bot.github.credentials import Credentials
from bot.github.errors import GitHubClientError, GitHubRateLimited, GitHubUnavailable
from bot.github.etags import EtagBudget, EtagCache
from bot.github.pacing import HOUR, MINUTE, WritePacer
from bot.github.policy import ClientPolicy, Retry, RetryReason, decide_retry
from bot.telemetry import Telemetry

log = logging.getLogger("model_guard.github")
# A pacing hold at least this long is logged: an hour's budget spent can hold writes for
# many minutes, which would otherwise look like a hung job.
PACING_LOG_SECONDS = 5.0

# https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits
# counts POST, PATCH, PUT and DELETE as content-generating.
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# https://docs.github.com/rest/about-the-rest-api/api-versions: pin the version we were written
# against, so a new default version cannot change answers under us.
API_VERSION = "2022-11-28"


@dataclass(frozen=True)
class Exchange:
    """One answered attempt, and the ``Authorization`` we added to it (None if the caller's)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    authorization: str | None


class ResilientAPI(gidgethub.aiohttp.GitHubAPI):
    """A gidgethub API whose ``_request`` hook owns credentials, retries, pacing and concurrency.

    gidgethub builds the request and deciphers the final response (raising its BadRequest,
    GitHubBroken, ... and filling its ETag cache); everything between is ours, per attempt.
    A POST that creates something is never sent again blind: a 5xx, a timeout or a connection
    lost after sending can hide a create that happened, so the caller looks for what it made
    first (``bot.github.writes.create_once``). It is resent only when GitHub surely did
    nothing: a rate-limit refusal, or a connection that never opened.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        label: str,
        credentials: Credentials,
        policy: ClientPolicy,
        base_url: str,
        requester: str,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
        telemetry: Telemetry | None,
        etag_budget: EtagBudget | None = None,
    ) -> None:
        """Wrap ``session``; ``label`` names the API in logs ("app", "installation 42").

        ``etag_budget`` bounds the bytes this API's ETag cache holds together with its
        client's other APIs (one of its own, from ``policy``, when not given).
        """
        budget = etag_budget or EtagBudget(
            policy.etag_cache_bytes, max_entry_bytes=policy.etag_entry_max_bytes
        )
        self.cache = EtagCache(policy.etag_cache_entries, budget)
        super().__init__(session, requester, cache=self.cache, base_url=base_url)
        self.label = label
        self._credentials = credentials
        self._policy = policy
        self._clock = clock
        self._sleep_for = sleep
        self._rng = rng
        self._telemetry = telemetry
        self._timeout = aiohttp.ClientTimeout(total=policy.request_timeout)
        self._gate = asyncio.Semaphore(policy.per_installation_concurrency)
        self._pacer = WritePacer(
            ((policy.writes_per_minute, MINUTE), (policy.writes_per_hour, HOUR)),
            clock=clock,
            sleep=sleep,
            on_wait=self._paced,
        )
        # A rate limit answered to one request holds back every request of this API until then.
        self._resume_at = 0.0
        self._closed = False

    def _paced(self, seconds: float, recent: int) -> None:
        """Log a write held back for GitHub's content-creation limits for more than a moment."""
        if seconds >= PACING_LOG_SECONDS:
            log.warning(
                "holding a write for GitHub's content-creation limits",
                extra={"api": self.label, "wait_s": round(seconds, 1), "recent_writes": recent},
            )

    async def sleep(self, seconds: float) -> None:
        """gidgethub's sleep hook, on the injected sleep."""
        await self._sleep_for(seconds)

    def close(self) -> None:
        """Refuse further requests and forget cached responses."""
        self._closed = True
        self.cache.clear()

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send one logical request, retrying it as the policy says; return the final answer."""
        if self._closed:
            raise GitHubClientError(f"{method} {_path(url)}: the GitHub client is closed")
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            try:
                exchange = await self._attempt(method, url, headers, body)
            except (aiohttp.ClientError, TimeoutError) as error:
                self._count("error")
                reason = (
                    RetryReason.TIMEOUT
                    if isinstance(error, TimeoutError)
                    else RetryReason.CONNECTION
                )
                if _creates(method, url) and not isinstance(error, aiohttp.ClientConnectorError):
                    raise GitHubUnavailable(
                        f"{method} {_path(url)}: no answer from GitHub ({reason.value}: "
                        f"{type(error).__name__}); not resent, it may have been done"
                    ) from error
                if attempt >= self._policy.max_attempts:
                    raise GitHubUnavailable(
                        f"{method} {_path(url)}: no answer from GitHub after {attempt} attempts "
                        f"({reason.value}: {type(error).__name__})"
                    ) from error
                await self._wait(Retry(reason), attempt=attempt, method=method, url=url)
                continue
            self._count(str(exchange.status))
            retry = decide_retry(
                exchange.status,
                exchange.headers,
                body=exchange.body,
                now=self._clock(),
                attempt=attempt,
            )
            answer = (exchange.status, exchange.headers, exchange.body)
            if retry is None:
                if method == "GET" and exchange.status == 200:
                    self.cache.note_size(url, len(exchange.body))
                return answer
            if retry.reason is RetryReason.SERVER_ERROR and _creates(method, url):
                return answer  # GitHub may have created it: gidgethub raises GitHubBroken
            if retry.reason is RetryReason.BAD_CREDENTIALS:
                # A token revoked or expired early: drop it and try once more with a fresh one.
                if refreshed or exchange.authorization is None:
                    return answer
                if not self._credentials.invalidate(exchange.authorization):
                    return answer
                refreshed = True
                attempt -= 1  # not GitHub failing: the fresh token gets the full attempts
                self._note_retry(retry, delay=0.0, attempt=attempt, method=method, url=url)
                continue
            if attempt >= self._policy.max_attempts:
                return answer  # gidgethub raises its GitHubBroken / BadRequest for it
            await self._wait(retry, attempt=attempt, method=method, url=url)

    async def _attempt(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Exchange:
        """One HTTP exchange, under the rate-limit hold, the concurrency cap and write pacing."""
        while (pause := self._resume_at - self._clock()) > 0:
            await self._sleep_for(pause)
        async with self._gate:
            # Pacing inside the cap records real start times; a paced write holds its slot.
            if method.upper() in WRITE_METHODS:
                await self._pacer.wait_turn()
            sent = {"x-github-api-version": API_VERSION, **headers}
            authorization: str | None = None
            if "authorization" not in sent:
                authorization = await self._credentials.authorization()
                sent["authorization"] = authorization
            async with self._session.request(
                method, url, headers=sent, data=body, timeout=self._timeout
            ) as response:
                return Exchange(
                    response.status, response.headers, await response.read(), authorization
                )

    async def _wait(self, retry: Retry, *, attempt: int, method: str, url: str) -> None:
        """Sleep before the next attempt: backoff, or the wait GitHub asked for (bounded)."""
        if retry.wait is None:
            delay = self._policy.backoff(attempt, self._rng)
        else:
            delay = retry.wait
            if delay > self._policy.max_rate_limit_wait:
                raise GitHubRateLimited(
                    f"{method} {_path(url)}: GitHub asks to wait {delay:.0f} s "
                    f"({retry.reason.value}), more than the {self._policy.max_rate_limit_wait:.0f} s "
                    "the client waits",
                    wait=delay,
                )
            self._resume_at = max(self._resume_at, self._clock() + delay)
        self._note_retry(retry, delay=delay, attempt=attempt, method=method, url=url)
        await self._sleep_for(delay)

    def _count(self, status: str) -> None:
        if self._telemetry is not None:
            self._telemetry.github_requests.labels(status=status).inc()

    def _note_retry(
        self, retry: Retry, *, delay: float, attempt: int, method: str, url: str
    ) -> None:
        if self._telemetry is not None:
            self._telemetry.github_retries.labels(reason=retry.reason.value).inc()
        log.warning(
            "retrying GitHub request",
            extra={
                "fields": {
                    "api": self.label,
                    "method": method,
                    "path": _path(url),
                    "reason": retry.reason.value,
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                }
            },
        )


def _creates(method: str, url: str) -> bool:
    """True for a request that creates something on GitHub, so is not safe to resend blind.

    Installation tokens are the exception: a second token is harmless, the first is unused.
    https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app
    """
    return method.upper() == "POST" and not _path(url).endswith("/access_tokens")


def _path(url: str) -> str:
    """The path of a request URL, for messages (never the query or credentials)."""
    return urlsplit(url).path or "/"
