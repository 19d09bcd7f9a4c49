"""``model-guard registry import``: a foreign registry (the field's format) brought in, losing nothing."""

import hashlib
import json
import shutil
from pathlib import Path

import onnx
import pytest

from engine.cli import main
from engine.registry import load_registry, validate_registry
from engine.registry_import import natural_key, recover_source
from tests.fixtures.foreign_registry import ForeignRegistry, write_foreign_registry

GOLDEN = Path(__file__).resolve().parents[2] / "testdata" / "bisect"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> ForeignRegistry:
    """The 24-row fixture, written once; tests work on copies."""
    return write_foreign_registry(tmp_path_factory.mktemp("foreign") / "tiny")


@pytest.fixture
def foreign(built: ForeignRegistry, tmp_path: Path) -> Path:
    """A fresh copy of the fixture folder; returns its registry.json."""
    folder = tmp_path / "tiny"
    shutil.copytree(built.folder, folder)
    return folder / "registry.json"


def run_import(
    source: Path, *extra: str, capsys: pytest.CaptureFixture[str], out: str = "model-guard.json"
) -> tuple[int, list[str], str]:
    """Run the command; return its exit code, stdout lines and stderr."""
    code = main(["registry", "import", str(source), "--out", str(source.parent / out), *extra])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in a folder, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def rows(path: Path) -> dict[str, dict]:
    """An imported registry's rows by id."""
    return {row["id"]: row for row in json.loads(path.read_text())["models"]}


