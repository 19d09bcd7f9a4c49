"""Sticky comments: one comment per purpose on an issue, found by a hidden marker and kept current.

A sticky comment starts with ``<!-- model-guard:<purpose> -->``. It is found by the id the
store remembers (verified with a GET), else by scanning the issue's comments for the marker
in a comment written by this App's own bot account: anyone can paste a marker, and a
person's comment is never edited or deleted.

A new body for the comment this App itself wrote last (its id and body digest are kept in
the store, KV namespace ``sticky-written``) is PATCHed straight away, with no GET first:
one request instead of two. A 404 answer says the comment is gone, and the upsert falls
back to the scan and a new comment; a locked issue answers 403 as before. The price: an
edit a person made to the App's comment since its last write is replaced (GitHub keeps it
in the comment's edit history). The same body again is still verified with one GET (a
read, not an edit), so an unchanged comment is never rewritten. Writes are serialised per (repo, issue,
purpose) inside one process; across processes, a re-scan after every create keeps the
oldest own comment and deletes the rest, so racing jobs converge on one comment.
"""

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from gidgethub import BadRequest, RateLimitExceeded
from gidgethub.abc import GitHubAPI
from prometheus_client import Counter

from bot.errors import BotError
from bot.github.repos import is_full_name, repo_vars
from bot.github.writes import create_once
from bot.store import Store
from bot.surfaces.locks import KeyedLocks

# https://docs.github.com/rest/issues/comments#create-an-issue-comment: GitHub refuses a
# body over 65,536 characters (characters, not bytes: github.com/orgs/community/discussions/27190)
MAX_COMMENT_CHARS = 65_536
_LIMIT_TEXT = f"{MAX_COMMENT_CHARS:,}"
_PURPOSE = re.compile(r"[a-z0-9-]+")
_TRUNCATED = f"_… truncated: the comment would exceed GitHub's {_LIMIT_TEXT}-character limit._"
_FENCE_CLOSE = "\n```"
# A section cut shorter than this keeps nothing useful: it is replaced by the note alone.
_MIN_TRUNCATED = len(_TRUNCATED) + len(_FENCE_CLOSE) + 2 + 80
# How far back from a cut we look for a line break, so a truncation ends on a whole line.
_LINE_LOOKBACK = 2_000

log = logging.getLogger("model_guard.sticky")


def marker(purpose: str) -> str:
    """Return the hidden marker ``<!-- model-guard:<purpose> -->`` (purpose: ``[a-z0-9-]+``)."""
    if not _PURPOSE.fullmatch(purpose):
        raise ValueError(f"sticky purpose must match [a-z0-9-]+, got {purpose!r}")
    return f"<!-- model-guard:{purpose} -->"


@dataclass(frozen=True)
class Section:
    """One part of a comment body; priority 0 is always kept, higher numbers are dropped first."""

    text: str
    priority: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        """Refuse a negative priority."""
        if self.priority < 0:
            raise ValueError(f"section priority must be >= 0, got {self.priority}")


def _left_out_note(label: str) -> str:
    name = label or "A lower-priority section"
    return f"_{name} left out: the comment would exceed GitHub's {_LIMIT_TEXT}-character limit._"


def _truncate(text: str, *, limit: int, keep_from: int = 0) -> str:
    """Cut ``text`` to ``limit`` characters with a visible note, on a line break when one is near.

    The first ``keep_from`` characters (the marker) are never cut.
    """
    budget = limit - len(_FENCE_CLOSE) - len("\n\n") - len(_TRUNCATED)
    if budget <= keep_from:
        raise ValueError(f"limit {limit} is too small to hold the marker and a truncation note")
    cut = text[:budget]
    line_end = cut.rfind("\n", max(keep_from, budget - _LINE_LOOKBACK))
    if line_end > keep_from:
        cut = cut[:line_end]
    # An unclosed code fence would swallow the note; close it first.
    fences = sum(1 for line in cut.splitlines() if line.lstrip().startswith("```"))
    if fences % 2:
        cut += _FENCE_CLOSE
    return f"{cut}\n\n{_TRUNCATED}"


