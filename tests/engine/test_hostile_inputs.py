"""Hostile input files are refused with one line, before decoding and without blocking."""

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from bench.attacks import (
    write_constant_rows,
    write_crafted_pandas_metadata,
    write_deep_json,
    write_dictionary_bomb,
)
from bot.surfaces.blame import row_digest
from engine.errors import EngineError, EvidenceError, FeatureCacheError, RegistryError
from engine.evidence import read_json
from engine.features import TableLimits, load_features
from engine.hashing import sha256_file
from engine.loso_report import load_loso_report
from engine.registry import load_registry
from engine.safeio import EVIDENCE_JSON, json_depth, read_input
from engine.timeline import cached_features, kept_tables
from engine.verdict import verify_verdict

GOLDEN = Path(__file__).resolve().parents[2] / "testdata" / "bisect" / "features.parquet"
# Only a guard against a regression hanging the suite: a refusal takes milliseconds.
_HANG_GUARD_S = 30.0


def refusal(call: Callable[[], Any], *, error: type[EngineError] = EngineError) -> str:
    """Run ``call``, which must raise ``error``; return its message, checked to be one line."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def refusal_without_blocking(call: Callable[[], Any], *, fifo: Path) -> str:
    """Like ``refusal``, in a thread: a read that blocks on ``fifo`` fails the test instead of hanging."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test thread below
            outcome["error"] = error
        else:
            outcome["error"] = None

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=_HANG_GUARD_S)
    if thread.is_alive():
        # Release the blocked reader (a writer appears and goes: it reads end of file).
        with contextlib.suppress(OSError):  # no reader at the moment: nothing to release
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=_HANG_GUARD_S)
        pytest.fail(f"reading the FIFO {fifo.name} blocked")
    error = outcome["error"]
    assert isinstance(error, EngineError), f"expected an EngineError, got {error!r}"
    message = str(error)
    assert "\n" not in message
    return message


# --- feature tables ---------------------------------------------------------------------


def test_dictionary_bomb_in_an_unused_column_is_never_decoded(tmp_path: Path) -> None:
    path = write_dictionary_bomb(tmp_path / "bomb.parquet")
    assert path.stat().st_size < 200_000  # 1.3 GB once decoded
    table = load_features(path, limits=TableLimits(max_decoded_bytes=8 * 1024 * 1024))
    assert "notes" not in table.frame.columns and table.n_rows == 20_000


def test_dictionary_bomb_in_a_read_column_is_refused_before_decoding(tmp_path: Path) -> None:
    path = write_dictionary_bomb(tmp_path / "bomb.parquet", column="source")
    message = refusal(lambda: load_features(path), error=FeatureCacheError)
    assert "would decode to 1250.6 MiB (from its string dictionaries)" in message
    assert "over the 512.0 MiB decoded-size cap; not decoded" in message


def test_twenty_million_constant_rows_are_refused_from_the_footer(tmp_path: Path) -> None:
    path = write_constant_rows(tmp_path / "constant.parquet")
    assert path.stat().st_size < 2_000_000
    message = refusal(lambda: load_features(path), error=FeatureCacheError)
    assert message.endswith("declares 20000000 rows, over the 5000000-row cap; not read")


def test_footer_estimate_refuses_a_cache_over_the_decoded_size_cap(tmp_path: Path) -> None:
    path = write_constant_rows(tmp_path / "constant.parquet", rows=100_000)
    limits = TableLimits(max_decoded_bytes=1024 * 1024)
    message = refusal(lambda: load_features(path, limits=limits), error=FeatureCacheError)
    assert "(from its footer), over the 1.0 MiB decoded-size cap" in message


def test_crafted_pandas_metadata_is_ignored(tmp_path: Path) -> None:
    path = write_crafted_pandas_metadata(tmp_path / "pandas.parquet")
    table = load_features(path)
    assert table.n_rows == 16 and table.frame.columns[0] == "adm2"


def test_unreadable_parquet_footer_is_one_line(tmp_path: Path) -> None:
    path = write_crafted_pandas_metadata(tmp_path / "pandas.parquet")
    data = bytearray(path.read_bytes())
    data[-12:-8] = (0x7FFFFFFF).to_bytes(4, "little")  # footer length past the file's start
    path.write_bytes(bytes(data))
    message = refusal(lambda: load_features(path), error=FeatureCacheError)
    assert "not a readable parquet file" in message


def test_cache_with_an_extra_column_hashes_as_without_it(tmp_path: Path) -> None:
    plain = write_constant_rows(tmp_path / "plain.parquet", rows=1000)
    bomb_free = load_features(plain)
    table = pq.read_table(plain)
    extra = table.append_column("frame", table.column("adm2"))
    pq.write_table(extra, tmp_path / "extra.parquet")
    assert load_features(tmp_path / "extra.parquet").content_hash == bomb_free.content_hash


def test_fifo_named_as_a_feature_cache_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "features.parquet"
    os.mkfifo(fifo)
    message = refusal_without_blocking(lambda: load_features(fifo), fifo=fifo)
    assert "not a regular file (a FIFO)" in message


