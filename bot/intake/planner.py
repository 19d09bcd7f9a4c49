"""Turning a verified webhook event into the jobs it asks for, with one gidgethub Router per concern.

A router's callbacks never do the work: they append ``JobSpec`` values to the plan they
are given, and the ingress stores the delivery and its jobs in one transaction.
"""

from collections.abc import Sequence

from gidgethub import routing, sansio

from bot.store import JobSpec


class Planner:
    """Merges the routers of every concern once, where the app is assembled."""

    def __init__(self, routers: Sequence[routing.Router] = ()) -> None:
        """Combine ``routers`` into one dispatcher."""
        self._router = routing.Router(*routers)

    async def plan(self, event: sansio.Event) -> list[JobSpec]:
        """Return the jobs an event asks for (none for events no router handles)."""
        jobs: list[JobSpec] = []
        await self._router.dispatch(event, jobs)
        return jobs
