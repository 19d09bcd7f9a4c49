"""The model registry (``registry.json``): schema, safe paths, hashes and timeline order."""

import json
import re
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from engine.declaration import RowDeclaration
from engine.errors import EngineError, EvidenceError, RegistryError, one_line
from engine.evidence import document_order, load_schema, read_json, schema_problems
from engine.hashing import sha256_file
from engine.safeio import REGISTRY_JSON

if TYPE_CHECKING:
    from engine.scoring import ScoringLimits

SCHEMA_VERSION = 1
MAX_REGISTRY_BYTES = REGISTRY_JSON.max_bytes
_SCHEMA_FILE = "registry.schema.json"
_DRIVE = re.compile(r"^[A-Za-z]:")
# Row fields holding a path besides `onnx`: the same rules apply (relative, inside the folder).
_PATH_FIELDS = ("sidecar", "sigstore_bundle")

DEFAULT_QUANT_BUDGET_PLCC = 0.01
"""How much PLCC a quantised twin may lose against its parent when the parent names no budget."""


@dataclass(frozen=True)
class ExternalData:
    """A weight file stored beside a model, with its expected hash."""

    path: str
    sha256: str


@dataclass(frozen=True)
class CodecSpec:
    """A codec-aware model's second input: the codec vocabulary version and its width K."""

    vocabulary_version: int
    width: int


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
    codec: CodecSpec | None = None
    family: str | None = None  # declared family; None: derived from kind and graph inputs
    declared: RowDeclaration | None = None
    quantised_from: str | None = None
    quant_budget_plcc: float = DEFAULT_QUANT_BUDGET_PLCC

    def onnx_path(self, root: Path) -> Path:
        """Return the model file's path under the registry folder ``root``."""
        return Path(root) / self.onnx

    def external_map(self) -> dict[str, str]:
        """Return external file name -> expected sha256 (for ``scoring.inspect_model``)."""
        return {item.path: item.sha256 for item in self.external_data}

    def files(self) -> tuple[str, ...]:
        """The graph, its external data and its sidecar, as '/'-paths relative to the registry folder.

        The sidecar comes last: whoever fetches a model's files (the App) fetches it too.
        """
        folder = PurePosixPath(self.onnx).parent
        sidecar = (
            ()
            if self.declared is None or self.declared.sidecar is None
            else (self.declared.sidecar,)
        )
        return (
            self.onnx,
            *((folder / item.path).as_posix() for item in self.external_data),
            *sidecar,
        )


@dataclass(frozen=True)
class Registry:
    """A loaded registry: its models in canonical order (ascending timeline, oldest first)."""

    path: Path
    root: Path
    schema_version: int
    models: tuple[ModelEntry, ...]

    @property
    def timeline_models(self) -> tuple[ModelEntry, ...]:
        """The rows that are steps of the timeline: all but quantised twins."""
        return tuple(entry for entry in self.models if entry.quantised_from is None)

    @property
    def twins(self) -> tuple[ModelEntry, ...]:
        """The quantised twins (rows with ``quantised_from``), each checked against its parent."""
        return tuple(entry for entry in self.models if entry.quantised_from is not None)


class ProblemKind(Enum):
    """Which check found a problem: the file's structure, a row's files, its codec, or its model."""

    STRUCTURE = "structure"
    FILES = "files"
    CODEC = "codec"
    DECLARATION = "declaration"
    SAFETY = "safety"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a registry, located by JSON pointer ("" = the whole file)."""

    pointer: str
    message: str
    kind: ProblemKind = ProblemKind.STRUCTURE

    def __str__(self) -> str:
        """Return ``registry.json#/models/3/sha256: message`` on one line."""
        return _printable(f"registry.json#{self.pointer}: {self.message}")


