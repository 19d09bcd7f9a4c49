"""Import a foreign registry (the field's ``model/tiny/registry.json``) as a model-guard registry.

Import rather than read in place: the foreign file stays byte-for-byte what its owners
ship, and everything model-guard adds (the timeline order, defaults, int8 twin rows, sidecar
and external-data links) is written down in one file a maintainer can read, diff and
review. Nothing is lost: a field this format does not know, or whose value it cannot take,
is kept verbatim under the row's (or the top level's) ``extra``; ``imported_from`` names the
source, its hash, the order rule, the source's row order and every field the import added,
so ``recover_source`` rebuilds the source document exactly. The new registry is written
beside the source (paths stay the same, no file is copied or touched). See docs/adopting.md.
"""

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

import onnx

from engine.errors import EngineError, EvidenceError, UsageError, one_line
from engine.evidence import read_json, schema_problems
from engine.hashing import sha256_bytes, sha256_file
from engine.registry import Problem, RegistryInvalid, document_problems
from engine.safeio import ONNX_GRAPH, REGISTRY_JSON, InputKind, read_input

SCHEMA_VERSION = 1
TWIN_SUFFIX = "_int8"
DEFAULT_SMOKE = True
MAX_ORDER_FILE_BYTES = 1024 * 1024
ORDER_FILE = InputKind("order file", MAX_ORDER_FILE_BYTES)
_SCHEMA = "registry.schema.json"
# First-class row fields a foreign row may bring; everything else goes to `extra`.
_ROW_FIELDS = (
    "id",
    "kind",
    "onnx",
    "sha256",
    "external_data",
    "sidecar",
    "smoke",
    "opset",
    "license",
    "license_url",
    "description",
    "notes",
    "sigstore_bundle",
    "int8_sha256",
    "quant_mode",
    "quant_accuracy_budget_plcc",
    "codec",
)
_REQUIRED = ("id", "kind", "onnx", "sha256", "opset", "license")
# Output order of a row's keys (readable diffs).
_KEY_ORDER = (*_ROW_FIELDS, "quantised_from", "timeline", "extra")
_TOP_FIELDS = ("$schema", "description")
_DIGITS = re.compile(r"(\d+)")


class OrderRule(Enum):
    """How the import sets ``timeline`` when no order file is given."""

    NATURAL = "natural"
    SOURCE = "source"


ORDER_RULE_TEXT = {
    OrderRule.NATURAL: "natural order of ids (digit runs compared as numbers: _v2 < _v10), ties by id",
    OrderRule.SOURCE: "the order the source lists its rows",
}


@dataclass(frozen=True)
class ImportResult:
    """An imported registry document, its timeline order and the file problems found."""

    document: dict[str, Any]
    order: tuple[str, ...]
    rule: str
    rule_text: str
    file_problems: tuple[Problem, ...]
    twins: tuple[str, ...]
    defaulted_smoke: tuple[str, ...]


def import_registry(
    source: Path,
    *,
    rule: OrderRule = OrderRule.NATURAL,
    order_file: Path | None = None,
) -> ImportResult:
    """Convert a foreign registry; raises ``RegistryInvalid`` (every problem) when it cannot.

    File problems (a missing file, a hash that does not match) do not stop the import:
    the declared hashes are kept as they are and the problems are returned, one each.
    """
    source = Path(source)
    root = source.parent
    try:
        read = read_json(source, kind=REGISTRY_JSON)
    except EvidenceError as error:
        raise RegistryInvalid([Problem("", str(error))]) from None
    document = read.value
    _refuse_native(document)
    converted = [_convert_row(row) for row in document["models"]]
    _settle_schema(converted)
    problems = _row_refusals(converted)
    if not problems:
        check = {
            "schema_version": SCHEMA_VERSION,
            "models": [_with_defaults(r, timeline=i) for i, r in enumerate(converted)],
        }
        problems = document_problems(check, root)
    if problems:
        raise RegistryInvalid(problems)
    order = _order(converted, rule=rule, order_file=order_file)
    ids = [row["id"] for row in converted]
    added: dict[str, list[str]] = {model_id: [] for model_id in ids}
    exclude = {source.resolve()}
    file_problems: list[Problem] = []
    for index, row in enumerate(converted):
        file_problems += _link_files(
            row, root, base=f"/models/{index}", exclude=exclude, added=added[row["id"]]
        )
    twins, problems = _twins(converted, root, exclude=exclude)
    if problems:
        raise RegistryInvalid(problems)
    file_problems += _declared_file_problems(converted, twins, root, added=added)
    timeline = _timeline(order, converted, twins, added=added)
    rule_name = rule.value if order_file is None else f"file:{order_file.name}"
    output = _top_level(document, read.raw, source, rule_name, ids, added)
    output["models"] = [_ordered(row) for row in timeline]
    return ImportResult(
        document=output,
        order=tuple(row["id"] for row in timeline),
        rule=rule_name,
        rule_text=ORDER_RULE_TEXT[rule]
        if order_file is None
        else f"the order listed in {order_file}",
        file_problems=tuple(file_problems),
        twins=tuple(twin["id"] for twin in twins),
        defaulted_smoke=tuple(i for i in ids if "smoke" in added[i]),
    )