def fit_sections(
    purpose: str, sections: Sequence[Section], *, limit: int = MAX_COMMENT_CHARS
) -> str:
    """Return the marker and the sections joined, at most ``limit`` characters long.

    Sections with the highest priority number go first (the later one on a tie), each
    replaced by a visible note; once the body fits, left-out sections that fit again are
    put back, most important first (a small history returns once a huge table is out).
    If the priority-0 text alone is still too long, it is truncated (the last section
    first) with a visible note.
    """
    head = marker(purpose)
    parts = [section.text for section in sections]

    def excess() -> int:
        return len("\n\n".join([head, *parts])) - limit

    droppable = sorted(
        (i for i, section in enumerate(sections) if section.priority > 0),
        key=lambda i: (-sections[i].priority, -i),
    )
    dropped: list[int] = []
    for index in droppable:
        if excess() <= 0:
            break
        parts[index] = _left_out_note(sections[index].label)
        dropped.append(index)
    for index in sorted(dropped, key=lambda i: (sections[i].priority, i)):
        note, parts[index] = parts[index], sections[index].text
        if excess() > 0:
            parts[index] = note
    kept = [i for i, section in enumerate(sections) if section.priority == 0]
    for index in reversed(kept):
        over = excess()
        if over <= 0:
            break
        room = len(parts[index]) - over
        if room > _MIN_TRUNCATED:
            parts[index] = _truncate(parts[index], limit=room)
        elif len(parts[index]) > len(_TRUNCATED):
            parts[index] = _TRUNCATED
    body = "\n\n".join([head, *parts])
    # Only thousands of left-out notes could still be too long; cut the whole body then.
    return body if len(body) <= limit else _truncate(body, limit=limit, keep_from=len(head))


class StickyOutcome(Enum):
    """What an upsert did to the sticky comment."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class StickyResult:
    """The sticky comment after an upsert, and the duplicate comments it removed."""

    comment_id: int
    outcome: StickyOutcome
    html_url: str | None
    removed_duplicates: tuple[int, ...]


class StickyError(BotError):
    """A sticky comment cannot be written as asked."""


class Unavailability(StrEnum):
    """Why an issue cannot take a comment (compares equal to its plain string)."""

    LOCKED = "locked"
    MISSING = "missing"


class IssueUnavailable(StickyError):
    """The issue is locked, deleted or not visible to the App: no comment was written."""

    def __init__(self, repo: str, issue_number: int, reason: Unavailability) -> None:
        """Name the issue and the reason in one line."""
        self.repo = repo
        self.issue_number = issue_number
        self.reason = reason
        if reason is Unavailability.LOCKED:
            why = "is locked, so the App cannot comment"
        else:
            why = "does not exist or is not visible to the App"
        super().__init__(f"{repo}#{issue_number} {why}")


@dataclass(frozen=True)
class _Target:
    """One sticky comment's address: the issue and the marker."""

    repo: str
    issue_number: int
    purpose: str
    marker: str

    @property
    def url_vars(self) -> dict[str, str]:
        return {**repo_vars(self.repo), "number": str(self.issue_number)}


@dataclass(frozen=True)
class _Comment:
    """The fields of a GitHub issue comment this module uses."""

    id: int
    body: str
    created_at: str
    html_url: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> "_Comment":
        return cls(
            id=int(data["id"]),
            body=str(data.get("body") or ""),
            created_at=str(data.get("created_at") or ""),
            html_url=data.get("html_url"),
        )


@dataclass(frozen=True)
class _Found:
    """The own marker comment an upsert found (None if none) and the duplicates it removed."""

    comment: _Comment | None
    removed: tuple[int, ...] = ()


# The comment this App wrote last for a (repo, issue, purpose), and its body's digest.
WRITTEN_NAMESPACE = "sticky-written"
_COMMENTS = "/repos/{owner}/{repo}/issues/{number}/comments"
_COMMENT = "/repos/{owner}/{repo}/issues/comments/{comment_id}"
_ISSUE = "/repos/{owner}/{repo}/issues/{number}"


