"""Run provenance: the block every JSON the engine writes carries, and the atomic JSON writer."""

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import ReportError
from engine.hashing import sha256_file

KEY_PACKAGES = ("numpy", "scipy", "pandas", "pyarrow", "onnx", "onnxruntime", "jsonschema", "torch")
_GIT_TIMEOUT_S = 5


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    """Format a time as ISO-8601 UTC with a 'Z'."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _git(args: Sequence[str], cwd: Path) -> str | None:
    """Run a git command; None when git is missing, fails or times out."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(cwd: Path) -> dict[str, Any] | None:
    """Return ``{commit, dirty, top}`` for the checkout holding ``cwd``, or None outside one."""
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    commit = _git(["rev-parse", "HEAD"], cwd)
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    if top is None or commit is None or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "top": top.strip()}


def _normalise(text: str, anchor: Path) -> str:
    """Make an existing path relative to ``anchor`` when inside it, so home folders don't leak."""
    try:
        candidate = Path(text)
        if not candidate.exists():
            return text
        resolved = candidate.resolve()
    except (OSError, ValueError):
        return text
    if resolved.is_relative_to(anchor):
        return str(resolved.relative_to(anchor))
    return text


def _package_versions() -> dict[str, str | None]:
    """Return installed versions of the key packages (None when absent); nothing is imported."""
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _describe_files(paths: Sequence[Path], anchor: Path) -> list[dict[str, Any]]:
    """Path, size and sha256 of each file (a folder expands to its files, sorted)."""
    described: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for item in files:
            shown = _normalise(str(item), anchor)
            if item.is_file():
                described.append(
                    {"path": shown, "size": item.stat().st_size, "sha256": sha256_file(item)}
                )
            else:
                described.append({"path": shown, "size": None, "sha256": None, "missing": True})
    return described


def build_provenance(
    *,
    schema: str,
    schema_version: int,
    entrypoint: str,
    argv: Sequence[str],
    inputs: Sequence[Path],
    outputs: Sequence[Path],
    started: datetime,
    finished: datetime,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Return the ``run_provenance`` block: who ran what, on which code, data and machine.

    Paths (in argv, inputs and outputs) are made relative to the git top-level, or to the
    working folder outside a checkout, whenever they lie inside it.
    """
    here = Path(cwd or Path.cwd()).resolve()
    git = git_state(here)
    anchor = Path(git["top"]).resolve() if git else here
    return {
        "schema": schema,
        "schema_version": schema_version,
        "entrypoint": entrypoint,
        "model_guard_version": __version__,
        "argv": [_normalise(arg, anchor) for arg in argv],
        "git": None if git is None else {"commit": git["commit"], "dirty": git["dirty"]},
        "python": platform.python_version(),
        "packages": _package_versions(),
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "executable": Path(sys.executable).name,
        },
        "inputs": _describe_files(inputs, anchor),
        "outputs": _describe_files(outputs, anchor),
        "started": _iso(started),
        "finished": _iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3),
    }


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write a JSON document atomically (temporary file, fsync, rename); NaN is refused."""
    path = Path(path)
    try:
        text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    except ValueError as error:
        raise ReportError(
            f"cannot write {path.name}: a value is NaN or infinite ({error})"
        ) from error
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from error