def _declared_file_problems(
    rows: Sequence[Mapping[str, Any]],
    twins: Sequence[Mapping[str, Any]],
    root: Path,
    *,
    added: Mapping[str, list[str]],
) -> list[Problem]:
    """Every declared hash checked against its file, located in the source (pointer)."""
    problems: list[Problem] = []
    index_of = {row["id"]: index for index, row in enumerate(rows)}
    for index, row in enumerate(rows):
        problems += _hash_problems(row, root, pointer=f"/models/{index}/sha256")
        if "external_data" not in added[row["id"]]:  # declared by the source: check it
            problems += _external_problems(row, root, base=f"/models/{index}")
    for twin in twins:
        parent = index_of[twin["quantised_from"]]
        problems += _hash_problems(twin, root, pointer=f"/models/{parent}/int8_sha256")
    return problems


def _timeline(
    order: Sequence[str],
    rows: Sequence[dict[str, Any]],
    twins: Sequence[dict[str, Any]],
    *,
    added: dict[str, list[str]],
) -> list[dict[str, Any]]:
    """Rows in ``order``, each twin right after its parent, numbered 0, 1, 2, ..."""
    by_id = {row["id"]: row for row in rows}
    twin_of = {twin["quantised_from"]: twin for twin in twins}
    timeline: list[dict[str, Any]] = []
    for model_id in order:
        timeline.append(by_id[model_id])
        if model_id in twin_of:
            timeline.append(twin_of[model_id])
            added[twin_of[model_id]["id"]] = ["*"]
    for position, row in enumerate(timeline):
        row["timeline"] = position
        if added[row["id"]] != ["*"]:
            added[row["id"]].append("timeline")
    return timeline


def recover_source(document: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the source registry's JSON value from an imported one (nothing was lost)."""
    record = document["imported_from"]
    top_added = set(record.get("top_added", []))
    source: dict[str, Any] = {
        key: document[key]
        for key in ("$schema", "description", "schema_version")
        if key in document and key not in top_added
    }
    by_id = {row["id"]: row for row in document["models"]}
    models = []
    for model_id in record["source_order"]:
        row = dict(by_id[model_id])
        dropped = set(record["added"].get(model_id, [])) | {"extra"}
        extra = row.get("extra", {})
        models.append({k: v for k, v in row.items() if k not in dropped} | extra)
    source["models"] = models
    source.update(document.get("extra", {}))
    return source


def named_files(document: Mapping[str, Any]) -> set[str]:
    """Every file an imported registry names, as '/'-paths relative to its folder."""
    names: set[str] = set()
    for row in document.get("models", []):
        folder = PurePosixPath(row["onnx"]).parent
        names.add(row["onnx"])
        names.update(row[key] for key in ("sidecar", "sigstore_bundle") if key in row)
        names.update((folder / item["path"]).as_posix() for item in row.get("external_data", []))
    return names


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key comparing digit runs as numbers: ``m_v2`` < ``m_v10``."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in _DIGITS.split(text)
        if part
    )


def read_order_file(path: Path) -> tuple[str, ...]:
    """Read an order file: one id per line, oldest first; blank lines and ``#`` comments ignored."""
    raw = read_input(path, kind=ORDER_FILE, error=UsageError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    ids = []
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].strip()
        if stripped:
            ids.append(stripped)
    return tuple(ids)


