"""Tests for registry.json: every problem is found and located by its JSON pointer."""

import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine.errors import RegistryError
from engine.hashing import sha256_bytes
from engine.registry import (
    MAX_REGISTRY_BYTES,
    Problem,
    RegistryInvalid,
    load_registry,
    registry_schema,
    validate_registry,
)
from tests.engine import onnx_factory as factory

BISECT = Path(__file__).resolve().parents[2] / "testdata" / "bisect"


def model_row(index: int, data: bytes, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
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
    root = tmp_path / "reg"
    root.mkdir()
    for index in range(3):
        (root / f"m{index}.onnx").write_bytes(model_bytes(index))
    return root


def model_bytes(index: int) -> bytes:
    """A real, safe ONNX model (validate runs the bisect's safety check), distinct per index."""
    return factory.linear_model(bias=float(index)).SerializeToString()


def write(folder: Path, rows: list[dict[str, Any]], **top: Any) -> Path:
    path = folder / "registry.json"
    path.write_text(json.dumps({"schema_version": 1, "models": rows, **top}))
    return path


def rows(folder: Path) -> list[dict[str, Any]]:
    return [model_row(i, (folder / f"m{i}.onnx").read_bytes()) for i in range(3)]


def pointers(path: Path) -> list[str]:
    return [problem.pointer for problem in validate_registry(path)]


def load_problems(path: Path) -> list[str]:
    with pytest.raises(RegistryInvalid) as caught:
        load_registry(path)
    return [problem.pointer for problem in caught.value.problems]


def test_valid_registry_loads_in_timeline_order_whatever_the_file_order(folder: Path) -> None:
    given = rows(folder)
    given[0]["timeline"], given[2]["timeline"] = 20, 0
    registry = load_registry(write(folder, given, description="three models"))
    assert [m.id for m in registry.models] == ["m2", "m1", "m0"]
    assert [m.pointer for m in registry.models] == ["/models/2", "/models/1", "/models/0"]
    assert registry.root == folder and registry.schema_version == 1
    assert registry.models[0].onnx_path(registry.root) == folder / "m2.onnx"
    assert validate_registry(folder / "registry.json") == []


def test_entry_exposes_external_data_as_a_name_to_hash_map(folder: Path) -> None:
    factory.save_external(factory.linear_model(), folder / "m0.onnx", location="m0.onnx.data")
    weights = (folder / "m0.onnx.data").read_bytes()
    given = rows(folder)
    given[0]["external_data"] = [{"path": "m0.onnx.data", "sha256": sha256_bytes(weights)}]
    given[0]["notes"] = "int8"
    entry = load_registry(write(folder, given)).models[0]
    assert entry.external_map() == {"m0.onnx.data": sha256_bytes(weights)}
    assert entry.notes == "int8" and entry.external_data[0].path == "m0.onnx.data"
    assert validate_registry(folder / "registry.json") == []


def test_external_data_the_graph_reads_but_the_row_does_not_list_is_a_problem(
    folder: Path,
) -> None:
    factory.save_external(factory.linear_model(), folder / "m0.onnx", location="w.bin")
    given = rows(folder)
    [problem] = validate_registry(write(folder, given))
    assert str(problem) == (
        "registry.json#/models/0/onnx: external data file 'w.bin' is not listed in the registry"
    )


def test_external_data_the_row_lists_but_the_graph_does_not_read_is_a_problem(
    folder: Path,
) -> None:
    (folder / "w.bin").write_bytes(b"stale weights")
    given = rows(folder)
    given[0]["external_data"] = [{"path": "w.bin", "sha256": sha256_bytes(b"stale weights")}]
    [problem] = validate_registry(write(folder, given))
    assert str(problem) == (
        "registry.json#/models/0/external_data/0/path: "
        "external data file w.bin is listed but m0.onnx does not read it"
    )


def test_codec_width_that_contradicts_the_vocabulary_is_a_problem_at_the_width(
    folder: Path,
) -> None:
    given = rows(folder)
    given[1]["codec"] = {"vocabulary_version": 1, "width": 7}
    [problem] = validate_registry(write(folder, given))
    assert str(problem) == (
        "registry.json#/models/1/codec/width: "
        "registry says the codec block is 7 wide, vocabulary v1 is 6"
    )


def test_model_failing_the_safety_check_is_a_problem_at_its_onnx_path(folder: Path) -> None:
    (folder / "m2.onnx").write_bytes(b"not onnx at all")
    given = rows(folder)
    given[2]["sha256"] = sha256_bytes(b"not onnx at all")
    [problem] = validate_registry(write(folder, given))
    assert problem.pointer == "/models/2/onnx"
    assert problem.message.startswith("not a valid ONNX file")


def test_integral_floats_are_read_as_integers(folder: Path) -> None:
    given = rows(folder)
    given[1].update(timeline=1.0, opset=17.0)
    entry = load_registry(write(folder, given)).models[1]
    assert (entry.timeline, entry.opset) == (1, 17)
    assert type(entry.timeline) is int and type(entry.opset) is int


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"smoke": "yes"}, "/models/1/smoke"),
        ({"opset": 22}, "/models/1/opset"),
        ({"timeline": -1}, "/models/1/timeline"),
        ({"timeline": 1.5}, "/models/1/timeline"),
        ({"license": ""}, "/models/1/license"),
        ({"kind": "FR"}, "/models/1/kind"),
        ({"id": "-m1"}, "/models/1/id"),
        ({"id": "m1\n"}, "/models/1/id"),
        ({"sha256": "XYZ"}, "/models/1/sha256"),
        ({"sha256": "A" * 64}, "/models/1/sha256"),
        ({"onnx": "m1.pt"}, "/models/1/onnx"),
        ({"surprise": 1}, "/models/1/surprise"),
        ({"external_data": [{"path": "w.bin"}]}, "/models/1/external_data/0"),
        (
            {"external_data": [{"path": "a/w.bin", "sha256": "1" * 64}]},
            "/models/1/external_data/0/path",
        ),
    ],
)
def test_schema_violation_is_located_at_the_offending_field(
    folder: Path, change: dict[str, Any], pointer: str
) -> None:
    given = rows(folder)
    given[1].update(change)
    path = write(folder, given)
    assert pointers(path) == [pointer]
    assert load_problems(path) == [pointer]


