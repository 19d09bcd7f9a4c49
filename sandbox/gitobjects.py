"""Git blobs, trees and commits hashed exactly like git, so every sandbox sha is a real git id."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

EMPTY_TREE_SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class ObjectType(Enum):
    """The git object kinds the sandbox stores."""

    BLOB = "blob"
    TREE = "tree"
    COMMIT = "commit"


class FileMode(Enum):
    """Tree entry modes as GitHub's REST API spells them (git writes a tree as ``40000``)."""

    FILE = "100644"
    EXECUTABLE = "100755"
    TREE = "040000"


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a git tree."""

    name: str
    mode: FileMode
    sha: str

    @property
    def type(self) -> ObjectType:
        """``tree`` for a sub-directory, ``blob`` otherwise."""
        return ObjectType.TREE if self.mode is FileMode.TREE else ObjectType.BLOB


@dataclass(frozen=True)
class Signature:
    """Author or committer of a commit: name, email and a Unix timestamp (UTC)."""

    name: str
    email: str
    timestamp: int


@dataclass(frozen=True)
class GitCommit:
    """A commit object."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    message: str
    author: Signature
    committer: Signature


@dataclass(frozen=True)
class WalkedEntry:
    """A tree entry reached by a (recursive) walk, with its full path."""

    path: str
    entry: TreeEntry


def hash_object(kind: ObjectType, payload: bytes) -> str:
    """Return the git object id of ``payload`` stored as ``kind`` (``git hash-object -t kind``)."""
    header = f"{kind.value} {len(payload)}\0".encode()
    return hashlib.sha1(header + payload, usedforsecurity=False).hexdigest()


def _tree_sort_key(entry: TreeEntry) -> bytes:
    # git orders a sub-tree as if its name ended in "/"
    suffix = "/" if entry.mode is FileMode.TREE else ""
    return (entry.name + suffix).encode()


def encode_tree(entries: tuple[TreeEntry, ...]) -> bytes:
    """Serialise tree entries the way git does (sorted, binary shas, ``40000`` for trees)."""
    out = bytearray()
    for entry in sorted(entries, key=_tree_sort_key):
        mode = "40000" if entry.mode is FileMode.TREE else entry.mode.value
        out += f"{mode} {entry.name}".encode() + b"\0" + bytes.fromhex(entry.sha)
    return bytes(out)


def encode_commit(
    tree: str, parents: tuple[str, ...], *, message: str, author: Signature, committer: Signature
) -> bytes:
    """Serialise a commit object the way ``git commit-tree`` does."""
    lines = [f"tree {tree}"]
    lines += [f"parent {parent}" for parent in parents]
    lines.append(f"author {author.name} <{author.email}> {author.timestamp} +0000")
    lines.append(f"committer {committer.name} <{committer.email}> {committer.timestamp} +0000")
    body = message if message.endswith("\n") else message + "\n"
    return ("\n".join(lines) + "\n\n" + body).encode()


