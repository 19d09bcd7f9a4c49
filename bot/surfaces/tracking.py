"""The tracking issue: the open issue with the configured label, opened with that label if none.

A job kind keeps its sticky comments on it, opened with the kind's ``TrackingSpec``. Its number is
remembered in the store (KV namespace ``tracking``) and verified on every use, so a closed
or relabelled issue is replaced by looking again rather than written to.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from gidgethub import BadRequest, InvalidField, RateLimitExceeded
from gidgethub.abc import GitHubAPI

from bot.errors import BotError
from bot.github.repos import is_full_name, repo_vars
from bot.github.writes import AMBIGUOUS_FAILURES, create_once
from bot.store import Store
from bot.surfaces.locks import KeyedLocks

NAMESPACE = "tracking"
# https://docs.github.com/rest/issues/labels#create-a-label: names are at most 50 characters
_MAX_LABEL = 50
_LABEL_COLOR = "5319e7"
# Opening an issue is a handful of requests; a claim outlives a slow GitHub, not a dead holder.
CLAIM_TTL = timedelta(seconds=120)
CLAIM_WAIT = 150.0
CLAIM_POLL = 0.25

log = logging.getLogger("model_guard.tracking")
_locks = KeyedLocks()


class TrackingError(BotError):
    """The tracking issue cannot be found or opened as configured."""


@dataclass(frozen=True)
class TrackingSpec:
    """What a job kind's tracking issue is opened with: its title, body and label description."""

    title: str
    body: str
    label_description: str


@dataclass(frozen=True)
class TrackingIssue:
    """The repository's tracking issue, and whether this call opened it."""

    number: int
    html_url: str
    created: bool


def _has_label(issue: Mapping[str, Any], label: str) -> bool:
    names = (
        item.get("name", "") if isinstance(item, Mapping) else item
        for item in issue.get("labels") or ()
    )
    return label.lower() in (str(name).lower() for name in names)


def _usable(issue: Mapping[str, Any], label: str) -> bool:
    """True for an open issue (not a pull request) carrying ``label``."""
    return issue.get("state") == "open" and "pull_request" not in issue and _has_label(issue, label)


def _found(issue: Mapping[str, Any], *, created: bool) -> TrackingIssue:
    return TrackingIssue(int(issue["number"]), str(issue["html_url"]), created)


def _check(repo: str, label: str) -> dict[str, str]:
    if not is_full_name(repo):
        raise TrackingError(f"repository must be 'owner/name', got {repo!r}")
    # The issues list filters on a comma-separated list of labels, so a comma cannot be sent.
    if not label.strip() or "," in label or len(label) > _MAX_LABEL:
        raise TrackingError(
            f"tracking label must be 1-{_MAX_LABEL} characters without a comma, got {label!r}"
        )
    return repo_vars(repo)


async def ensure_tracking_issue(
    gh: GitHubAPI,
    store: Store,
    *,
    repo: str,
    label: str,
    spec: TrackingSpec,
    bot_login: str,
) -> TrackingIssue:
    """Return the open issue labelled ``label`` (the bot's, oldest first), opening it if none.

    An issue whose creation GitHub did not confirm is looked for again before a second POST.
    """
    url_vars = _check(repo, label)
    key = f"{repo.lower()}:{label}"
    async with _locks.lock(repo.lower(), label.lower()):
        remembered = await _remembered(gh, store, key=key, url_vars=url_vars, label=label)
        if remembered is not None:
            return remembered
        async with _claimed(store, key):
            # Another process may have opened the issue while this one waited for the claim
            # (this costs a request only when something was remembered meanwhile).
            remembered = await _remembered(gh, store, key=key, url_vars=url_vars, label=label)
            if remembered is not None:
                return remembered
            issue = await _search(gh, url_vars=url_vars, label=label, bot_login=bot_login)
            if issue is None:
                issue = await _open(
                    gh, url_vars=url_vars, repo=repo, label=label, spec=spec, bot_login=bot_login
                )
            await store.set_value(NAMESPACE, key, str(issue.number))
            return issue


@asynccontextmanager
async def _claimed(store: Store, key: str) -> AsyncIterator[bool]:
    """Hold the store's claim on opening ``key``'s issue; yields False if it could not be had.

    The in-process lock serialises tasks; this claim serialises processes on one store, so
    two replicas do not both find no issue and both open one. A holder that died leaves a
    claim that expires after ``CLAIM_TTL``; a waiter that gives up (``CLAIM_WAIT``) goes on
    unclaimed, and ``_settle`` still merges onto the older issue if both opened one.
    """
    name = f"{NAMESPACE}:{key}"
    holder = uuid.uuid4().hex
    waited = 0.0
    while not (holding := await store.acquire_claim(name, holder, ttl=CLAIM_TTL)):
        if waited >= CLAIM_WAIT:
            log.warning(
                "gave up waiting for another process to open the tracking issue",
                extra={"fields": {"claim": name, "waited_s": round(waited, 1)}},
            )
            break
        if await store.get_value(NAMESPACE, key) is not None:
            break  # the holder has remembered its issue: use it
        await asyncio.sleep(CLAIM_POLL)
        waited += CLAIM_POLL
    try:
        yield holding
    finally:
        if holding:
            await store.release_claim(name, holder)


