"""A strict YAML reader: UTF-8 text of at most 64 KiB, one plain mapping, nothing implicit."""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from bot.repoconfig.pointers import escape_segment
from bot.repoconfig.problems import ConfigProblem
from bot.repoconfig.wording import code_span, name_kind
from engine.errors import one_line

MAX_CONFIG_BYTES = 64 * 1024

_YAML_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = frozenset(
    _YAML_TAG + name for name in ("null", "bool", "int", "float", "str", "seq", "map")
)
# A double-quoted scalar's \u and \U escapes may name a UTF-16 surrogate (U+D800 to U+DFFF),
# which is no character: PyYAML keeps it in the str, and it fails only where the text is
# encoded as UTF-8 (a JSON body to GitHub, a database row), deep inside a run.
# https://yaml.org/spec/1.2.2/#57-escaped-characters
_SURROGATES = re.compile("[\ud800-\udfff]+")
_SURROGATE_ESCAPE = re.compile(r"\\(u|U0000)[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass(frozen=True)
class Document:
    """A parsed YAML document and the line of every key in it, by JSON pointer."""

    data: Any
    lines: Mapping[str, int]


class Unreadable(Exception):
    """The text cannot be read as a configuration at all; it carries why."""

    def __init__(self, *problems: ConfigProblem) -> None:
        """Keep the problems that make the text unreadable."""
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


def read_document(text: str | bytes) -> Document:
    """Read the file's text as one YAML mapping; raise Unreadable with every reason it is not."""
    return _load(_decode(text))


def _decode(text: str | bytes) -> str:
    """Return the file as text, refusing what is too large or not UTF-8."""
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as error:
            line = text[: error.start].count("\n") + 1
            raise Unreadable(ConfigProblem("", "is not UTF-8 text", line)) from None
    else:
        raw = text
    if len(raw) > MAX_CONFIG_BYTES:
        raise Unreadable(
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
        raise Unreadable(ConfigProblem("", message, line)) from None
    return decoded.removeprefix("\ufeff")


def _load(text: str) -> Document:
    """Compose the YAML, refuse what the configuration never needs, then build plain values."""
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters already here
    except yaml.reader.ReaderError as error:
        raise Unreadable(_reader_problem(text, error)) from None
    try:
        node = _compose(loader, text)
        if node is None:  # empty, or only comments: every default applies
            return Document({}, {})
        lines: dict[str, int] = {}
        problems = list(_check_nodes(node, "", lines))
        if problems:
            raise Unreadable(*problems)
        data = _construct(loader, node)
    finally:
        loader.dispose()
    if data is None:  # a document of only "---": every default applies
        return Document({}, lines)
    if not isinstance(data, dict):
        message = (
            f"must be a mapping of keys such as {code_span('registry:')} and {code_span('gate:')}, "
            f"not {name_kind(data)}"
        )
        raise Unreadable(ConfigProblem("", message, node.start_mark.line + 1))
    return Document(data, lines)


def _compose(loader: _StrictLoader, text: str) -> Any:
    """Return the document's node tree (None when empty), refusing aliases and bad syntax."""
    try:
        return loader.get_single_node()
    except _AliasRefused as error:
        line = error.problem_mark.line + 1
        message = f"uses the YAML alias {code_span(error.problem)}; aliases are not allowed here"
        raise Unreadable(ConfigProblem("", message + ": write the value out", line)) from None
    except yaml.MarkedYAMLError as error:
        raise Unreadable(_syntax_problem(error)) from None
    except yaml.reader.ReaderError as error:
        raise Unreadable(_reader_problem(text, error)) from None
    except RecursionError:
        message = "is nested too deeply to be a configuration"
        raise Unreadable(ConfigProblem("", message)) from None
    except ValueError:  # chr() refuses an escape past U+10FFFF while the scalar is scanned
        message = (
            "has a " + code_span("\\U") + " escape beyond U+10FFFF, the last Unicode "
            "character; write the character itself"
        )
        raise Unreadable(ConfigProblem("", message, loader.get_mark().line + 1)) from None


def _construct(loader: _StrictLoader, node: Any) -> Any:
    """Build plain Python values from a checked node tree."""
    try:
        return loader.construct_document(node)
    except ValueError:  # Python refuses to convert integers of more than 4300 digits
        raise Unreadable(ConfigProblem("", "has a number with too many digits")) from None
    except yaml.YAMLError as error:
        message = f"cannot be read: {code_span(one_line(error))}"
        raise Unreadable(ConfigProblem("", message)) from None


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
        return ConfigProblem("", f"is not valid YAML: {code_span(what)}")
    message = f"is not valid YAML (column {mark.column + 1}): {code_span(what, limit=120)}"
    if error.context == "while scanning an alias":  # a cron schedule written without quotes
        example = code_span('schedule: "0 * * * *"')
        message += f"; quote a value that starts with *, e.g. {example}"
    elif "character '@' that cannot start any token" in str(error.problem):
        # YAML reserves @ and ` as indicators; a handle under alerts.mention is the usual case.
        example = code_span('- "@octocat"')
        message += f"; quote a value that starts with @, e.g. {example}"
    return ConfigProblem("", message, mark.line + 1)


def _check_nodes(node: Any, pointer: str, lines: dict[str, int]) -> Iterator[ConfigProblem]:
    """Yield YAML the configuration refuses (duplicate keys, merges, tags); record key lines."""
    if node.tag not in _PLAIN_TAGS:
        yield ConfigProblem(pointer, _tag_message(node), node.start_mark.line + 1)
    elif isinstance(node, yaml.ScalarNode) and _SURROGATES.search(node.value):
        yield ConfigProblem(pointer, _surrogate_message(node.value), _surrogate_line(node))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{pointer}/{index}"
            lines.setdefault(child, item.start_mark.line + 1)
            yield from _check_nodes(item, child, lines)
    elif isinstance(node, yaml.MappingNode):
        yield from _check_mapping(node, pointer, lines)


def _check_mapping(node: Any, pointer: str, lines: dict[str, int]) -> Iterator[ConfigProblem]:
    """Yield the refused keys of one mapping, record the line of each other key, check values."""
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        problem = _key_problem(key_node, pointer, seen)
        if problem is not None:
            yield problem
            continue
        child = f"{pointer}/{escape_segment(key_node.value)}"
        seen[key_node.value] = lines[child] = key_node.start_mark.line + 1
        yield from _check_nodes(value_node, child, lines)


def _key_problem(key_node: Any, pointer: str, seen: Mapping[str, int]) -> ConfigProblem | None:
    """Return why a mapping key is refused (a merge, not a name, given twice), or None."""
    line = key_node.start_mark.line + 1
    if key_node.tag == _YAML_TAG + "merge":
        message = "uses a YAML merge key (<<); write the keys out instead"
        return ConfigProblem(pointer, message, line)
    if isinstance(key_node, yaml.ScalarNode) and _SURROGATES.search(key_node.value):
        # The key's own pointer would carry the surrogate into every message: name its parent.
        message = f"has a key that {_surrogate_message(key_node.value)}"
        return ConfigProblem(pointer, message, _surrogate_line(key_node))
    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _YAML_TAG + "str":
        shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a list"
        message = f"has the key {code_span(shown)}, which is not a name; keys are names"
        return ConfigProblem(pointer, message + " such as registry or gate", line)
    if key_node.value in seen:
        message = (
            f"is given twice (first at line {seen[key_node.value]}); "
            "YAML would keep only the last one, so remove one"
        )
        return ConfigProblem(f"{pointer}/{escape_segment(key_node.value)}", message, line)
    return None


def _surrogate_message(text: str) -> str:
    """Explain the first run of surrogates in ``text``, naming them by escape, never raw."""
    found = _SURROGATES.search(text)
    run = found.group() if found else ""
    escapes = "".join(f"\\u{ord(ch):04X}" for ch in run[:2])
    if len(run) >= 2 and "\ud800" <= run[0] <= "\udbff" and "\udc00" <= run[1] <= "\udfff":
        # JSON joins a surrogate pair into one character; YAML does not.
        pair = (run[0] + run[1]).encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        joined = "\\U" + f"{ord(pair):08X}"
        return (
            f"contains {code_span(escapes)}, a UTF-16 surrogate pair, which YAML does not "
            f"join into one character: write {code_span(joined)} or the character itself"
        )
    return (
        f"contains {code_span(escapes[:6])}, a lone UTF-16 surrogate, which is not a Unicode "
        "character; write the character itself"
    )


def _surrogate_line(node: Any) -> int:
    """Return the line of the escape that made a surrogate (a quoted scalar may span lines)."""
    start, end = node.start_mark, node.end_mark
    source = start.buffer if isinstance(start.buffer, str) else ""
    span = source[start.index : end.index]
    escape = _SURROGATE_ESCAPE.search(span)
    line: int = start.line + 1
    return line + (span.count("\n", 0, escape.start()) if escape else 0)


def _tag_message(node: Any) -> str:
    """Explain a value whose YAML type the configuration does not take."""
    if node.tag == _YAML_TAG + "timestamp":
        return f"{code_span(node.value)} reads as a date in YAML; quote it if it is text"
    tag = node.tag.replace(_YAML_TAG, "!!")
    return f"uses the YAML tag {code_span(tag)}; only plain values, lists and mappings are allowed"
