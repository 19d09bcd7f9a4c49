"""Evidence JSON: the engine's one strict reader, schema check, atomic writer and float rule.

Every JSON file the engine reads as evidence (registry, LOSO reports, verdicts, manifests)
goes through ``read_json``, which opens it through ``engine.safeio`` (regular files only,
size cap, no symlink out of its folder, never blocking) and refuses nesting deeper than
``MAX_JSON_DEPTH``; every file it writes goes through ``write_json``, ``write_text``,
``write_parquet`` or ``write_bytes``, all atomic (temporary file in the same folder, fsync,
``os.replace``).

The float rule (``encode_float`` / ``decode_float``): JSON has no NaN or infinity, and
Python's ``json`` writes and reads them as bare ``NaN``/``Infinity`` tokens that other
readers refuse. So a non-finite float is never written as a number: NaN (an undefined
metric) is written as ``null``, and an infinity (a conformal quantile with k > n, an
unbounded interval) as the string ``"inf"`` or ``"-inf"``. This keeps the three cases
apart, round-trips exactly, and leaves each schema to say where ``null`` or ``"inf"``
may stand: where a schema requires a finite number, the encoded value breaks it and the
writer's schema check refuses the document. A raw NaN or infinity left in a document is
refused by ``write_json`` with its JSON pointer.
"""

import functools
import json
import math
import os
import re
import secrets
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from engine.errors import EvidenceError, ReportError, one_line
from engine.safeio import EVIDENCE_JSON, MAX_JSON_DEPTH, InputKind, json_depth, read_input

MAX_JSON_BYTES = EVIDENCE_JSON.max_bytes
OUR_SCHEMA_PREFIX = "model-guard/"
INFINITE = "inf"
NEGATIVE_INFINITE = "-inf"
_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class JsonDocument:
    """A parsed JSON file: the exact bytes read (to hash) and the value they hold."""

    raw: bytes
    value: Any


