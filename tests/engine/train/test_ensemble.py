"""Ensembles and manifests: calibration on held-out sources, validation, registry, evaluation."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the whole tests/engine/train folder needs torch

from engine.conformal import ScoreKind
from engine.errors import FeatureCacheError, UsageError
from engine.evidence import schema_problems
from engine.features import features_from_frame
from engine.hashing import sha256_file
from engine.manifest import (
    ManifestError,
    evaluate_ensemble,
    load_manifest,
    render_evaluation,
    validate_manifest,
)
from engine.train.ensemble import TrainedEnsemble, train_ensemble
from engine.train.network import TrainConfig
from tests.engine.tables import small_frame, small_table

pytestmark = pytest.mark.slow  # every test here trains
FAST = TrainConfig(epochs=10)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> TrainedEnsemble:
    """A 3-member six-feature ensemble trained on 4 small sources."""
    out = tmp_path_factory.mktemp("ens")
    table = small_table(sources=4)
    return train_ensemble(
        table, ensemble_id="fr-ens-t", out_dir=out, members=3, base_seed=7, config=FAST
    )


@pytest.fixture(scope="module")
def codec_ensemble(tmp_path_factory: pytest.TempPathFactory) -> TrainedEnsemble:
    """A 2-member codec-aware ensemble."""
    out = tmp_path_factory.mktemp("codec")
    table = small_table(sources=4)
    config = TrainConfig(epochs=5, codec=True)
    return train_ensemble(table, ensemble_id="fr-codec-t", out_dir=out, members=2, config=config)


def _copy(ensemble: TrainedEnsemble, tmp_path: Path) -> Path:
    """Copy an ensemble's folder; return the copied manifest path."""
    folder = tmp_path / "copy"
    shutil.copytree(ensemble.manifest_path.parent, folder)
    return folder / ensemble.manifest_path.name


def _edit(manifest: Path, change: dict[str, object]) -> None:
    """Apply top-level-key edits (nested via 'a/b' keys) to a manifest file."""
    document = json.loads(manifest.read_text())
    for key, value in change.items():
        target = document
        *parents, last = key.split("/")
        for part in parents:
            target = target[part]
        target[last] = value
    manifest.write_text(json.dumps(document))


def test_manifest_records_members_seeds_hashes_and_conformal_calibration(
    ensemble: TrainedEnsemble,
) -> None:
    document = json.loads(ensemble.manifest_path.read_text())
    assert schema_problems(document, "ensemble-manifest.schema.json") == []
    assert validate_manifest(ensemble.manifest_path) == []
    assert [m["seed"] for m in document["members"]] == [7, 8, 9]
    assert [m["id"] for m in document["members"]] == ["fr-ens-t-m0", "fr-ens-t-m1", "fr-ens-t-m2"]
    for member, path in zip(document["members"], ensemble.member_paths, strict=True):
        assert member["sha256"] == sha256_file(path)
    assert document["features"][0] == "adm2"
    assert document["codec"] is None
    confidence = document["confidence"]
    assert confidence["method"] == "conformal"
    assert confidence["score"] == ScoreKind.NORMALISED.value
    assert confidence["nominal_coverage"] == pytest.approx(0.9)
    assert confidence["z"] == pytest.approx(1.6448536)
    assert confidence["n_calibration"] == ensemble.calibration.n_calibration
    split = document["training"]["split"]
    assert not set(split["train_sources"]) & set(split["calibration_sources"])
    assert split["n_calibration"] == confidence["n_calibration"]
    assert [level["nominal_coverage"] for level in confidence["levels"]] == pytest.approx(
        [0.5, 0.8, 0.95]
    )
    assert {level["n_calibration"] for level in confidence["levels"]} == {
        confidence["n_calibration"]
    }


