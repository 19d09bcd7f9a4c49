"""asyncio locks by key, made on first use and dropped when no one holds or waits on them."""

import asyncio
import weakref
from collections.abc import Hashable


class KeyedLocks:
    """One ``asyncio.Lock`` per key (and per event loop: a lock belongs to one loop)."""

    def __init__(self) -> None:
        """Start with no locks."""
        self._locks: weakref.WeakValueDictionary[tuple[Hashable, ...], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def lock(self, *key: Hashable) -> asyncio.Lock:
        """The lock for ``key`` in the running event loop."""
        full = (asyncio.get_running_loop(), *key)
        found = self._locks.get(full)
        if found is None:
            found = asyncio.Lock()
            self._locks[full] = found
        return found