async def _open(
    gh: GitHubAPI,
    *,
    url_vars: Mapping[str, str],
    repo: str,
    label: str,
    spec: TrackingSpec,
    bot_login: str,
) -> TrackingIssue:
    """Open the tracking issue (once, even when GitHub does not confirm the POST)."""
    await _ensure_label(gh, url_vars=url_vars, label=label, spec=spec)

    async def create() -> TrackingIssue:
        data = await gh.post(
            "/repos/{owner}/{repo}/issues",
            url_vars,
            data={"title": spec.title, "body": spec.body, "labels": [label]},
        )
        return _found(data, created=True)

    async def find() -> TrackingIssue | None:
        found = await _search(gh, url_vars=url_vars, label=label, bot_login=bot_login)
        return None if found is None else replace(found, created=True)

    issue = await create_once(create, find, what=f"tracking issue of {repo}")
    log.info(
        "opened the tracking issue",
        extra={"fields": {"repo": repo, "issue": issue.number, "label": label}},
    )
    return await _settle(gh, url_vars=url_vars, label=label, bot_login=bot_login, ours=issue)


async def _settle(
    gh: GitHubAPI, *, url_vars: Mapping[str, str], label: str, bot_login: str, ours: TrackingIssue
) -> TrackingIssue:
    """After opening an issue, defer to an older one another replica opened at the same time.

    The lock above only serialises one process; two replicas that both found no issue both
    open one. Each then searches again and both settle on the oldest issue the bot opened,
    so their comments meet there. The newer issue gets a comment pointing to the kept one
    (the App never edits or closes issues; a maintainer can close it).
    """
    winner = await _search(gh, url_vars=url_vars, label=label, bot_login=bot_login)
    if winner is None or winner.number == ours.number:
        return ours
    log.warning(
        "another replica opened the tracking issue first; using it",
        extra={"fields": {"kept": winner.number, "duplicate": ours.number}},
    )
    pointer = (
        f"model-guard opened this issue at the same moment as #{winner.number} and "
        f"reports on #{winner.number}; this one can be closed."
    )
    comments = {**url_vars, "number": str(ours.number)}

    async def create() -> bool:
        await gh.post(
            "/repos/{owner}/{repo}/issues/{number}/comments", comments, data={"body": pointer}
        )
        return True

    async def find() -> bool | None:
        async for data in gh.getiter(
            "/repos/{owner}/{repo}/issues/{number}/comments?per_page=100", comments
        ):
            if data.get("body") == pointer:
                return True
        return None

    await create_once(create, find, what=f"pointer comment on #{ours.number}")
    return TrackingIssue(winner.number, winner.html_url, created=False)


async def _remembered(
    gh: GitHubAPI, store: Store, *, key: str, url_vars: Mapping[str, str], label: str
) -> TrackingIssue | None:
    """The remembered issue if it is still open and labelled; else forget it and return None."""
    stored = await store.get_value(NAMESPACE, key)
    if stored is None:
        return None
    if stored.isdigit():
        try:
            data = await gh.getitem(
                "/repos/{owner}/{repo}/issues/{number}", {**url_vars, "number": stored}
            )
        except BadRequest as error:
            # 404: gone or transferred; 410: deleted (https://docs.github.com/rest/issues/issues#get-an-issue)
            if isinstance(error, RateLimitExceeded) or int(error.status_code) not in (404, 410):
                raise
        else:
            if _usable(data, label):
                return _found(data, created=False)
    await store.delete_value(NAMESPACE, key)
    return None


async def _search(
    gh: GitHubAPI, *, url_vars: Mapping[str, str], label: str, bot_login: str
) -> TrackingIssue | None:
    """The oldest open issue with the label, preferring one the bot opened; None if none."""
    url = (
        "/repos/{owner}/{repo}/issues"
        "?labels={label}&state=open&sort=created&direction=asc&per_page=100"
    )
    first: Mapping[str, Any] | None = None
    async for data in gh.getiter(url, {**url_vars, "label": label}):
        # The issues list includes pull requests: https://docs.github.com/rest/issues/issues#list-repository-issues
        if not _usable(data, label):
            continue
        user = data.get("user")
        if isinstance(user, Mapping) and str(user.get("login", "")).lower() == bot_login.lower():
            return _found(data, created=False)
        if first is None:
            first = data
    return None if first is None else _found(first, created=False)


async def _ensure_label(
    gh: GitHubAPI, *, url_vars: Mapping[str, str], label: str, spec: TrackingSpec
) -> None:
    """Create the label; one that already exists (422 ``already_exists``) is fine.

    A create whose answer was lost is sent once more: a label is unique by name, so a second
    POST cannot make a duplicate (GitHub answers ``already_exists`` if the first was done).
    """
    for attempt in (1, 2):
        try:
            await gh.post(
                "/repos/{owner}/{repo}/labels",
                url_vars,
                data={"name": label, "color": _LABEL_COLOR, "description": spec.label_description},
            )
            return
        except InvalidField as error:
            if _already_exists(error):
                return
            raise
        except AMBIGUOUS_FAILURES:
            if attempt == 2:
                raise


def _already_exists(error: InvalidField) -> bool:
    errors = error.errors if isinstance(error.errors, list) else []
    return any(isinstance(e, Mapping) and e.get("code") == "already_exists" for e in errors)
