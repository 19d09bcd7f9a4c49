"""The one step that turns untrusted JSON into plain values or a one-line refusal."""

import json

import pytest

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


def test_refuse_invalid_unicode_names_what_it_refused() -> None:
    assert refuse_invalid_unicode("plain", what="name") == "plain"
    with pytest.raises(PayloadError, match="config key holds a lone surrogate U\\+D800"):
        refuse_invalid_unicode("a\ud800", what="config key")
