"""Bounded caches for gidgethub's conditional GETs: entries per installation, bytes per client.

gidgethub keeps, per request URL, the decoded answer with its ETag so that the next GET of
that URL can be a free 304. Left alone the cache grows with every URL a long-running App
reads: comment pages that grow with a busy pull request, every blob of every commit, one
cache per installation. Two bounds keep it small:

- each installation's ``EtagCache`` holds at most ``capacity`` URLs, least recently used
  dropped first;
- every cache of one client shares an ``EtagBudget``: the response bodies they hold, counted
  in bytes as they arrived, stay under its ``max_bytes`` (least recently used across all
  installations dropped first), and an answer larger than ``max_entry_bytes`` is not kept
  at all (a blob read once gains nothing from a 304 and would push out many small pages).

The transport tells a cache the size of each 200 it passes to gidgethub (``note_size``)
before gidgethub stores the answer; a 304 refreshes an entry and keeps its size.
"""

from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

# gidgethub stores (etag, last-modified, data, next-page URL) per request URL.
Entry = tuple[str | None, str | None, Any, str | None]

# Sizes noted for answers gidgethub did not cache (no ETag) are forgotten beyond this many.
_PENDING_LIMIT = 64


class EtagBudget:
    """The bytes that every ``EtagCache`` of one client may hold together."""

    def __init__(self, max_bytes: int, *, max_entry_bytes: int) -> None:
        """Hold at most ``max_bytes`` of answers, none larger than ``max_entry_bytes``."""
        if max_bytes < 1 or max_entry_bytes < 1:
            raise ValueError("an ETag budget must allow at least one byte")
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.total = 0
        # (cache, url) in use order, least recent first, with each entry's size.
        self._order: OrderedDict[tuple[int, str], int] = OrderedDict()
        self._caches: dict[int, EtagCache] = {}

    def _register(self, cache: "EtagCache") -> None:
        self._caches[id(cache)] = cache

    def _used(self, cache: "EtagCache", url: str) -> None:
        key = (id(cache), url)
        if key in self._order:
            self._order.move_to_end(key)

    def _stored(self, cache: "EtagCache", url: str, size: int) -> None:
        key = (id(cache), url)
        self.total += size - self._order.pop(key, 0)
        self._order[key] = size
        while self.total > self.max_bytes and self._order:
            (owner, old_url), _ = next(iter(self._order.items()))
            self._caches[owner]._evict(old_url)

    def _removed(self, cache: "EtagCache", url: str) -> None:
        self.total -= self._order.pop((id(cache), url), 0)


class EtagCache(MutableMapping[str, Entry]):
    """Keeps the ``capacity`` most recently used URLs, within its client's byte budget."""

    def __init__(self, capacity: int, budget: EtagBudget | None = None) -> None:
        """Start empty, holding at most ``capacity`` entries (and ``budget``'s bytes)."""
        if capacity < 1:
            raise ValueError("an ETag cache must hold at least one entry")
        self.capacity = capacity
        self.budget = budget
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._pending: OrderedDict[str, int] = OrderedDict()
        if budget is not None:
            budget._register(self)

    def note_size(self, url: str, size: int) -> None:
        """Record the byte size of the answer to ``url`` that gidgethub is about to cache."""
        self._pending[url] = size
        self._pending.move_to_end(url)
        while len(self._pending) > _PENDING_LIMIT:
            self._pending.popitem(last=False)

    @property
    def held_bytes(self) -> int:
        """The bytes of the answers this cache holds, as they arrived."""
        return sum(self._sizes.values())

    def __getitem__(self, url: str) -> Entry:
        entry = self._entries[url]
        self._entries.move_to_end(url)
        if self.budget is not None:
            self.budget._used(self, url)
        return entry

    def __setitem__(self, url: str, entry: Entry) -> None:
        # A 304 stores the cached answer again: it keeps the size noted when it arrived.
        size = self._pending.pop(url, self._sizes.get(url, 0))
        if self.budget is not None and size > self.budget.max_entry_bytes:
            self._evict(url)  # too large to keep: the next GET of it is a plain one
            return
        self._entries[url] = entry
        self._entries.move_to_end(url)
        self._sizes[url] = size
        if self.budget is not None:
            self.budget._stored(self, url, size)
        while len(self._entries) > self.capacity:
            self._evict(next(iter(self._entries)))

    def __delitem__(self, url: str) -> None:
        if url not in self._entries:
            raise KeyError(url)
        self._evict(url)

    def _evict(self, url: str) -> None:
        self._entries.pop(url, None)
        self._sizes.pop(url, None)
        if self.budget is not None:
            self.budget._removed(self, url)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