# ---------------------------------------------------------------- reading the source


def _refuse_native(document: Any) -> None:
    """Refuse what is not a foreign registry: not an object, no models, or already ours."""
    if not isinstance(document, dict):
        raise RegistryInvalid([Problem("", f"expected a JSON object, not {_type(document)}")])
    if "imported_from" in document:
        origin = document["imported_from"]
        name = origin.get("registry") if isinstance(origin, dict) else None
        raise RegistryInvalid(
            [
                Problem(
                    "/imported_from",
                    f"already imported by model-guard (from {name!r}): nothing to import; "
                    "check it with `model-guard registry validate`, or import the source again",
                )
            ]
        )
    models = document.get("models")
    if not isinstance(models, list) or not models:
        shown = "missing" if models is None else _type(models)
        raise RegistryInvalid(
            [Problem("/models", f"expected a non-empty array of model rows ({shown})")]
        )
    if not schema_problems(document, _SCHEMA):
        raise RegistryInvalid(
            [
                Problem(
                    "",
                    "already a model-guard registry (every row has a timeline): nothing to "
                    "import; check it with `model-guard registry validate`",
                )
            ]
        )
    for index, row in enumerate(models):
        if not isinstance(row, dict):
            raise RegistryInvalid(
                [Problem(f"/models/{index}", f"expected a JSON object, not {_type(row)}")]
            )


def _convert_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Split a foreign row into first-class fields and ``extra`` (kept verbatim)."""
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in row.items():
        (out if key in _ROW_FIELDS else extra)[key] = value
    if extra:
        out["extra"] = extra
    return out


def _settle_schema(rows: list[dict[str, Any]]) -> None:
    """Move every first-class field whose value the schema refuses into ``extra`` (verbatim)."""
    for _ in range(len(_ROW_FIELDS) + 1):
        candidate = {"schema_version": SCHEMA_VERSION, "models": [_with_defaults(r) for r in rows]}
        moved = False
        for found in schema_problems(candidate, _SCHEMA):
            parts = found.pointer.split("/")
            if len(parts) < 4 or parts[1] != "models" or not parts[2].isdigit():
                continue
            row, field = rows[int(parts[2])], parts[3]
            if field in row and field in _ROW_FIELDS:
                row.setdefault("extra", {})[field] = row.pop(field)
                moved = True
        if not moved:
            return


def _with_defaults(row: Mapping[str, Any], *, timeline: int = 0) -> dict[str, Any]:
    """The row as it will be written, for the schema check (``smoke`` defaulted, a timeline)."""
    return {"smoke": DEFAULT_SMOKE, **row, "timeline": timeline}


def _row_refusals(rows: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """A row missing a required field (or holding an unusable one) cannot be imported."""
    problems = []
    for index, row in enumerate(rows):
        for field in _REQUIRED:
            if field in row:
                continue
            kept = row.get("extra", {})
            if field in kept:
                why = f"`{field}` {one_line(repr(kept[field]), limit=60)} is not usable here"
                problems.append(Problem(f"/models/{index}/{field}", f"{why}: {_field_rule(field)}"))
            else:
                problems.append(Problem(f"/models/{index}", f"no `{field}`: every row needs one"))
    return problems


def _field_rule(field: str) -> str:
    """What the schema asks of a required field, in words."""
    return {
        "id": "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
        "kind": "lower-case letters, digits and '-' (rename the kind in the source)",
        "onnx": "a relative path ending in .onnx",
        "sha256": "64 lower-case hex digits",
        "opset": "an integer 1-21",
        "license": "a non-empty string",
    }[field]


def _type(value: Any) -> str:
    """A JSON type name for messages."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- sidecars, external data, twins


def _link_files(
    row: dict[str, Any],
    root: Path,
    *,
    base: str,
    exclude: set[Path],
    added: list[str],
) -> list[Problem]:
    """Default ``smoke``, find the sidecar, list external data; record what was added in ``added``."""
    problems: list[Problem] = []
    fields = added
    if "smoke" not in row:
        row["smoke"] = DEFAULT_SMOKE
        fields.append("smoke")
    if "sidecar" not in row and (sidecar := _find_sidecar(row, root, exclude=exclude)) is not None:
        row["sidecar"] = sidecar
        fields.append("sidecar")
    if "external_data" not in row:
        found, why = _external_data(root / row["onnx"], root)
        if why is not None:
            problems.append(Problem(f"{base}/onnx", why))
        if found:
            row["external_data"] = found
            fields.append("external_data")
    return problems


