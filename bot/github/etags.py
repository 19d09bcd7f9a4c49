"""A bounded LRU mapping for gidgethub's conditional-GET cache (one per installation)."""

from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

# gidgethub stores (etag, last-modified, data, next-page URL) per request URL.
Entry = tuple[str | None, str | None, Any, str | None]


class EtagCache(MutableMapping[str, Entry]):
    """Keeps the ``capacity`` most recently used URLs; older ones are dropped first."""

    def __init__(self, capacity: int) -> None:
        """Start empty, holding at most ``capacity`` entries."""
        if capacity < 1:
            raise ValueError("an ETag cache must hold at least one entry")
        self.capacity = capacity
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __getitem__(self, url: str) -> Entry:
        entry = self._entries[url]
        self._entries.move_to_end(url)
        return entry

    def __setitem__(self, url: str, entry: Entry) -> None:
        self._entries[url] = entry
        self._entries.move_to_end(url)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __delitem__(self, url: str) -> None:
        del self._entries[url]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