class RegistryInvalid(RegistryError):
    """A registry that cannot be used; ``problems`` lists every problem found, in order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        """Keep every problem; the message is the first one and how many more there are."""
        if not problems:
            raise ValueError("RegistryInvalid needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")

    def __reduce__(self) -> tuple[type["RegistryInvalid"], tuple[tuple[Problem, ...]]]:
        """Pickle by the problems (the App's engine pool sends errors across a pipe)."""
        return (type(self), (self.problems,))


def load_registry(path: Path) -> Registry:
    """Read a registry and check its structure and paths; raises ``RegistryInvalid``.

    Files are not hashed here: whoever opens a model (bisect, lazily) checks its sha256.
    """
    path = Path(path)
    document = _read(path)
    problems = _sorted(_structural_problems(document, path.parent))
    if problems:
        raise RegistryInvalid(problems)
    return Registry(
        path=path,
        root=path.parent,
        schema_version=document["schema_version"],
        models=_entries(document),
    )


def validate_registry(
    path: Path,
    *,
    files_of: Collection[str] | None = None,
    limits: "ScoringLimits | None" = None,
) -> list[Problem]:
    """Return every problem in a registry, empty when valid: what the bisect checks before scoring.

    Structure (schema, ids, timeline, safe paths) is checked for every row; each row whose
    structure is sound then goes through ``engine.admission.admit_model``, the very check
    the bisect runs before scoring a model (files and hashes, codec width against the
    codec vocabulary, the safety check under ``limits``, external data listed against
    external data read). A row with a structural problem is only checked for its files.
    ``files_of`` limits the per-row checks to the rows with those ids (a pull request's
    check has only the files of the rows it changes).
    """
    # Imported here: the admission check needs onnx and onnxruntime, loading a registry does not.
    from engine.admission import admit_model
    from engine.scoring import ScoringLimits

    path = Path(path)
    try:
        document = _read(path)
    except RegistryInvalid as error:
        return list(error.problems)
    problems = _structural_problems(document, path.parent)
    flagged = {problem.pointer for problem in problems}
    for index, model in _model_rows(document):
        if files_of is not None and not (
            isinstance(model.get("id"), str) and model["id"] in files_of
        ):
            continue
        base = f"/models/{index}"
        if not _clean(base, flagged):
            problems.extend(_file_problems(model, path.parent, base=base, flagged=flagged))
            continue
        entry = _entry(model, index)
        declared = (
            _row_declaration(document, model) if _clean("/codec_vocabularies", flagged) else None
        )
        admission = admit_model(
            entry.onnx_path(path.parent),
            expected_sha256=entry.sha256,
            external_data=entry.external_data,
            codec=entry.codec,
            limits=limits or ScoringLimits(),
            pointer=base,
            root=path.parent,
            kind=entry.kind,
            family=entry.family,
            declared=None if declared is None or declared.empty else declared,
        )
        problems.extend(admission.problems)
    return _sorted(problems)


def document_problems(document: Any, root: Path) -> list[Problem]:
    """Return the structural problems of a registry document (schema, ids, timeline, paths)."""
    return _sorted(_structural_problems(document, root))


def registry_schema() -> dict[str, Any]:
    """Return the registry JSON Schema shipped inside the package."""
    return load_schema(_SCHEMA_FILE)


def _read(path: Path) -> Any:
    """Read and parse the registry file, refusing what is not a small, strict JSON file."""
    try:
        return read_json(path, kind=REGISTRY_JSON).value
    except EvidenceError as error:
        raise RegistryInvalid([Problem("", str(error))]) from None


def _sorted(problems: Iterable[Problem]) -> list[Problem]:
    """Return problems without repeats, in document order of their pointers."""
    return sorted(set(problems), key=lambda p: (document_order(p.pointer), p.message))


def _printable(text: str) -> str:
    """Escape control characters so a problem always prints on one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _schema_problems(document: Any) -> list[Problem]:
    """Return one problem per schema violation, located where it is."""
    problems: list[Problem] = []
    for found in schema_problems(document, _SCHEMA_FILE):
        if found.pointer == "/schema_version" and found.keyword == "const":
            version = document["schema_version"]
            message = (
                f"unsupported schema_version {one_line(repr(version), limit=40)}: "
                f"this model-guard reads schema_version {SCHEMA_VERSION}"
            )
            problems.append(Problem(found.pointer, message))
        else:
            problems.append(Problem(found.pointer, found.message))
    return problems


def _structural_problems(document: Any, root: Path) -> list[Problem]:
    """Schema, duplicate ids, timeline ties and unsafe paths: everything but file contents.

    A field that breaks the schema is left out of the other checks, but the rest of its
    model is still checked, so one run lists as much as can be said reliably.
    """
    problems = _schema_problems(document)
    flagged = {problem.pointer for problem in problems}
    first_id: dict[str, int] = {}
    first_timeline: dict[int, int] = {}
    for index, model in _model_rows(document):
        base = f"/models/{index}"
        if _usable(model, "id", base=base, flagged=flagged):
            if model["id"] in first_id:
                problems.append(
                    Problem(
                        f"{base}/id",
                        f"duplicate id {model['id']!r} (first at /models/{first_id[model['id']]})",
                    )
                )
            first_id.setdefault(model["id"], index)
        if _usable(model, "timeline", base=base, flagged=flagged):
            timeline = int(model["timeline"])
            if timeline in first_timeline:
                problems.append(
                    Problem(
                        f"{base}/timeline",
                        f"timeline {timeline} ties with /models/{first_timeline[timeline]}: "
                        "the order must be strict",
                    )
                )
            first_timeline.setdefault(timeline, index)
        for field in _PATH_FIELDS:
            usable = _usable(model, field, base=base, flagged=flagged)
            if usable and (why := _path_problem(model[field], root)) is not None:
                problems.append(Problem(f"{base}/{field}", why))
        problems.extend(_twin_problems(document, model, base=base, flagged=flagged))
        if _usable(model, "onnx", base=base, flagged=flagged):
            if (why := _path_problem(model["onnx"], root)) is not None:
                problems.append(Problem(f"{base}/onnx", why))
            elif isinstance(items := model.get("external_data"), list):
                folder = (root / model["onnx"]).parent
                problems.extend(_external_problems(items, folder, base=base, flagged=flagged))
    return problems


def _model_rows(document: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (index, row) for every model row that is at least a JSON object."""
    models = document.get("models") if isinstance(document, dict) else None
    if isinstance(models, list):
        yield from ((i, m) for i, m in enumerate(models) if isinstance(m, dict))


def _usable(model: Mapping[str, Any], name: str, *, base: str, flagged: set[str]) -> bool:
    """True when a model has field ``name`` and no problem lies at or under it."""
    return name in model and _clean(f"{base}/{name}", flagged)


def _clean(pointer: str, flagged: set[str]) -> bool:
    """True when no problem lies at ``pointer`` or anywhere under it."""
    return not any(seen == pointer or seen.startswith(f"{pointer}/") for seen in flagged)


def _path_problem(relative: str, root: Path) -> str | None:
    """Return why a model path is unsafe, or None when it stays inside ``root``."""
    if "\\" in relative or "\x00" in relative:
        return f"path {relative!r} must use '/' separators and no NUL"
    posix = PurePosixPath(relative)
    if posix.is_absolute() or _DRIVE.match(relative):
        return f"path {relative!r} must be relative to the registry folder, not absolute"
    if relative.startswith("~"):
        return f"path {relative!r} must not start with '~' (it is not expanded)"
    if ".." in posix.parts:
        return f"path {relative!r} must not contain '..'"
    try:
        resolved = (root / relative).resolve()
        inside = resolved.is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # symlink loop
        return f"path {relative!r} cannot be resolved (symlink loop?)"
    if not inside:
        return f"path {relative!r} resolves outside the registry folder (symlink?)"
    return None


def _external_problems(
    items: list[Any], folder: Path, *, base: str, flagged: set[str]
) -> list[Problem]:
    """Return external data entries that are not plain, unique names in the model's folder.

    Mirrors ``scoring._locate_external``: the resolved file must sit directly in the
    (resolved) folder of the model. Entries with schema problems are skipped.
    """
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(items):
        if not _clean(f"{base}/external_data/{position}", flagged):
            continue
        pointer = f"{base}/external_data/{position}/path"
        name = item["path"]
        if name in {".", ".."} or "\x00" in name:
            problems.append(Problem(pointer, f"{name!r} is not a plain file name"))
            continue
        if name in seen:
            problems.append(
                Problem(pointer, f"{name!r} is listed twice (first at external_data/{seen[name]})")
            )
        seen.setdefault(name, position)
        try:
            escapes = (folder / name).resolve().parent != folder.resolve()
        except (OSError, RuntimeError):  # symlink loop
            escapes = True
        if escapes:
            problems.append(Problem(pointer, f"{name!r} resolves outside the model's folder"))
    return problems


def _twin(
    entry: ModelEntry,
    document: Mapping[str, Any],
    model: Mapping[str, Any],
    budgets: Mapping[str, float],
) -> ModelEntry:
    """Add what a row declares beyond the basic fields: declarations and its parent's budget."""
    parent = model.get("quantised_from")
    declared = _row_declaration(document, model)
    return replace(
        entry,
        declared=None if declared.empty else declared,
        quantised_from=parent,
        quant_budget_plcc=budgets.get(parent, DEFAULT_QUANT_BUDGET_PLCC)
        if parent is not None
        else budgets[entry.id],
    )


def _entry(model: Mapping[str, Any], index: int) -> ModelEntry:
    """Build an entry from a schema-valid model row (JSON Schema counts 17.0 as an integer)."""
    return ModelEntry(
        id=model["id"],
        kind=model["kind"],
        onnx=model["onnx"],
        sha256=model["sha256"],
        smoke=model["smoke"],
        opset=int(model["opset"]),
        license=model["license"],
        timeline=int(model["timeline"]),
        pointer=f"/models/{index}",
        external_data=tuple(
            ExternalData(path=item["path"], sha256=item["sha256"])
            for item in model.get("external_data", [])
        ),
        notes=model.get("notes", ""),
        codec=None
        if "codec" not in model
        else CodecSpec(
            vocabulary_version=int(model["codec"]["vocabulary_version"]),
            width=int(model["codec"]["width"]),
        ),
        family=model.get("family"),
    )


def _row_declaration(document: Mapping[str, Any], model: Mapping[str, Any]) -> RowDeclaration:
    """Return what a schema-valid row declares about its inputs (named vocabularies looked up)."""
    vocabulary, missing = model.get("codec_vocabulary"), None
    if isinstance(vocabulary, str):
        named = document.get("codec_vocabularies", {})
        vocabulary, missing = (
            (named[vocabulary], None) if vocabulary in named else (None, vocabulary)
        )
    codec = model.get("codec")
    return RowDeclaration(
        sidecar=model.get("sidecar"),
        preprocess=None if "preprocess" not in model else json.dumps(model["preprocess"]),
        inputs=tuple(sorted(model.get("inputs", {}).items())),
        vocabulary=None if vocabulary is None else json.dumps(vocabulary, sort_keys=True),
        missing_vocabulary=missing,
        legacy_codec=None
        if codec is None
        else (int(codec["vocabulary_version"]), int(codec["width"])),
    )


def _budgets(document: Mapping[str, Any]) -> dict[str, float]:
    """Return each row id's PLCC budget for its quantised twins."""
    return {
        model["id"]: float(model.get("quant_accuracy_budget_plcc", DEFAULT_QUANT_BUDGET_PLCC))
        for model in document["models"]
    }


def _twin_problems(
    document: Any, model: Mapping[str, Any], *, base: str, flagged: set[str]
) -> list[Problem]:
    """A ``quantised_from`` must name another row that is not itself a quantised twin."""
    if not _usable(model, "quantised_from", base=base, flagged=flagged):
        return []
    parent_id = model["quantised_from"]
    rows = {row.get("id"): row for _, row in _model_rows(document)}
    pointer = f"{base}/quantised_from"
    if parent_id == model.get("id"):
        return [Problem(pointer, "a model cannot be quantised from itself")]
    if parent_id not in rows:
        return [Problem(pointer, f"parent {parent_id!r} is not a row of this registry")]
    if "quantised_from" in rows[parent_id]:
        return [Problem(pointer, f"parent {parent_id!r} is itself a quantised twin")]
    return []


def _entries(document: Mapping[str, Any]) -> tuple[ModelEntry, ...]:
    """Build entries from a valid document, in canonical (ascending timeline) order."""
    budgets = _budgets(document)
    entries = (
        _twin(_entry(model, index), document, model, budgets)
        for index, model in enumerate(document["models"])
    )
    return tuple(sorted(entries, key=lambda entry: entry.timeline))


def _file_problems(
    model: Mapping[str, Any], root: Path, *, base: str, flagged: set[str]
) -> list[Problem]:
    """Check that a model's file and its external data exist and match their hashes."""
    if not all(_usable(model, name, base=base, flagged=flagged) for name in ("onnx", "sha256")):
        return []
    model_path = Path(root) / model["onnx"]
    problems = hash_problems(
        model_path,
        model["sha256"],
        path_pointer=f"{base}/onnx",
        hash_pointer=f"{base}/sha256",
        label=f"model file {PurePosixPath(model['onnx']).name}",
        beside="",
        root=Path(root),
    )
    externals = model.get("external_data", [])
    for position, item in enumerate(externals if isinstance(externals, list) else []):
        pointer = f"{base}/external_data/{position}"
        if not _clean(pointer, flagged):
            continue
        problems.extend(
            hash_problems(
                model_path.parent / item["path"],
                item["sha256"],
                path_pointer=f"{pointer}/path",
                hash_pointer=f"{pointer}/sha256",
                label=f"external data file {item['path']}",
                beside=f" beside {PurePosixPath(model['onnx']).name}",
                root=Path(root),
            )
        )
    return problems


def hash_problems(
    path: Path,
    expected: str | None,
    *,
    path_pointer: str,
    hash_pointer: str,
    label: str,
    beside: str,
    root: Path,
) -> list[Problem]:
    """Return why ``path`` (a file under the registry folder ``root``) is not a readable
    regular file whose sha256 is ``expected`` (None: any readable regular file)."""
    found = file_digest(path, path_pointer=path_pointer, label=label, beside=beside, root=root)
    if isinstance(found, Problem):
        return [found]
    if expected is not None and found != expected:
        return [sha256_mismatch(hash_pointer, expected=expected, found=found)]
    return []


def sha256_mismatch(pointer: str, *, expected: str, found: str) -> Problem:
    """The problem of a file whose bytes do not hash to what the registry says."""
    message = f"sha256 mismatch: registry says {expected[:12]}…, file has {found[:12]}…"
    return Problem(pointer, message, ProblemKind.FILES)


def file_digest(
    path: Path, *, path_pointer: str, label: str, beside: str, root: Path
) -> "str | Problem":
    """Return the sha256 of a readable regular file under ``root``, or the problem reading it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return Problem(path_pointer, f"{label} not found{beside}", ProblemKind.FILES)
    except OSError as error:
        why = f"{label}{beside} cannot be read ({error.strerror or error})"
        return Problem(path_pointer, why, ProblemKind.FILES)
    if not stat.S_ISREG(info.st_mode):
        return Problem(path_pointer, f"{label}{beside} is not a regular file", ProblemKind.FILES)
    try:
        return sha256_file(path, within=root)
    except OSError as error:
        why = f"{label}{beside} cannot be read ({error.strerror or error})"
        return Problem(path_pointer, why, ProblemKind.FILES)
    except EngineError as error:  # swapped for a FIFO or a symlink out of the folder since stat
        why = f"{label}{beside} cannot be read ({one_line(error)})"
        return Problem(path_pointer, why, ProblemKind.FILES)
