"""Blame: the commit that added or last changed a model's registry row, and its pull request.

The registry's history comes from the commits that touched its file
(https://docs.github.com/rest/commits/commits#list-commits, ``path`` and ``sha``), newest
first; the row is compared, as canonical JSON, at each of them until it differs. The pull
request is the merged one GitHub associates with the commit
(https://docs.github.com/rest/commits/commits#list-pull-requests-associated-with-a-commit).

Three caches in the store's key-value table keep a night cheap: the blame of a row at a
commit (the same night again costs nothing), the row's digest at each commit of the history
and each commit's pull request (a new head with the same history costs the listing only).
Blame is best-effort: GitHub failing, or a registry unreadable at an old commit, logs a
warning and gives None, and nothing is cached for it.
"""

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from gidgethub import BadRequest, GitHubException, RateLimitExceeded
from gidgethub.abc import GitHubAPI

from bot.errors import BotError
from bot.github.errors import GitHubClientError
from bot.github.repofiles import MIB, decode_blob
from bot.github.repos import repo_vars
from bot.repoconfig.wording import escape_markdown
from bot.store import Store

log = logging.getLogger("model_guard.blame")

NAMESPACE = "blame"  # (repo, at sha, path, model id) -> a Blame, or null when there is none
ROWS_NAMESPACE = "blame-rows"  # (repo, commit sha, path, model id) -> the row's digest, or null
PULLS_NAMESPACE = "blame-pulls"  # (repo, commit sha) -> its pull request, or null
MAX_COMMITS = 200
MAX_REGISTRY_BYTES = MIB
# GitHub or the network failing: the run goes on without a blame.
GITHUB_ERRORS = (GitHubException, GitHubClientError, aiohttp.ClientError, asyncio.TimeoutError)


class UnreadableRegistry(BotError):
    """The registry file at a commit is not something a row can be read from."""


@dataclass(frozen=True)
class Blame:
    """The commit that added or last changed a model's row, and the pull request that merged it."""

    model_id: str
    commit_sha: str
    commit_url: str  # html_url of the commit
    pull_number: int | None
    pull_url: str | None
    pull_title: str | None

    def markdown(self) -> str:
        """One line: ``Introduced by abc1234 in #12 (Title)``, linked, the title escaped."""
        commit = f"`{self.commit_sha[:7]}`"
        line = (
            f"Introduced by [{commit}]({self.commit_url})"
            if self.commit_url
            else f"Introduced by {commit}"
        )
        if self.pull_number is None:
            return line
        pull = f"#{self.pull_number}"
        line += f" in [{pull}]({self.pull_url})" if self.pull_url else f" in {pull}"
        title = " ".join((self.pull_title or "").split())
        return f"{line} ({escape_markdown(title)})" if title else line


def row_digest(registry: bytes, model_id: str) -> str | None:
    """The sha256 of the canonical JSON of row ``model_id`` in a registry's text; None if absent.

    Raises ValueError when the text is not JSON.
    """
    try:
        document = json.loads(registry)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"the registry is not JSON ({error})") from error
    except RecursionError:  # a registry nested thousands of levels deep
        raise ValueError("the registry is not JSON (nested too deeply)") from None
    models = document.get("models") if isinstance(document, dict) else None
    rows = models if isinstance(models, list) else []
    row = next((r for r in rows if isinstance(r, dict) and r.get("id") == model_id), None)
    if row is None:
        return None
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def blame_row(
    gh: GitHubAPI,
    store: Store,
    *,
    repo: str,
    registry_path: str,
    model_id: str,
    at_sha: str,
) -> Blame | None:
    """The commit (and pull request) that added or last changed ``model_id``'s row at ``at_sha``.

    None when the row is not in the registry at ``at_sha``, when no commit within the last
    ``MAX_COMMITS`` of the file's history is found to introduce it, or when GitHub failed.
    """
    key = json.dumps([repo, at_sha, registry_path, model_id])
    cached = await store.get_value(NAMESPACE, key)
    if cached is not None:
        stored = json.loads(cached)
        return None if stored is None else Blame(**stored)
    try:
        blame = await _find(
            gh, store, repo=repo, registry_path=registry_path, model_id=model_id, at_sha=at_sha
        )
    except (*GITHUB_ERRORS, UnreadableRegistry) as error:
        log.warning(
            "no blame for %s in %s at %s: %s: %s",
            model_id,
            repo,
            at_sha[:7],
            type(error).__name__,
            error,
        )
        return None
    await store.set_value(NAMESPACE, key, json.dumps(None if blame is None else asdict(blame)))
    return blame


