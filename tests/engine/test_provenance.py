"""Tests for run provenance."""

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine import __version__
from engine.evidence import schema_problems
from engine.hashing import sha256_bytes, sha256_file, sha256_json
from engine.provenance import (
    PROVENANCE_VERSION,
    Input,
    InputRole,
    build_provenance,
    engine_sha256,
    git_state,
    model_inputs,
    utc_now,
)
from tests.engine import onnx_factory as factory

STARTED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def provenance(
    cwd: Path,
    inputs: Sequence[Path | Input] = (),
    outputs: Sequence[Path] = (),
    argv: Sequence[str] = ("run",),
) -> dict[str, Any]:
    return build_provenance(
        schema="test/doc",
        schema_version=1,
        entrypoint="model-guard test",
        argv=argv,
        inputs=[i if isinstance(i, Input) else Input(i, InputRole.FEATURES) for i in inputs],
        outputs=outputs,
        started=STARTED,
        finished=STARTED + timedelta(seconds=2.5),
        cwd=cwd,
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "f.txt").write_text("one")
    git(root, "add", "f.txt")
    git(root, "commit", "-qm", "first")
    return root


def test_block_has_every_field(tmp_path: Path) -> None:
    block = provenance(tmp_path)
    assert list(block) == [
        "schema",
        "schema_version",
        "provenance_version",
        "entrypoint",
        "entrypoint_sha256",
        "model_guard_version",
        "argv",
        "git",
        "python",
        "packages",
        "platform",
        "inputs",
        "outputs",
        "started",
        "finished",
        "duration_s",
    ]
    assert (block["schema"], block["schema_version"]) == ("test/doc", 1)
    assert block["entrypoint"] == "model-guard test"
    assert block["model_guard_version"] == __version__
    assert block["started"] == "2024-05-01T12:00:00.000Z"
    assert block["finished"] == "2024-05-01T12:00:02.500Z"
    assert block["duration_s"] == 2.5
    assert block["python"] and block["platform"]["machine"] and block["platform"]["system"]
    assert set(block["packages"]) == {
        "numpy",
        "scipy",
        "pandas",
        "pyarrow",
        "onnx",
        "onnxruntime",
        "jsonschema",
        "torch",
    }
    assert block["packages"]["jsonschema"] is not None
    json.dumps(block, allow_nan=False)


def test_times_in_other_zones_are_written_in_utc(tmp_path: Path) -> None:
    east = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    block = build_provenance(
        schema="s",
        schema_version=1,
        entrypoint="e",
        argv=[],
        inputs=[],
        outputs=[],
        started=east,
        finished=east,
        cwd=tmp_path,
    )
    assert block["started"] == "2024-05-01T12:00:00.000Z" and block["duration_s"] == 0


def test_utc_now_is_timezone_aware() -> None:
    assert utc_now().utcoffset() == timedelta(0)


def test_inputs_and_outputs_are_hashed(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"abc")
    (tmp_path / "out.json").write_bytes(b"{}")
    block = provenance(tmp_path, [tmp_path / "in.bin"], [tmp_path / "out.json"])
    assert block["inputs"] == [
        {"path": "in.bin", "role": "features", "size": 3, "sha256": sha256_bytes(b"abc")}
    ]
    assert block["outputs"] == [{"path": "out.json", "size": 2, "sha256": sha256_bytes(b"{}")}]


def test_missing_input_is_flagged_not_fatal(tmp_path: Path) -> None:
    block = provenance(tmp_path, [tmp_path / "gone.bin"])
    assert block["inputs"] == [
        {"path": "gone.bin", "role": "features", "size": None, "sha256": None, "missing": True}
    ]


def test_folder_input_expands_to_sorted_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b").write_bytes(b"2")
    (tmp_path / "d" / "a").write_bytes(b"1")
    (tmp_path / "d" / "sub" / "c").write_bytes(b"3")
    paths = [i["path"] for i in provenance(tmp_path, [tmp_path / "d"])["inputs"]]
    assert paths == ["d/a", "d/b", "d/sub/c"]


