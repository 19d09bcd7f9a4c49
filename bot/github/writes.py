"""Creating things on GitHub exactly once: after an ambiguous failure, look before creating again.

A POST answered 5xx, timed out or cut off after it was sent may have been done: GitHub
created the check run, comment or issue and the answer was lost. Sending it again blind
would make a second one (a second check run with the same ``external_id`` stays
``in_progress`` for ever). So the transport never resends such a POST, and callers create
through ``create_once``: it looks for what an earlier attempt made (by ``external_id`` or
marker) and creates again only if nothing is there.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gidgethub import GitHubBroken

from bot.github.errors import GitHubUnavailable

log = logging.getLogger("model_guard.github")

T = TypeVar("T")
# A failure after which the create may or may not have happened.
AMBIGUOUS_FAILURES = (GitHubBroken, GitHubUnavailable)
DEFAULT_ATTEMPTS = 3


async def create_once(
    create: Callable[[], Awaitable[T]],
    find: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    attempts: int = DEFAULT_ATTEMPTS,
) -> T:
    """Run ``create``; after an ambiguous failure return what ``find`` finds, else create again.

    The last ambiguous failure propagates (the caller's job retries later, and looks first
    then too). ``what`` names the thing in log lines.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return await create()
        except AMBIGUOUS_FAILURES as error:
            found = await find()
            if found is not None:
                log.info(
                    "the create was done although GitHub failed to answer; using it",
                    extra={"fields": {"what": what, "attempt": attempt}},
                )
                return found
            if attempt == attempts:
                raise
            log.warning(
                "create failed before it was done; creating again",
                extra={"fields": {"what": what, "attempt": attempt, "error": str(error)[:200]}},
            )
    raise AssertionError("unreachable")  # the loop returns or raises
