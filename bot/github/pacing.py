"""Spacing of content-creating requests so no window holds more than its allowed starts."""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

# https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits
# "In general, no more than 80 content-generating requests per minute and no more than 500
# content-generating requests per hour are allowed."
MINUTE = 60.0
HOUR = 3600.0


class WritePacer:
    """A sliding-window limiter: each ``(limit, seconds)`` window admits at most ``limit`` starts."""

    def __init__(
        self,
        windows: Sequence[tuple[int, float]],
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        on_wait: Callable[[float, int], None] | None = None,
    ) -> None:
        """Start with empty windows; ``windows`` are ``(limit, seconds)`` pairs, limit >= 1.

        ``on_wait(seconds, recent)`` is told of every wait before it starts, with the starts
        still inside the longest window, so a long hold can be logged rather than look hung.
        """
        if not windows or any(limit < 1 or seconds <= 0 for limit, seconds in windows):
            raise ValueError(f"pacing windows need limits >= 1 and positive spans: {windows!r}")
        self.windows = tuple((int(limit), float(seconds)) for limit, seconds in windows)
        self._span = max(seconds for _, seconds in self.windows)
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._starts: deque[float] = deque()
        # One waiter at a time, in arrival order (asyncio.Lock is FIFO), so writes keep their order.
        self._lock = asyncio.Lock()

    async def wait_turn(self) -> float:
        """Wait until one more start fits in every window, record it and return its time."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self._span:
                    self._starts.popleft()
                wait = max(self._wait(limit, seconds, now) for limit, seconds in self.windows)
                if wait <= 0:
                    self._starts.append(now)
                    return now
                if self._on_wait is not None:
                    self._on_wait(wait, len(self._starts))
                await self._sleep(wait)

    def _wait(self, limit: int, seconds: float, now: float) -> float:
        """How long until a start fits in the window of ``seconds`` holding at most ``limit``."""
        if len(self._starts) < limit:
            return 0.0
        # The limit-th most recent start must leave the window before one more may begin.
        return self._starts[-limit] + seconds - now
