"""Families: each family of six-feature regressors bisects on its own; frame models are not judged."""

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from onnx import TensorProto

from engine.cli import main
from engine.families import signature
from engine.policy import PromotionPolicy
from engine.registry import load_registry
from engine.registry_review import FAILURE, review_registry_change
from engine.report import TableFormat, render_table
from engine.scoring import GraphInput
from tests.families import FEATURES, REGISTRY, mixed_files, write_files

BISECT = Path(__file__).resolve().parents[2] / "testdata" / "bisect"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_files(mixed_files(), tmp_path / "repo")


def bisect(repo: Path, *extra: str) -> int:
    return main(
        [
            "bisect",
            "--registry",
            str(repo / REGISTRY),
            "--features",
            str(repo / FEATURES),
            "--min-plcc",
            "0.9",
            "--no-cache",
            *extra,
        ]
    )


def report_of(path: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads(path.read_text())
    schema = json.loads(
        resources.files("engine.schemas").joinpath("bisect-report.schema.json").read_text()
    )
    jsonschema.validate(report, schema)
    return report


def test_each_family_bisects_on_its_own_and_frame_models_are_not_judged(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    assert bisect(repo, "--json", str(out)) == 2  # the regressing family raises the alarm
    report = report_of(out)
    assert report["schema_version"] == 2
    families = {f["family"]: f for f in report["families"]}  # type: ignore[union-attr]
    assert list(families) == ["fr/features6", "fr/good"]
    assert families["fr/features6"]["outcome"] == "regression"
    assert families["fr/features6"]["first_bad_model"] == "fr-mlp-v06"
    assert families["fr/features6"]["last_good_model"] == "fr-mlp-v05"
    assert families["fr/good"]["outcome"] == "no_regression"
    assert families["fr/good"]["timeline"]["models"][-1] == "fr-mlp-good-v07"
    # The overall verdict is the worst family's.
    assert report["outcome"] == "regression" and report["family"] == "fr/features6"
    assert report["first_bad_model"] == "fr-mlp-v06"
    reasons = {row["name"]: row["reason"] for row in report["not_judged"]}  # type: ignore[union-attr]
    assert reasons == {
        "nr-frames-v1": "kind nr: needs frames",
        "filter-denoise-v1": "kind filter: needs frames",
        "fr-pair-v1": "kind fr: needs two or more frame inputs",
    }
    visited = {step["name"] for f in families.values() for step in f["steps"]}
    assert not visited & set(reasons)  # never scored, never broken
    text = capsys.readouterr().out
    assert "not judged (kind nr: needs frames)" in text
    assert "broken" not in text


def test_markdown_has_one_section_per_family_and_lists_rows_not_judged(
    repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.md"
    bisect(repo, "--markdown", str(out))
    markdown = out.read_text()
    assert markdown.startswith("### ❌ Family fr/features6: Regression: fr-mlp-v06")
    assert markdown.count("#### Family `") == 2
    assert "#### Family `fr/good`: ✅ No regression" in markdown
    assert (
        "- `filter-denoise-v1` (filter/frames): not judged (kind filter: needs frames)" in markdown
    )


def test_family_flag_selects_families(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert bisect(repo, "--family", "fr/good", "--json", str(out)) == 0
    report = report_of(out)
    assert [f["family"] for f in report["families"]] == ["fr/good"]  # type: ignore[union-attr]
    assert report["outcome"] == "no_regression"
    assert len(report["not_judged"]) == 3  # type: ignore[arg-type]
    both = tmp_path / "both.json"
    assert bisect(repo, "--family", "fr/good", "--family", "fr/features6", "--json", str(both)) == 2


def test_unknown_family_is_one_line_naming_the_known_ones(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bisect(repo, "--family", "nr/frames") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown family 'nr/frames'" in err
    assert "fr/features6, fr/good" in err


def test_registry_of_frame_models_only_is_refused_in_one_line(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads((repo / REGISTRY).read_text())
    document["models"] = [row for row in document["models"] if row["onnx"].startswith("frames/")]
    (repo / REGISTRY).write_text(json.dumps(document))
    assert bisect(repo) == 1
    err = capsys.readouterr().err
    assert "nothing to bisect" in err and err.count("\n") == 1


def test_one_family_renders_exactly_as_one_timeline(tmp_path: Path) -> None:
    out, markdown = tmp_path / "r.json", tmp_path / "r.md"
    main(
        [
            *("bisect", "--registry", str(BISECT / "regression" / "registry.json")),
            *("--features", str(BISECT / "features.parquet"), "--min-plcc", "0.9", "--no-cache"),
            *("--json", str(out), "--markdown", str(markdown)),
        ]
    )
    report = report_of(out)
    assert [f["family"] for f in report["families"]] == ["fr/features6"]  # type: ignore[union-attr]
    assert report["not_judged"] == []
    text = markdown.read_text()
    assert "Family" not in text and "not judged" not in text
    assert text.startswith("### ❌ Regression: fr-mlp-v06 (index 6) is the first model that fails")
    # The same report without its family fields (version 1) renders the same.
    old = {k: v for k, v in report.items() if k not in {"family", "families", "not_judged"}}
    assert render_table(old, fmt=TableFormat.MARKDOWN) == text


def test_family_field_is_kept_and_validated(repo: Path) -> None:
    loaded = load_registry(repo / REGISTRY)
    families = {entry.id: entry.family for entry in loaded.models}
    assert families["fr-mlp-good-v00"] == "fr/good" and families["fr-mlp-v00"] is None
    document = json.loads((repo / REGISTRY).read_text())
    document["models"][0]["family"] = "bad family!"
    (repo / REGISTRY).write_text(json.dumps(document))
    with pytest.raises(Exception, match="/models/0/family"):
        load_registry(repo / REGISTRY)


def graph_input(name: str, *dims: str) -> GraphInput:
    return GraphInput(name=name, elem_type=TensorProto.FLOAT, dims=dims)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ([graph_input("x", "N", "6")], "features6"),
        ([graph_input("x", "N", "6"), graph_input("codec", "N", "14")], "features6+codec14"),
        ([graph_input("codec_block", "N", "18"), graph_input("x", "?", "6")], "features6+codec18"),
        ([graph_input("frame", "N", "3", "H", "W")], "frames"),
        (
            [graph_input("ref", "N", "3", "8", "8"), graph_input("dis", "N", "3", "8", "8")],
            "frames2",
        ),
        ([graph_input("x", "N", "8")], "inputs[N,8]"),
    ],
)
def test_input_signature_names_the_family_default(inputs: list[GraphInput], expected: str) -> None:
    assert signature(inputs) == expected


def test_pull_request_adding_frame_models_gets_no_shape_failure(repo: Path) -> None:
    """The safety check still runs on frame models, but not the feature-table shape checks."""
    review = review_registry_change(
        None, repo, REGISTRY, policy=PromotionPolicy(seeds=(0, 1, 2, 3, 4))
    )
    failures = [a for a in review.annotations if a.level == FAILURE]
    assert not [a for a in failures if "frames/" in a.message], failures
