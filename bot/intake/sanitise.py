"""Untrusted JSON text to plain Python values, or a one-line refusal: depth, integers, unicode.

Refusing beats repairing here: a payload GitHub signed never holds a lone surrogate, an
integer past 64 bits or hundreds of levels of nesting, so one that does is refused whole
(400) rather than stored half-repaired. The checks run before any value reaches the
store (SQLite's INTEGER is signed 64-bit; a lone surrogate cannot be encoded as UTF-8).
"""

import json
import math
import re
from itertools import accumulate
from typing import Any

from bot.errors import BotError

# GitHub's payloads nest about ten levels; CPython's json decoder recurses once per level
# and raises RecursionError near 1,000, so the cap sits far below both.
MAX_JSON_DEPTH = 64
# Python refuses to convert integers of more than 4,300 digits (sys.int_info); GitHub's
# ids are signed 64-bit, which is what SQLite's INTEGER holds.
MAX_INTEGER = 2**63 - 1
MIN_INTEGER = -(2**63)
_MAX_INTEGER_DIGITS = 20  # a sign and 19 digits hold every signed 64-bit integer

# Every byte but the quote and the four brackets, for bytes.translate to delete.
_NOT_MARK = bytes(byte for byte in range(256) if byte not in b'"[]{}')
# Decoded JSON can hold a lone surrogate only through a \uD800-\uDFFF escape in its text (a
# UTF-8 body cannot encode one): a body without such an escape needs no walk of its values.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class PayloadError(BotError):
    """A body that cannot be handled; the message is the one-line reason given to the sender."""


def refuse_invalid_unicode(text: str, *, what: str) -> str:
    """Return ``text`` when it encodes as UTF-8; raise PayloadError naming ``what`` otherwise.

    A str holds a lone surrogate (U+D800 to U+DFFF) when it came from a JSON escape such as
    ``"\\ud800"`` with no partner: valid JSON, but not text any store or API can carry.
    """
    found = _SURROGATE.search(text)
    if found is not None:
        raise PayloadError(
            f"{what} holds a lone surrogate U+{ord(found.group()):04X} at index {found.start()}"
        )
    return text


def check_json_text(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise PayloadError when JSON text nests arrays and objects deeper than ``max_depth``.

    A scan of the brackets outside strings, without recursion, so that it runs before the
    recursive decoder does. It reads UTF-8 bytes (no byte of a multi-byte character is
    ASCII): escaped backslashes, then escaped quotes, are dropped (left to right, as the
    JSON lexer pairs them); of the rest only quotes and brackets are kept, and adjacent
    quotes dropped in pairs, so every other quote opens a string and only brackets between
    a closing and the next opening quote count. All but the last step run in C.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(None, _NOT_MARK).replace(b'""', b"")
    brackets = b"".join(marks.split(b'"')[::2])
    depth = max(accumulate(1 if step in b"[{" else -1 for step in brackets), default=0)
    if depth > max_depth:
        raise PayloadError(f"JSON nests deeper than {max_depth} levels")


def parse_json_object(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Decode a webhook body to a dict of plain values, or raise PayloadError with the reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PayloadError(f"body is not UTF-8: byte {error.start} is invalid") from None
    check_json_text(body, max_depth=max_depth)
    try:
        data = json.loads(
            text, parse_int=_integer, parse_float=_finite, parse_constant=_no_constant
        )
    except json.JSONDecodeError as error:
        raise PayloadError(f"body is not JSON: {error}") from None
    except RecursionError:  # not reached under the depth cap; kept as the last guard
        raise PayloadError("JSON nests too deeply") from None
    if not isinstance(data, dict):
        raise PayloadError("body is not a JSON object")
    if _SURROGATE_ESCAPE.search(text) is not None:
        _refuse_invalid_strings(data)  # names the string; pairs are valid and pass
    return data


def _integer(digits: str) -> int:
    """Parse a JSON integer within signed 64 bits, before Python's digit limit is reached."""
    if len(digits) > _MAX_INTEGER_DIGITS:
        raise PayloadError(f"integer of {len(digits)} digits is beyond 64 bits")
    value = int(digits)
    if not MIN_INTEGER <= value <= MAX_INTEGER:
        raise PayloadError(f"integer {value} is beyond signed 64 bits")
    return value


def _finite(digits: str) -> float:
    """Parse a JSON number with a fraction or exponent; refuse one that overflows to infinity."""
    value = float(digits)
    if not math.isfinite(value):
        raise PayloadError(f"number {digits[:40]} overflows a double")
    return value


def _no_constant(name: str) -> float:
    """Refuse NaN and Infinity, which Python's json accepts but JSON does not."""
    raise PayloadError(f"{name} is not JSON")


def _refuse_invalid_strings(data: dict[str, Any]) -> None:
    """Walk the decoded value without recursion; refuse any key or string holding a surrogate.

    The refusal names where the string is (``repository.full_name``, ``labels[2].name``).
    """
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                refuse_invalid_unicode(key, what=f"a key in {where or 'the payload'}")
                pending.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
        elif isinstance(value, str):
            refuse_invalid_unicode(value, what=where)