class ObjectStore:
    """The object database of one repository: blobs, trees and commits keyed by sha."""

    def __init__(self) -> None:
        """Start empty."""
        self.blobs: dict[str, bytes] = {}
        self.trees: dict[str, tuple[TreeEntry, ...]] = {EMPTY_TREE_SHA: ()}
        self.commits: dict[str, GitCommit] = {}
        self._created: dict[str, int] = {}

    def put_blob(self, data: bytes) -> str:
        """Store a blob and return its sha."""
        sha = hash_object(ObjectType.BLOB, data)
        self.blobs[sha] = data
        return sha

    def put_tree(self, entries: tuple[TreeEntry, ...]) -> str:
        """Store a tree and return its sha."""
        ordered = tuple(sorted(entries, key=_tree_sort_key))
        sha = hash_object(ObjectType.TREE, encode_tree(ordered))
        self.trees[sha] = ordered
        return sha

    def put_commit(
        self,
        tree: str,
        parents: tuple[str, ...],
        *,
        message: str,
        author: Signature,
        committer: Signature,
    ) -> GitCommit:
        """Store a commit and return it."""
        payload = encode_commit(tree, parents, message=message, author=author, committer=committer)
        sha = hash_object(ObjectType.COMMIT, payload)
        commit = GitCommit(sha, tree, parents, message, author, committer)
        self.commits[sha] = commit
        self._created.setdefault(sha, len(self._created))
        return commit

    def write_tree(self, files: Mapping[str, bytes]) -> str:
        """Store nested trees for ``{"dir/file": bytes}`` and return the root tree sha."""
        return self.write_entries(
            {
                path: TreeEntry(path, FileMode.FILE, self.put_blob(data))
                for path, data in files.items()
            }
        )

    def write_entries(self, entries: Mapping[str, TreeEntry]) -> str:
        """Store nested trees for ``{"dir/file": blob entry}`` (blobs already stored); root sha.

        Each entry's own ``name`` is ignored: the key is its path. This is how
        ``POST git/trees`` turns a flat list of paths into git's nested trees.
        """
        root: dict[str, object] = {}
        for path, entry in entries.items():
            parts = [part for part in path.strip("/").split("/") if part]
            if not parts:
                raise ValueError(f"empty file path {path!r}")
            node = root
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"{path!r} puts a file where a directory is")
                node = child
            if isinstance(node.get(parts[-1]), dict):
                raise ValueError(f"{path!r} puts a file where a directory is")
            node[parts[-1]] = entry
        return self._write_entry_node(root)

    def _write_entry_node(self, node: Mapping[str, object]) -> str:
        entries = []
        for name, value in node.items():
            if isinstance(value, TreeEntry):
                entries.append(TreeEntry(name, value.mode, value.sha))
            else:
                assert isinstance(value, dict)
                entries.append(TreeEntry(name, FileMode.TREE, self._write_entry_node(value)))
        return self.put_tree(tuple(entries))

    def flat_entries(self, tree_sha: str, *, prefix: str = "") -> dict[str, TreeEntry]:
        """Every blob under a tree as ``{"dir/file": entry}`` (the inverse of write_entries)."""
        return {
            prefix + walked.path: walked.entry
            for walked in self.walk(tree_sha, recursive=True)
            if walked.entry.mode is not FileMode.TREE
        }

    def walk(self, tree_sha: str, *, recursive: bool, prefix: str = "") -> Iterator[WalkedEntry]:
        """Yield the entries of a tree (and of its sub-trees when ``recursive``), git's order."""
        for entry in self.trees[tree_sha]:
            path = prefix + entry.name
            yield WalkedEntry(path, entry)
            if recursive and entry.mode is FileMode.TREE:
                yield from self.walk(entry.sha, recursive=True, prefix=path + "/")

    def read_files(self, tree_sha: str) -> dict[str, bytes]:
        """Return every file under a tree as ``{"dir/file": bytes}``."""
        return {
            walked.path: self.blobs[walked.entry.sha]
            for walked in self.walk(tree_sha, recursive=True)
            if walked.entry.mode is not FileMode.TREE
        }

    def lookup(self, tree_sha: str, path: str) -> TreeEntry | None:
        """Find the entry at ``path`` under a tree, or None."""
        parts = [part for part in path.strip("/").split("/") if part]
        entry: TreeEntry | None = TreeEntry("", FileMode.TREE, tree_sha)
        for part in parts:
            if entry is None or entry.mode is not FileMode.TREE:
                return None
            entry = next((e for e in self.trees[entry.sha] if e.name == part), None)
        return entry

    def ancestors(self, sha: str) -> list[str]:
        """Every commit reachable from ``sha`` (itself included), newest first.

        Commits are created after their parents, so creation order is a topological order
        that also follows time, like ``git log``'s default.
        """
        seen: set[str] = set()
        stack = [sha]
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.commits[current].parents)
        return sorted(seen, key=lambda s: self._created[s], reverse=True)


class ChangeStatus(Enum):
    """How a file changed between two trees."""

    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"


@dataclass(frozen=True)
class FileChange:
    """One changed file: line counts and a unified-diff hunk for text, none for binary."""

    filename: str
    status: ChangeStatus
    sha: str
    additions: int
    deletions: int
    patch: str | None


def _text_lines(data: bytes) -> list[str] | None:
    if b"\0" in data:
        return None
    try:
        return data.decode().splitlines()
    except UnicodeDecodeError:
        return None


def _change(filename: str, status: ChangeStatus, sha: str, old: bytes, new: bytes) -> FileChange:
    old_lines, new_lines = _text_lines(old), _text_lines(new)
    if old_lines is None or new_lines is None:
        return FileChange(filename, status, sha, 0, 0, None)
    hunks = list(difflib.unified_diff(old_lines, new_lines, lineterm="", n=3))[2:]
    additions = sum(line.startswith("+") for line in hunks)
    deletions = sum(line.startswith("-") for line in hunks)
    return FileChange(filename, status, sha, additions, deletions, "\n".join(hunks))


def diff_trees(store: ObjectStore, old_tree: str | None, new_tree: str) -> list[FileChange]:
    """The files that differ between two trees (``old_tree`` None means empty), by path."""
    old = {
        w.path: w.entry.sha
        for w in (store.walk(old_tree, recursive=True) if old_tree else ())
        if w.entry.mode is not FileMode.TREE
    }
    new = {
        w.path: w.entry.sha
        for w in store.walk(new_tree, recursive=True)
        if w.entry.mode is not FileMode.TREE
    }
    changes = []
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        if before is None:
            assert after is not None
            changes.append(_change(path, ChangeStatus.ADDED, after, b"", store.blobs[after]))
        elif after is None:
            changes.append(_change(path, ChangeStatus.REMOVED, before, store.blobs[before], b""))
        else:
            changes.append(
                _change(path, ChangeStatus.MODIFIED, after, store.blobs[before], store.blobs[after])
            )
    return changes
