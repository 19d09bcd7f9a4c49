"""Page-number pagination with GitHub's ``Link`` header (absolute URLs, prev/next/last/first)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from yarl import URL

# https://docs.github.com/rest/using-the-rest-api/using-pagination-in-the-rest-api
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the ``Link`` header value to send with it (None if one page)."""

    items: list[T]
    link: str | None
    total: int

    @property
    def headers(self) -> dict[str, str]:
        """``{"Link": …}`` when there is more than one page, else {}."""
        return {"Link": self.link} if self.link else {}


def _positive_int(raw: str | None, default: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return value if value > 0 else default


def paginate(items: Sequence[T], url: URL) -> Page[T]:
    """Cut ``items`` by the ``page``/``per_page`` query of ``url`` (absolute) and link the rest."""
    per_page = min(_positive_int(url.query.get("per_page"), DEFAULT_PER_PAGE), MAX_PER_PAGE)
    page = _positive_int(url.query.get("page"), 1)
    last = max(math.ceil(len(items) / per_page), 1)
    start = (page - 1) * per_page
    chunk = list(items[start : start + per_page])
    rels: list[tuple[str, int]] = []
    if page > 1:
        rels.append(("prev", min(page - 1, last)))
    if page < last:
        rels += [("next", page + 1), ("last", last)]
    if page > 1:
        rels.append(("first", 1))
    link = ", ".join(f'<{url.update_query(page=n)}>; rel="{rel}"' for rel, n in rels) or None
    return Page(chunk, link, len(items))