def test_an_input_given_twice_is_listed_once(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"abc")
    block = provenance(tmp_path, [tmp_path / "in.bin", Path("in.bin")])
    assert [i["path"] for i in block["inputs"]] == ["in.bin"]


def test_relative_inputs_and_argv_are_read_against_the_given_cwd(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"abc")
    block = provenance(tmp_path, [Path("in.bin")], argv=["--features", "in.bin"])
    assert block["inputs"][0]["sha256"] == sha256_bytes(b"abc")
    assert block["argv"] == ["--features", "in.bin"]


def test_argv_paths_inside_the_working_folder_become_relative(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"abc")
    argv = [
        "run",
        str(tmp_path / "in.bin"),
        f"--registry={tmp_path / 'in.bin'}",
        str(tmp_path / "not-yet" / "report.json"),
        "0.9",
        "--statistical",
    ]
    block = provenance(tmp_path, argv=argv)
    assert block["argv"] == [
        "run",
        "in.bin",
        "--registry=in.bin",
        "not-yet/report.json",
        "0.9",
        "--statistical",
    ]


def test_argv_paths_under_home_but_outside_the_anchor_are_shown_from_tilde(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "data").mkdir(parents=True)
    work.mkdir()
    (home / "data" / "f.parquet").write_bytes(b"x")
    monkeypatch.setenv("HOME", str(home))
    block = provenance(work, [home / "data" / "f.parquet"], argv=[str(home / "data" / "f.parquet")])
    assert block["argv"] == ["~/data/f.parquet"]
    assert block["inputs"][0]["path"] == "~/data/f.parquet"


def test_paths_outside_anchor_and_home_are_kept_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    other = str(tmp_path / "elsewhere" / "x.json")
    assert provenance(tmp_path / "work", argv=[other])["argv"] == [other]


def test_git_block_is_none_outside_a_checkout(tmp_path: Path) -> None:
    assert provenance(tmp_path)["git"] is None
    assert git_state(tmp_path) is None


def test_git_block_is_none_when_git_is_missing(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(checkout / "no-bin-here"))
    assert provenance(checkout)["git"] is None