async def _find(
    gh: GitHubAPI,
    store: Store,
    *,
    repo: str,
    registry_path: str,
    model_id: str,
    at_sha: str,
) -> Blame | None:
    """Walk the file's history from ``at_sha`` back to the oldest commit of the row's last run."""
    url_vars = repo_vars(repo)
    listing = gh.getiter(
        "/repos/{owner}/{repo}/commits{?path,sha,per_page}",
        {**url_vars, "path": registry_path, "sha": at_sha, "per_page": "100"},
    )
    wanted: str | None = None
    blamed: Mapping[str, Any] | None = None
    async with aclosing(listing) as commits:
        seen = 0
        async for commit in commits:
            seen += 1
            sha = str(commit["sha"])
            # The file at the newest commit that touched it is the file at ``at_sha``.
            digest = await _digest_at(
                gh, store, repo=repo, sha=sha, path=registry_path, model=model_id
            )
            if wanted is None:
                if digest is None:
                    return None
                wanted = digest
            elif digest != wanted:
                break
            blamed = commit
            if seen == MAX_COMMITS:  # stop before asking for another page
                log.info("no blame for %s in %s: older than %d commits", model_id, repo, seen)
                return None
    if blamed is None:
        return None
    sha = str(blamed["sha"])
    pull = await _pull_of(gh, store, repo=repo, sha=sha)
    return Blame(
        model_id=model_id,
        commit_sha=sha,
        commit_url=str(blamed.get("html_url") or ""),
        pull_number=None if pull is None else int(pull["number"]),
        pull_url=None if pull is None else pull["url"],
        pull_title=None if pull is None else pull["title"],
    )


async def _digest_at(
    gh: GitHubAPI, store: Store, *, repo: str, sha: str, path: str, model: str
) -> str | None:
    """The row's digest at commit ``sha`` (None: absent), from the cache when known."""
    key = json.dumps([repo, sha, path, model])
    cached = await store.get_value(ROWS_NAMESPACE, key)
    if cached is not None:
        known: str | None = json.loads(cached)
        return known
    text = await _read_at(gh, repo=repo, sha=sha, path=path)
    try:
        digest = None if text is None else row_digest(text, model)
    except ValueError as error:
        raise UnreadableRegistry(f"{path} at {sha[:7]}: {error}") from error
    await store.set_value(ROWS_NAMESPACE, key, json.dumps(digest))
    return digest


async def _read_at(gh: GitHubAPI, *, repo: str, sha: str, path: str) -> bytes | None:
    """The file at commit ``sha`` (None where it does not exist), at most 1 MiB, hash-checked.

    One request: https://docs.github.com/rest/repos/contents#get-repository-content
    """
    try:
        payload = await gh.getitem(
            "/repos/{owner}/{repo}/contents/{+path}{?ref}",
            {**repo_vars(repo), "path": path, "ref": sha},
        )
    except BadRequest as error:
        # 404: the commit deleted the file, so no row is there.
        if isinstance(error, RateLimitExceeded) or int(error.status_code) != 404:
            raise
        return None
    if not isinstance(payload, dict) or payload.get("type") != "file":
        raise UnreadableRegistry(f"{path} at {sha[:7]}: not a file")
    size = int(payload.get("size") or 0)
    if size > MAX_REGISTRY_BYTES:
        raise UnreadableRegistry(f"{path} at {sha[:7]}: {size:,} bytes is over the 1 MiB limit")
    try:
        return decode_blob(payload, sha=str(payload.get("sha")))
    except ValueError as error:
        raise UnreadableRegistry(f"{path} at {sha[:7]}: {error}") from error


async def _pull_of(gh: GitHubAPI, store: Store, *, repo: str, sha: str) -> dict[str, Any] | None:
    """The merged pull request that carried commit ``sha`` (else the first listed), cached."""
    key = json.dumps([repo, sha])
    cached = await store.get_value(PULLS_NAMESPACE, key)
    if cached is not None:
        known: dict[str, Any] | None = json.loads(cached)
        return known
    pulls = await gh.getitem(
        "/repos/{owner}/{repo}/commits/{commit_sha}/pulls{?per_page}",
        {**repo_vars(repo), "commit_sha": sha, "per_page": "100"},
    )
    listed = [p for p in pulls if isinstance(p, dict)] if isinstance(pulls, list) else []
    chosen = next((p for p in listed if p.get("merged_at")), listed[0] if listed else None)
    found = (
        None
        if chosen is None
        else {
            "number": int(chosen["number"]),
            "url": str(chosen.get("html_url") or ""),
            "title": str(chosen.get("title") or ""),
        }
    )
    await store.set_value(PULLS_NAMESPACE, key, json.dumps(found))
    return found
