"""The one step that turns untrusted JSON into plain values or a one-line refusal."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.intake.sanitise import (
    MAX_INTEGER,
    MIN_INTEGER,
    PayloadError,
    check_json_text,
    parse_json_object,
    refuse_invalid_unicode,
)


def test_valid_payload_keeps_surrogate_pairs_and_64_bit_extremes() -> None:
    text = json.dumps({"emoji": "\U0001f600", "ids": [MIN_INTEGER, MAX_INTEGER], "x": 1.5e300})
    assert "\\ud83d\\ude00" in text  # a valid pair, escaped
    data = parse_json_object(text.encode())
    assert data == {"emoji": "\U0001f600", "ids": [MIN_INTEGER, MAX_INTEGER], "x": 1.5e300}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}", "nests deeper than 64"),
        (b'{"a": ' + b"1" * 4301 + b"}", "4301 digits"),
        (json.dumps({"id": MAX_INTEGER + 1}).encode(), "beyond signed 64 bits"),
        (json.dumps({"id": MIN_INTEGER - 1}).encode(), "beyond signed 64 bits"),
        (b'{"x": 1e999}', "overflows a double"),
        (b'{"x": NaN}', "NaN is not JSON"),
        (b'{"labels": [{"name": "ok"}, {"name": "\\udc00"}]}', "labels[1].name holds"),
        (b'{"\\ud800": 1}', "a key in the payload holds"),
        (b'{"x": ["ok", "\\uDFFF"]}', "x[1] holds a lone surrogate"),
        (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"a": ', "not JSON"),
    ],
)
def test_unhandleable_body_is_refused_in_one_line(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("[", r"\[").replace("]", r"\]")) as error:
        parse_json_object(body)
    assert "\n" not in str(error.value)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    check_json_text(json.dumps({"a": "[" * 1000, "b": '\\"{{{{'}), max_depth=1)
    with pytest.raises(PayloadError):
        check_json_text('{"a": {"b": 1}}', max_depth=1)


# Strings full of what a naive bracket count would misread: brackets, quotes, backslashes.
_TRICKY_TEXT = st.text(alphabet='[]{}"\\\\/nu0a\u00e9\U0001f600', max_size=8)
_JSON_VALUES = st.recursive(
    st.none() | st.integers(-10, 10) | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
    max_leaves=20,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@given(value=_JSON_VALUES, ensure_ascii=st.booleans(), limit=st.integers(0, 6))
def test_depth_check_counts_exactly_the_nesting_outside_strings(
    value: Any, ensure_ascii: bool, limit: int
) -> None:
    text = json.dumps({"v": value}, ensure_ascii=ensure_ascii)
    for given_as in (text, text.encode()):
        if _depth({"v": value}) > limit:
            with pytest.raises(PayloadError, match=f"deeper than {limit} levels"):
                check_json_text(given_as, max_depth=limit)
        else:
            check_json_text(given_as, max_depth=limit)


def test_a_lone_surrogate_escape_after_an_escaped_backslash_is_text_not_a_surrogate() -> None:
    # "\\ud800" is a backslash and the letters ud800: valid, kept as written.
    assert parse_json_object(b'{"a": "\\\\ud800"}') == {"a": "\\ud800"}
    with pytest.raises(PayloadError, match="a holds a lone surrogate U\\+D800"):
        parse_json_object(b'{"a": "\\\\\\ud800"}')


def test_refuse_invalid_unicode_names_what_it_refused() -> None:
    assert refuse_invalid_unicode("plain", what="name") == "plain"
    with pytest.raises(PayloadError, match="config key holds a lone surrogate U\\+D800"):
        refuse_invalid_unicode("a\ud800", what="config key")
