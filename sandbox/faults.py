"""Failure injection: make chosen requests fail, hit rate limits, stall or lose the connection."""

from __future__ import annotations

import http
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from sandbox.errors import ApiError

# https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api
RATE_LIMIT_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
SECONDARY_DOCS = f"{RATE_LIMIT_DOCS}#about-secondary-rate-limits"


class FaultKind(Enum):
    """What an injected fault does."""

    STATUS = "status"
    SECONDARY_RATE_LIMIT = "secondary_rate_limit"
    PRIMARY_RATE_LIMIT = "primary_rate_limit"
    SLOW = "slow"
    DROP = "drop"
    # The request is done (a check run, a comment is created), then answered with an error:
    # what a client sees when GitHub's answer is lost after the write.
    LOST_ANSWER = "lost_answer"


@dataclass(frozen=True)
class Fault:
    """One injected fault rule; ``times`` None means every matching request."""

    kind: FaultKind
    method: str
    pattern: re.Pattern[str]
    times: int | None
    status: int = 502
    message: str | None = None
    retry_after: int = 1
    reset_in: int = 60
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        """True for a request this rule applies to (``*`` matches any method)."""
        method_ok = self.method == "*" or self.method == method.upper()
        return method_ok and self.pattern.search(path) is not None


@dataclass(frozen=True)
class FaultPlan:
    """The faults one request gets: a delay, and at most one failure (or a dropped connection)."""

    delay: float
    failure: Fault | None

    @property
    def drop(self) -> bool:
        """True when the connection should be closed without an answer."""
        return self.failure is not None and self.failure.kind is FaultKind.DROP


def _compile(path_regex: str | re.Pattern[str]) -> re.Pattern[str]:
    return path_regex if isinstance(path_regex, re.Pattern) else re.compile(path_regex)


class Faults:
    """The fault rules of one sandbox; ``path_regex`` is searched in the request path (no query)."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        """Start with no faults."""
        self._clock = clock
        self._rules: list[Fault] = []
        self._lock = threading.Lock()
        self.fired: list[Fault] = []

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._rules.append(fault)
        return fault

    def fail_next(
        self,
        method: str,
        path_regex: str | re.Pattern[str],
        *,
        status: int = 502,
        times: int | None = 1,
        message: str | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` (a GitHub-style error body)."""
        return self._add(
            Fault(FaultKind.STATUS, method.upper(), _compile(path_regex), times, status, message)
        )

    def secondary_rate_limit(
        self,
        method: str,
        path_regex: str | re.Pattern[str],
        *,
        times: int | None = 1,
        retry_after: int = 1,
        status: int = 403,
    ) -> Fault:
        """Answer with GitHub's secondary-rate-limit 403 and a ``retry-after`` header."""
        return self._add(
            Fault(
                FaultKind.SECONDARY_RATE_LIMIT,
                method.upper(),
                _compile(path_regex),
                times,
                status,
                retry_after=retry_after,
            )
        )

    def primary_rate_limit_exhausted(
        self,
        method: str,
        path_regex: str | re.Pattern[str],
        *,
        times: int | None = 1,
        status: int = 403,
        reset_in: int = 60,
    ) -> Fault:
        """Answer as if the primary limit ran out: 403/429, remaining 0, reset ``reset_in`` away."""
        return self._add(
            Fault(
                FaultKind.PRIMARY_RATE_LIMIT,
                method.upper(),
                _compile(path_regex),
                times,
                status,
                reset_in=reset_in,
            )
        )

    def slow(
        self,
        method: str,
        path_regex: str | re.Pattern[str],
        *,
        seconds: float,
        times: int | None = 1,
    ) -> Fault:
        """Delay matching requests by ``seconds`` before answering normally."""
        return self._add(
            Fault(FaultKind.SLOW, method.upper(), _compile(path_regex), times, seconds=seconds)
        )

    def drop_connection(
        self, method: str, path_regex: str | re.Pattern[str], *, times: int | None = 1
    ) -> Fault:
        """Close the connection of matching requests without answering."""
        return self._add(Fault(FaultKind.DROP, method.upper(), _compile(path_regex), times))

    def lose_answer(
        self,
        method: str,
        path_regex: str | re.Pattern[str],
        *,
        status: int = 502,
        times: int | None = 1,
    ) -> Fault:
        """Carry out matching requests, then answer ``status`` as if the real answer was lost."""
        return self._add(
            Fault(FaultKind.LOST_ANSWER, method.upper(), _compile(path_regex), times, status)
        )

    def remove(self, fault: Fault) -> None:
        """Remove one rule (as ``_add`` returned it; a rule with ``times`` left counts down)."""
        with self._lock:
            self._rules = [rule for rule in self._rules if rule != fault]

    def clear(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._rules.clear()

    @property
    def pending(self) -> list[Fault]:
        """Rules that can still fire."""
        with self._lock:
            return list(self._rules)

    def plan(self, method: str, path: str) -> FaultPlan:
        """Consume the rules that apply to one request: every delay, then the first failure."""
        delay = 0.0
        failure: Fault | None = None
        with self._lock:
            kept: list[Fault] = []
            for rule in self._rules:
                applies = rule.matches(method, path) and (
                    rule.kind is FaultKind.SLOW or failure is None
                )
                if not applies:
                    kept.append(rule)
                    continue
                if rule.kind is FaultKind.SLOW:
                    delay += rule.seconds
                else:
                    failure = rule
                self.fired.append(rule)
                if rule.times is None:
                    kept.append(rule)
                elif rule.times > 1:
                    kept.append(replace(rule, times=rule.times - 1))
            self._rules = kept
        return FaultPlan(delay, failure)

    def error_for(self, fault: Fault, *, request_id: str, installation_id: int | None) -> ApiError:
        """The GitHub-shaped error a failure rule answers with."""
        if fault.kind is FaultKind.SECONDARY_RATE_LIMIT:
            return ApiError(
                fault.status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                "try again. If you reach out to GitHub Support for help, please include the "
                f"request ID {request_id}.",
                documentation_url=SECONDARY_DOCS,
                headers={"retry-after": str(fault.retry_after)},
            )
        if fault.kind is FaultKind.PRIMARY_RATE_LIMIT:
            who = f"installation ID {installation_id}" if installation_id else "this client"
            reset = int(self._clock()) + fault.reset_in
            return ApiError(
                fault.status,
                f"API rate limit exceeded for {who}. If you reach out to GitHub Support for "
                f"help, please include the request ID {request_id}.",
                documentation_url=RATE_LIMIT_DOCS,
                headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
            )
        phrase = fault.message or _phrase(fault.status)
        return ApiError(fault.status, phrase)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Server Error"
