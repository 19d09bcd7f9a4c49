"""How values, kinds and types are worded for someone writing YAML, kept safe inside markdown."""

import json
import math
from collections.abc import Sequence
from typing import Any

_TYPE_NAMES = {
    "null": "null",
    "boolean": "true or false",
    "integer": "a whole number",
    "number": "a number",
    "string": "text",
    "object": "a mapping",
    "array": "a list",
}


def name_types(types: Sequence[str]) -> str:
    """Name JSON types the way a YAML writer thinks of them: ``a number or null``."""
    return " or ".join(_TYPE_NAMES.get(name, name) for name in types)


def name_kind(value: Any) -> str:
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


def show_value(value: Any) -> str:
    """Return a value as it would be written in YAML (``null``, ``true``, ``.inf``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # YAML flow style: {min_plcc: 0.9, max_rmse: null}
        return "{" + ", ".join(f"{key}: {show_value(item)}" for key, item in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False, default=str)


def format_number(value: Any) -> str:
    """Format a schema bound: integers as they are, floats in their shortest form."""
    return format(value, "g") if isinstance(value, float) else str(value)


def code_span(value: Any, *, limit: int = 60) -> str:
    """Return text as an inline code span that is safe in markdown (user text goes only here)."""
    text = value if isinstance(value, str) else show_value(value)
    if not text or text != text.strip():
        text = json.dumps(text, ensure_ascii=False)
    text = "".join(ch if ch.isprintable() else "?" for ch in text).replace("`", "'")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`"


def escape_markdown(text: str) -> str:
    """Escape markdown outside the code spans that ``code_span`` made, so text stays text."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # not our own code spans: escape everything
        parts = [text.replace("`", "'")]
    for index in range(0, len(parts), 2):
        parts[index] = "".join(f"\\{ch}" if ch in "\\*_[]<>|~#" else ch for ch in parts[index])
    return "`".join(parts)