def test_timeline_keeps_at_most_one_decoded_table(tmp_path: Path) -> None:
    first = shutil.copyfile(GOLDEN, tmp_path / "first.parquet")
    second = write_constant_rows(tmp_path / "second.parquet", rows=500)
    one = cached_features(first)
    assert cached_features(first) is one and kept_tables() == 1
    assert cached_features(second).n_rows == 500 and kept_tables() == 1
    assert cached_features(first) is not one  # the first was dropped, so it is read again
    assert kept_tables() == 1


# --- evidence and other inputs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("loso_seed0.json", load_loso_report),
        ("verdict.json", verify_verdict),
        ("registry.json", load_registry),
        ("evidence.json", read_json),
        ("model.onnx", sha256_file),
    ],
)
def test_fifo_as_an_input_file_is_refused_without_blocking(
    tmp_path: Path, name: str, read: Callable[[Path], Any]
) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    message = refusal_without_blocking(lambda: read(fifo), fifo=fifo)
    assert "FIFO" in message and name in message


@pytest.mark.parametrize(
    ("read", "error"),
    [
        (read_json, EvidenceError),
        (load_registry, RegistryError),
        (verify_verdict, EvidenceError),
        (load_features, FeatureCacheError),
        (sha256_file, EvidenceError),
    ],
)
def test_dev_zero_as_an_input_is_refused(
    read: Callable[[Path], Any], error: type[EngineError]
) -> None:
    message = refusal(lambda: read(Path("/dev/zero")), error=error)
    assert "/dev/zero: not a regular file (a character device)" in message


def test_dev_zero_behind_a_symlink_named_as_a_loso_report_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "loso_seed0.json"
    link.symlink_to("/dev/zero")
    message = refusal(lambda: load_loso_report(link), error=EvidenceError)
    assert "resolves outside" in message


def test_dev_zero_named_directly_is_a_character_device() -> None:
    message = refusal(lambda: read_input(Path("/dev/zero"), kind=EVIDENCE_JSON))
    assert message == "/dev/zero: not a regular file (a character device); not read"


def test_hundred_thousand_deep_json_is_one_line(tmp_path: Path) -> None:
    path = write_deep_json(tmp_path / "loso_seed0.json")
    message = refusal(lambda: load_loso_report(path), error=EvidenceError)
    assert message.endswith("invalid JSON: nested too deeply (the limit is 64 levels)")


def test_json_nested_past_the_depth_cap_is_refused_after_parsing(tmp_path: Path) -> None:
    path = write_deep_json(tmp_path / "verdict.json", depth=100)
    message = refusal(lambda: verify_verdict(path), error=EvidenceError)
    assert message.endswith("invalid JSON: nested 100 levels deep, over the limit of 64")
    assert read_json(write_deep_json(tmp_path / "ok.json", depth=64)).value is not None


def test_json_depth_counts_arrays_and_objects() -> None:
    assert json_depth({"a": ["[[[{", {"b": []}]}) == 4


@pytest.mark.parametrize("scalar", [None, 0, 1.5, "[[[", True])
def test_a_bare_scalar_document_nests_nothing_and_is_refused_by_its_schema(
    scalar: object, tmp_path: Path
) -> None:
    """``null`` as a whole evidence file is a schema problem, not a TypeError (found by tests/fuzz)."""
    assert json_depth(scalar) == 0
    path = tmp_path / "loso_seed0.json"
    path.write_text(json.dumps(scalar))
    assert read_json(path).value == scalar
    assert json_depth([]) == 1 and json_depth("x") == 0 and json_depth({"a": 1, "b": [2]}) == 2


@pytest.mark.parametrize("scalar", [None, 0, 1.5, "[[[", True])
def test_a_bare_scalar_document_nests_nothing_and_reads_back(
    scalar: object, tmp_path: Path
) -> None:
    """``null`` as a whole evidence file is for the schema to refuse, not a TypeError (tests/fuzz)."""
    assert json_depth(scalar) == 0
    path = tmp_path / "loso_seed0.json"
    path.write_text(json.dumps(scalar))
    assert read_json(path).value == scalar


def test_deep_registry_is_a_value_error_for_blame() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        row_digest(b"[" * 100_000 + b"]" * 100_000, "m0")


def test_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "loso_seed0.json"
    secret.write_text(json.dumps({"seed": 0}), encoding="utf-8")
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "loso_seed0.json").symlink_to(secret)
    message = refusal(lambda: load_loso_report(evidence / "loso_seed0.json"), error=EvidenceError)
    assert "resolves outside" in message and "symlink" in message
    (evidence / "registry.json").symlink_to(secret)
    assert "resolves outside" in refusal(
        lambda: load_registry(evidence / "registry.json"), error=RegistryError
    )


def test_symlink_inside_the_folder_is_read(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text('{"ok": true}', encoding="utf-8")
    (tmp_path / "alias.json").symlink_to("real.json")
    assert read_json(tmp_path / "alias.json").value == {"ok": True}


def test_evidence_over_its_size_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 100 + "0]", encoding="utf-8")
    message = refusal(lambda: read_json(path, max_bytes=64), error=EvidenceError)
    assert message.endswith("bytes, over the 64-byte limit for evidence JSON")
