"""Tests for run provenance and the atomic JSON writer."""

import math
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from engine.errors import ReportError
from engine.hashing import sha256_bytes
from engine.provenance import build_provenance, utc_now, write_json


def provenance(tmp_path: Path, inputs: list[Path], outputs: list[Path] = ()) -> dict:
    started = utc_now()
    return build_provenance(
        schema="test/doc",
        schema_version=1,
        entrypoint="model-guard test",
        argv=["run", str(tmp_path / "in.bin")],
        inputs=inputs,
        outputs=list(outputs),
        started=started,
        finished=started + timedelta(seconds=2),
        cwd=tmp_path,
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_block_has_every_field_and_hashes_inputs(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"abc")
    block = provenance(tmp_path, [tmp_path / "in.bin"])
    assert block["schema"] == "test/doc" and block["model_guard_version"]
    assert block["inputs"] == [{"path": "in.bin", "size": 3, "sha256": sha256_bytes(b"abc")}]
    assert block["argv"] == ["run", "in.bin"], "paths inside the working folder are made relative"
    assert block["started"].endswith("Z") and block["duration_s"] == 2.0
    assert set(block["packages"]) >= {"numpy", "onnxruntime", "torch"}
    assert block["python"] and block["platform"]["machine"]


def test_missing_input_is_flagged_not_fatal(tmp_path: Path) -> None:
    block = provenance(tmp_path, [tmp_path / "gone.bin"])
    assert block["inputs"] == [
        {"path": str(tmp_path / "gone.bin"), "size": None, "sha256": None, "missing": True}
    ]


def test_folder_input_expands_to_sorted_files(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"2")
    (tmp_path / "d" / "a").write_bytes(b"1")
    assert [i["path"] for i in provenance(tmp_path, [tmp_path / "d"])["inputs"]] == ["d/a", "d/b"]


def test_git_block_tracks_commit_and_dirty_flag(tmp_path: Path) -> None:
    assert provenance(tmp_path, [])["git"] is None
    git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("one")
    git(tmp_path, "add", "f.txt")
    git(tmp_path, "commit", "-qm", "first")
    clean = provenance(tmp_path, [])["git"]
    assert clean is not None and len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "f.txt").write_text("two")
    assert provenance(tmp_path, [])["git"]["dirty"] is True


def test_write_json_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "doc.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert target.read_text() == '{\n  "a": 2\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["doc.json"]


def test_write_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="NaN"):
        write_json(tmp_path / "doc.json", {"plcc": math.nan})
    assert not (tmp_path / "doc.json").exists()