def test_training_the_same_ensemble_twice_gives_the_same_member_files(
    ensemble: TrainedEnsemble, tmp_path: Path
) -> None:
    again = train_ensemble(
        small_table(sources=4),
        ensemble_id="fr-ens-t",
        out_dir=tmp_path,
        members=3,
        base_seed=7,
        config=FAST,
    )
    for a, b in zip(ensemble.member_paths, again.member_paths, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_validate_names_a_stale_member_hash(ensemble: TrainedEnsemble, tmp_path: Path) -> None:
    manifest = _copy(ensemble, tmp_path)
    folder = manifest.parent
    shutil.copyfile(folder / "fr-ens-t-m0.onnx", folder / "fr-ens-t-m1.onnx")
    problems = validate_manifest(manifest)
    assert len(problems) == 1
    assert problems[0].startswith("member fr-ens-t-m1 (fr-ens-t-m1.onnx): stale hash")
    with pytest.raises(ManifestError, match="stale hash"):
        load_manifest(manifest)


def test_validate_names_codec_width_mismatches(
    codec_ensemble: TrainedEnsemble, tmp_path: Path
) -> None:
    assert validate_manifest(codec_ensemble.manifest_path) == []
    manifest = _copy(codec_ensemble, tmp_path)
    _edit(manifest, {"codec/width": 5})
    problems = validate_manifest(manifest)
    assert any("#/codec/width: 5 but codec vocabulary v1 has 6" in line for line in problems)
    members = [line for line in problems if "codec width mismatch" in line]
    assert len(members) == 2
    assert "input has width 6 but the manifest's codec block has width 5" in members[0]


def test_validate_names_a_codec_model_in_a_six_feature_manifest(
    ensemble: TrainedEnsemble, codec_ensemble: TrainedEnsemble, tmp_path: Path
) -> None:
    manifest = _copy(ensemble, tmp_path)
    shutil.copyfile(codec_ensemble.member_paths[0], manifest.parent / "fr-ens-t-m2.onnx")
    problems = validate_manifest(manifest)
    assert any(
        "fr-ens-t-m2" in line
        and "reads a codec block of width 6 but the manifest declares none" in line
        for line in problems
    )


def test_validate_cross_checks_the_registry_rows(ensemble: TrainedEnsemble, tmp_path: Path) -> None:
    manifest = _copy(ensemble, tmp_path)
    document = json.loads(manifest.read_text())
    rows = []
    for index, member in enumerate(document["members"][:2]):
        rows.append(
            {
                "id": member["id"],
                "kind": "fr",
                "onnx": member["onnx"],
                "sha256": member["sha256"] if index == 0 else "0" * 64,
                "smoke": True,
                "opset": 17,
                "license": "MIT",
                "timeline": index,
            }
        )
    registry = manifest.parent / "registry.json"
    registry.write_text(json.dumps({"schema_version": 1, "models": rows}))
    problems = validate_manifest(manifest, registry_path=registry)
    assert problems == [
        f"member fr-ens-t-m1: stale hash: registry.json#/models/1 records sha256 000000000000… "
        f"but the manifest records {document['members'][1]['sha256'][:12]}…",
        "member fr-ens-t-m2: no row with this id in registry.json",
    ]


def test_validate_refuses_member_paths_outside_the_folder(
    ensemble: TrainedEnsemble, tmp_path: Path
) -> None:
    manifest = _copy(ensemble, tmp_path)
    document = json.loads(manifest.read_text())
    document["members"][0]["onnx"] = "../fr-ens-t-m0.onnx"
    manifest.write_text(json.dumps(document))
    assert validate_manifest(manifest) == [
        "member fr-ens-t-m0 (../fr-ens-t-m0.onnx): path must not contain '..'"
    ]


def test_evaluate_scores_members_and_reports_coverage(ensemble: TrainedEnsemble) -> None:
    table_path = ensemble.manifest_path.parent / "eval.parquet"
    small_frame(sources=4).to_parquet(table_path, index=False)
    evaluation = evaluate_ensemble(ensemble.manifest_path, features_path=table_path)
    document = evaluation.to_dict()
    assert document["corpus"]["rows"] == 4 * 84
    assert document["corpus"]["same_as_training"] is True
    assert document["metrics"]["plcc"] > 0.5
    levels = document["intervals"]["levels"]
    assert [level["nominal"] for level in levels] == pytest.approx([0.5, 0.8, 0.9, 0.95])
    assert all(level["conformal"] is not None for level in levels)  # calibrated at every level
    assert document["coverage_test"]["nominal"] == pytest.approx(0.9)
    text = render_evaluation(evaluation)
    assert "90 % (manifest)" in text and "optimistic" in text
    json.dumps(document, allow_nan=False)


def test_evaluate_refuses_a_missing_feature_file(ensemble: TrainedEnsemble, tmp_path: Path) -> None:
    with pytest.raises(FeatureCacheError, match="feature cache not found"):
        evaluate_ensemble(ensemble.manifest_path, features_path=tmp_path / "missing.parquet")


def test_evaluate_refuses_codec_ensembles_until_scoring_supports_them(
    codec_ensemble: TrainedEnsemble, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="reads a codec block"):
        evaluate_ensemble(codec_ensemble.manifest_path, features_path=tmp_path / "x.parquet")


def test_ensemble_needs_sources_and_a_valid_id(tmp_path: Path) -> None:
    no_source = features_from_frame(small_frame().drop(columns=["source"]))
    with pytest.raises(FeatureCacheError, match="needs a 'source' column"):
        train_ensemble(no_source, ensemble_id="e", out_dir=tmp_path, config=FAST)
    with pytest.raises(UsageError, match="ensemble id"):
        train_ensemble(small_table(), ensemble_id="../e", out_dir=tmp_path, config=FAST)
    with pytest.raises(UsageError, match="at least 2 members"):
        train_ensemble(small_table(), ensemble_id="e", out_dir=tmp_path, members=1, config=FAST)