@dataclass(frozen=True)
class Problem:
    """One schema violation: where (RFC 6901 pointer, "" = the whole document), which keyword, why."""

    pointer: str
    message: str
    keyword: str = ""

    def __str__(self) -> str:
        """Return ``/folds/1/plcc: message`` on one line (control characters in keys escaped)."""
        text = f"{self.pointer or '/'}: {self.message}"
        return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def read_json(
    path: Path,
    *,
    max_bytes: int | None = None,
    max_depth: int = MAX_JSON_DEPTH,
    within: Path | None = None,
    kind: InputKind = EVIDENCE_JSON,
) -> JsonDocument:
    """Read a strict JSON file: a regular file (``engine.safeio``), size- and depth-capped,
    UTF-8, no NaN/Infinity, no repeated keys.

    ``max_bytes`` overrides the size cap of ``kind`` (16 MiB for evidence JSON);
    ``within`` is the folder the file must really be in (default: its own folder).
    Raises ``EvidenceError`` with a one-line ``<path>: <reason>`` message.
    """
    path = Path(path)

    def refuse(reason: str) -> EvidenceError:
        return EvidenceError(f"{path}: {reason}")

    raw = read_input(path, kind=kind, max_bytes=max_bytes, within=within, error=EvidenceError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise refuse(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        value = parse_json(text)
    except json.JSONDecodeError as error:
        raise refuse(
            f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:  # the C scanner recurses once per level
        raise refuse(f"invalid JSON: nested too deeply (the limit is {max_depth} levels)") from None
    except ValueError as error:  # repeated keys, NaN, 5000-digit integers
        raise refuse(f"invalid JSON: {one_line(error, limit=_MESSAGE_LIMIT)}") from None
    depth = json_depth(value)
    if depth > max_depth:
        raise refuse(f"invalid JSON: nested {depth} levels deep, over the limit of {max_depth}")
    return JsonDocument(raw=raw, value=value)


def parse_json(text: str) -> Any:
    """Parse strict JSON text; raises ``ValueError`` on repeated keys and NaN/Infinity."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Return a JSON Schema shipped in ``engine/schemas`` (e.g. ``loso-report.schema.json``)."""
    text = resources.files("engine.schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_problems(instance: Any, schema: str) -> list[Problem]:
    """Validate against a shipped schema; every problem, in document order of its pointer."""
    problems: list[Problem] = []
    for error in _validator(schema).iter_errors(instance):
        where = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            problems.extend(
                Problem(
                    pointer_of([*where, extra]),
                    f"unexpected property {extra!r}; allowed: {', '.join(allowed)}",
                    "additionalProperties",
                )
                for extra in sorted(set(error.instance) - set(allowed))
            )
        else:
            problems.append(
                Problem(
                    pointer_of(where),
                    one_line(error.message, limit=_MESSAGE_LIMIT),
                    str(error.validator),
                )
            )
    return sorted(problems, key=lambda problem: (document_order(problem.pointer), problem.message))


def is_foreign(document: Any, *, own_keys: Collection[str]) -> bool:
    """Return whether a JSON document is another tool's, not one of ours (perhaps broken).

    Ours declares ``"schema": "model-guard/..."``. An object that does not, and has none of
    ``own_keys`` (keys only our format writes), is foreign. Anything else, a non-object or
    one of ours with a broken schema, is checked strictly as ours. Foreignness never weakens a
    check: a foreign document is read for its substantive faults and is never accepted.
    """
    if not isinstance(document, dict):
        return False
    declared = document.get("schema")
    if isinstance(declared, str) and declared.startswith(OUR_SCHEMA_PREFIX):
        return False
    return not any(key in document for key in own_keys)


@dataclass(frozen=True)
class SchemaDifferences:
    """How a foreign document differs from one of our formats: every difference, and a summary."""

    format: str
    problems: tuple[Problem, ...]

    def summary(self) -> str:
        """Return the one line that stands for all the differences (listed with --verbose)."""
        count = len(self.problems)
        return (
            f"not model-guard's {self.format} format: {count} schema "
            f"difference{'' if count == 1 else 's'} (fields it does not know or lacks), so it "
            "is never accepted as one; --verbose lists them"
        )

    def lines(self, name: str) -> tuple[str, ...]:
        """Return every difference as ``  <name>#<pointer>: why``, one line each (--verbose)."""
        return tuple(f"  {name}#{problem}" for problem in self.problems)


def schema_differences(document: Any, schema: str, *, format_name: str) -> SchemaDifferences:
    """Compare a foreign document with one of our shipped schemas (``schema_problems``)."""
    return SchemaDifferences(format_name, tuple(schema_problems(document, schema)))


def shown(value: Any, *, limit: int = 80) -> str:
    """Render a value read from a foreign document for a one-line message (escaped, capped)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pointer_of(parts: Iterable[str | int]) -> str:
    """Turn a path of keys and indices into an RFC 6901 JSON pointer."""
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in parts)
    return "".join(f"/{part}" for part in escaped)


def document_order(pointer: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key of a JSON pointer: its segments, array indices compared as numbers."""
    segments = pointer.split("/")[1:] if pointer else []
    return tuple((0, int(s), "") if s.isascii() and s.isdigit() else (1, 0, s) for s in segments)


def write_json(path: Path, document: Mapping[str, Any], *, sort_keys: bool = False) -> None:
    """Write a JSON document atomically, two-space indented; a raw NaN or infinity is refused."""
    path = Path(path)
    try:
        text = json.dumps(dict(document), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    except ValueError as error:
        where = _non_finite(document, "")
        if where is None:
            raise ReportError(f"cannot write {path}: {error}") from error
        raise ReportError(
            f"cannot write {path}: the value at {where or '/'} is NaN or infinite, "
            "which JSON cannot hold"
        ) from error
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically: a temporary file in the same folder, fsync, rename, fsync folder.

    Readers see the old file or the new one, never half of one. Raises ``ReportError``.
    """
    path = Path(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Our own O_EXCL open rather than mkstemp: mkstemp's files are 0600, this one
        # gets the usual umask-derived mode, like any other file the user writes.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from error
    _fsync_folder(path.parent)


def write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file (a markdown report) atomically, like ``write_bytes``."""
    write_bytes(path, text.encode("utf-8"))


def write_parquet(path: Path, table: Any, **options: Any) -> None:
    """Write a pyarrow table as parquet atomically: serialised in memory, then ``write_bytes``.

    ``options`` go to ``pyarrow.parquet.write_table``; a serialiser failure leaves the old file.
    """
    import pyarrow as pa  # only callers that write parquet pay for pyarrow
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    try:
        pq.write_table(table, sink, **options)
    except (pa.ArrowException, ValueError, TypeError) as error:
        raise ReportError(
            f"cannot write {path}: {one_line(error, limit=_MESSAGE_LIMIT)}"
        ) from error
    write_bytes(path, sink.getvalue().to_pybytes())


def encode_float(value: float) -> float | str | None:
    """Return a float for strict JSON: NaN as null, infinities as ``"inf"`` / ``"-inf"``."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return INFINITE if value > 0 else NEGATIVE_INFINITE
    return float(value)


def decode_float(value: Any) -> float:
    """Return what ``encode_float`` wrote as a float; raises ``ValueError`` on anything else."""
    if value is None:
        return math.nan
    if value == INFINITE:
        return math.inf
    if value == NEGATIVE_INFINITE:
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"expected a number, null, {INFINITE!r} or {NEGATIVE_INFINITE!r}, got {value!r}"
        )
    return float(value)


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which Python's ``json`` accepts but JSON does not."""
    raise ValueError(f"{name} is not valid JSON (a non-finite number is written as null)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build an object, refusing a key that appears twice (readers would disagree on its value)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _ecma_pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``pattern`` as JSON Schema means it (ECMA-262): a final ``$`` is the end of the string.

    Python's ``$`` also matches before a trailing newline, so ``"m1\\n"`` would pass
    ``^[a-z0-9]+$``; ``\\Z`` is ECMA's ``$``.
    """
    if not validator.is_type(instance, "string"):
        return
    anchored = (
        pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    )
    if re.search(anchored, instance) is None:
        hint = schema.get("description")
        suffix = f" ({hint.rstrip('.')})" if isinstance(hint, str) else ""
        yield ValidationError(f"{instance!r} does not match {pattern!r}{suffix}")


_StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"pattern": _ecma_pattern}
)


@functools.cache
def _validator(name: str) -> Validator:
    """Return the (cached) validator of a shipped schema, the schema itself checked first."""
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator: Validator = _StrictValidator(schema)
    return validator


def _non_finite(value: Any, pointer: str) -> str | None:
    """Return the JSON pointer of the first NaN or infinite float in ``value``, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else pointer
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if (found := _non_finite(item, pointer + pointer_of([key]))) is not None:
            return found
    return None


def _fsync_folder(folder: Path) -> None:
    """Flush the folder entry of a renamed file to disk (best effort; not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
