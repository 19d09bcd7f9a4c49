"""The one safe way the engine opens an input file: regular files only, capped, never blocking.

Every evidence and input file the engine reads (evidence JSON, LOSO reports, verdicts,
the registry, feature caches, ONNX graphs) is opened here, so one set of rules holds:

- only a regular file is read: a FIFO, a device (``/dev/zero``), a socket or a folder is
  refused. The file is opened with ``O_NONBLOCK`` (opening a FIFO with no writer would
  otherwise block forever) and ``fstat``-ed before a byte is read, so what is checked is
  what is read;
- a symlink may not lead out of the folder it is read from (``within``, by default the
  folder the path names): the real path is resolved and checked, then opened with
  ``O_NOFOLLOW`` so the last component cannot be swapped for a symlink in between;
- every kind of file has a size cap (``InputKind``), checked on the open descriptor and
  again on what was read (a file that grows after ``fstat`` is still refused);
- every refusal is one engine error of the caller's type with a one-line
  ``<path>: <reason>`` message.
"""

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from engine.errors import EngineError, EvidenceError

_MIB = 1024 * 1024
# O_NONBLOCK: opening a FIFO without a writer returns at once instead of blocking; on a
# regular file the flag changes nothing. O_NOFOLLOW: the resolved path's last component
# may not have become a symlink since it was checked.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
)
# Deeper nesting than any evidence document has (they nest five or six levels), so every
# recursive walk after parsing (schema validation, hashing) stays far from the
# interpreter's recursion limit; deeper than the parser itself follows is refused too.
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class InputKind:
    """A kind of input file: what a message calls it and the most bytes it may have."""

    label: str
    max_bytes: int


EVIDENCE_JSON = InputKind("evidence JSON", 16 * _MIB)
REGISTRY_JSON = InputKind("registry JSON", 4 * _MIB)
# A model's sidecar (preprocessing and codec declarations): a few KiB in the field.
SIDECAR_JSON = InputKind("sidecar JSON", 1 * _MIB)
FEATURE_CACHE = InputKind("feature cache", 512 * _MIB)
ONNX_GRAPH = InputKind("ONNX graph file", 2048 * _MIB)
# Files only hashed, never parsed (models, external data): streamed, so the cap is generous.
HASHED_FILE = InputKind("hashed file", 64 * 1024 * _MIB)


@contextmanager
def open_input(
    path: Path,
    *,
    kind: InputKind,
    max_bytes: int | None = None,
    within: Path | None = None,
    error: type[EngineError] = EvidenceError,
) -> Iterator[BinaryIO]:
    """Open a regular input file for reading (see the module docstring); yields a binary handle.

    ``max_bytes`` overrides the kind's cap; ``within`` is the folder the file must really
    be in (default: the folder ``path`` names). Raises ``error`` with one line.
    """
    path = Path(path)
    limit = kind.max_bytes if max_bytes is None else max_bytes

    def refuse(reason: str) -> EngineError:
        return error(f"{path}: {reason}")

    real = _resolve_within(path, within, refuse)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        raise refuse("not found (no such file)") from None
    except OSError as failure:
        raise refuse(f"cannot read ({failure.strerror or failure})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refuse(f"not a regular file ({_file_type(info.st_mode)}); not read")
        if info.st_size > limit:
            raise refuse(too_large(info.st_size, limit, kind=kind))
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_input(
    path: Path,
    *,
    kind: InputKind,
    max_bytes: int | None = None,
    within: Path | None = None,
    error: type[EngineError] = EvidenceError,
) -> bytes:
    """Return the bytes of a regular input file under its cap (see ``open_input``)."""
    limit = kind.max_bytes if max_bytes is None else max_bytes
    with open_input(path, kind=kind, max_bytes=limit, within=within, error=error) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as failure:
            raise error(f"{path}: cannot read ({failure.strerror or failure})") from None
    if len(data) > limit:  # the file grew after fstat
        raise error(f"{path}: {too_large(len(data), limit, kind=kind)}")
    return data


def json_depth(value: Any) -> int:
    """Return how deeply arrays and objects nest in a parsed JSON value (walked without recursion)."""
    if not isinstance(value, dict | list):
        return 0  # a bare scalar (null, a number, a string) nests nothing
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def too_large(size: int, limit: int, *, kind: InputKind) -> str:
    """Say that a file is over its kind's size cap."""
    return f"{size} bytes, over the {limit}-byte limit for {kind.label}"


def _resolve_within(path: Path, within: Path | None, refuse: Callable[[str], EngineError]) -> str:
    """Return the real path of ``path``, refusing one that resolves outside ``within``."""
    folder = path.parent if within is None else Path(within)
    try:
        real = os.path.realpath(path, strict=False)
        boundary = os.path.realpath(folder, strict=False)
    except (OSError, RuntimeError) as failure:  # symlink loops
        raise refuse(f"cannot resolve ({failure})") from None
    if os.path.commonpath([real, boundary]) != boundary:
        raise refuse(f"resolves outside {folder} (a symlink leaving the folder); not read")
    return real


def _file_type(mode: int) -> str:
    """Name a non-regular file's type for a refusal message."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"