def test_missing_required_field_is_reported_at_its_model(folder: Path) -> None:
    given = rows(folder)
    del given[2]["license"]
    [problem] = validate_registry(write(folder, given))
    assert problem.pointer == "/models/2" and "'license'" in problem.message


def test_additional_property_is_named_with_the_allowed_ones(folder: Path) -> None:
    given = rows(folder)
    given[0]["sha"] = given[0].pop("sha256")
    found = validate_registry(write(folder, given))
    assert [p.pointer for p in found] == ["/models/0", "/models/0/sha"]
    assert "allowed: id, kind" in found[1].message


def test_unsupported_schema_version_says_which_one_is_read(folder: Path) -> None:
    path = folder / "registry.json"
    path.write_text(json.dumps({"schema_version": 2, "models": rows(folder)}))
    [problem] = validate_registry(path)
    assert problem == Problem(
        "/schema_version", "unsupported schema_version 2: this model-guard reads schema_version 1"
    )


def test_duplicate_id_is_reported_at_the_second(folder: Path) -> None:
    given = rows(folder)
    given[2]["id"] = "m0"
    [problem] = validate_registry(write(folder, given))
    assert problem.pointer == "/models/2/id" and "/models/0" in problem.message


def test_timeline_tie_is_an_error_at_the_second(folder: Path) -> None:
    given = rows(folder)
    given[2]["timeline"] = 1
    path = write(folder, given)
    assert pointers(path) == ["/models/2/timeline"]
    assert load_problems(path) == ["/models/2/timeline"]


