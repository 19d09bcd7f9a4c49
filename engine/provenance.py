"""Run provenance: the block every JSON the engine writes carries.

Every input is a file the run read, with its ``role`` (``InputRole``): a graph file and
each external-data file it reads are separate inputs (``model``, ``external_data``), so two
runs over the same graph with other weights record different inputs. The ``entrypoint``
is the code that ran: the installed ``engine`` package, which the ``model-guard`` console
script (a wrapper pip generates, ``engine.cli:main``) and ``python -m engine`` both run;
``entrypoint_sha256`` hashes it (``engine_sha256``), so a run from an edited or different
installation records a different hash even outside a git checkout.

Paths in the block (``argv``, ``inputs``, ``outputs``) are written so that a report does
not leak the user's home directory: a path inside the git top-level (or, outside a
checkout, inside the working folder) becomes relative to it, with '/' separators; any
other absolute path under the home directory becomes ``~/...``; anything else is kept as
given. In ``argv``, an argument is treated as a path when it exists or is absolute,
and ``--option=value`` arguments have their value treated the same way.
"""

import functools
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any

from engine import __version__
from engine.hashing import sha256_file, sha256_json

# Version of the block's own layout. 2: inputs carry a role, entrypoint_sha256 is recorded.
PROVENANCE_VERSION = 2
KEY_PACKAGES = ("numpy", "scipy", "pandas", "pyarrow", "onnx", "onnxruntime", "jsonschema", "torch")
_GIT_TIMEOUT_S = 5


class InputRole(Enum):
    """What an input file is to the run that read it."""

    MODEL = "model"
    EXTERNAL_DATA = "external_data"
    FEATURES = "features"
    LOSO_REPORT = "loso_report"
    REGISTRY = "registry"
    MANIFEST = "manifest"
    VERDICT = "verdict"
    POLICY = "policy"


@dataclass(frozen=True)
class Input:
    """One file a run read, and its role."""

    path: Path
    role: InputRole


def inputs_of(paths: Iterable[Path | str | None], role: InputRole) -> list[Input]:
    """Return the given files (None skipped) as inputs of one role."""
    return [Input(Path(path), role) for path in paths if path is not None]


def model_inputs(models: Iterable[Path | str]) -> list[Input]:
    """Return each ONNX graph file and, after it, every external-data file its graph reads."""
    from engine.scoring import external_data_names

    found: list[Input] = []
    for model in models:
        path = Path(model)
        found.append(Input(path, InputRole.MODEL))
        found += inputs_of(
            (path.parent / name for name in external_data_names(path)), InputRole.EXTERNAL_DATA
        )
    return found


def engine_sha256() -> str:
    """Return the sha256 of the running ``engine`` package: each source and schema file's path and hash.

    Computed once per process (about 80 small files).
    """
    return _engine_sha256(Path(__file__).resolve().parent)


@functools.cache
def _engine_sha256(package: Path) -> str:
    files = sorted(
        path
        for path in package.rglob("*")
        if path.suffix in {".py", ".json"} and "__pycache__" not in path.parts and path.is_file()
    )
    return sha256_json({path.relative_to(package).as_posix(): sha256_file(path) for path in files})


@dataclass(frozen=True)
class GitState:
    """The checkout a run happened in: HEAD, whether tracked files differ, and its top folder."""

    commit: str
    dirty: bool
    top: Path


@dataclass(frozen=True)
class _Anchors:
    """Where paths are made relative to, and the home folder that is hidden as ``~``."""

    base: Path
    anchor: Path
    home: Path | None


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def git_state(cwd: Path) -> GitState | None:
    """Return the git state of the checkout holding ``cwd``; None outside one or without git.

    Untracked files do not make a checkout dirty: a run's own outputs are usually
    untracked, and would otherwise mark every run dirty.
    """
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    commit = _git(["rev-parse", "--verify", "HEAD"], cwd)
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    if top is None or commit is None or status is None:
        return None
    return GitState(commit=commit.strip(), dirty=bool(status.strip()), top=Path(top.strip()))


