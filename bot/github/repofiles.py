"""Reading a repository's files at one commit: one recursive tree, then only the blobs needed.

A job reads its config, registry and feature cache, and lazily only the models the bisect
visits, through the git data API (https://docs.github.com/rest/git/trees and
https://docs.github.com/rest/git/blobs). Every blob's size is checked against a limit from
its tree entry before it is downloaded, its content is verified against its git sha, and it
is cached on disk by that sha, so a file unchanged between commits is fetched once.
"""

import asyncio
import base64
import binascii
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from gidgethub import BadRequest, RateLimitExceeded
from gidgethub.abc import GitHubAPI

from bot.errors import BotError
from bot.github.repos import is_full_name, repo_vars

MIB = 1024 * 1024
DEFAULT_MAX_BLOB_BYTES = 64 * MIB
# https://docs.github.com/rest/git/trees#get-a-tree: tree entry modes
MODE_TREE = "040000"
MODE_SYMLINK = "120000"
MODE_SUBMODULE = "160000"
_SHA = re.compile(r"[0-9a-f]{40}")


class RepoFileError(BotError):
    """A file cannot be read at a commit: ``<path> at <short sha>: <reason>``."""

    def __init__(self, path: str, commit_sha: str, reason: str) -> None:
        """Name the path, the commit and the reason in one line."""
        self.path = path
        self.commit_sha = commit_sha
        self.reason = reason
        shown = commit_sha[:7] if _SHA.fullmatch(commit_sha) else commit_sha
        super().__init__(f"{path} at {shown}: {reason}")


@dataclass(frozen=True)
class TreeFile:
    """One entry of a commit's tree: a file, a directory, a symlink or a submodule."""

    path: str
    sha: str
    size: int
    mode: str

    @property
    def is_dir(self) -> bool:
        """True for a directory (a tree entry)."""
        return self.mode in (MODE_TREE, "40000")

    @property
    def is_symlink(self) -> bool:
        """True for a symbolic link, whose blob is the link's target path."""
        return self.mode == MODE_SYMLINK

    @property
    def is_submodule(self) -> bool:
        """True for a submodule (a commit of another repository)."""
        return self.mode == MODE_SUBMODULE


@dataclass(frozen=True)
class Head:
    """A ref resolved to its commit and that commit's tree, before the tree is listed."""

    repo: str
    ref: str
    commit_sha: str
    tree_sha: str


@dataclass(frozen=True)
class RepoSnapshot:
    """A repository's tree at one commit, as one recursive listing."""

    repo: str
    ref: str
    commit_sha: str
    tree_sha: str
    files: Mapping[str, TreeFile]
    truncated: bool


def blob_sha(data: bytes) -> str:
    """Return the git object id of ``data`` as a blob (``git hash-object``)."""
    header = b"blob %d\0" % len(data)
    return hashlib.sha1(header + data, usedforsecurity=False).hexdigest()


def decode_blob(payload: Mapping[str, Any], *, sha: str) -> bytes:
    """Return a git blob API response's bytes, refusing any whose content does not hash to ``sha``."""
    encoding = payload.get("encoding")
    content = payload.get("content")
    if not isinstance(content, str):
        raise ValueError("the blob response has no content")
    if encoding == "base64":
        try:
            data = base64.b64decode(content.replace("\n", ""), validate=True)
        except binascii.Error as error:
            raise ValueError(f"the blob content is not valid base64 ({error})") from error
    elif encoding in ("utf-8", "utf8"):
        data = content.encode("utf-8")
    else:
        raise ValueError(f"the blob has an unknown encoding {encoding!r}")
    if blob_sha(data) != sha:
        raise ValueError("blob content does not match its sha")
    return data


def normalise_path(path: str) -> str:
    """Return a repository-relative POSIX path, refusing absolute paths and ``..`` parts."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or "\\" in path:
        raise ValueError("not a relative repository path")
    if ".." in pure.parts:
        raise ValueError("the path escapes the repository ('..')")
    text = str(pure)
    if text == ".":
        raise ValueError("not a relative repository path")
    return text


def _parse_tree(entries: Any) -> dict[str, TreeFile]:
    files: dict[str, TreeFile] = {}
    for item in entries:
        mode = str(item["mode"])
        size = 0 if mode in (MODE_TREE, "40000", MODE_SUBMODULE) else int(item.get("size") or 0)
        files[str(item["path"])] = TreeFile(str(item["path"]), str(item["sha"]), size, mode)
    return files


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file in the same directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; these are ordinary readable files
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_verified(path: Path, sha: str) -> bytes | None:
    """The cached blob at ``path`` if it hashes to ``sha``; a corrupt one is removed."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if blob_sha(data) == sha:
        return data
    path.unlink(missing_ok=True)
    return None


def _limit_text(limit: int) -> str:
    return f"{limit / MIB:g} MiB" if limit >= MIB else f"{limit} bytes"


