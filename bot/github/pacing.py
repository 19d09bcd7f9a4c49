"""Spacing of content-creating requests so no 60 s window holds more than the allowed starts."""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

# https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits
# "No more than 80 content-generating requests per minute".
WINDOW_SECONDS = 60.0


class WritePacer:
    """A sliding-window limiter: at most ``per_minute`` calls of ``wait_turn`` return per window."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        """Start with an empty window."""
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        # One waiter at a time, in arrival order (asyncio.Lock is FIFO), so writes keep their order.
        self._lock = asyncio.Lock()

    async def wait_turn(self) -> float:
        """Wait until one more start fits in the window, record it and return its time."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - WINDOW_SECONDS:
                    self._starts.popleft()
                if len(self._starts) < self.per_minute:
                    self._starts.append(now)
                    return now
                await self._sleep(self._starts[0] + WINDOW_SECONDS - now)
