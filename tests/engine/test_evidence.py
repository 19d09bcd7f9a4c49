"""Evidence JSON: the strict reader, schema problems, the atomic writer and the float rule."""

import json
import math
import os
import stat
from pathlib import Path

import pytest

from engine.errors import EvidenceError, ReportError
from engine.evidence import (
    decode_float,
    encode_float,
    read_json,
    schema_problems,
    write_bytes,
    write_json,
)
from tests.engine.test_gate import loso_document


def test_write_json_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "doc.json"
    write_json(target, {"b": 1, "a": [1.5, None]})
    write_json(target, {"b": 2, "a": "é"})
    assert target.read_text(encoding="utf-8") == '{\n  "b": 2,\n  "a": "\\u00e9"\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["doc.json"]


def test_write_json_keeps_insertion_order(tmp_path: Path) -> None:
    write_json(tmp_path / "doc.json", {"z": 1, "a": 2})
    assert list(json.loads((tmp_path / "doc.json").read_text())) == ["z", "a"]


def test_write_json_file_is_not_private_to_its_owner(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "doc.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "doc.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_write_json_refuses_nan_and_names_where_it_is(tmp_path: Path, bad: float) -> None:
    target = tmp_path / "doc.json"
    target.write_text("old\n")
    with pytest.raises(ReportError, match=r"/models/1/plcc is NaN or infinite"):
        write_json(target, {"models": [{"plcc": 0.5}, {"plcc": bad}]})
    assert target.read_text() == "old\n", "the previous file is untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_write_json_failure_is_a_report_error_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "doc.json").mkdir()
    with pytest.raises(ReportError, match="cannot write"):
        write_json(tmp_path / "doc.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_read_json_returns_the_exact_bytes_and_the_value(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(b'{"a": [1, null]}\n')
    loaded = read_json(path)
    assert loaded.raw == b'{"a": [1, null]}\n' and loaded.value == {"a": [1, None]}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": -Infinity}', "-Infinity is not valid JSON"),
        ('{"a": 1, "a": 2}', "key 'a' appears twice in one object"),
        ('{"a": 1', "invalid JSON: Expecting ',' delimiter at line 1 column 8"),
    ],
)
def test_read_json_refuses_what_strict_json_refuses_in_one_line(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "doc.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EvidenceError, match=reason) as caught:
        read_json(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_read_json_refuses_a_missing_file_a_folder_and_one_over_the_cap(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="not found"):
        read_json(tmp_path / "absent.json")
    with pytest.raises(EvidenceError, match="not a regular file"):
        read_json(tmp_path)
    (tmp_path / "big.json").write_bytes(b" " * 11)
    with pytest.raises(EvidenceError, match="11 bytes, over the 10-byte limit"):
        read_json(tmp_path / "big.json", max_bytes=10)


def test_read_json_refuses_text_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "doc.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(EvidenceError, match="not UTF-8 text"):
        read_json(tmp_path / "doc.json")


def test_schema_problems_lists_every_problem_in_document_order_with_its_pointer() -> None:
    document = {
        "schema_version": 1,
        "models": [{"id": f"m{i}"} for i in range(11)] + [{"id": "BAD\n", "surplus": 1}],
    }
    problems = schema_problems(document, "registry.schema.json")
    pointers = [problem.pointer for problem in problems]
    assert pointers.index("/models/2") < pointers.index("/models/10") < pointers.index("/models/11")
    assert any(
        p.pointer == "/models/11/surplus" and "unexpected property" in p.message for p in problems
    )
    assert any(p.pointer == "/models/11/id" and p.keyword == "pattern" for p in problems)
    assert str(problems[0]).startswith(f"{problems[0].pointer}: ")


def test_schema_problems_is_empty_for_a_valid_document() -> None:
    assert schema_problems(loso_document(0), "loso-report.schema.json") == []


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0.5, 0.5), (-2.0, -2.0), (math.inf, "inf"), (-math.inf, "-inf")],
)
def test_encode_float_round_trips_numbers_and_infinities(value: float, encoded: object) -> None:
    assert encode_float(value) == encoded
    assert decode_float(json.loads(json.dumps(encoded))) == value


def test_encode_float_writes_nan_as_null_and_decode_reads_it_back() -> None:
    assert encode_float(math.nan) is None
    assert math.isnan(decode_float(None))


@pytest.mark.parametrize("bad", ["0.5", "nan", True, [1.0]])
def test_decode_float_refuses_anything_encode_float_does_not_write(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a number"):
        decode_float(bad)


def test_write_bytes_replaces_a_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.onnx"
    write_bytes(target, b"one")
    write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_problem_at_a_key_with_a_newline_prints_on_one_line() -> None:
    # Found by tests/fuzz: an unexpected key "\n" in a LOSO report broke the one-line refusal.
    document = {**loso_document(0), "\n": 1}
    problems = schema_problems(document, "loso-report.schema.json")
    assert problems and all("\n" not in str(problem) for problem in problems)
    assert any("\\n" in str(problem) for problem in problems)
