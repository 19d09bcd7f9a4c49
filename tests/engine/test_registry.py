"""Tests for registry.json: every problem is found and located by its JSON pointer."""

import json
import os
from pathlib import Path

import pytest

from engine.errors import RegistryError
from engine.hashing import sha256_bytes
from engine.registry import RegistryInvalid, load_registry, validate_registry


def model_row(index: int, data: bytes, **changes: object) -> dict:
    row = {
        "id": f"m{index}",
        "kind": "fr",
        "onnx": f"m{index}.onnx",
        "sha256": sha256_bytes(data),
        "smoke": True,
        "opset": 17,
        "license": "MIT",
        "timeline": index,
    }
    row.update(changes)
    return row


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for index in range(3):
        (tmp_path / f"m{index}.onnx").write_bytes(f"model {index}".encode())
    return tmp_path


def write(folder: Path, rows: list[dict], **top: object) -> Path:
    path = folder / "registry.json"
    path.write_text(json.dumps({"schema_version": 1, "models": rows, **top}))
    return path


def rows(folder: Path) -> list[dict]:
    return [model_row(i, (folder / f"m{i}.onnx").read_bytes()) for i in range(3)]


def pointers(path: Path) -> list[str]:
    return [problem.pointer for problem in validate_registry(path)]


def test_valid_registry_loads_in_timeline_order_whatever_the_file_order(folder: Path) -> None:
    given = rows(folder)
    given[0]["timeline"], given[2]["timeline"] = 20, 0
    registry = load_registry(write(folder, given))
    assert [m.id for m in registry.models] == ["m2", "m1", "m0"]
    assert registry.models[0].pointer == "/models/2"
    assert validate_registry(folder / "registry.json") == []


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"smoke": "yes"}, "/models/1/smoke"),
        ({"opset": 22}, "/models/1/opset"),
        ({"surprise": 1}, "/models/1"),
        ({"sha256": "XYZ"}, "/models/1/sha256"),
        ({"onnx": "/etc/passwd.onnx"}, "/models/1/onnx"),
        ({"onnx": "../m1.onnx"}, "/models/1/onnx"),
        ({"onnx": "sub\\m1.onnx"}, "/models/1/onnx"),
        ({"id": "m0"}, "/models/1/id"),
        ({"timeline": 0}, "/models/1/timeline"),
        ({"sha256": "0" * 64}, "/models/1/sha256"),
        ({"onnx": "gone.onnx"}, "/models/1/onnx"),
    ],
)
def test_each_problem_is_located_by_json_pointer(folder: Path, change: dict, pointer: str) -> None:
    given = rows(folder)
    given[1].update(change)
    path = write(folder, given)
    found = validate_registry(path)
    assert pointer in [p.pointer for p in found]
    assert all("\n" not in str(p) for p in found)
    if change.get("sha256") != "0" * 64 and change.get("onnx") != "gone.onnx":
        with pytest.raises(RegistryError):
            load_registry(path)


def test_missing_required_field_is_reported_at_the_model(folder: Path) -> None:
    given = rows(folder)
    del given[2]["license"]
    found = validate_registry(write(folder, given))
    assert [(p.pointer, "license" in p.message) for p in found] == [("/models/2", True)]


def test_symlink_escaping_the_folder_is_refused(
    folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.onnx"
    outside.write_bytes(b"secret")
    os.symlink(outside, folder / "link.onnx")
    given = rows(folder)
    given[0].update(onnx="link.onnx", sha256=sha256_bytes(b"secret"))
    assert "/models/0/onnx" in pointers(write(folder, given))


def test_external_data_missing_and_mismatched_are_both_reported(folder: Path) -> None:
    (folder / "w1.bin").write_bytes(b"weights")
    given = rows(folder)
    given[1]["external_data"] = [
        {"path": "w1.bin", "sha256": "1" * 64},
        {"path": "w2.bin", "sha256": "2" * 64},
    ]
    found = pointers(write(folder, given))
    assert found == ["/models/1/external_data/0/sha256", "/models/1/external_data/1/path"]


def test_external_data_path_with_separator_is_a_schema_error(folder: Path) -> None:
    given = rows(folder)
    given[0]["external_data"] = [{"path": "../w.bin", "sha256": "1" * 64}]
    assert pointers(write(folder, given)) == ["/models/0/external_data/0/path"]


def test_several_problems_are_collected_at_once(folder: Path) -> None:
    given = rows(folder)
    given[0]["sha256"] = "0" * 64
    given[2]["timeline"] = 1
    (folder / "m1.onnx").unlink()
    assert pointers(write(folder, given)) == [
        "/models/0/sha256",
        "/models/1/onnx",
        "/models/2/timeline",
    ]


def test_invalid_json_names_line_and_column(folder: Path) -> None:
    path = folder / "registry.json"
    path.write_text('{"schema_version": 1,\n "models": [}')
    [problem] = validate_registry(path)
    assert "line 2 column" in problem.message
    with pytest.raises(RegistryError, match="line 2 column"):
        load_registry(path)


def test_empty_model_list_is_refused(folder: Path) -> None:
    assert pointers(write(folder, [])) == ["/models"]


def test_registry_that_is_not_a_file_or_too_large_is_refused(folder: Path) -> None:
    with pytest.raises(RegistryError, match="not a regular file"):
        load_registry(folder)
    with pytest.raises(RegistryError, match="no such file"):
        load_registry(folder / "nope.json")
    big = folder / "big.json"
    big.write_bytes(b" " * (5 * 1024 * 1024))
    with pytest.raises(RegistryError, match="limit"):
        load_registry(big)


def test_registry_invalid_carries_every_problem(folder: Path) -> None:
    given = rows(folder)
    given[0]["smoke"] = "no"
    given[1]["opset"] = 99
    with pytest.raises(RegistryInvalid) as caught:
        load_registry(write(folder, given))
    assert len(caught.value.problems) == 2
    assert "and 1 more" in str(caught.value)


def test_bundled_timelines_validate() -> None:
    root = Path(__file__).resolve().parents[2] / "testdata" / "bisect"
    assert validate_registry(root / "regression" / "registry.json") == []
    assert validate_registry(root / "allgood" / "registry.json") == []
