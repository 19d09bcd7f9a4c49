"""The per-repository configuration .github/model-guard.yml: read strictly, validated, explained."""

import argparse
import copy
import difflib
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from croniter import croniter
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from bot.errors import BotError
from bot.github.permissions import Permission
from engine.errors import one_line
from engine.threshold import Thresholds

if TYPE_CHECKING:  # engine.evaluation pulls in numpy and onnxruntime; import it only when asked
    from engine.evaluation import MetricSettings

CONFIG_PATH = ".github/model-guard.yml"
MAX_CONFIG_BYTES = 64 * 1024
SCHEMA_FILE = "model-guard.schema.json"
DOCS_PATH = "docs/configuration.md"
REGENERATE_DOCS = "python -m bot.repoconfig --docs > docs/configuration.md"
# A comment body is capped at 65536 characters; a file full of mistakes must still fit in one.
# https://docs.github.com/en/rest/issues/comments#create-an-issue-comment
MAX_SHOWN_PROBLEMS = 20
EXAMPLE_FILE = "config/model-guard.example.yml"

_REPO_ROOT = Path(__file__).resolve().parents[1]
_YAML_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = frozenset(
    _YAML_TAG + name for name in ("null", "bool", "int", "float", "str", "seq", "map")
)
_BOUNDS = {
    "minimum": "at least",
    "exclusiveMinimum": "greater than",
    "maximum": "at most",
    "exclusiveMaximum": "less than",
}


