"""The model registry (``registry.json``): schema, safe paths, hashes and timeline order."""

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from engine.errors import RegistryError
from engine.hashing import sha256_file

MAX_REGISTRY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ExternalData:
    """A weight file stored beside a model, with its expected hash."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    """One registry row; ``pointer`` is its JSON pointer in the file (e.g. ``/models/3``)."""

    id: str
    kind: str
    onnx: str
    sha256: str
    smoke: bool
    opset: int
    license: str
    timeline: int
    pointer: str
    external_data: tuple[ExternalData, ...] = ()
    notes: str = ""

    def onnx_path(self, root: Path) -> Path:
        """Return the model file's path under the registry folder ``root``."""
        return Path(root) / self.onnx

    def external_map(self) -> dict[str, str]:
        """Return external file name -> expected sha256 (for ``scoring.inspect_model``)."""
        return {item.path: item.sha256 for item in self.external_data}


@dataclass(frozen=True)
class Registry:
    """A loaded registry: its models in canonical order (ascending timeline, oldest first)."""

    path: Path
    root: Path
    schema_version: int
    models: tuple[ModelEntry, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a registry, located by JSON pointer."""

    pointer: str
    message: str

    def __str__(self) -> str:
        """Return ``registry.json#/models/3/sha256: message`` on one line."""
        return f"registry.json#{self.pointer}: {self.message}"


class RegistryInvalid(RegistryError):
    """A registry with problems; ``problems`` lists all that were found."""

    def __init__(self, problems: list[Problem]) -> None:
        """Keep every problem; the message is the first one and the count."""
        self.problems = tuple(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@cache
def registry_schema() -> dict[str, Any]:
    """Return the registry JSON Schema shipped inside the package."""
    text = resources.files("engine.schemas").joinpath("registry.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _pointer(parts: Any) -> str:
    """Turn a path of keys and indices into an RFC 6901 JSON pointer."""
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "".join(f"/{part}" for part in escaped)


def _read(path: Path) -> Any:
    """Read and parse the registry file, refusing what is not a small JSON file."""
    path = Path(path)
    if not path.exists():
        raise RegistryError(f"{path}: no such file")
    if not path.is_file():
        raise RegistryError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_REGISTRY_BYTES:
        raise RegistryError(
            f"{path}: {size} bytes, over the {MAX_REGISTRY_BYTES} byte limit for a registry"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise RegistryError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from error
    except json.JSONDecodeError as error:
        raise RegistryError(
            f"{path}: invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from error


def _path_problem(relative: str, root: Path) -> str | None:
    """Return why a model path is unsafe, or None when it stays inside ``root``."""
    if "\\" in relative or "\x00" in relative:
        return f"path {relative!r} must use '/' separators and no NUL"
    posix = PurePosixPath(relative)
    if posix.is_absolute() or relative.startswith("~"):
        return f"path {relative!r} must be relative to the registry folder, not absolute"
    if ".." in posix.parts:
        return f"path {relative!r} must not contain '..'"
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"path {relative!r} resolves outside the registry folder (symlink?)"
    return None


def _structural_problems(document: Any, root: Path) -> list[Problem]:
    """Schema, duplicate ids, timeline ties and unsafe paths: everything but file contents."""
    validator = jsonschema.Draft202012Validator(registry_schema())
    problems = [
        Problem(_pointer(error.absolute_path), error.message)
        for error in validator.iter_errors(document)
    ]
    if problems:
        return problems
    seen_ids: dict[str, int] = {}
    seen_positions: dict[int, int] = {}
    for index, model in enumerate(document["models"]):
        base = f"/models/{index}"
        if model["id"] in seen_ids:
            problems.append(
                Problem(
                    f"{base}/id",
                    f"duplicate id {model['id']!r} (first at /models/{seen_ids[model['id']]})",
                )
            )
        seen_ids.setdefault(model["id"], index)
        if model["timeline"] in seen_positions:
            first = seen_positions[model["timeline"]]
            problems.append(
                Problem(
                    f"{base}/timeline",
                    f"timeline {model['timeline']} ties with /models/{first}: order must be strict",
                )
            )
        seen_positions.setdefault(model["timeline"], index)
        if (why := _path_problem(model["onnx"], root)) is not None:
            problems.append(Problem(f"{base}/onnx", why))
        for position, item in enumerate(model.get("external_data", [])):
            name = item["path"]
            if name in {".", ".."} or "\x00" in name:
                problems.append(
                    Problem(
                        f"{base}/external_data/{position}/path",
                        f"{name!r} is not a plain file name",
                    )
                )
    return problems


def _entries(document: Any) -> tuple[ModelEntry, ...]:
    """Build entries from a structurally valid document, in canonical timeline order."""
    entries = [
        ModelEntry(
            id=model["id"],
            kind=model["kind"],
            onnx=model["onnx"],
            sha256=model["sha256"],
            smoke=model["smoke"],
            opset=model["opset"],
            license=model["license"],
            timeline=model["timeline"],
            pointer=f"/models/{index}",
            external_data=tuple(
                ExternalData(e["path"], e["sha256"]) for e in model.get("external_data", [])
            ),
            notes=model.get("notes", ""),
        )
        for index, model in enumerate(document["models"])
    ]
    return tuple(sorted(entries, key=lambda entry: entry.timeline))


def load_registry(path: Path) -> Registry:
    """Read a registry and check its structure (files are hashed lazily, by whoever opens them)."""
    path = Path(path)
    document = _read(path)
    problems = _structural_problems(document, path.parent)
    if problems:
        raise RegistryInvalid(sorted(problems, key=lambda p: p.pointer))
    return Registry(
        path=path,
        root=path.parent,
        schema_version=document["schema_version"],
        models=_entries(document),
    )


def _file_problems(entry: ModelEntry, root: Path) -> list[Problem]:
    """Check that a model's file and its external data exist and match their hashes."""
    problems: list[Problem] = []
    model_path = entry.onnx_path(root)
    if not model_path.is_file():
        return [Problem(f"{entry.pointer}/onnx", f"file {entry.onnx} not found")]
    actual = sha256_file(model_path)
    if actual != entry.sha256:
        problems.append(
            Problem(
                f"{entry.pointer}/sha256",
                f"sha256 mismatch: registry says {entry.sha256[:12]}…, file has {actual[:12]}…",
            )
        )
    for position, item in enumerate(entry.external_data):
        pointer = f"{entry.pointer}/external_data/{position}"
        data_path = model_path.parent / item.path
        if not data_path.resolve().is_relative_to(model_path.parent.resolve()):
            problems.append(
                Problem(f"{pointer}/path", f"{item.path!r} resolves outside the model's folder")
            )
        elif not data_path.is_file():
            problems.append(
                Problem(
                    f"{pointer}/path",
                    f"external data file {item.path} not found beside {entry.onnx}",
                )
            )
        elif (digest := sha256_file(data_path)) != item.sha256:
            problems.append(
                Problem(
                    f"{pointer}/sha256",
                    f"sha256 mismatch: registry says {item.sha256[:12]}…, file has {digest[:12]}…",
                )
            )
    return problems


def validate_registry(path: Path) -> list[Problem]:
    """Return every problem in a registry: structure, paths, files and hashes (empty when valid)."""
    path = Path(path)
    try:
        document = _read(path)
    except RegistryError as error:
        return [Problem("", str(error))]
    problems = _structural_problems(document, path.parent)
    schema_valid = jsonschema.Draft202012Validator(registry_schema()).is_valid(document)
    if schema_valid:  # hash every model whose path is safe, even when other rows have problems
        unsafe = {p.pointer for p in problems if p.pointer.endswith("/onnx")}
        for entry in _entries(document):
            if f"{entry.pointer}/onnx" not in unsafe:
                problems.extend(_file_problems(entry, path.parent))
    return sorted(problems, key=lambda p: p.pointer)