class RepoFiles:
    """Snapshots of repositories at a commit and their blobs, cached on disk by sha."""

    def __init__(self, cache_dir: Path, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        """Cache blobs under ``cache_dir``; refuse any blob over ``max_blob_bytes``."""
        if max_blob_bytes < 1:
            raise ValueError(f"max_blob_bytes must be >= 1, got {max_blob_bytes}")
        self.cache_dir = Path(cache_dir)
        self.max_blob_bytes = max_blob_bytes

    async def snapshot(self, gh: GitHubAPI, repo: str, ref: str) -> RepoSnapshot:
        """Resolve ``ref`` to a commit and list its whole tree in one recursive call."""
        return await self.tree(gh, await self.head(gh, repo, ref))

    async def head(self, gh: GitHubAPI, repo: str, ref: str) -> Head:
        """Resolve ``ref`` to its commit and that commit's tree (one request, no listing)."""
        if not is_full_name(repo):
            raise RepoFileError(repo, ref, "repository must be 'owner/name'")
        try:
            commit = await gh.getitem(
                "/repos/{owner}/{repo}/commits/{ref}", {**repo_vars(repo), "ref": ref}
            )
        except BadRequest as error:
            if isinstance(error, RateLimitExceeded) or int(error.status_code) not in (404, 422):
                raise
            raise RepoFileError(repo, ref, "no commit found for this ref") from error
        return Head(repo, ref, str(commit["sha"]), str(commit["commit"]["tree"]["sha"]))

    async def tree(self, gh: GitHubAPI, head: Head) -> RepoSnapshot:
        """List the whole tree of a resolved commit in one recursive call."""
        # One request for the whole tree; GitHub truncates it past 100,000 entries or 7 MB.
        tree = await gh.getitem(
            "/repos/{owner}/{repo}/git/trees/{tree_sha}?recursive=1",
            {**repo_vars(head.repo), "tree_sha": head.tree_sha},
        )
        return RepoSnapshot(
            repo=head.repo,
            ref=head.ref,
            commit_sha=head.commit_sha,
            tree_sha=head.tree_sha,
            files=MappingProxyType(_parse_tree(tree.get("tree") or [])),
            truncated=bool(tree.get("truncated")),
        )

    def _entry(self, snapshot: RepoSnapshot, path: str) -> TreeFile:
        """The tree entry of a file at ``path``, or a RepoFileError saying why there is none."""
        try:
            clean = normalise_path(path)
        except ValueError as error:
            raise RepoFileError(path, snapshot.commit_sha, str(error)) from error
        entry = snapshot.files.get(clean)
        if entry is None:
            prefix = clean + "/"
            if any(other.startswith(prefix) for other in snapshot.files):
                raise RepoFileError(clean, snapshot.commit_sha, "a directory, not a file")
            if snapshot.truncated:
                reason = "not in the tree, which GitHub truncated (too many files for one listing)"
                raise RepoFileError(clean, snapshot.commit_sha, reason)
            raise RepoFileError(clean, snapshot.commit_sha, "missing")
        if entry.is_dir:
            raise RepoFileError(clean, snapshot.commit_sha, "a directory, not a file")
        if entry.is_submodule:
            raise RepoFileError(clean, snapshot.commit_sha, "a submodule, not a file")
        if entry.is_symlink:
            # A link's target could point anywhere, outside the repository included.
            raise RepoFileError(
                clean, snapshot.commit_sha, "a symbolic link, which is not followed"
            )
        return entry

    def exists(self, snapshot: RepoSnapshot, path: str) -> bool:
        """True when ``path`` is a regular file in the snapshot (a truncated tree may raise)."""
        try:
            self._entry(snapshot, path)
        except RepoFileError as error:
            if snapshot.truncated and "truncated" in error.reason:
                raise
            return False
        return True

    def cache_path(self, sha: str) -> Path:
        """Where the blob ``sha`` is cached."""
        if not _SHA.fullmatch(sha):
            raise ValueError(f"not a git sha: {sha!r}")
        return self.cache_dir / sha[:2] / sha

    async def read(
        self, gh: GitHubAPI, snapshot: RepoSnapshot, path: str, *, max_bytes: int | None = None
    ) -> bytes:
        """Return the bytes of ``path`` at the snapshot's commit, from the cache when present."""
        entry = self._entry(snapshot, path)
        limit = self.max_blob_bytes if max_bytes is None else min(max_bytes, self.max_blob_bytes)
        if entry.size > limit:
            reason = f"{entry.size:,} bytes is over the {_limit_text(limit)} limit"
            raise RepoFileError(entry.path, snapshot.commit_sha, reason)
        try:
            cached = self.cache_path(entry.sha)
        except ValueError as error:
            raise RepoFileError(entry.path, snapshot.commit_sha, str(error)) from error
        data = await asyncio.to_thread(_read_verified, cached, entry.sha)
        if data is not None:
            return data
        owner, name = snapshot.repo.split("/")
        payload = await gh.getitem(
            "/repos/{owner}/{repo}/git/blobs/{sha}",
            {"owner": owner, "repo": name, "sha": entry.sha},
        )
        try:
            data = await asyncio.to_thread(decode_blob, payload, sha=entry.sha)
        except ValueError as error:
            raise RepoFileError(entry.path, snapshot.commit_sha, str(error)) from error
        if len(data) > limit:
            reason = f"{len(data):,} bytes is over the {_limit_text(limit)} limit"
            raise RepoFileError(entry.path, snapshot.commit_sha, reason)
        await asyncio.to_thread(_write_atomically, cached, data)
        return data

    async def fetch_to(
        self,
        gh: GitHubAPI,
        snapshot: RepoSnapshot,
        path: str,
        dest_root: Path,
        *,
        max_bytes: int | None = None,
    ) -> Path:
        """Write ``path`` to ``dest_root/path`` (never outside ``dest_root``) and return it."""
        root = Path(dest_root).resolve()
        try:
            clean = normalise_path(path)
        except ValueError as error:
            raise RepoFileError(path, snapshot.commit_sha, str(error)) from error
        target = (root / clean).resolve()
        # resolve() follows symlinks already on disk, so a linked directory cannot lead out.
        if not target.is_relative_to(root) or target == root:
            reason = f"the destination escapes {root}"
            raise RepoFileError(clean, snapshot.commit_sha, reason)
        data = await self.read(gh, snapshot, clean, max_bytes=max_bytes)
        await asyncio.to_thread(_write_atomically, target, data)
        return target