@pytest.mark.parametrize(
    ("onnx", "why"),
    [
        ("/etc/passwd.onnx", "not absolute"),
        ("C:/models/m1.onnx", "not absolute"),
        ("../m1.onnx", "'..'"),
        ("sub/../../m1.onnx", "'..'"),
        ("sub\\m1.onnx", "'/' separators"),
        ("~/m1.onnx", "'~'"),
    ],
)
def test_unsafe_model_path_is_refused_by_load_and_validate(
    folder: Path, onnx: str, why: str
) -> None:
    given = rows(folder)
    given[1]["onnx"] = onnx
    path = write(folder, given)
    [problem] = validate_registry(path)
    assert problem.pointer == "/models/1/onnx" and why in problem.message
    assert load_problems(path) == ["/models/1/onnx"]


def test_symlink_escaping_the_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"secret")
    os.symlink(outside, folder / "link.onnx")
    given = rows(folder)
    given[0].update(onnx="link.onnx", sha256=sha256_bytes(b"secret"))
    path = write(folder, given)
    [problem] = validate_registry(path)
    assert problem.pointer == "/models/0/onnx" and "outside the registry folder" in problem.message
    assert load_problems(path) == ["/models/0/onnx"]


def test_symlink_inside_the_folder_is_accepted(folder: Path) -> None:
    (folder / "sub").mkdir()
    os.symlink(folder / "m0.onnx", folder / "sub" / "alias.onnx")
    given = rows(folder)
    given[0]["onnx"] = "sub/alias.onnx"
    assert validate_registry(write(folder, given)) == []


def test_symlink_loop_is_a_problem_not_a_crash(folder: Path) -> None:
    os.symlink("loop", folder / "loop")
    given = rows(folder)
    given[0]["onnx"] = "loop/m0.onnx"
    [problem] = validate_registry(write(folder, given))
    assert problem.pointer == "/models/0/onnx"


def test_missing_model_file_is_reported_by_validate_but_not_by_load(folder: Path) -> None:
    (folder / "m1.onnx").unlink()
    path = write(folder, rows_with_hash(folder))
    [problem] = validate_registry(path)
    assert problem.pointer == "/models/1/onnx" and "not found" in problem.message
    assert len(load_registry(path).models) == 3


def rows_with_hash(folder: Path) -> list[dict[str, Any]]:
    return [model_row(i, model_bytes(i)) for i in range(3)]


def test_model_path_that_is_a_folder_is_not_a_regular_file(folder: Path) -> None:
    (folder / "dir.onnx").mkdir()
    given = rows(folder)
    given[0]["onnx"] = "dir.onnx"
    [problem] = validate_registry(write(folder, given))
    assert problem.pointer == "/models/0/onnx" and "not a regular file" in problem.message


def test_sha256_mismatch_is_reported_with_both_hashes(folder: Path) -> None:
    given = rows(folder)
    given[1]["sha256"] = "0" * 64
    path = write(folder, given)
    [problem] = validate_registry(path)
    actual = sha256_bytes(model_bytes(1))
    assert str(problem) == (
        f"registry.json#/models/1/sha256: sha256 mismatch: registry says 000000000000…, "
        f"file has {actual[:12]}…"
    )
    assert load_registry(path).models[1].sha256 == "0" * 64, "load does not hash"


def test_external_data_missing_and_mismatched_are_both_reported(folder: Path) -> None:
    (folder / "w1.bin").write_bytes(b"weights")
    given = rows(folder)
    given[1]["external_data"] = [
        {"path": "w1.bin", "sha256": "1" * 64},
        {"path": "w2.bin", "sha256": "2" * 64},
    ]
    found = validate_registry(write(folder, given))
    assert [p.pointer for p in found] == [
        "/models/1/external_data/0/sha256",
        "/models/1/external_data/1/path",
    ]
    assert "not found beside m1.onnx" in found[1].message


def test_external_data_is_looked_up_beside_the_model_not_the_registry(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "m.onnx").write_bytes(model_bytes(0))
    (folder / "w.bin").write_bytes(b"w")  # beside the registry: the wrong place
    given = rows(folder)
    given[0].update(
        onnx="sub/m.onnx",
        sha256=sha256_bytes(model_bytes(0)),
        external_data=[{"path": "w.bin", "sha256": sha256_bytes(b"w")}],
    )
    assert pointers(write(folder, given)) == ["/models/0/external_data/0/path"]


