"""Ensemble manifests without torch: validation and evaluation of the committed ensemble."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from engine.cli import main
from engine.errors import FeatureCacheError
from engine.manifest import ManifestError, evaluate_ensemble, load_manifest, validate_manifest

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ROOT / "testdata" / "videos" / "real" / "features.parquet"  # the training corpus
ID = "fr-ens-v1"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A copy of the committed ensemble's manifest and members; return the manifest path."""
    folder = tmp_path / "ensemble"
    folder.mkdir()
    for path in (ROOT / "model").glob(f"{ID}*"):
        shutil.copyfile(path, folder / path.name)
    return folder / f"{ID}.json"


def test_the_committed_ensemble_validates_and_loads(manifest: Path) -> None:
    assert validate_manifest(manifest) == []
    loaded = load_manifest(manifest)
    assert loaded.id == ID and len(loaded.members) == 5 and loaded.codec is None


def test_validate_names_a_stale_member_hash(manifest: Path) -> None:
    folder = manifest.parent
    shutil.copyfile(folder / f"{ID}-m0.onnx", folder / f"{ID}-m1.onnx")
    problems = validate_manifest(manifest)
    assert len(problems) == 1
    assert problems[0].startswith(f"member {ID}-m1 ({ID}-m1.onnx): stale hash")
    with pytest.raises(ManifestError, match="stale hash"):
        load_manifest(manifest)


def test_validate_refuses_member_paths_outside_the_folder(manifest: Path) -> None:
    document = json.loads(manifest.read_text())
    document["members"][0]["onnx"] = f"../{ID}-m0.onnx"
    manifest.write_text(json.dumps(document))
    assert validate_manifest(manifest) == [
        f"member {ID}-m0 (../{ID}-m0.onnx): path must not contain '..'"
    ]


def test_validate_reports_schema_problems_and_unreadable_files(tmp_path: Path) -> None:
    missing = validate_manifest(tmp_path / "nope.json")
    assert len(missing) == 1 and "not found" in missing[0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "model-guard/ensemble-manifest"}))
    assert validate_manifest(bad)[0].startswith("bad.json#/: ")


def test_validate_refuses_a_nan_literal_in_a_manifest(manifest: Path) -> None:
    text = manifest.read_text().replace('"nominal_coverage": 0.9', '"nominal_coverage": NaN', 1)
    manifest.write_text(text)
    [problem] = validate_manifest(manifest)
    assert "NaN is not valid JSON" in problem


def test_evaluate_scores_the_committed_ensemble_on_its_training_corpus(manifest: Path) -> None:
    document = evaluate_ensemble(manifest, features_path=FEATURES).to_dict()
    assert document["corpus"]["same_as_training"] is True
    assert document["metrics"]["plcc"] > 0.9
    json.dumps(document, allow_nan=False)


def test_evaluate_refuses_a_missing_feature_file(manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(FeatureCacheError, match="feature cache not found"):
        evaluate_ensemble(manifest, features_path=tmp_path / "missing.parquet")


def shifted_table(tmp_path: Path, *, by: float) -> Path:
    """Write the golden cache with every subjective score moved by ``by`` (a corpus the
    ensemble mispredicts, so its intervals cannot reach their nominal coverage)."""
    frame = pd.read_parquet(FEATURES)
    frame["mos"] = frame["mos"] + by
    path = tmp_path / "shifted.parquet"
    frame.to_parquet(path, index=False)
    return path


def test_ensemble_eval_exits_0_and_reports_every_nominal_level_when_coverage_holds(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    code = main(["ensemble", "eval", "--manifest", str(manifest), "--features", str(FEATURES)])
    text = capsys.readouterr().out
    assert code == 0, text
    for label in ("50 %", "80 %", "90 % (manifest)", "95 %"):
        assert f"  {label}" in text
    assert "coverage test of the manifest's conformal interval: " in text
    assert text.rstrip().splitlines()[-2].endswith("one-sided exact binomial test: PASS")
    argv = ["ensemble", "eval", "--manifest", str(manifest), "--features", str(FEATURES)]
    assert main([*argv, "--json", str(out)]) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    assert [level["nominal"] for level in document["intervals"]["levels"]] == pytest.approx(
        [0.5, 0.8, 0.9, 0.95]
    )
    assert all(level["conformal"] is not None for level in document["intervals"]["levels"])
    assert document["coverage_test"]["method"] == "conformal"
    assert document["coverage_test"]["nominal"] == pytest.approx(0.9)
    assert document["coverage_test"]["passed"] is True
    assert document["schema_version"] == 2


def test_ensemble_eval_exits_1_when_the_coverage_test_fails(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shifted = shifted_table(tmp_path, by=25.0)
    out = tmp_path / "eval.json"
    argv = ["ensemble", "eval", "--manifest", str(manifest), "--features", str(shifted)]
    assert main([*argv, "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "coverage test of the manifest's conformal interval: " in text
    assert "one-sided exact binomial test: FAIL" in text
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["coverage_test"]["passed"] is False
    assert document["coverage_test"]["p_value"] < 0.01


def test_ensemble_eval_bad_input_exits_2(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.parquet"
    argv = ["ensemble", "eval", "--manifest", str(manifest), "--features", str(missing)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("model-guard: error: ")
