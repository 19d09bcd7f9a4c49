"""What a change to ``registry.json`` does: models added, removed, changed, reordered, promoted.

A pull request that edits the registry is judged by this diff: every model it puts into
production (a ``smoke: true -> false`` flip, a new row that is not a smoke model, or a
production row whose files changed) must be backed by a verdict. ``row_lines`` finds each
row's line in the head file so the App can annotate it. See docs/registry.md.
"""

import bisect
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from engine.errors import ReportError
from engine.evidence import schema_problems
from engine.registry import ModelEntry, Registry

SCHEMA = "model-guard/registry-diff"
SCHEMA_VERSION = 1
SCHEMA_FILE = "registry-diff.schema.json"
_WHITESPACE = " \t\r\n"


class Change(Enum):
    """The kinds of change a registry row can undergo between two versions."""

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    REORDERED = "reordered"
    PROMOTED = "promoted"
    DEMOTED = "demoted"


@dataclass(frozen=True)
class DiffItem:
    """One change to one model: what happened, a one-line detail, and its row's line in the head file."""

    change: Change
    model_id: str
    detail: str
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the item as a JSON-ready dict."""
        return {
            "change": self.change.value,
            "model_id": self.model_id,
            "detail": self.detail,
            "line": self.line,
        }


@dataclass(frozen=True)
class RegistryDiff:
    """Every change between two registries, in head timeline order (removed models last)."""

    items: tuple[DiffItem, ...]
    needs_verdict: tuple[str, ...]

    def ids(self, change: Change) -> tuple[str, ...]:
        """Return the ids of the models with one kind of change, in item order."""
        return tuple(item.model_id for item in self.items if item.change is change)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``model-guard/registry-diff`` document, checked against its schema."""
        document = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "items": [item.to_dict() for item in self.items],
            "needs_verdict": list(self.needs_verdict),
        }
        problems = schema_problems(document, SCHEMA_FILE)
        if problems:  # a bug, not bad input: never hand out a document the contract rejects
            raise ReportError(f"registry diff breaks its schema: {problems[0]}")
        return document

    def render_markdown(self) -> str:
        """Return a short markdown table of the changes (or one line saying there are none)."""
        if not self.items:
            return "No model changes in the registry.\n"
        lines = ["| model | change | line | detail |", "|---|---|---|---|"]
        for item in self.items:
            line = "" if item.line is None else str(item.line)
            lines.append(f"| `{item.model_id}` | {item.change.value} | {line} | {item.detail} |")
        if self.needs_verdict:
            shown = ", ".join(f"`{model_id}`" for model_id in self.needs_verdict)
            lines.append("")
            lines.append(f"Needs a PROMOTE verdict: {shown}.")
        return "\n".join(lines) + "\n"


def diff_registries(
    base: Registry | None, head: Registry, *, lines: Mapping[str, int] | None = None
) -> RegistryDiff:
    """Compare two registries (``base`` None: the registry is new); pure.

    ``lines`` maps model id to its row's line in the head file (``row_lines``). A model
    needs a verdict when head has it in production (``smoke: false``) and base did not
    have those same files in production: a flip, a new non-smoke row, a changed production row.
    """
    found = lines or {}
    old = {} if base is None else {entry.id: entry for entry in base.models}
    new = {entry.id: entry for entry in head.models}
    moved = _reordered(
        [entry.id for entry in base.models if entry.id in new] if base is not None else [],
        [entry.id for entry in head.models if entry.id in old],
    )
    items: list[DiffItem] = []
    needs: list[str] = []
    for entry in head.models:
        line = found.get(entry.id)
        before = old.get(entry.id)
        row = list(_row_items(before, entry, reordered=entry.id in moved))
        items.extend(DiffItem(change, entry.id, detail, line) for change, detail in row)
        production_changed = before is None or before.smoke or not _same_files(before, entry)
        if not entry.smoke and production_changed:
            needs.append(entry.id)
    for entry in base.models if base is not None else ():
        if entry.id not in new:
            state = "smoke" if entry.smoke else "production"
            items.append(DiffItem(Change.REMOVED, entry.id, f"{state} model removed"))
    return RegistryDiff(items=tuple(items), needs_verdict=tuple(needs))


def row_lines(registry_text: str) -> dict[str, int]:
    """Return model id -> 1-based line of its row's ``"id"`` member in the registry text.

    A scan, not a parser: it tracks strings and nesting, and records an ``"id"`` key only
    directly inside an object of the top-level ``"models"`` array, whatever the layout.
    Text that is not valid JSON gives what could be found before the problem; a repeated
    id keeps its first line. Never raises.
    """
    return {model_id: found[0] for model_id, found in id_lines(registry_text).items()}