def test_import_of_the_24_row_fixture_loses_nothing_and_touches_no_file(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(foreign.parent)
    code, out, err = run_import(foreign, capsys=capsys)
    assert code == 0, err
    destination = foreign.parent / "model-guard.json"
    after = digests(foreign.parent)
    assert after.pop("model-guard.json")
    assert after == before  # every original file byte-for-byte as it was
    source = json.loads(foreign.read_text())
    imported = json.loads(destination.read_text())
    assert recover_source(imported) == source  # every field, value and row recoverable
    assert len(source["models"]) == 24
    by_id = {row["id"]: row for row in imported["models"]}
    for row in source["models"]:
        kept = by_id[row["id"]]
        for field in ("sha256", "int8_sha256", "license_url", "sigstore_bundle", "description"):
            if field in row:
                assert kept[field] == row[field], (row["id"], field)
    assert imported["$schema"] == source["$schema"]
    assert by_id["fr_tiny_v1"]["extra"] == {"card": "fr_tiny_v1_card.md"}
    assert by_id["fr_regressor_v1"]["extra"] == {"adr": "ADR-0249"}
    assert out[0] == f"imported 24 rows and 3 int8 twin row(s) from {foreign} into {destination}"


def test_imported_registry_validates_and_every_declared_hash_is_kept(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(foreign, capsys=capsys)[0] == 0
    destination = foreign.parent / "model-guard.json"
    assert validate_registry(destination) == []
    assert main(["registry", "validate", str(destination)]) == 0
    assert len(load_registry(destination).models) == 27


def test_imported_registry_bisects_and_its_fr_series_scores_as_fitted(
    foreign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(foreign, capsys=capsys)[0] == 0
    report = tmp_path / "report.json"
    code = main(
        [
            "bisect",
            "--registry",
            str(foreign.parent / "model-guard.json"),
            "--features",
            str(GOLDEN / "features.parquet"),
            "--min-plcc",
            "0.9",
            "--full",
            "--cache-dir",
            str(tmp_path / "store"),
            "--json",
            str(report),
        ]
    )
    # No false alarm: every family of regressors passes, the rest is listed as not judged.
    assert code == 0
    result = json.loads(report.read_text())
    families = {family["family"]: family for family in result["families"]}
    assert set(families) == {"fr/features6", "fr/features6+codec14", "fr/features6+codec18"}
    steps = {step["name"]: step for family in families.values() for step in family["steps"]}
    assert all(step["status"] == "pass" for step in steps.values())
    for model_id in ("fr_tiny_v1", "fr_tiny_v2", "fr_tiny_v3", "fr_tiny_v4", "fr_tiny_v10"):
        assert steps[model_id]["metrics"]["plcc"] > 0.95
    # Scored as its sidecar declares (standardised): raw it scores about 0.16.
    assert steps["fr_regressor_v1"]["metrics"]["plcc"] > 0.95
    # Codec-aware models, 14 wide (codec, codec_onehot) and 18 wide (codec_block).
    assert len(families["fr/features6+codec14"]["steps"]) == 6
    assert steps["fr_regressor_v3"]["metrics"]["plcc"] > 0.95
    not_judged = {item["name"]: item["reason"] for item in result["not_judged"]}
    assert not_judged["nr_metric_v1"] == "kind nr: needs frames"
    assert not_judged["learned_filter_v1"] == "kind filter: needs frames"
    assert not_judged["nr_metric_v1_int8"] == "int8 twin of nr_metric_v1, which is not judged"
    assert len(not_judged) + len(steps) + len(result["quantised_twins"]) == 27
    # The int8 twin is checked against its parent, within the declared budget.
    (twin,) = [t for t in result["quantised_twins"] if t["twin"] == "fr_tiny_v3_int8"]
    assert twin["passed"] and twin["budget"] == 0.01 and abs(twin["drop"]) < 0.01


def test_default_order_is_natural_version_order_and_is_printed(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_import(foreign, capsys=capsys)
    assert code == 0
    order = [
        row["id"]
        for row in sorted(
            rows(foreign.parent / "model-guard.json").values(), key=lambda r: r["timeline"]
        )
    ]
    series = [i for i in order if i.startswith("fr_tiny_v")]
    assert series == [
        "fr_tiny_v1",
        "fr_tiny_v2",
        "fr_tiny_v3",
        "fr_tiny_v3_int8",
        "fr_tiny_v4",
        "fr_tiny_v10",
    ]
    assert any("rule natural" in line and "--order FILE" in line for line in out)
    printed = [
        line.split()[1] for line in out if line.startswith("  ") and line.split()[0].isdigit()
    ]
    assert printed == order


def test_natural_key_compares_digit_runs_as_numbers_and_ties_fall_to_the_id() -> None:
    ids = ["m_v10", "m_v2", "m_v1", "m_v01", "a", "m_v2_int8"]
    ordered = sorted(ids, key=lambda i: (natural_key(i), i))
    assert ordered == ["a", "m_v01", "m_v1", "m_v2", "m_v2_int8", "m_v10"]


def test_order_rule_source_keeps_the_source_order(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source_ids = [row["id"] for row in json.loads(foreign.read_text())["models"]]
    code, out, _ = run_import(foreign, "--order-rule", "source", capsys=capsys)
    assert code == 0
    imported = json.loads((foreign.parent / "model-guard.json").read_text())
    order = [row["id"] for row in imported["models"] if "quantised_from" not in row]
    assert order == source_ids
    assert imported["imported_from"]["order_rule"] == "source"
    assert any("rule source" in line for line in out)


def test_order_file_overrides_the_rule(foreign: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source_ids = [row["id"] for row in json.loads(foreign.read_text())["models"]]
    order_file = foreign.parent / "order.txt"
    order_file.write_text("# newest last\n" + "\n".join(reversed(source_ids)) + "\n")
    code, _, _ = run_import(foreign, "--order", str(order_file), capsys=capsys)
    assert code == 0
    imported = json.loads((foreign.parent / "model-guard.json").read_text())
    order = [row["id"] for row in imported["models"] if "quantised_from" not in row]
    assert order == list(reversed(source_ids))
    assert imported["imported_from"]["order_rule"] == "file:order.txt"


def test_order_file_missing_an_id_is_refused_in_one_line(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    order_file = foreign.parent / "order.txt"
    order_file.write_text("fr_tiny_v2\nfr_tiny_v1\nno_such_model\n")
    code, out, err = run_import(foreign, "--order", str(order_file), capsys=capsys)
    assert code == 1 and out == []
    assert err.count("\n") == 1 and "'no_such_model' is not a row" in err
    assert not (foreign.parent / "model-guard.json").exists()
    order_file.write_text("fr_tiny_v2\nfr_tiny_v1\n")
    code, _, err = run_import(foreign, "--order", str(order_file), capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and "missing (list every row once)" in err


def test_absent_smoke_becomes_true_and_the_default_is_recorded(
    built: ForeignRegistry, foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_import(foreign, capsys=capsys)
    assert code == 0
    imported = json.loads((foreign.parent / "model-guard.json").read_text())
    by_id = {row["id"]: row for row in imported["models"]}
    assert built.smoke_absent
    for model_id in built.smoke_absent:
        assert by_id[model_id]["smoke"] is True
        assert "smoke" in imported["imported_from"]["added"][model_id]
    assert by_id["fr_regressor_v2"]["smoke"] is False  # a declared value is never changed
    assert any(line.startswith(f"smoke absent on {len(built.smoke_absent)} row(s)") for line in out)


def test_int8_variants_become_rows_linked_to_their_parent(
    built: ForeignRegistry, foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(foreign, capsys=capsys)[0] == 0
    by_id = rows(foreign.parent / "model-guard.json")
    assert set(built.int8_parents) == {"fr_tiny_v3", "nr_metric_v1", "learned_filter_v1"}
    for parent_id in built.int8_parents:
        parent, twin = by_id[parent_id], by_id[f"{parent_id}_int8"]
        assert twin["quantised_from"] == parent_id
        assert twin["onnx"] == parent["onnx"].removesuffix(".onnx") + ".int8.onnx"
        assert twin["sha256"] == parent["int8_sha256"]
        assert twin["timeline"] == parent["timeline"] + 1
        assert parent["quant_mode"] == "dynamic"
        assert parent["quant_accuracy_budget_plcc"] == 0.01
    assert by_id["fr_tiny_v3_int8"]["sidecar"] == "fr_tiny_v3.int8.json"


def test_sidecars_and_external_data_are_linked(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(foreign, capsys=capsys)[0] == 0
    by_id = rows(foreign.parent / "model-guard.json")
    assert by_id["fr_regressor_v1"]["sidecar"] == "fr_regressor_v1.json"
    assert by_id["fr_regressor_v3"]["sidecar"] == "fr_regressor_v3.json"
    assert "sidecar" not in by_id["lpips_sq_v1"]  # none beside it
    data = foreign.parent / "fr_tiny_v2.onnx.data"
    assert by_id["fr_tiny_v2"]["external_data"] == [
        {"path": data.name, "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    ]


def test_hash_mismatches_are_reported_one_line_each_and_the_declared_hashes_kept(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(foreign.read_text())
    index = {row["id"]: i for i, row in enumerate(document["models"])}
    document["models"][index["fr_tiny_v2"]]["sha256"] = "0" * 64
    document["models"][index["nr_metric_v1"]]["int8_sha256"] = "1" * 64
    foreign.write_text(json.dumps(document, indent=2))
    (foreign.parent / "saliency_student_v1.onnx").unlink()
    code, out, err = run_import(foreign, capsys=capsys)
    assert code == 2
    problems = [line for line in out if line.startswith("registry.json#")]
    assert problems == [
        f"registry.json#/models/{index['fr_tiny_v2']}/sha256: fr_tiny_v2.onnx hashes to "
        f"{hashlib.sha256((foreign.parent / 'fr_tiny_v2.onnx').read_bytes()).hexdigest()}, "
        f"not the declared sha256 {'0' * 64}",
        f"registry.json#/models/{index['saliency_student_v1']}/sha256: "
        "saliency_student_v1.onnx: not found",
        f"registry.json#/models/{index['nr_metric_v1']}/int8_sha256: nr_metric_v1.int8.onnx "
        f"hashes to {hashlib.sha256((foreign.parent / 'nr_metric_v1.int8.onnx').read_bytes()).hexdigest()}, "
        f"not the declared int8_sha256 {'1' * 64}",
    ]
    assert "written, with 3 file problem(s)" in err
    by_id = rows(foreign.parent / "model-guard.json")
    assert by_id["fr_tiny_v2"]["sha256"] == "0" * 64
    assert by_id["nr_metric_v1_int8"]["sha256"] == "1" * 64
    assert len(validate_registry(foreign.parent / "model-guard.json")) == 3


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object, not an array"),
        (b'{"models": "all of them"}', "expected a non-empty array of model rows (a string)"),
        (b'{"models": []}', "expected a non-empty array"),
        (b'{"models": [17]}', "/models/0: expected a JSON object, not a number"),
        (b'{"models": [{"id": 5, "kind": "fr"}]}', "/models/0/id: `id` 5 is not usable here"),
        (b'{"a": 1, "a": 2, "models": [{}]}', "key 'a' appears twice"),
        (b" " * (4 * 1024 * 1024 + 1), "4194305 bytes, over"),
    ],
)
def test_hostile_source_is_refused_in_one_line_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    source = tmp_path / "registry.json"
    source.write_bytes(content)
    code, out, err = run_import(source, capsys=capsys)
    assert code == 1
    lines = out + err.splitlines()
    assert any(says in line for line in lines), lines
    assert len(out) <= 5 and "Traceback" not in err  # one line per problem found
    assert not (tmp_path / "model-guard.json").exists()


def test_wrong_kind_is_refused_naming_the_rule_and_wrong_smoke_is_kept_in_extra(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(foreign.read_text())
    document["models"][0]["smoke"] = "yes"
    document["maintainers"] = ["vq-team"]
    foreign.write_text(json.dumps(document))
    assert run_import(foreign, capsys=capsys)[0] == 0
    imported = json.loads((foreign.parent / "model-guard.json").read_text())
    first = next(r for r in imported["models"] if r["id"] == document["models"][0]["id"])
    assert first["extra"]["smoke"] == "yes" and first["smoke"] is True
    assert imported["extra"] == {"maintainers": ["vq-team"]}
    assert recover_source(imported) == document
    document["models"][1]["kind"] = "fr_ensemble"
    foreign.write_text(json.dumps(document))
    code, out, _ = run_import(foreign, "--force", capsys=capsys)
    assert code == 1
    assert out == [
        "registry.json#/models/1/kind: `kind` 'fr_ensemble' is not usable here: lower-case "
        "letters, digits and '-' (rename the kind in the source)"
    ]


def test_reimporting_the_output_is_refused_clearly(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(foreign, capsys=capsys)[0] == 0
    code, out, _ = run_import(foreign.parent / "model-guard.json", capsys=capsys, out="again.json")
    assert code == 1
    assert out == [
        "model-guard.json#/imported_from: already imported by model-guard (from 'registry.json'): "
        "nothing to import; check it with `model-guard registry validate`, or import the source again"
    ]
    assert not (foreign.parent / "again.json").exists()


def test_a_native_registry_is_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "regression"
    shutil.copytree(GOLDEN / "regression", folder)
    code, out, _ = run_import(folder / "registry.json", capsys=capsys)
    assert code == 1
    assert len(out) == 1 and "already a model-guard registry" in out[0]


def test_destination_must_be_a_new_file_beside_the_source(
    foreign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    code = main(["registry", "import", str(foreign), "--out", str(elsewhere)])
    assert code == 1 and "must be in the folder of" in capsys.readouterr().err
    code = main(["registry", "import", str(foreign), "--out", str(foreign)])
    assert code == 1 and "is the source registry" in capsys.readouterr().err
    code = main(
        [
            "registry",
            "import",
            str(foreign),
            "--out",
            str(foreign.parent / "fr_tiny_v1.json"),
            "--force",
        ]
    )
    assert code == 1 and "names that file" in capsys.readouterr().err
    assert json.loads((foreign.parent / "fr_tiny_v1.json").read_text())["id"] == "fr_tiny_v1"
    assert run_import(foreign, capsys=capsys)[0] == 0
    code, _, err = run_import(foreign, capsys=capsys)
    assert code == 1 and "exists (use --force to replace it)" in err
    assert run_import(foreign, "--force", capsys=capsys)[0] == 0


def test_validate_checks_twin_links_and_sidecar_paths_of_an_imported_registry(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(foreign, capsys=capsys)[0] == 0
    destination = foreign.parent / "model-guard.json"
    document = json.loads(destination.read_text())
    position = {row["id"]: i for i, row in enumerate(document["models"])}
    document["models"][position["fr_tiny_v3_int8"]]["quantised_from"] = "fr_tiny_v99"
    document["models"][position["nr_metric_v1_int8"]]["quantised_from"] = "nr_metric_v1_int8"
    document["models"][position["fr_regressor_v1"]]["sidecar"] = "../fr_regressor_v1.json"
    document["models"][position["fr_tiny_v1"]]["sigstore_bundle"] = "/etc/bundle.json"
    destination.write_text(json.dumps(document))
    assert [str(problem) for problem in validate_registry(destination)] == [
        f"registry.json#/models/{position['fr_regressor_v1']}/sidecar: "
        "path '../fr_regressor_v1.json' must not contain '..'",
        f"registry.json#/models/{position['fr_tiny_v1']}/sigstore_bundle: "
        "path '/etc/bundle.json' must be relative to the registry folder, not absolute",
        f"registry.json#/models/{position['fr_tiny_v3_int8']}/quantised_from: "
        "parent 'fr_tiny_v99' is not a row of this registry",
        f"registry.json#/models/{position['nr_metric_v1_int8']}/quantised_from: "
        "a model cannot be quantised from itself",
    ]


def test_external_data_the_source_declares_is_kept_and_checked(
    foreign: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(foreign.read_text())
    index = next(i for i, row in enumerate(document["models"]) if row["id"] == "fr_tiny_v2")
    declared = [{"path": "fr_tiny_v2.onnx.data", "sha256": "2" * 64}]
    document["models"][index]["external_data"] = declared
    foreign.write_text(json.dumps(document))
    code, out, _ = run_import(foreign, capsys=capsys)
    assert code == 2
    actual = hashlib.sha256((foreign.parent / "fr_tiny_v2.onnx.data").read_bytes()).hexdigest()
    assert [line for line in out if line.startswith("registry.json#")] == [
        f"registry.json#/models/{index}/external_data/0/sha256: fr_tiny_v2.onnx.data hashes to "
        f"{actual}, not the declared sha256 {'2' * 64}"
    ]
    assert rows(foreign.parent / "model-guard.json")["fr_tiny_v2"]["external_data"] == declared


def test_fixture_is_byte_stable_and_shaped_like_the_field(
    built: ForeignRegistry, tmp_path: Path
) -> None:
    again = write_foreign_registry(tmp_path / "again")
    assert digests(again.folder) == digests(built.folder)  # same bytes on every run
    document = json.loads(built.registry.read_text())
    assert len(document["models"]) == 24 and "timeline" not in json.dumps(document)
    kinds = [row["kind"] for row in document["models"]]
    assert {kind: kinds.count(kind) for kind in set(kinds)} == {"fr": 17, "nr": 5, "filter": 2}
    second_inputs = {}
    for row in document["models"]:
        model = onnx.load(str(built.folder / row["onnx"]), load_external_data=False)
        assert model.ir_version == 9
        assert [o.version for o in model.opset_import] == [row["opset"]]
        if len(model.graph.input) == 2 and model.graph.input[0].name == "features":
            second = model.graph.input[1]
            width = second.type.tensor_type.shape.dim[1].dim_value
            second_inputs.setdefault(second.name, set()).add(width)
            sidecar = json.loads((built.folder / f"{row['id']}.json").read_text())
            assert len(sidecar["codec_block_layout"]) == width
            assert sidecar["codec_block_layout"][-2:] == ["preset_norm", "crf_norm"]
    assert second_inputs == {"codec": {14}, "codec_onehot": {14}, "codec_block": {18}}
    manifest = json.loads(built.ensemble_manifest.read_text())
    for member in manifest["members"]:
        actual = hashlib.sha256((built.folder / member["onnx"]).read_bytes()).hexdigest()
        assert member["sha256"] != actual  # every member hash is stale
    promote = json.loads(built.promote.read_text())
    assert promote["verdict"] == "PROMOTE" and promote["corpus"]["present"] is False
