"""JSON pointers (RFC 6901) to the file's keys, and the YAML line a pointer lands on."""

from collections.abc import Mapping, Sequence
from typing import Any


def escape_segment(key: str) -> str:
    """Escape one JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def join_pointer(path: Sequence[Any]) -> str:
    """Return a JSON pointer for a jsonschema path."""
    return "".join(f"/{escape_segment(str(part))}" for part in path)


def split_pointer(pointer: str) -> list[str]:
    """Split a JSON pointer into its unescaped segments."""
    if not pointer:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def find_line(pointer: str, lines: Mapping[str, int]) -> int | None:
    """Return the line of the key at ``pointer`` or of its nearest enclosing key."""
    while pointer:
        if pointer in lines:
            return lines[pointer]
        pointer = pointer.rpartition("/")[0]
    return None
