"""Content hashes: of files (streamed) and of canonical JSON values."""

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.safeio import HASHED_FILE, InputKind, open_input

_CHUNK = 1 << 20


def sha256_file(path: Path, *, kind: InputKind = HASHED_FILE, within: Path | None = None) -> str:
    """Return the hex sha256 of a regular file's bytes, read in chunks (opened by ``engine.safeio``).

    A FIFO, a device, a file over the kind's cap or a symlink out of ``within`` (by
    default the file's own folder) raises ``EvidenceError`` with one line.
    """
    digest = hashlib.sha256()
    with open_input(Path(path), kind=kind, within=within) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    """Return the hex sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return sha256_bytes(text.encode("utf-8"))