def _find_sidecar(row: Mapping[str, Any], root: Path, *, exclude: set[Path]) -> str | None:
    """``<id>.json`` or ``<onnx stem>.json`` beside the model, when it holds a JSON object."""
    onnx_path = PurePosixPath(row["onnx"])
    stem = onnx_path.name.removesuffix(".onnx")
    for name in dict.fromkeys((f"{row['id']}.json", f"{stem}.json")):
        relative = (onnx_path.parent / name).as_posix()
        path = root / relative
        try:
            if path.resolve() in exclude or not path.is_file():
                continue
            value = read_json(path, within=root).value
        except (OSError, EngineError):
            continue
        if isinstance(value, dict):
            return relative
    return None


def _external_data(model: Path, root: Path) -> tuple[list[dict[str, str]], str | None]:
    """The external weight files a graph names (each hashed now), or why they cannot be listed."""
    try:
        data = read_input(model, kind=ONNX_GRAPH, within=root)
    except EngineError:
        return [], None  # a missing or unreadable graph is reported with the hashes
    try:
        graph = onnx.load_model_from_string(data)
    except Exception:  # any parse failure of an untrusted file is one line, not a traceback
        return [], f"{model.name} does not parse as ONNX: its external data cannot be listed"
    found: list[dict[str, str]] = []
    for location in dict.fromkeys(_locations(graph.graph)):
        if "/" in location or "\\" in location or location in {"", ".", ".."}:
            return [], f"{model.name} names external data {location!r}, not a plain file name"
        path = model.parent / location
        try:
            digest = sha256_file(path, within=root)
        except (OSError, EngineError) as error:
            return (
                [],
                f"external data {location!r} of {model.name} cannot be read ({one_line(error)})",
            )
        found.append({"path": location, "sha256": digest})
    return found, None


def _locations(graph: onnx.GraphProto) -> Iterator[str]:
    """Every external-data location named by a tensor of the graph or its subgraphs."""
    tensors: list[onnx.TensorProto] = list(graph.initializer)
    for sparse in graph.sparse_initializer:
        tensors += [sparse.values, sparse.indices]
    for tensor in tensors:
        yield from _location(tensor)
    for node in graph.node:
        for attribute in node.attribute:
            for tensor in [attribute.t, *attribute.tensors]:
                yield from _location(tensor)
            for subgraph in [attribute.g, *attribute.graphs]:
                yield from _locations(subgraph)


def _location(tensor: onnx.TensorProto) -> Iterable[str]:
    """The location of an external tensor (none for an inline one)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return ()
    return tuple(entry.value for entry in tensor.external_data if entry.key == "location")


def _twins(
    rows: Sequence[Mapping[str, Any]], root: Path, *, exclude: set[Path]
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """One row per declared int8 twin ``<basename>.int8.onnx``, linked by ``quantised_from``."""
    ids = {row["id"] for row in rows}
    twins: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for index, row in enumerate(rows):
        if "int8_sha256" not in row:
            continue
        twin_id = f"{row['id']}{TWIN_SUFFIX}"
        if twin_id in ids:
            problems.append(
                Problem(
                    f"/models/{index}/int8_sha256",
                    f"its int8 twin would be named {twin_id!r}, which another row already uses",
                )
            )
            continue
        onnx_name = row["onnx"].removesuffix(".onnx") + ".int8.onnx"
        twin = {
            "id": twin_id,
            "kind": row["kind"],
            "onnx": onnx_name,
            "sha256": row["int8_sha256"],
            "smoke": row["smoke"],
            "opset": row["opset"],
            "license": row["license"],
        }
        if "license_url" in row:
            twin["license_url"] = row["license_url"]
        stub = {"id": f"{PurePosixPath(onnx_name).name.removesuffix('.onnx')}", "onnx": onnx_name}
        if (sidecar := _find_sidecar(stub, root, exclude=exclude)) is not None:
            twin["sidecar"] = sidecar
        found, _ = _external_data(root / onnx_name, root)
        if found:
            twin["external_data"] = found
        twin["quantised_from"] = row["id"]
        twins.append(twin)
    return twins, problems


# ---------------------------------------------------------------- order, output, hashes


def _order(
    rows: Sequence[Mapping[str, Any]], *, rule: OrderRule, order_file: Path | None
) -> tuple[str, ...]:
    """The source rows' ids in timeline order (twins are placed after their parents later)."""
    ids = [row["id"] for row in rows]
    if order_file is not None:
        listed = read_order_file(order_file)
        known = set(ids)
        unknown = [i for i in listed if i not in known]
        if unknown:
            raise UsageError(f"{order_file}: {_names(unknown)} not a row of the source registry")
        repeated = sorted({i for i in listed if listed.count(i) > 1})
        if repeated:
            raise UsageError(f"{order_file}: {_names(repeated)} listed more than once")
        missing = [i for i in ids if i not in set(listed)]
        if missing:
            raise UsageError(f"{order_file}: {_names(missing)} missing (list every row once)")
        return listed
    if rule is OrderRule.SOURCE:
        return tuple(ids)
    return tuple(sorted(ids, key=lambda i: (natural_key(i), i)))


