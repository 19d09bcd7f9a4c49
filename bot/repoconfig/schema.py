"""The configuration's JSON Schema (draft 2020-12): loaded from the package, navigated, worded."""

import copy
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from bot.repoconfig.pointers import split_pointer
from bot.repoconfig.wording import code_span, format_number, name_types, show_value

SCHEMA_FILE = "model-guard.schema.json"
# The package's copy of config/model-guard.schema.json; a test keeps the two byte-identical.
SCHEMA_PACKAGE = "bot.schemas"
BOUNDS = {
    "minimum": "at least",
    "exclusiveMinimum": "greater than",
    "maximum": "at most",
    "exclusiveMaximum": "less than",
}


def config_schema() -> dict[str, Any]:
    """Return the configuration's JSON Schema (draft 2020-12), a fresh copy each call."""
    return copy.deepcopy(load_schema())


@cache
def load_schema() -> dict[str, Any]:
    """Load (once) and check the schema shipped in the package (shared: never mutate it)."""
    text = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return schema


@cache
def schema_validator() -> Draft202012Validator:
    """Return the (cached) validator of the schema."""
    return Draft202012Validator(load_schema())


def section_properties(section: str) -> dict[str, Any]:
    """Return the properties of one top-level section of the schema."""
    spec = load_schema()["properties"].get(section, {})
    return dict(spec.get("properties", {}))


def find_subschema(pointer: str) -> dict[str, Any] | None:
    """Return the schema of the key at ``pointer``, or None when no such key exists."""
    spec: dict[str, Any] = load_schema()
    for part in split_pointer(pointer):
        children = spec.get("properties", {})
        if part not in children:
            return None
        spec = _resolve(children[part])
    return spec


def describe_expected(pointer: str) -> str:
    """Describe what the key at ``pointer`` takes: type, range and default."""
    spec = find_subschema(pointer) or {}
    default = describe_default(pointer)
    return describe_allowed(spec) + ("" if default is None else f"; default {default}")


def describe_default(pointer: str) -> str | None:
    """Return the key's default as text, naming both when its section's default differs."""
    spec = find_subschema(pointer)
    if spec is None or "default" not in spec:
        return None
    shown = code_span(show_value(spec["default"]), limit=120)
    parts = split_pointer(pointer)
    if len(parts) == 2:
        section, key = parts
        outer = load_schema()["properties"][section].get("default", {})
        if key in outer and outer[key] != spec["default"]:
            return (
                f"{shown} in a {code_span(section + ':')} you write, "
                f"{code_span(show_value(outer[key]))} when there is no {code_span(section + ':')}"
            )
    return shown


def describe_allowed(spec: Mapping[str, Any]) -> str:
    """Describe a key's type and range in a few words."""
    if "enum" in spec:
        return "one of " + ", ".join(code_span(item) for item in spec["enum"])
    if "const" in spec:
        return f"exactly {code_span(show_value(spec['const']))}"
    if spec.get("type") == "array":
        return _describe_list(spec)
    kind = spec.get("type", [])
    words = [name_types([kind] if isinstance(kind, str) else list(kind))]
    for keyword, phrase in BOUNDS.items():
        if keyword in spec:
            words.append(f"{phrase} {format_number(spec[keyword])}")
    if "maxLength" in spec and "minLength" in spec:
        words.append(f"{spec['minLength']} to {spec['maxLength']} characters")
    elif "maxLength" in spec:
        words.append(f"at most {spec['maxLength']} characters")
    return ", ".join(words)


def _describe_list(spec: Mapping[str, Any]) -> str:
    """Describe a list key: how many items, what each must be, whether one may repeat."""
    low, high = spec.get("minItems"), spec.get("maxItems")
    if low is not None and high is not None:
        text = f"a list of {low} to {high} items"
    elif high is not None:
        text = f"a list of at most {high} items"
    else:
        text = "a list"
    items = spec.get("items")
    if isinstance(items, Mapping):
        if "errorMessage" in items:
            text += f", each of which {items['errorMessage']}"
        else:
            text += f", each {describe_allowed(items)}"
    return text + ("; no item twice" if spec.get("uniqueItems") else "")


def _resolve(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return a schema node with its local ``$ref`` merged in (the node's own keys win)."""
    ref = spec.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return dict(spec)
    target = load_schema()["$defs"][ref.removeprefix("#/$defs/")]
    return {**target, **{key: item for key, item in spec.items() if key != "$ref"}}