def test_git_block_tracks_commit_and_dirty_flag(checkout: Path) -> None:
    clean = provenance(checkout)["git"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert clean == {"commit": head, "dirty": False}
    (checkout / "f.txt").write_text("two")
    assert provenance(checkout)["git"] == {"commit": head, "dirty": True}


def test_untracked_files_do_not_make_the_checkout_dirty(checkout: Path) -> None:
    (checkout / "report.json").write_text("{}")
    assert provenance(checkout)["git"]["dirty"] is False


def test_paths_are_made_relative_to_the_git_top_level_from_a_subfolder(checkout: Path) -> None:
    (checkout / "sub").mkdir()
    (checkout / "sub" / "in.bin").write_bytes(b"abc")
    block = provenance(checkout / "sub", [Path("in.bin")], argv=["in.bin"])
    assert block["argv"] == ["sub/in.bin"]
    assert block["inputs"][0]["path"] == "sub/in.bin"


def test_block_records_the_engine_package_hash_as_the_entrypoint_hash(tmp_path: Path) -> None:
    import engine

    block = provenance(tmp_path)
    assert block["provenance_version"] == PROVENANCE_VERSION == 2
    assert block["entrypoint_sha256"] == engine_sha256()
    package = Path(engine.__file__).parent
    files = sorted(
        p
        for p in package.rglob("*")
        if p.suffix in {".py", ".json"} and "__pycache__" not in p.parts
    )
    expected = sha256_json({f.relative_to(package).as_posix(): sha256_file(f) for f in files})
    assert block["entrypoint_sha256"] == expected
    assert "cli.py" in {f.name for f in files} and "registry.schema.json" in {f.name for f in files}


def test_every_input_carries_its_role(tmp_path: Path) -> None:
    for name in ("r.json", "f.parquet", "m.onnx", "seed.json"):
        (tmp_path / name).write_bytes(name.encode())
    block = provenance(
        tmp_path,
        [
            Input(tmp_path / "r.json", InputRole.REGISTRY),
            Input(tmp_path / "f.parquet", InputRole.FEATURES),
            Input(tmp_path / "m.onnx", InputRole.MODEL),
            Input(tmp_path / "seed.json", InputRole.LOSO_REPORT),
        ],
    )
    assert [(i["path"], i["role"]) for i in block["inputs"]] == [
        ("r.json", "registry"),
        ("f.parquet", "features"),
        ("m.onnx", "model"),
        ("seed.json", "loso_report"),
    ]


def test_model_inputs_list_the_external_data_the_graph_reads(tmp_path: Path) -> None:
    model = factory.save_external(factory.linear_model(), tmp_path / "m.onnx", location="w.bin")
    plain = factory.save(factory.linear_model(), tmp_path / "plain.onnx")
    found = model_inputs([model, plain])
    assert found == [
        Input(model, InputRole.MODEL),
        Input(tmp_path / "w.bin", InputRole.EXTERNAL_DATA),
        Input(plain, InputRole.MODEL),
    ]


def test_block_validates_against_the_provenance_schema(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"abc")
    block = provenance(
        tmp_path, [tmp_path / "in.bin", tmp_path / "gone.bin"], [tmp_path / "in.bin"]
    )
    assert schema_problems(block, "run-provenance.schema.json") == []
    block["inputs"][0]["role"] = "surprise"
    assert schema_problems(block, "run-provenance.schema.json") != []


def _bisect_inputs(tmp_path: Path, name: str, *source: str) -> list[dict[str, Any]]:
    from engine.cli import main

    out = tmp_path / f"{name}.json"
    features = Path(__file__).resolve().parents[2] / "testdata" / "bisect" / "features.parquet"
    main(
        [
            "bisect",
            *source,
            "--features",
            str(features),
            "--min-plcc",
            "0.5",
            "--no-cache",
            "--json",
            str(out),
        ]
    )
    block = json.loads(out.read_text())["run_provenance"]
    assert schema_problems(block, "run-provenance.schema.json") == []
    return list(block["inputs"])


def test_models_runs_with_different_external_weights_record_different_inputs(
    tmp_path: Path,
) -> None:
    import numpy as np

    model = tmp_path / "m.onnx"
    factory.save_external(factory.linear_model(), model, location="w.bin")
    first = _bisect_inputs(tmp_path, "first", "--models", str(model))
    graph = model.read_bytes()
    (tmp_path / "w.bin").unlink()  # onnx appends to an existing external file
    factory.save_external(
        factory.linear_model(np.full((6, 1), 2.0, np.float32)), model, location="w.bin"
    )
    assert model.read_bytes() == graph, "only the weights changed"
    second = _bisect_inputs(tmp_path, "second", "--models", str(model))
    roles = [(i["path"].rsplit("/", 1)[-1], i["role"]) for i in first]
    assert roles == [
        ("features.parquet", "features"),
        ("m.onnx", "model"),
        ("w.bin", "external_data"),
    ]
    assert first[1] == second[1] and first[2] != second[2]
    assert second[2]["sha256"] == sha256_file(tmp_path / "w.bin")


def test_registry_run_records_the_registry_the_cache_and_each_visited_model_by_role(
    tmp_path: Path,
) -> None:
    registry = (
        Path(__file__).resolve().parents[2] / "testdata" / "bisect" / "allgood" / "registry.json"
    )
    inputs = _bisect_inputs(tmp_path, "run", "--registry", str(registry))
    roles = [i["role"] for i in inputs]
    assert roles[:2] == ["registry", "features"] and set(roles[2:]) == {"model"}
