"""Shared checks and strategies for the fuzz tests: one-line refusals, near-schema JSON."""

import json
from typing import Any

from hypothesis import strategies as st

# Text that stresses readers: control characters, bidi marks, lone surrogates, NUL.
ODD_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\n", "\r", "\t", "\x00", "\u2028", "\u202e", "\ufeff", "\ud800", "`"]),
    ),
    max_size=40,
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ODD_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)


def assert_one_line(message: str) -> None:
    """A refusal is one line of text and never carries a traceback."""
    assert message, "an empty refusal"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert "Traceback" not in message, message


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a JSON value, as a tuple of keys and indexes (the root is ())."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, seed: Any, *, max_mutations: int = 3) -> Any:
    """A copy of ``seed`` with a few random edits: values replaced, keys added or dropped, nesting."""
    document = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(min_value=0, max_value=max_mutations))):
        where = draw(st.sampled_from(paths_of(document)))
        edit = draw(st.sampled_from(["replace", "add", "drop", "nest", "duplicate"]))
        document = _edit(draw, document, where, edit)
    return document


def _edit(draw: st.DrawFn, document: Any, where: tuple[Any, ...], edit: str) -> Any:
    """Apply one edit at ``where``; returns the (possibly new) root."""
    if not where:
        return draw(JSON_VALUES) if edit == "replace" else document
    parent = document
    for step in where[:-1]:
        parent = parent[step]
    last = where[-1]
    if edit == "replace":
        parent[last] = draw(JSON_VALUES)
    elif edit == "add" and isinstance(parent, dict):
        parent[draw(ODD_TEXT)] = draw(JSON_VALUES)
    elif edit == "drop":
        del parent[last]
    elif edit == "nest":
        depth = draw(st.sampled_from([1, 2, 50, 500]))
        value: Any = parent[last]
        for _ in range(depth):
            value = [value]
        parent[last] = value
    elif edit == "duplicate" and isinstance(parent, list):
        parent.append(json.loads(json.dumps(parent[last])))
    return document


def encode(document: Any, *, draw: st.DrawFn) -> bytes:
    """JSON text for ``document``, sometimes with a repeated key or a raw non-finite number."""
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    trick = draw(
        st.sampled_from(["none", "none", "none", "repeat", "nan", "bom", "latin1", "deep"])
    )
    if trick == "repeat" and text.startswith("{") and len(text) > 2:
        text = text[0] + '"k": 1, "k": 2, ' + text[1:]
    elif trick == "nan" and text.startswith("{") and len(text) > 2:
        text = text[0] + '"n": NaN, ' + text[1:]
    elif trick == "deep" and text.startswith("{") and len(text) > 2:
        text = text[0] + '"deep": ' + "[" * 100_000 + "]" * 100_000 + ", " + text[1:]
    elif trick == "bom":
        text = "\ufeff" + text
    raw = text.encode("utf-8", errors="surrogatepass")
    return raw + b"\xff" if trick == "latin1" else raw