def id_lines(registry_text: str) -> dict[str, tuple[int, ...]]:
    """Return model id -> the 1-based line of every row with that id, in file order.

    The same scan as ``row_lines``, keeping repeats: the n-th row holding an id is on the
    n-th line listed (so a duplicate id can be pointed at where it repeats). Never raises.
    """
    newlines = [index for index, char in enumerate(registry_text) if char == "\n"]
    found: dict[str, list[int]] = {}
    for model_id, position in _id_members(registry_text):
        found.setdefault(model_id, []).append(bisect.bisect_left(newlines, position) + 1)
    return {model_id: tuple(lines) for model_id, lines in found.items()}


def _row_items(
    before: ModelEntry | None, after: ModelEntry, *, reordered: bool
) -> Iterator[tuple[Change, str]]:
    """Yield the changes of one head row compared with its base row (None: new)."""
    if before is None:
        yield Change.ADDED, f"new {'smoke' if after.smoke else 'production'} model"
        if not after.smoke:
            yield Change.PROMOTED, "new row with smoke: false, a promotion"
        return
    if not _same_files(before, after):
        yield Change.CHANGED, _files_detail(before, after)
    if reordered:
        yield Change.REORDERED, f"timeline {before.timeline} -> {after.timeline}, order changed"
    if before.smoke and not after.smoke:
        yield Change.PROMOTED, "smoke: true -> false"
    elif not before.smoke and after.smoke:
        yield Change.DEMOTED, "smoke: false -> true"


def _same_files(before: ModelEntry, after: ModelEntry) -> bool:
    """Return whether two rows name the same bytes: graph sha256 and external data by name and hash."""
    return before.sha256 == after.sha256 and before.external_map() == after.external_map()


def _files_detail(before: ModelEntry, after: ModelEntry) -> str:
    """Say which of a row's file hashes changed."""
    parts = []
    if before.sha256 != after.sha256:
        parts.append(f"sha256 {before.sha256[:12]}… -> {after.sha256[:12]}…")
    old, new = before.external_map(), after.external_map()
    changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    if changed:
        parts.append(f"external data {', '.join(changed)} changed")
    return "; ".join(parts)


def _reordered(base_order: Sequence[str], head_order: Sequence[str]) -> set[str]:
    """Return the fewest common models whose moves explain the new order (outside a longest kept run)."""
    position = {model_id: index for index, model_id in enumerate(base_order)}
    ranks = [position[model_id] for model_id in head_order]
    # Patience sorting: tails[k] ends the best increasing run of length k + 1 found so far.
    tails: list[int] = []
    tail_ranks: list[int] = []
    previous: list[int | None] = [None] * len(ranks)
    for index, rank in enumerate(ranks):
        k = bisect.bisect_left(tail_ranks, rank)
        previous[index] = tails[k - 1] if k > 0 else None
        if k == len(tails):
            tails.append(index)
            tail_ranks.append(rank)
        else:
            tails[k] = index
            tail_ranks[k] = rank
    kept: set[str] = set()
    cursor = tails[-1] if tails else None
    while cursor is not None:
        kept.add(head_order[cursor])
        cursor = previous[cursor]
    return set(head_order) - kept


def _id_members(text: str) -> Iterator[tuple[str, int]]:
    """Yield (id, offset of its key) for each ``"id": "<string>"`` member of a models row."""
    stack: list[str] = []  # one entry per open container: "root", "models", "row" or "other"
    pending_key: str | None = None
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if char == '"':
            end = _string_end(text, index)
            if end is None:
                return
            literal = text[index : end + 1]
            after = _skip_space(text, end + 1)
            is_key = bool(stack) and text[after : after + 1] == ":"
            if is_key:
                pending_key = _decode(literal)
                if stack[-1] == "row" and pending_key == "id":
                    value_start = _skip_space(text, after + 1)
                    value_end = _string_end(text, value_start)
                    if text[value_start : value_start + 1] == '"' and value_end is not None:
                        value = _decode(text[value_start : value_end + 1])
                        if value is not None:
                            yield value, index
                index = after + 1
                continue
            index = end + 1
            continue
        if char in "{[":
            stack.append(_container(stack, char, pending_key))
        elif char in "}]" and stack:
            stack.pop()
        if char in "{[,}]":
            pending_key = None
        index += 1


def _container(stack: Sequence[str], char: str, key: str | None) -> str:
    """Classify a container being opened by where it stands."""
    if not stack:
        return "root" if char == "{" else "other"
    if stack[-1] == "root" and char == "[" and key == "models":
        return "models"
    if stack[-1] == "models" and char == "{":
        return "row"
    return "other"


def _string_end(text: str, start: int) -> int | None:
    """Return the index of the quote closing the string that opens at ``start`` (None: unterminated)."""
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index
        if char == "\n":
            return None
        index += 1
    return None


def _skip_space(text: str, index: int) -> int:
    """Return the first index at or after ``index`` that is not JSON whitespace."""
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _decode(literal: str) -> str | None:
    """Decode one JSON string literal (escapes included); None when it is not one."""
    try:
        value = json.loads(literal)
    except ValueError:
        return None
    return value if isinstance(value, str) else None
