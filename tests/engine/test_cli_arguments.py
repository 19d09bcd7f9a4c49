"""Hostile argument values are refused while parsing (one line, bad-input exit); outputs are atomic."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.errors import ReportError
from engine.evidence import write_bytes, write_json, write_parquet

HOSTILE = ("nan", "NaN", "inf", "-inf", "-1", "1e308", "9" * 30, "", "  ", "abc", "0x10")
# Values some options accept: a correlation threshold may be -1, a float option 0x10 never.
CORRELATION_OK = frozenset({"-1"})


def _inputs(tmp: Path) -> dict[str, str]:
    """Existing files and folders for every required path, so only the hostile value is wrong."""
    (tmp / "loso").mkdir()
    for name in ("features.parquet", "m.onnx", "registry.json", "PROMOTE.json"):
        (tmp / name).write_bytes(b"x")
    return {
        "loso": str(tmp / "loso"),
        "features": str(tmp / "features.parquet"),
        "model": str(tmp / "m.onnx"),
        "verdict": str(tmp / "PROMOTE.json"),
        "out": str(tmp / "out"),
    }


# command words, required arguments (formatted with _inputs), bad-input exit code, options.
_GATE = (
    "--mean-plcc",
    "--max-spread",
    "--per-seed-min",
    "--per-fold-min",
    "--seeds",
    "--min-sources",
)
COMMANDS = [
    (
        ["bisect"],
        ["--features", "{features}", "--models", "{model}"],
        1,
        (
            "--min-plcc",
            "--min-srocc",
            "--max-rmse",
            "--bootstrap",
            "--confidence",
            "--seed",
            "--max-model-mib",
            "--threads",
            "--max-memory-mib",
            "--model-timeout",
        ),
    ),
    (["cache", "build"], ["--synthetic", "--out", "{out}"], 1, ("--seed", "--jobs")),
    (
        ["ensemble", "train"],
        ["--features", "{features}", "--id", "e", "--out", "{out}"],
        1,
        ("--members", "--base-seed", "--epochs", "--nominal"),
    ),
    (["gate"], ["{loso}"], 2, _GATE),
    (
        ["verdict"],
        ["{loso}", "--features", "{features}", "--models", "{model}"],
        2,
        _GATE,
    ),
    (["verdict", "verify"], ["{verdict}"], 2, (*_GATE, "--min-seeds")),
    (["loso"], ["--features", "{features}", "--out", "{out}"], 1, ("--epochs", "--seeds")),
    (
        ["ensemble", "eval"],
        ["--manifest", "{verdict}", "--features", "{features}"],
        2,
        ("--max-memory-mib", "--model-timeout"),
    ),
]
CASES = [
    pytest.param(words, required, code, option, value, id=f"{' '.join(words)} {option}={value!r}")
    for words, required, code, options in COMMANDS
    for option in options
    for value in HOSTILE
    if not (value in CORRELATION_OK and option in {*_GATE[:4], "--min-plcc", "--min-srocc"})
]


def _assert_one_line_refusal(
    capsys: pytest.CaptureFixture[str], code: int, expected: int, *mentions: str
) -> str:
    """The run exited with the bad-input code and said why on exactly one stderr line."""
    captured = capsys.readouterr()
    assert code == expected, captured.err
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("model-guard: error: ")
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    for mention in mentions:
        assert mention in lines[0]
    return lines[0]


@pytest.mark.parametrize(("words", "required", "code", "option", "value"), CASES)
def test_hostile_numeric_value_is_refused_in_one_line_naming_the_option(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    words: list[str],
    required: list[str],
    code: int,
    option: str,
    value: str,
) -> None:
    paths = _inputs(tmp_path)
    argv = [*words, f"{option}={value}", *(arg.format_map(paths) for arg in required)]
    _assert_one_line_refusal(capsys, main(argv), code, f"argument {option}:")
    assert not (tmp_path / "out").exists()


def test_thread_count_over_the_cpu_count_is_refused_naming_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _inputs(tmp_path)
    argv = ["bisect", "--threads", "10000", "--features", paths["features"]]
    code = main([*argv, "--models", paths["model"]])
    _assert_one_line_refusal(capsys, code, 1, "--threads", f"between 1 and {os.cpu_count()}")


def test_valid_boundary_values_parse(tmp_path: Path) -> None:
    from engine.cli import build_parser

    paths = _inputs(tmp_path)
    args = build_parser().parse_args(
        ["gate", paths["loso"], "--mean-plcc", "-1", "--max-spread", "0", "--seeds", "0-2,7"]
    )
    assert (args.mean_plcc, args.max_spread, args.seeds) == (-1.0, 0.0, (0, 1, 2, 7))
    bisect = build_parser().parse_args(
        [
            *("bisect", "--models", paths["model"], "--features", paths["features"]),
            *("--min-plcc", "0.9", "--bootstrap", "0", "--seed", str(2**32 - 1), "--threads", "1"),
        ]
    )
    assert (bisect.bootstrap, bisect.seed, bisect.threads) == (0, 2**32 - 1, 1)


@pytest.mark.parametrize(
    ("argv", "code", "mention"),
    [
        (["gate", "{tmp}/missing"], 2, "missing: not found"),
        (["gate", "{tmp}/features.parquet"], 2, "is not a folder"),
        (["verdict", "verify", "{tmp}/nothing.json"], 2, "nothing.json: not found"),
        (["bisect", "--models", "{tmp}/m.onnx", "--features", "{tmp}/no.parquet"], 1, "not found"),
        (
            ["loso", "--features", "{tmp}/features.parquet", "--out", "{tmp}/m.onnx/x"],
            1,
            "is a file",
        ),
        (["gate", "{tmp}/loso", "--json", "{tmp}/loso"], 2, "is a folder"),
        (["gate", "{tmp}/loso", "--json", "{tmp}/m.onnx/r.json"], 2, "is a file, not a folder"),
        (["ensemble", "eval", "--manifest", "", "--features", "{tmp}/m.onnx"], 2, "empty"),
        (["cache", "check", "{tmp}/nowhere"], 1, "not found"),
    ],
)
def test_missing_inputs_and_impossible_outputs_are_refused_while_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, mention: str
) -> None:
    _inputs(tmp_path)
    filled = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    _assert_one_line_refusal(capsys, main(filled), code, mention)


def _no_temporary_files(folder: Path) -> bool:
    return not [path.name for path in folder.iterdir() if path.name.endswith(".tmp")]


def test_write_bytes_interrupted_after_writing_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    write_json(target, {"run": 1})
    before = target.read_bytes()

    def crash(fd: int) -> None:  # the data is written, the flush to disk fails
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("engine.evidence.os.fsync", crash)
    with pytest.raises(ReportError, match=r"cannot write .*report\.json: Input/output error"):
        write_json(target, {"run": 2, "longer": "x" * 10_000})
    assert target.read_bytes() == before
    assert _no_temporary_files(tmp_path)


def test_write_parquet_interrupted_midway_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "features.parquet"
    write_parquet(target, pa.table({"x": [1.0, 2.0]}))
    before = target.read_bytes()

    def half_then_crash(table: pa.Table, sink: pa.BufferOutputStream, **_: object) -> None:
        sink.write(b"PAR1 half a file")
        raise pa.ArrowInvalid("disk gremlin")

    monkeypatch.setattr(pq, "write_table", half_then_crash)
    with pytest.raises(ReportError, match="disk gremlin"):
        write_parquet(target, pa.table({"x": [3.0]}))
    assert target.read_bytes() == before
    assert _no_temporary_files(tmp_path)


def test_write_bytes_interrupted_by_keyboard_interrupt_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.onnx"
    write_bytes(target, b"old model")

    def interrupt(source: object, destination: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("engine.evidence.os.replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_bytes(target, b"new model")
    assert target.read_bytes() == b"old model"
    assert _no_temporary_files(tmp_path)


def test_cache_build_interrupted_in_the_parquet_writer_keeps_the_previous_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cache"
    assert main(["cache", "build", "--synthetic", "--seed", "0", "--out", str(out)]) == 0
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    capsys.readouterr()

    def crash(table: pa.Table, sink: pa.BufferOutputStream, **_: object) -> None:
        sink.write(b"PAR1")
        raise pa.ArrowInvalid("interrupted")

    monkeypatch.setattr(pq, "write_table", crash)
    code = main(["cache", "build", "--synthetic", "--seed", "0", "--out", str(out)])
    _assert_one_line_refusal(capsys, code, 1, "features.parquet", "interrupted")
    after = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after == before