@pytest.mark.parametrize("name", [".", ".."])
def test_external_data_dot_names_are_not_plain_file_names(folder: Path, name: str) -> None:
    given = rows(folder)
    given[0]["external_data"] = [{"path": name, "sha256": "1" * 64}]
    path = write(folder, given)
    [problem] = validate_registry(path)
    assert problem.pointer == "/models/0/external_data/0/path"
    assert "plain file name" in problem.message
    assert load_problems(path) == ["/models/0/external_data/0/path"]


def test_external_data_symlink_out_of_the_model_folder_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    (tmp_path / "stolen.bin").write_bytes(b"w")
    os.symlink(tmp_path / "stolen.bin", folder / "w.bin")
    given = rows(folder)
    given[0]["external_data"] = [
        {"path": "w.bin", "sha256": sha256_bytes(b"w")},
        {"path": "x.bin", "sha256": "XYZ"},  # a schema problem in a sibling hides nothing
    ]
    path = write(folder, given)
    assert pointers(path) == ["/models/0/external_data/0/path", "/models/0/external_data/1/sha256"]
    assert "outside the model's folder" in validate_registry(path)[0].message


def test_external_data_listed_twice_is_refused(folder: Path) -> None:
    (folder / "w.bin").write_bytes(b"w")
    item = {"path": "w.bin", "sha256": sha256_bytes(b"w")}
    given = rows(folder)
    given[0]["external_data"] = [item, item]
    [problem] = validate_registry(write(folder, given))
    assert problem.pointer == "/models/0/external_data/1/path" and "twice" in problem.message


def test_invalid_json_names_line_and_column(folder: Path) -> None:
    path = folder / "registry.json"
    path.write_text('{"schema_version": 1,\n "models": [}')
    [problem] = validate_registry(path)
    assert problem.pointer == "" and "line 2 column 13" in problem.message
    with pytest.raises(RegistryInvalid, match="line 2 column 13"):
        load_registry(path)


def test_duplicate_json_key_is_refused_not_silently_collapsed(folder: Path) -> None:
    row = json.dumps(rows(folder)[0])[:-1] + ', "sha256": "' + "0" * 64 + '"}'
    path = folder / "registry.json"
    path.write_text(f'{{"schema_version": 1, "models": [{row}]}}')
    [problem] = validate_registry(path)
    assert "key 'sha256' appears twice" in problem.message


@pytest.mark.parametrize("text", ["NaN", "1" * 5000])
def test_nan_and_huge_integers_are_invalid_json_not_a_crash(folder: Path, text: str) -> None:
    path = folder / "registry.json"
    path.write_text(f'{{"schema_version": 1, "models": [{{"timeline": {text}}}]}}')
    [problem] = validate_registry(path)
    assert problem.pointer == "" and "invalid JSON" in problem.message


def test_non_utf8_registry_is_refused(folder: Path) -> None:
    path = folder / "registry.json"
    path.write_bytes(b'{"description": "\xff"}')
    assert "not UTF-8" in validate_registry(path)[0].message


def test_empty_model_list_is_refused(folder: Path) -> None:
    path = write(folder, [])
    assert pointers(path) == ["/models"]
    assert load_problems(path) == ["/models"]


def test_top_level_that_is_not_an_object_is_refused(folder: Path) -> None:
    path = folder / "registry.json"
    path.write_text("[]")
    assert pointers(path) == [""]


def test_registry_that_is_a_folder_is_not_a_regular_file(folder: Path) -> None:
    with pytest.raises(RegistryInvalid, match="not a regular file") as caught:
        load_registry(folder)
    assert caught.value.problems[0].pointer == ""


def test_registry_that_does_not_exist_is_refused(folder: Path) -> None:
    with pytest.raises(RegistryError, match="no such file"):
        load_registry(folder / "nope.json")
    assert "no such file" in validate_registry(folder / "nope.json")[0].message