def _status(error: BadRequest) -> int:
    return int(error.status_code)


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _is_gone(error: BadRequest) -> bool:
    # 410 Gone is GitHub's answer for a deleted issue:
    # https://docs.github.com/rest/issues/issues#get-an-issue
    return _status(error) in (404, 410) and not isinstance(error, RateLimitExceeded)


def is_own_comment(comment: Mapping[str, Any], *, bot_login: str, app_id: int | None) -> bool:
    """True when ``comment`` was written by the bot account ``bot_login`` (never a person's).

    A person can paste any marker, so only the bot's comments (type ``Bot``, through this
    App when GitHub names the App) are ever edited, deleted or taken as already posted.
    """
    user = comment.get("user")
    if not isinstance(user, Mapping):
        return False
    login = str(user.get("login", "")).casefold()
    if login != bot_login.casefold() or user.get("type") != "Bot":
        return False
    app = comment.get("performed_via_github_app")
    return app_id is None or not isinstance(app, Mapping) or app.get("id") == app_id


def with_marker(purpose: str, body: str) -> str:
    """Return ``body`` starting with the purpose's marker, truncated under GitHub's limit."""
    head = marker(purpose)
    if not body.startswith(head):
        body = f"{head}\n\n{body}"
    if len(body) <= MAX_COMMENT_CHARS:
        return body
    return _truncate(body, limit=MAX_COMMENT_CHARS, keep_from=len(head))


