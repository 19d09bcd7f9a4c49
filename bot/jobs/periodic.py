"""One background task that runs a step now and then every interval, until stopped.

The scheduler, the resumer of parked runs and the missed-delivery sweep each own one. A
step that raises is logged and the next interval tries again: a busy store or GitHub
failing must not end the loop.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.jobs.worker import describe_error


class Periodic:
    """Runs ``step`` at start and every ``interval_seconds`` until ``stop``."""

    def __init__(
        self,
        step: Callable[[], Awaitable[object]],
        *,
        interval_seconds: float,
        name: str,
        log: logging.Logger,
        failure_level: int = logging.WARNING,
    ) -> None:
        """``name`` names the task and the log line of a failed step."""
        if not interval_seconds > 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        self._step = step
        self.interval_seconds = interval_seconds
        self._name = name
        self._log = log
        self._failure_level = failure_level
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._task is not None

    def start(self) -> None:
        """Start the loop (idempotent): the first step runs at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self._step()
            except Exception as error:  # the next interval tries again
                self._log.log(
                    self._failure_level, "%s failed: %s", self._name, describe_error(error)
                )
            await asyncio.sleep(self.interval_seconds)