def test_registry_over_the_size_limit_is_refused_before_parsing(folder: Path) -> None:
    big = folder / "big.json"
    big.write_bytes(b" " * (MAX_REGISTRY_BYTES + 1))
    with pytest.raises(RegistryInvalid, match="limit"):
        load_registry(big)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_registry_is_a_problem_not_a_crash(folder: Path) -> None:
    path = write(folder, rows(folder))
    path.chmod(0)
    try:
        assert "cannot read" in validate_registry(path)[0].message
    finally:
        path.chmod(0o644)


def test_several_problems_are_collected_at_once_in_document_order(folder: Path) -> None:
    given = rows(folder)
    given[0]["sha256"] = "0" * 64
    given[2]["timeline"] = 1
    (folder / "m1.onnx").unlink()
    assert pointers(write(folder, given)) == [
        "/models/0/sha256",
        "/models/1/onnx",
        "/models/2/timeline",
    ]


def test_a_schema_problem_in_one_model_hides_no_problem_in_another(folder: Path) -> None:
    given = rows(folder)
    given[0]["smoke"] = "yes"
    given[1]["sha256"] = "0" * 64
    given[2]["id"] = "m0"
    assert pointers(write(folder, given)) == ["/models/0/smoke", "/models/1/sha256", "/models/2/id"]


def test_problems_are_ordered_by_array_index_not_as_text(folder: Path) -> None:
    data = b"same"
    (folder / "same.onnx").write_bytes(data)
    given = [model_row(i, data, onnx="same.onnx", sha256="0" * 64) for i in range(12)]
    found = pointers(write(folder, given))
    assert found == [f"/models/{i}/sha256" for i in range(12)]


def test_registry_invalid_carries_every_problem_and_says_how_many(folder: Path) -> None:
    given = rows(folder)
    given[0]["smoke"] = "no"
    given[1]["opset"] = 99
    with pytest.raises(RegistryInvalid) as caught:
        load_registry(write(folder, given))
    assert [p.pointer for p in caught.value.problems] == ["/models/0/smoke", "/models/1/opset"]
    assert str(caught.value).startswith("registry.json#/models/0/smoke: ")
    assert str(caught.value).endswith("(and 1 more)")
    assert isinstance(caught.value, RegistryError)


def test_problem_prints_on_one_line_even_with_control_characters() -> None:
    problem = Problem("/models/0/a\nb", "bad\rvalue")
    assert str(problem) == "registry.json#/models/0/a\\nb: bad\\rvalue"


def test_pointer_escapes_tilde_and_slash(folder: Path) -> None:
    given = rows(folder)
    given[0]["a/b~c"] = 1
    assert pointers(write(folder, given)) == ["/models/0/a~1b~0c"]


def test_schema_describes_every_field() -> None:
    def walk(schema: dict[str, Any], where: str) -> list[str]:
        missing: list[str] = []
        for name, child in schema.get("properties", {}).items():
            if "description" not in child:
                missing.append(f"{where}/{name}")
            missing.extend(walk(child, f"{where}/{name}"))
        if isinstance(schema.get("items"), dict):
            missing.extend(walk(schema["items"], f"{where}/items"))
        return missing

    schema = registry_schema()
    assert schema["$id"].startswith("https://") and schema["title"]
    assert walk(schema, "") + walk(schema["$defs"]["model"], "model") == []


def test_bundled_timelines_validate() -> None:
    assert validate_registry(BISECT / "regression" / "registry.json") == []
    assert validate_registry(BISECT / "allgood" / "registry.json") == []


def test_a_schema_problem_in_one_field_does_not_stop_the_model_being_hashed(
    folder: Path,
) -> None:
    given = rows(folder)
    given[0].update(smoke="yes", sha256="0" * 64)
    assert pointers(write(folder, given)) == ["/models/0/sha256", "/models/0/smoke"]


def test_registry_invalid_survives_pickling_with_every_problem() -> None:
    import pickle

    problems = [
        Problem("/models/0/onnx", "path '../x.onnx' must not contain '..'"),
        Problem("", "b"),
    ]
    error = pickle.loads(pickle.dumps(RegistryInvalid(problems)))
    assert error.problems == tuple(problems)
    assert (
        str(error)
        == "registry.json#/models/0/onnx: path '../x.onnx' must not contain '..' (and 1 more)"
    )