class StickyComments:
    """Creates or updates sticky comments; one instance per process, shared by every job."""

    def __init__(
        self,
        store: Store,
        *,
        bot_login: str,
        app_id: int | None = None,
        outcomes: Counter | None = None,
    ) -> None:
        """Use ``store`` for remembered ids; ``outcomes`` is a Counter with one label, ``outcome``."""
        if not bot_login:
            raise ValueError("bot_login must name the App's bot account, e.g. 'model-guard[bot]'")
        self._store = store
        self._bot_login = bot_login.casefold()
        self._app_id = app_id
        self._outcomes = outcomes
        self._locks = KeyedLocks()

    def _lock(self, target: _Target) -> asyncio.Lock:
        return self._locks.lock(target.repo.lower(), target.issue_number, target.purpose)

    def _count(self, outcome: str) -> None:
        if self._outcomes is not None:
            self._outcomes.labels(outcome=outcome).inc()

    def is_own(self, comment: Mapping[str, Any]) -> bool:
        """True when ``comment`` was written by this App's bot account (never a person's)."""
        return is_own_comment(comment, bot_login=self._bot_login, app_id=self._app_id)

    async def upsert(
        self, gh: GitHubAPI, *, repo: str, issue_number: int, purpose: str, body: str
    ) -> StickyResult:
        """Create or update the ``purpose`` sticky comment on ``repo#issue_number``.

        Raises ``IssueUnavailable`` (after logging it) for a locked or missing issue; other
        GitHub errors propagate.
        """
        if not is_full_name(repo):
            raise StickyError(f"repository must be 'owner/name', got {repo!r}")
        if issue_number < 1:
            raise StickyError(f"issue number must be >= 1, got {issue_number}")
        target = _Target(repo, issue_number, purpose, marker(purpose))
        text = with_marker(purpose, body)
        async with self._lock(target):
            try:
                result = await self._upsert(gh, target, text)
            except IssueUnavailable as error:
                self._count(str(error.reason))
                log.warning(
                    "sticky comment not written: %s",
                    error,
                    extra={"fields": {"repo": repo, "issue": issue_number, "purpose": purpose}},
                )
                raise
        self._count(result.outcome.value)
        return result

    async def _upsert(
        self, gh: GitHubAPI, target: _Target, body: str, *, retry: bool = True
    ) -> StickyResult:
        written = await self._written(target)
        if written is not None and written[1] != _digest(body):
            # Our own comment, and a new body: PATCH it without a GET (404: it is gone).
            updated = await self._patch(gh, target, written[0], body)
            if updated is not None:
                return StickyResult(updated.id, StickyOutcome.UPDATED, updated.html_url, ())
            await self._store.forget_sticky(target.repo, target.issue_number, target.marker)
        found = await self._find(gh, target)
        current, removed = found.comment, found.removed
        if current is not None:
            if current.body == body:
                return StickyResult(current.id, StickyOutcome.UNCHANGED, current.html_url, removed)
            updated = await self._patch(gh, target, current.id, body)
            if updated is not None:
                return StickyResult(updated.id, StickyOutcome.UPDATED, updated.html_url, removed)
            await self._store.forget_sticky(target.repo, target.issue_number, target.marker)
        return await self._create(gh, target, body, removed, retry=retry)

    def _written_key(self, target: _Target) -> str:
        return f"{target.repo.lower()}:{target.issue_number}:{target.purpose}"

    async def _written(self, target: _Target) -> tuple[int, str] | None:
        """The comment id and body digest this App wrote last, if the store still names that id.

        An id set in the store by anything but this App's own write (or since replaced) is not
        trusted: the GET and the scan check it first.
        """
        text = await self._store.get_value(WRITTEN_NAMESPACE, self._written_key(target))
        if text is None:
            return None
        try:
            record = json.loads(text)
            comment_id, digest = int(record["id"]), str(record["digest"])
        except (ValueError, KeyError, TypeError):
            return None
        stored = await self._store.get_sticky(target.repo, target.issue_number, target.marker)
        return (comment_id, digest) if stored == comment_id else None

    async def _remember_written(self, target: _Target, comment_id: int, body: str) -> None:
        await self._store.set_sticky(target.repo, target.issue_number, target.marker, comment_id)
        record = json.dumps({"id": comment_id, "digest": _digest(body)})
        await self._store.set_value(WRITTEN_NAMESPACE, self._written_key(target), record)

    async def _find(self, gh: GitHubAPI, target: _Target) -> _Found:
        """Return the own marker comment (stored id first, else a scan) and duplicates removed."""
        stored = await self._store.get_sticky(target.repo, target.issue_number, target.marker)
        if stored is not None:
            verified = await self._get_stored(gh, target, stored)
            if verified is not None:
                return _Found(verified)
        own = await self._scan(gh, target)
        if not own:
            return _Found(None)
        keep, *others = own
        removed = await self._delete(gh, target, others)
        await self._store.set_sticky(target.repo, target.issue_number, target.marker, keep.id)
        return _Found(keep, removed)

    async def _get_stored(self, gh: GitHubAPI, target: _Target, comment_id: int) -> _Comment | None:
        """GET the remembered comment; None (forgotten if deleted) unless it is ours with the marker."""
        try:
            data = await gh.getitem(_COMMENT, {**target.url_vars, "comment_id": str(comment_id)})
        except BadRequest as error:
            if not _is_gone(error):
                raise
            await self._store.forget_sticky(target.repo, target.issue_number, target.marker)
            return None
        issue_url = str(data.get("issue_url", ""))
        on_issue = issue_url.rsplit("/", 1)[-1] == str(target.issue_number)
        if not (on_issue and self.is_own(data) and target.marker in str(data.get("body") or "")):
            return None
        return _Comment.parse(data)

    async def _scan(self, gh: GitHubAPI, target: _Target) -> list[_Comment]:
        """Every own comment carrying the marker on the issue, oldest first (created_at, id)."""
        found: list[_Comment] = []
        try:
            async for data in gh.getiter(_COMMENTS + "?per_page=100", target.url_vars):
                if self.is_own(data) and target.marker in str(data.get("body") or ""):
                    found.append(_Comment.parse(data))
        except BadRequest as error:
            if _is_gone(error):
                raise IssueUnavailable(
                    target.repo, target.issue_number, Unavailability.MISSING
                ) from error
            raise
        return sorted(found, key=lambda c: (c.created_at, c.id))

    async def _delete(
        self, gh: GitHubAPI, target: _Target, comments: Sequence[_Comment]
    ) -> tuple[int, ...]:
        """Delete duplicate own comments; one already gone (404) counts as removed."""
        removed = []
        for comment in comments:
            try:
                await gh.delete(_COMMENT, {**target.url_vars, "comment_id": str(comment.id)})
            except BadRequest as error:
                if not _is_gone(error):
                    raise
            removed.append(comment.id)
        if removed:
            log.info(
                "removed duplicate sticky comments",
                extra={
                    "fields": {
                        "repo": target.repo,
                        "issue": target.issue_number,
                        "purpose": target.purpose,
                        "comment_ids": removed,
                    }
                },
            )
        return tuple(removed)

    async def _write_refused(self, gh: GitHubAPI, target: _Target, error: BadRequest) -> None:
        """Turn a refused write into IssueUnavailable when the issue is locked or gone."""
        if isinstance(error, RateLimitExceeded):
            return
        if _is_gone(error):
            raise IssueUnavailable(
                target.repo, target.issue_number, Unavailability.MISSING
            ) from error
        if _status(error) != 403:
            return
        # 403 also means missing permissions; only a locked conversation is IssueUnavailable.
        # https://docs.github.com/communities/moderating-comments-and-conversations/locking-conversations
        try:
            issue = await gh.getitem(_ISSUE, target.url_vars)
        except BadRequest as lookup:
            if _is_gone(lookup):
                raise IssueUnavailable(
                    target.repo, target.issue_number, Unavailability.MISSING
                ) from error
            raise error from lookup
        if issue.get("locked"):
            raise IssueUnavailable(
                target.repo, target.issue_number, Unavailability.LOCKED
            ) from error

    async def _patch(
        self, gh: GitHubAPI, target: _Target, comment_id: int, body: str
    ) -> _Comment | None:
        """PATCH the comment's body; None when the comment vanished meanwhile."""
        url_vars = {**target.url_vars, "comment_id": str(comment_id)}
        try:
            data = await gh.patch(_COMMENT, url_vars, data={"body": body})
        except BadRequest as error:
            if _status(error) == 404 and not isinstance(error, RateLimitExceeded):
                return None
            await self._write_refused(gh, target, error)
            raise
        await self._remember_written(target, comment_id, body)
        return _Comment.parse(data)

    async def _create(
        self, gh: GitHubAPI, target: _Target, body: str, removed: tuple[int, ...], *, retry: bool
    ) -> StickyResult:
        """POST a new comment, then re-scan: another process may have created one too.

        A POST whose answer was lost is looked for by its marker before it is sent again.
        """

        async def create() -> _Comment:
            try:
                data = await gh.post(_COMMENTS, target.url_vars, data={"body": body})
            except BadRequest as error:
                await self._write_refused(gh, target, error)
                raise
            return _Comment.parse(data)

        async def find() -> _Comment | None:
            own = await self._scan(gh, target)
            return own[0] if own else None

        created = await create_once(
            create, find, what=f"{target.purpose} comment on {target.repo}#{target.issue_number}"
        )
        await self._store.set_sticky(target.repo, target.issue_number, target.marker, created.id)
        own = await self._scan(gh, target)
        keep = own[0] if own else created
        others = [c for c in own[1:] if c.id != keep.id]
        removed += await self._delete(gh, target, others)
        if keep.id == created.id:
            await self._remember_written(target, created.id, body)
            return StickyResult(created.id, StickyOutcome.CREATED, created.html_url, removed)
        # An older own comment exists (another process won the race): it becomes the sticky.
        await self._store.set_sticky(target.repo, target.issue_number, target.marker, keep.id)
        if keep.body == body:
            await self._remember_written(target, keep.id, body)
            return StickyResult(keep.id, StickyOutcome.UNCHANGED, keep.html_url, removed)
        updated = await self._patch(gh, target, keep.id, body)
        if updated is None:
            if not retry:
                raise StickyError(
                    f"{target.repo}#{target.issue_number}: the {target.purpose} sticky comment"
                    " keeps being deleted while it is written"
                )
            # The kept one vanished too (a third writer); start over once with what is there.
            return await self._upsert(gh, target, body, retry=False)
        return StickyResult(updated.id, StickyOutcome.UPDATED, updated.html_url, removed)