def build_provenance(
    *,
    schema: str,
    schema_version: int,
    entrypoint: str,
    argv: Sequence[str],
    inputs: Sequence[Input],
    outputs: Sequence[Path],
    started: datetime,
    finished: datetime,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Return the ``run_provenance`` block: who ran what, on which code, data and machine.

    ``inputs`` are every file the run read, each with its role; ``outputs`` what it wrote.
    """
    base = Path(cwd if cwd is not None else Path.cwd()).resolve()
    git = git_state(base)
    anchors = _Anchors(
        base=base, anchor=git.top.resolve() if git is not None else base, home=_home()
    )
    return {
        "schema": schema,
        "schema_version": schema_version,
        "provenance_version": PROVENANCE_VERSION,
        "entrypoint": entrypoint,
        "entrypoint_sha256": engine_sha256(),
        "model_guard_version": __version__,
        "argv": [_normalise_argument(argument, anchors) for argument in argv],
        "git": None if git is None else {"commit": git.commit, "dirty": git.dirty},
        "python": platform.python_version(),
        "packages": _package_versions(),
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "executable": Path(sys.executable).name,
        },
        "inputs": _describe_inputs(inputs, anchors),
        "outputs": _describe_files(outputs, anchors),
        "started": _iso(started),
        "finished": _iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3),
    }


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
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    return done.stdout if done.returncode == 0 else None


def _home() -> Path | None:
    """Return the resolved home folder, or None when it cannot be determined."""
    try:
        return Path.home().resolve()
    except (OSError, RuntimeError):
        return None


def _iso(moment: datetime) -> str:
    """Format a time as ISO-8601 UTC with a 'Z' (a naive time is taken as local time)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normalise_argument(argument: str, anchors: _Anchors) -> str:
    """Normalise one argv entry: a path itself, or the value of ``--option=path``."""
    if argument.startswith("--") and "=" in argument:
        option, value = argument.split("=", 1)
        return f"{option}={_normalise_path(value, anchors, only_paths=True)}"
    return _normalise_path(argument, anchors, only_paths=True)


def _normalise_path(text: str, anchors: _Anchors, *, only_paths: bool = False) -> str:
    """Show a path relative to the anchor when inside it, as ``~/...`` under home, else as is.

    With ``only_paths`` (argv), text that is neither absolute nor an existing path is
    returned unchanged: it is most likely not a path at all.
    """
    if not text or "\x00" in text:
        return text
    candidate = Path(text)
    try:
        full = candidate if candidate.is_absolute() else anchors.base / candidate
        if only_paths and not candidate.is_absolute() and not full.exists():
            return text
        resolved = full.resolve()
    except (OSError, RuntimeError, ValueError):
        return text
    if resolved.is_relative_to(anchors.anchor):
        return resolved.relative_to(anchors.anchor).as_posix()
    if anchors.home is not None and resolved.is_relative_to(anchors.home):
        inside = resolved.relative_to(anchors.home).as_posix()
        return "~" if inside == "." else f"~/{inside}"
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


def _describe_inputs(inputs: Sequence[Input], anchors: _Anchors) -> list[dict[str, Any]]:
    """Path, role, size and sha256 of each input; a folder expands to its files; no repeats."""
    described: list[dict[str, Any]] = []
    seen: set[str] = set()
    for given in inputs:
        for entry in _describe_files([given.path], anchors):
            if entry["path"] not in seen:
                seen.add(entry["path"])
                described.append({"path": entry["path"], "role": given.role.value, **entry})
    return described


def _describe_files(paths: Sequence[Path], anchors: _Anchors) -> list[dict[str, Any]]:
    """Path, size and sha256 of each file; a folder expands to its files, sorted; no repeats."""
    described: list[dict[str, Any]] = []
    seen: set[str] = set()
    for given in paths:
        path = Path(given) if Path(given).is_absolute() else anchors.base / given
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for item in files:
            shown = _normalise_path(str(item), anchors)
            if shown not in seen:
                seen.add(shown)
                described.append({"path": shown, **_describe_file(item)})
    return described


def _describe_file(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file; nulls and ``missing`` or ``error`` when it cannot be read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {"size": None, "sha256": None, "missing": True}
    except OSError as error:
        return {"size": None, "sha256": None, "error": str(error.strerror or error)}
    if not path.is_file():
        return {"size": None, "sha256": None, "error": "not a regular file"}
    try:
        return {"size": info.st_size, "sha256": sha256_file(path)}
    except OSError as error:
        return {"size": info.st_size, "sha256": None, "error": str(error.strerror or error)}