@dataclass(frozen=True)
class RepoConfig:
    """One repository's settings, every key filled in (the schema's defaults where not given)."""

    version: int = 1
    registry: str = "model/registry.json"
    features: str = "testdata/bisect/features.parquet"
    min_plcc: float | None = 0.9
    min_srocc: float | None = None
    max_rmse: float | None = None
    statistical: bool = False
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    logistic: bool = False
    tracking_label: str = "model-guard"
    nightly_enabled: bool = True
    schedule: str = "37 4 * * *"
    min_permission: Permission = Permission.WRITE

    def thresholds(self) -> Thresholds:
        """Return the quality gate as the engine takes it."""
        return Thresholds(min_plcc=self.min_plcc, min_srocc=self.min_srocc, max_rmse=self.max_rmse)

    def metric_settings(self) -> "MetricSettings":
        """Return how metrics are computed and judged, as the engine takes it."""
        from engine.evaluation import MetricSettings

        # Like `model-guard bisect`: no resampling unless judging by intervals.
        return MetricSettings(
            statistical=self.statistical,
            bootstrap=self.bootstrap if self.statistical else 0,
            confidence=self.confidence,
            seed=self.seed,
            logistic=self.logistic,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration in the file's own shape (a valid file when dumped as YAML)."""
        return {
            "version": self.version,
            "registry": self.registry,
            "features": self.features,
            "gate": {
                "min_plcc": self.min_plcc,
                "min_srocc": self.min_srocc,
                "max_rmse": self.max_rmse,
            },
            "statistical": {
                "enabled": self.statistical,
                "bootstrap": self.bootstrap,
                "confidence": self.confidence,
                "seed": self.seed,
            },
            "report": {"logistic": self.logistic},
            "tracking_issue": {"label": self.tracking_label},
            "nightly": {"enabled": self.nightly_enabled, "schedule": self.schedule},
            "commands": {"min_permission": self.min_permission.value},
        }


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the file: where it is (JSON pointer, YAML line) and what."""

    pointer: str
    message: str
    line: int | None = None

    @property
    def key(self) -> str:
        """Return the pointer as a dotted key (``gate.min_plcc``); empty for the whole file."""
        return ".".join(_segments(self.pointer))

    def describe(self) -> str:
        """Return the problem as one line: ``line 4, gate.min_plcc: must be at most 1``."""
        subject = f"{self.key}: " if self.key else "the file "
        where = "" if self.line is None else f"line {self.line}, "
        return f"{where}{subject}{self.message}"


class ConfigError(BotError):
    """The repository's configuration file cannot be used; it carries every problem found."""

    def __init__(
        self,
        problems: Sequence[ConfigProblem],
        *,
        source: str = CONFIG_PATH,
        commit: str | None = None,
    ) -> None:
        """Keep the problems in pointer order, with the file (and commit) they were found in."""
        self.problems = tuple(sorted(problems, key=_problem_order)) or (
            ConfigProblem("", "is not a valid configuration"),
        )
        self.source = source
        self.commit = commit
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """Return the first problem and how many more, for a log line or a check-run title."""
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'' if more == 1 else 's'})" if more else ""
        return one_line(f"{self.source}: {self.problems[0].describe()}", limit=200) + tail

    def markdown(self, *, commit: str | None = None, docs_url: str | None = None) -> str:
        """Return the explanation for the tracking comment or check run: each problem and its fix."""
        commit = commit or self.commit
        where = f" at commit {_code(commit[:12])}" if commit else ""
        count = len(self.problems)
        lines = [
            f"**model-guard cannot use {_code(self.source)}**{where}: "
            f"it has {count} problem{'' if count == 1 else 's'}.",
            "",
        ]
        in_file_order = sorted(self.problems, key=lambda p: (p.line or 0, _problem_order(p)))
        for problem in in_file_order[:MAX_SHOWN_PROBLEMS]:
            place = f"line {problem.line}, " if problem.line is not None else ""
            subject = f"{_code(problem.key)}: " if problem.key else "the file "
            lines.append(f"- {place}{subject}{_escape_markdown(problem.message)}")
            spec = _subschema(problem.pointer) if problem.pointer else None
            if spec is not None and "properties" not in spec:
                about = str(spec.get("description", "")).split(". ")[0].rstrip(".")
                expected = _expected(problem.pointer)
                hint = f"{about}. Expected: {expected}." if about else f"Expected: {expected}."
                lines.append(f"  {_escape_markdown(hint)}")
        if count > MAX_SHOWN_PROBLEMS:
            lines.append(f"- … and {count - MAX_SHOWN_PROBLEMS} more.")
        reference = (
            f"[{DOCS_PATH}]({docs_url})" if docs_url else f"{_code(DOCS_PATH)} of model-guard"
        )
        lines += [
            "",
            f"Fix {_code(self.source)} and push: model-guard reads it at the commit it judges. "
            f"Every key, its type, default and allowed values are in {reference}; "
            f"{_code('python -m bot.repoconfig --check ' + self.source)} checks a file locally.",
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Document:
    """A parsed YAML document and the line of every key in it, by JSON pointer."""

    data: Any
    lines: Mapping[str, int]


class _Invalid(Exception):
    """Internal: the text cannot be read as a configuration at all."""

    def __init__(self, *problems: ConfigProblem) -> None:
        super().__init__(problems)
        self.problems = problems


class _AliasRefused(yaml.composer.ComposerError):  # type: ignore[misc]  # PyYAML is untyped
    """An alias (``*name``) in the document; refused so no file expands beyond its own size."""


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML is untyped
    """A SafeLoader that refuses aliases before they are resolved (billion-laughs documents)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Refuse an alias; compose everything else as SafeLoader does."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(None, None, f"*{event.anchor}", event.start_mark)
        return super().compose_node(parent, index)


def default_config() -> RepoConfig:
    """Return the configuration of a repository without .github/model-guard.yml."""
    return _build({})


def parse_repo_config(
    text: str | bytes | None, *, source: str = CONFIG_PATH, commit: str | None = None
) -> RepoConfig:
    """Parse and validate the file's text (None: the file is absent, so the defaults apply).

    Raises ConfigError carrying every problem found, each with its line and JSON pointer.
    """
    if text is None:
        return default_config()
    try:
        document = _load(_decode(text))
    except _Invalid as invalid:
        raise ConfigError(invalid.problems, source=source, commit=commit) from None
    problems = _validate(document.data)
    if problems:
        located = [
            ConfigProblem(p.pointer, p.message, _line_of(p.pointer, document.lines))
            for p in problems
        ]
        raise ConfigError(located, source=source, commit=commit)
    return _build(document.data)


def config_schema() -> dict[str, Any]:
    """Return the configuration's JSON Schema (draft 2020-12), a fresh copy each call."""
    return copy.deepcopy(_schema())


def _decode(text: str | bytes) -> str:
    """Return the file as text, refusing what is too large or not UTF-8."""
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as error:
            line = text[: error.start].count("\n") + 1
            raise _Invalid(ConfigProblem("", "is not UTF-8 text", line)) from None
    else:
        raw = text
    if len(raw) > MAX_CONFIG_BYTES:
        raise _Invalid(
            ConfigProblem(
                "",
                f"is {len(raw)} bytes; the limit is {MAX_CONFIG_BYTES} bytes "
                f"({MAX_CONFIG_BYTES // 1024} KiB)",
            )
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        bad = raw[error.start : error.start + 1].hex()
        message = f"is not UTF-8 text (byte 0x{bad} at offset {error.start}); save it as UTF-8"
        raise _Invalid(ConfigProblem("", message, line)) from None
    return decoded.removeprefix("\ufeff")


def _load(text: str) -> _Document:
    """Compose the YAML, refuse what the configuration never needs, then build plain values."""
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters already here
    except yaml.reader.ReaderError as error:
        raise _Invalid(_reader_problem(text, error)) from None
    try:
        try:
            node = loader.get_single_node()
        except _AliasRefused as error:
            line = error.problem_mark.line + 1
            message = f"uses the YAML alias {_code(error.problem)}; aliases are not allowed here"
            raise _Invalid(ConfigProblem("", message + ": write the value out", line)) from None
        except yaml.MarkedYAMLError as error:
            raise _Invalid(_syntax_problem(error)) from None
        except yaml.reader.ReaderError as error:
            raise _Invalid(_reader_problem(text, error)) from None
        except RecursionError:
            message = "is nested too deeply to be a configuration"
            raise _Invalid(ConfigProblem("", message)) from None
        if node is None:  # empty, or only comments: every default applies
            return _Document({}, {})
        lines: dict[str, int] = {}
        problems = list(_check_nodes(node, "", lines))
        if problems:
            raise _Invalid(*problems)
        try:
            data = loader.construct_document(node)
        except ValueError:  # Python refuses to convert integers of more than 4300 digits
            raise _Invalid(ConfigProblem("", "has a number with too many digits")) from None
        except yaml.YAMLError as error:
            raise _Invalid(ConfigProblem("", f"cannot be read: {_code(one_line(error))}")) from None
    finally:
        loader.dispose()
    if data is None:  # a document of only "---": every default applies
        return _Document({}, lines)
    if not isinstance(data, dict):
        message = (
            f"must be a mapping of keys such as {_code('registry:')} and {_code('gate:')}, "
            f"not {_kind(data)}"
        )
        raise _Invalid(ConfigProblem("", message, node.start_mark.line + 1))
    return _Document(data, lines)


def _reader_problem(text: str, error: Any) -> ConfigProblem:
    """Turn PyYAML's refusal of a control character into a problem at its line."""
    line = text[: error.position].count("\n") + 1
    message = f"contains the control character #x{error.character:02x}; only text is allowed"
    return ConfigProblem("", message, line)


def _syntax_problem(error: Any) -> ConfigProblem:
    """Turn a PyYAML syntax error into a problem at its line and column."""
    mark = error.problem_mark or error.context_mark
    what = " ".join(part for part in (error.context, error.problem) if part)
    if mark is None:
        return ConfigProblem("", f"is not valid YAML: {_code(what)}")
    message = f"is not valid YAML (column {mark.column + 1}): {_code(what, limit=120)}"
    if error.context == "while scanning an alias":  # a cron schedule written without quotes
        example = _code('schedule: "0 * * * *"')
        message += f"; quote a value that starts with *, e.g. {example}"
    return ConfigProblem("", message, mark.line + 1)


def _check_nodes(node: Any, pointer: str, lines: dict[str, int]) -> Iterator[ConfigProblem]:
    """Yield YAML the configuration refuses (duplicate keys, merges, tags); record key lines."""
    line = node.start_mark.line + 1
    if node.tag not in _PLAIN_TAGS:
        yield ConfigProblem(pointer, _tag_message(node), line)
        return
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{pointer}/{index}"
            lines.setdefault(child, item.start_mark.line + 1)
            yield from _check_nodes(item, child, lines)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _YAML_TAG + "merge":
                message = "uses a YAML merge key (<<); write the keys out instead"
                yield ConfigProblem(pointer, message, key_line)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _YAML_TAG + "str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a list"
                message = f"has the key {_code(shown)}, which is not a name; keys are names"
                yield ConfigProblem(pointer, message + " such as registry or gate", key_line)
                continue
            child = f"{pointer}/{_escape_pointer(key_node.value)}"
            if key_node.value in seen:
                message = (
                    f"is given twice (first at line {seen[key_node.value]}); "
                    "YAML would keep only the last one, so remove one"
                )
                yield ConfigProblem(child, message, key_line)
                continue
            seen[key_node.value] = key_line
            lines[child] = key_line
            yield from _check_nodes(value_node, child, lines)


def _tag_message(node: Any) -> str:
    """Explain a value whose YAML type the configuration does not take."""
    if node.tag == _YAML_TAG + "timestamp":
        return f"{_code(node.value)} reads as a date in YAML; quote it if it is text"
    tag = node.tag.replace(_YAML_TAG, "!!")
    return f"uses the YAML tag {_code(tag)}; only plain values, lists and mappings are allowed"


def _validate(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """Return every problem: schema violations, non-finite numbers and a bad schedule."""
    problems = list(_non_finite(data, ""))
    infinite = {problem.pointer for problem in problems}
    for error in _validator().iter_errors(data):
        if _pointer(error.absolute_path) not in infinite:
            problems.extend(_schema_problems(error))
    nightly = data.get("nightly")
    schedule = nightly.get("schedule") if isinstance(nightly, dict) else None
    if isinstance(schedule, str) and not any(p.pointer == "/nightly/schedule" for p in problems):
        message = _schedule_problem(schedule)
        if message is not None:
            problems.append(ConfigProblem("/nightly/schedule", message))
    return problems


def _non_finite(value: Any, pointer: str) -> Iterator[ConfigProblem]:
    """Yield every NaN or infinite number (JSON Schema's bounds do not catch NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield ConfigProblem(pointer, f"must be a finite number, not {_code(_shown(value))}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{pointer}/{_escape_pointer(str(key))}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{pointer}/{index}")


def _schedule_problem(expression: str) -> str | None:
    """Return why a cron expression cannot be the nightly schedule, or None when it can."""
    try:
        minutes = croniter(expression).expanded[0]
    except Exception as error:  # croniter raises several types on untrusted text; all mean "bad"
        return f"{_code(expression)} is not a valid cron expression: {_code(one_line(error))}"
    if len(minutes) != 1 or minutes[0] == "*":
        return (
            f"{_code(expression)} fires more than once an hour; the nightly run may fire at "
            f"most hourly, so give one minute, e.g. {_code('37 4 * * *')}"
        )
    return None


def _schema_problems(error: ValidationError) -> list[ConfigProblem]:
    """Turn one schema violation into problems a user can act on (one per unknown key)."""
    pointer = _pointer(error.absolute_path)
    schema, value, keyword = error.schema, error.instance, error.validator
    if keyword == "additionalProperties" and isinstance(value, dict):
        known = sorted(schema.get("properties", {}))
        return [
            ConfigProblem(f"{pointer}/{_escape_pointer(str(key))}", _unknown_key(key, known))
            for key in sorted(set(value) - set(known), key=str)
        ]
    return [ConfigProblem(pointer, _schema_message(error))]


def _schema_message(error: ValidationError) -> str:
    """Return the message for one schema violation other than an unknown key."""
    schema, value, keyword, limit = (
        error.schema,
        error.instance,
        error.validator,
        error.validator_value,
    )
    if isinstance(schema, Mapping) and "errorMessage" in schema and keyword != "type":
        return str(schema["errorMessage"])
    shown = _code(_shown(value))
    if keyword == "type":
        types = [limit] if isinstance(limit, str) else list(limit)
        message = f"must be {_type_phrase(types)}, not {_kind(value)}"
        if not isinstance(value, dict | list | None):
            message += f" ({shown})"
        if "string" in types and not isinstance(value, dict | list | str | None):
            message += "; quote it to keep it text"
        if "object" in types and value is None:
            message += "; write its keys indented below it, or leave it out"
        return message
    if keyword == "enum":
        allowed = ", ".join(str(item) for item in limit)
        message = f"must be one of {allowed}, not {shown}"
        close = difflib.get_close_matches(str(value), [str(item) for item in limit], n=1)
        return message + (f" (did you mean {_code(close[0])}?)" if close else "")
    if keyword == "const":
        return f"must be {_code(_shown(limit))}, not {shown}"
    if keyword in _BOUNDS:
        return f"must be {_BOUNDS[keyword]} {_number(limit)}, not {shown}"
    if keyword == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters long"
    if keyword == "maxLength":
        return f"must be at most {limit} characters long, not {len(value)}"
    return f"is not valid: {_code(one_line(error.message))}"


def _unknown_key(key: Any, known: Sequence[str]) -> str:
    """Explain an unknown key, suggesting the known one it most likely means."""
    message = "is not a known key"
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {_code(close[0])}?"
    elsewhere = [section for section in _schema()["properties"] if str(key) in _properties(section)]
    if elsewhere:
        return f"{message} here; it belongs under {_code(elsewhere[0] + ':')}"
    return f"{message}; the keys here are {', '.join(known)}"


def _build(data: Mapping[str, Any]) -> RepoConfig:
    """Build the configuration from validated data, taking the schema's defaults for the rest."""
    top = _schema()["properties"]

    def value(name: str) -> Any:
        return data.get(name, top[name]["default"])

    def section(name: str) -> dict[str, Any]:
        given = data.get(name)
        # A section that is given replaces the default section: keys left out take their
        # own defaults (a gate of only max_rmse has no PLCC threshold).
        base = given if isinstance(given, dict) else top[name]["default"]
        return {key: base.get(key, spec.get("default")) for key, spec in _properties(name).items()}

    gate, statistical, report = section("gate"), section("statistical"), section("report")
    nightly, commands = section("nightly"), section("commands")
    return RepoConfig(
        version=int(value("version")),
        registry=str(value("registry")),
        features=str(value("features")),
        min_plcc=_optional_float(gate["min_plcc"]),
        min_srocc=_optional_float(gate["min_srocc"]),
        max_rmse=_optional_float(gate["max_rmse"]),
        statistical=bool(statistical["enabled"]),
        bootstrap=int(statistical["bootstrap"]),
        confidence=float(statistical["confidence"]),
        seed=int(statistical["seed"]),
        logistic=bool(report["logistic"]),
        tracking_label=str(section("tracking_issue")["label"]),
        nightly_enabled=bool(nightly["enabled"]),
        schedule=" ".join(str(nightly["schedule"]).split()),
        min_permission=Permission(commands["min_permission"]),
    )


def _optional_float(value: Any) -> float | None:
    """Return a threshold as a float, keeping null as None."""
    return None if value is None else float(value)


@cache
def _schema() -> dict[str, Any]:
    """Load and check the schema: config/ in a checkout (the source), else the packaged copy."""
    source = _REPO_ROOT / "config" / SCHEMA_FILE
    if source.is_file():
        text = source.read_text(encoding="utf-8")
    else:
        text = resources.files("bot.schemas").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return schema


@cache
def _validator() -> Draft202012Validator:
    """Return the (cached) validator of the schema."""
    return Draft202012Validator(_schema())


def _resolve(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return a schema node with its local ``$ref`` merged in (the node's own keys win)."""
    ref = spec.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return dict(spec)
    target = _schema()["$defs"][ref.removeprefix("#/$defs/")]
    return {**target, **{key: item for key, item in spec.items() if key != "$ref"}}


def _properties(section: str) -> dict[str, Any]:
    """Return the properties of one top-level section of the schema."""
    spec = _schema()["properties"].get(section, {})
    return dict(spec.get("properties", {}))


def _subschema(pointer: str) -> dict[str, Any] | None:
    """Return the schema of the key at ``pointer``, or None when no such key exists."""
    spec: dict[str, Any] = _schema()
    for part in _segments(pointer):
        children = spec.get("properties", {})
        if part not in children:
            return None
        spec = _resolve(children[part])
    return spec


def _expected(pointer: str) -> str:
    """Describe what the key at ``pointer`` takes: type, range and default."""
    spec = _subschema(pointer) or {}
    default = _default_phrase(pointer)
    return _allowed(spec) + ("" if default is None else f"; default {default}")


def _default_phrase(pointer: str) -> str | None:
    """Return the key's default as text, naming both when its section's default differs."""
    spec = _subschema(pointer)
    if spec is None or "default" not in spec:
        return None
    shown = _code(_shown(spec["default"]), limit=120)
    parts = _segments(pointer)
    if len(parts) == 2:
        section, key = parts
        outer = _schema()["properties"][section].get("default", {})
        if key in outer and outer[key] != spec["default"]:
            return (
                f"{shown} in a {_code(section + ':')} you write, "
                f"{_code(_shown(outer[key]))} when there is no {_code(section + ':')}"
            )
    return shown


def _allowed(spec: Mapping[str, Any]) -> str:
    """Describe a key's type and range in a few words."""
    if "enum" in spec:
        return "one of " + ", ".join(_code(item) for item in spec["enum"])
    if "const" in spec:
        return f"exactly {_code(_shown(spec['const']))}"
    kind = spec.get("type", [])
    words = [_type_phrase([kind] if isinstance(kind, str) else list(kind))]
    for keyword, phrase in _BOUNDS.items():
        if keyword in spec:
            words.append(f"{phrase} {_number(spec[keyword])}")
    if "maxLength" in spec and "minLength" in spec:
        words.append(f"{spec['minLength']} to {spec['maxLength']} characters")
    elif "maxLength" in spec:
        words.append(f"at most {spec['maxLength']} characters")
    return ", ".join(words)


def _type_phrase(types: Sequence[str]) -> str:
    """Name JSON types the way a YAML writer thinks of them: ``a number or null``."""
    names = {
        "null": "null",
        "boolean": "true or false",
        "integer": "a whole number",
        "number": "a number",
        "string": "text",
        "object": "a mapping",
        "array": "a list",
    }
    return " or ".join(names.get(name, name) for name in types)


def _kind(value: Any) -> str:
    """Name the kind of a YAML value: ``text``, ``a mapping``, ``a boolean`` ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _shown(value: Any) -> str:
    """Return a value as it would be written in YAML (``null``, ``true``, ``.inf``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # YAML flow style: {min_plcc: 0.9, max_rmse: null}
        return "{" + ", ".join(f"{key}: {_shown(item)}" for key, item in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False, default=str)


def _number(value: Any) -> str:
    """Format a schema bound: integers as they are, floats in their shortest form."""
    return format(value, "g") if isinstance(value, float) else str(value)


def _code(value: Any, *, limit: int = 60) -> str:
    """Return text as an inline code span that is safe in markdown (user text goes only here)."""
    text = value if isinstance(value, str) else _shown(value)
    if not text or text != text.strip():
        text = json.dumps(text, ensure_ascii=False)
    text = "".join(ch if ch.isprintable() else "?" for ch in text).replace("`", "'")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`"


def _escape_markdown(text: str) -> str:
    """Escape markdown outside the code spans that ``_code`` made, so text stays text."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # not our own code spans: escape everything
        parts = [text.replace("`", "'")]
    for index in range(0, len(parts), 2):
        parts[index] = "".join(f"\\{ch}" if ch in "\\*_[]<>|~#" else ch for ch in parts[index])
    return "`".join(parts)


def _escape_pointer(key: str) -> str:
    """Escape one JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _pointer(path: Sequence[Any]) -> str:
    """Return a JSON pointer for a jsonschema path."""
    return "".join(f"/{_escape_pointer(str(part))}" for part in path)


def _segments(pointer: str) -> list[str]:
    """Split a JSON pointer into its unescaped segments."""
    if not pointer:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _line_of(pointer: str, lines: Mapping[str, int]) -> int | None:
    """Return the line of the key at ``pointer`` or of its nearest enclosing key."""
    while pointer:
        if pointer in lines:
            return lines[pointer]
        pointer = pointer.rpartition("/")[0]
    return None


def _problem_order(problem: ConfigProblem) -> tuple[list[str], str]:
    """Sort problems by pointer, segment by segment, then by message."""
    return (_segments(problem.pointer), problem.message)


_SAMPLE_INVALID = """\
registry: ../models/registry.json
gate:
  min_plcc: 1.2
nightly:
  schedule: "*/10 * * * *"
comands:
  min_permission: owner
"""


_READING = [
    "## How the file is read",
    "",
    "- The App reads the file at the commit it judges, so a change takes effect with the",
    "  push that makes it.",
    "- No file, an empty file or a file of only comments: every default below applies.",
    f"- The file must be UTF-8 text of at most {MAX_CONFIG_BYTES // 1024} KiB holding one",
    "  YAML mapping. Aliases (`*name`), merge keys (`<<`), tags (`!!python/object`, ...),",
    "  dates and duplicate keys are refused rather than guessed at.",
    "- An invalid file is never skipped: the App explains every problem, with its line",
    "  and JSON pointer, in the tracking comment or check run (see the sample at the end).",
    "- To check a file before pushing it:",
    f"  `python -m bot.repoconfig --check {CONFIG_PATH}` (exit 0 valid, 1 invalid).",
    "",
]


def render_configuration_docs() -> str:
    """Return docs/configuration.md, generated from the schema (never edit the file by hand)."""
    schema = _schema()
    out = [
        f"# Repository configuration: `{CONFIG_PATH}`",
        "",
        f"<!-- Generated from config/{SCHEMA_FILE}; edit the schema and run",
        f"     `{REGENERATE_DOCS}`. -->",
        "",
        schema["description"].replace(CONFIG_PATH, f"`{CONFIG_PATH}`"),
        "",
        *_READING,
        "## Keys",
        "",
    ]
    for name, spec in schema["properties"].items():
        out += _render_key(f"/{name}", level=3)
        for child in spec.get("properties", {}):
            out += _render_key(f"/{name}/{child}", level=4)
    example = yaml.safe_dump(schema["examples"][0], sort_keys=False)
    defaults = yaml.safe_dump(default_config().to_dict(), sort_keys=False)
    out += ["## Example", "", *_yaml_block(example)]
    out += [f"`{EXAMPLE_FILE}` lists every key at its default, with comments.", ""]
    out += ["## Every default", "", "A file with exactly this content behaves like no file at all:"]
    out += ["", *_yaml_block(defaults)]
    out += ["## When the file is invalid", "", "For this file:", "", *_yaml_block(_SAMPLE_INVALID)]
    out += ["the App writes:", "", *(f"> {line}".rstrip() for line in _sample_explanation())]
    return "\n".join(out) + "\n"


def _yaml_block(text: str) -> list[str]:
    """Return YAML text as a fenced markdown block followed by a blank line."""
    return ["```yaml", text.rstrip("\n"), "```", ""]


def _sample_explanation() -> list[str]:
    """Return the lines of the explanation the App writes for the sample invalid file."""
    try:
        parse_repo_config(_SAMPLE_INVALID)
    except ConfigError as error:
        return error.markdown().rstrip("\n").split("\n")
    raise RuntimeError("the sample invalid configuration parsed; the docs would explain nothing")


def _render_key(pointer: str, *, level: int) -> list[str]:
    """Render one key's section: title, description, type, allowed values, default."""
    spec, name = _subschema(pointer) or {}, ".".join(_segments(pointer))
    lines = ["#" * level + f" `{name}`", "", f"**{spec['title']}.** {spec['description']}", ""]
    if "properties" in spec:
        lines.append(f"- Type: a mapping with the keys {', '.join(spec['properties'])}")
    else:
        lines.append(f"- Type: {_allowed(spec)}")
    lines += [
        f"- {rule['errorMessage'][0].upper()}{rule['errorMessage'][1:]}"
        for rule in spec.get("allOf", [])
        if "errorMessage" in rule
    ]
    if "errorMessage" in spec:
        lines.append(f"- When invalid: {spec['errorMessage']}")
    default = _default_phrase(pointer)
    if default is not None:
        lines.append(f"- Default: {default}")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the generated docs (``--docs``) or check a configuration file (``--check FILE``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bot.repoconfig", description=f"model-guard's {CONFIG_PATH}"
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--docs", action="store_true", help=f"print {DOCS_PATH}")
    action.add_argument("--check", type=Path, metavar="FILE", help="validate a configuration file")
    args = parser.parse_args(argv)
    if args.docs:
        sys.stdout.write(render_configuration_docs())
        return 0
    try:
        text = args.check.read_bytes()
    except OSError as error:
        print(f"{args.check}: {error.strerror or error}", file=sys.stderr)
        return 2
    try:
        config = parse_repo_config(text, source=str(args.check))
    except ConfigError as error:
        for problem in error.problems:
            where = f"{args.check}:{problem.line}" if problem.line else str(args.check)
            subject = f"{problem.key}: " if problem.key else ""
            print(f"{where}: {subject}{problem.message}", file=sys.stderr)
        return 1
    print(f"{args.check}: valid; gate {config.thresholds().describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