def _names(ids: Sequence[str]) -> str:
    """A short list of ids for a one-line message."""
    shown = ", ".join(repr(i) for i in ids[:5])
    more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
    return f"{shown}{more} {'is' if len(ids) == 1 else 'are'}"


def _top_level(
    document: Mapping[str, Any],
    raw: bytes,
    source: Path,
    rule: str,
    ids: Sequence[str],
    added: Mapping[str, list[str]],
) -> dict[str, Any]:
    """The new top level: known fields first-class, the rest under ``extra``, the import record."""
    output: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    top_added: list[str] = []
    for key, value in document.items():
        if key == "models":
            continue
        if key in _TOP_FIELDS and isinstance(value, str):
            output[key] = value
        elif key == "schema_version" and value == SCHEMA_VERSION and type(value) is int:
            pass
        else:
            extra[key] = value
    if (
        document.get("schema_version") != SCHEMA_VERSION
        or type(document.get("schema_version")) is not int
    ):
        top_added.append("schema_version")
    result = {
        **({"$schema": output.pop("$schema")} if "$schema" in output else {}),
        "schema_version": SCHEMA_VERSION,
        **output,
        "imported_from": {
            "registry": source.name,
            "sha256": sha256_bytes(raw),
            "order_rule": rule,
            "source_order": list(ids),
            "added": {model_id: added[model_id] for model_id in added},
            "top_added": top_added,
        },
    }
    if extra:
        result["extra"] = extra
    return result


def _ordered(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with its keys in the documented order."""
    return {key: row[key] for key in _KEY_ORDER if key in row}


def _hash_problems(row: Mapping[str, Any], root: Path, *, pointer: str) -> list[Problem]:
    """One problem when a row's file is missing or does not hash to its declared value."""
    declared = "int8_sha256" if "quantised_from" in row else "sha256"
    try:
        actual = sha256_file(root / row["onnx"], within=root)
    except (OSError, EngineError) as error:
        return [Problem(pointer, f"{row['onnx']}: {_unreadable(error)}")]
    if actual != row["sha256"]:
        return [
            Problem(
                pointer,
                f"{row['onnx']} hashes to {actual}, not the declared {declared} {row['sha256']}",
            )
        ]
    return []


def _external_problems(row: Mapping[str, Any], root: Path, *, base: str) -> list[Problem]:
    """One problem per external data file the source declares that is missing or differs."""
    folder = (root / row["onnx"]).parent
    problems = []
    for position, item in enumerate(row.get("external_data", [])):
        pointer = f"{base}/external_data/{position}/sha256"
        try:
            actual = sha256_file(folder / item["path"], within=root)
        except (OSError, EngineError) as error:
            problems.append(Problem(pointer, f"{item['path']}: {_unreadable(error)}"))
            continue
        if actual != item["sha256"]:
            problems.append(
                Problem(
                    pointer,
                    f"{item['path']} hashes to {actual}, not the declared sha256 {item['sha256']}",
                )
            )
    return problems


def _unreadable(error: BaseException) -> str:
    """Why a file could not be hashed, in a few words."""
    if isinstance(error, FileNotFoundError) or "not found" in str(error):
        return "not found"
    return f"cannot be read ({one_line(error, limit=120)})"
